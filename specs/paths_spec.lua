-- specs/paths_spec.lua — test paths from a definition (doc/testing.md): paths that take every
-- transition (inputs, guarded branches, timeouts, job outcomes), walks that replay them under
-- the virtual clock and fail with the step's index, and `modal test`.
local modal = require "modal"
local support = require "support"
local testing = require "modal.testing"
local cli = require "modal.cli"

local VALID = "specs/fixtures/valid/"
local PATHS = "specs/fixtures/paths/"
local BUILD = os.getenv("MODAL_BUILD") or "build"

-- The definition in `file`, loaded once (a fixture of 20,000 methods takes a while to copy).
local loaded = {}
local function load(file)
  if not loaded[file] then
    local ok, def = cli.load(file)
    assert(ok, def)
    loaded[file] = def
  end
  return loaded[file]
end

-- The steps of a path as text: "connect>connecting job done>ready".
local function shape(path)
  local parts = {}
  for k, step in ipairs(path) do
    parts[k] = require("modal.testing.paths").describe(step) .. ">" .. tostring(step.to)
  end
  return table.concat(parts, " ")
end

local function shapes(paths)
  local list = {}
  for k, p in ipairs(paths) do list[k] = shape(p) end
  return list
end

-- An output sink for cli.main.
local function buffer()
  local b = { parts = {} }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:text() return table.concat(self.parts) end
  return b
end

local function run_cli(args)
  local out, err = buffer(), buffer()
  local status = cli.main("test", args, out, err)
  return status, out:text(), err:text()
end

-- Options that make every transition of the valid fixtures reachable.
local OPTIONS = dofile(PATHS .. "options.lua")

describe("modal.testing", function()
  after_each(support.run_undo)

  describe("paths()", function()
    it("takes every transition of every valid fixture", function()
      local files = {}
      for name in io.popen("ls " .. VALID):lines() do files[#files + 1] = name end
      assert.is_true(#files >= 4)
      for _, name in ipairs(files) do
        local def = load(VALID .. name)
        local paths, coverage = testing.paths(def, OPTIONS)
        assert.equal(coverage.total, coverage.taken, name)
        assert.is_true(coverage.total > 0, name)
        local taken = {}
        for _, path in ipairs(paths) do
          local _, ids = testing.walk(def, path, OPTIONS)
          for _, id in ipairs(ids) do taken[id] = true end
        end
        for _, e in ipairs(coverage.edges) do
          assert.is_true(e.taken, name .. ": " .. e.id)
          assert.is_true(taken[e.id], name .. ": walking the paths did not take " .. e.id)
        end
      end
    end)

    it("finds the shortest paths, with timeouts and job outcomes as steps", function()
      local paths, coverage = testing.paths(load(VALID .. "six_states.lua"), OPTIONS)
      assert.same({
        "close>closed",
        "connect>connecting close>closed",
        "connect>connecting job error>failed",
        "connect>connecting advance 20>backoff",
        "connect>connecting job done>ready close>closed",
        "connect>connecting job done>ready lost>backoff",
        "connect>connecting job done>ready ping>ready",
        "connect>connecting job error>backoff close>closed",
        "connect>connecting job error>backoff advance 1.5>connecting",
      }, shapes(paths))
      assert.equal(12, coverage.total)
      assert.equal(12, coverage.taken)
      local step = paths[3][2]
      assert.equal("states.connecting.on.error[1]", step.edge)
      assert.equal("auth", step.args[1].kind)
      assert.equal("states.connecting.on.timeout", paths[4][2].edge)
      assert.equal(20, paths[4][2].advance)
    end)

    it("leaves out a guarded branch no argument tried passes, and says so", function()
      local paths, coverage = testing.paths(load(VALID .. "six_states.lua"))
      assert.equal(11, coverage.taken)
      for _, e in ipairs(coverage.edges) do
        assert.equal(e.id ~= "states.connecting.on.error[1]", e.taken, e.id)
        if e.taken then assert.is_number(e.path) end
      end
      assert.equal(8, #paths)
    end)

    it("reaches a branch whose guard depends on data, through the data", function()
      local M = modal.machine {
        name = "retries", initial = "trying", methods = {},
        states = {
          trying = { on = { fail = {
            { to = "gave_up", guard = function(m) return (m.data.n or 0) >= 3 end },
            { action = function(m) m.data.n = (m.data.n or 0) + 1 end },
          } } },
          gave_up = {},
        },
      }
      local paths, coverage = testing.paths(M)
      assert.equal(2, coverage.total)
      assert.equal(2, coverage.taken)
      assert.same({ "fail>trying fail>trying fail>trying fail>gave_up" }, shapes(paths))
    end)

    it("tries the argument lists given for an input", function()
      local M = modal.machine {
        name = "dial", initial = "idle", methods = {},
        states = {
          idle = { on = { dial = {
            { to = "local_call", guard = function(_, n) return n == 1 end },
            { to = "far_call", guard = function(_, n) return n == 2 end },
          } } },
          local_call = {}, far_call = {},
        },
      }
      local _, without = testing.paths(M)
      assert.equal(0, without.taken)
      local paths, coverage = testing.paths(M, { args = { dial = { { 2 }, { 1 } } } })
      assert.equal(2, coverage.taken)
      assert.same({ "dial(2)>far_call", "dial(1)>local_call" }, shapes(paths))
    end)

    it("gives each instance fresh data: a table is copied, a function called", function()
      local seen = {}
      local M = modal.machine {
        name = "fresh", initial = "a", methods = {},
        states = {
          a = { on = { go = { to = "b", action = function(m) seen[#seen + 1] = m.data.n
                                                            m.data.n = m.data.n + 1 end } } },
          b = {},
        },
      }
      local given = { n = 1 }
      testing.paths(M, { data = given })
      assert.equal(1, given.n)
      for _, n in ipairs(seen) do assert.equal(1, n) end
      testing.walk(M, { { input = "go" } }, { data = function() return { n = 5 } end })
      assert.equal(5, seen[#seen])
    end)

    it("searches without logging, and lists what was logged at level error", function()
      local lines = support.capture_log()
      local _, coverage = testing.paths(load(VALID .. "connection.lua"))
      assert.same({}, lines)
      assert.equal(1, #coverage.errors)
      assert.matches("attempt to index a nil value (field 'backoff')", coverage.errors[1], 1, true)
      assert.equal(coverage.total - 1, coverage.taken)
    end)

    it("stops at max_depth", function()
      local M = modal.machine {
        name = "chain", initial = "s1", methods = {},
        states = {
          s1 = { on = { go = "s2" } }, s2 = { on = { go = "s3" } }, s3 = { on = { go = "s4" } },
          s4 = {},
        },
      }
      local _, coverage = testing.paths(M, { max_depth = 2 })
      assert.equal(2, coverage.taken)
      local paths = testing.paths(M)
      assert.same({ "go>s2 go>s3 go>s4" }, shapes(paths))
    end)

    it("raises on a value that is not a machine or a valid definition", function()
      assert.has_error(function() testing.paths(42) end,
        "paths: expected a machine or a definition table, got number")
      local ok, err = pcall(testing.paths, { name = "x" })
      assert.is_false(ok)
      assert.matches("^paths: not a valid definition:", err)
    end)

    it("leaves no clock and no timer behind", function()
      testing.paths(load(VALID .. "six_states.lua"), OPTIONS)
      assert.is_false(require("modal.testing.clock").installed())
      assert.is_true(support.run_loop(1))
    end)
  end)

  describe("walk()", function()
    local def, paths

    -- The path found whose shape is `text`.
    local function path(text)
      for _, p in ipairs(paths) do
        if shape(p) == text then return p end
      end
      error("no path " .. text)
    end

    before_each(function()
      def = load(VALID .. "six_states.lua")
      paths = testing.paths(def, OPTIONS)
    end)

    it("returns the states visited and the transitions taken", function()
      local states, ids = testing.walk(def, path("connect>connecting job done>ready lost>backoff"))
      assert.same({ "idle", "connecting", "ready", "backoff" }, states)
      assert.same({ "states.idle.on.connect", "states.connecting.on.done",
                    "states.ready.on.lost" }, ids)
    end)

    it("fails with the step's index when a step's expectation is broken", function()
      local broken = path("connect>connecting job done>ready lost>backoff")
      broken[2].to = "backoff"                -- deliberately wrong: done leads to ready
      local ok, f = pcall(testing.walk, def, broken)
      assert.is_false(ok)
      assert.is_true(modal.is_failure(f))
      assert.equal("walk", f.kind)
      assert.equal(2, f.value.step)
      assert.equal("ready", f.value.state)
      assert.same({ "idle", "connecting" }, f.value.states)
      assert.equal("step 2 of 3 (job done, from 'connecting'): the instance is in 'ready', "
        .. "the path says 'backoff'", f.message)
    end)

    it("checks steps without `to` against the definition's transitions", function()
      local M = modal.machine(def)
      local states = testing.walk(M, { { input = "connect" }, { advance = 20 },
                                       { advance = 1.5 }, { job = "done" } })
      assert.same({ "idle", "connecting", "backoff", "connecting", "ready" }, states)
      local ok, f = pcall(testing.walk, M, { { input = "connect" }, { advance = 19 } })
      assert.is_false(ok)
      assert.equal(2, f.value.step)
      assert.matches("the definition expects 'backoff' after advance 19, but the timeout of "
        .. "'connecting' had not come yet (due in 20 s of the 20 armed)", f.message, 1, true)
    end)

    it("fails at a step the state cannot take", function()
      local cases = {
        { { { input = "lost" } }, "state 'idle' does not take input 'lost'" },
        { { { job = "done" } }, "state 'idle' has no job running" },
        { { { input = "connect" }, { job = "maybe" } }, 'job is "done" or "error", got maybe' },
        { { { advance = -1 } }, "advance takes a finite number of seconds >= 0, got -1" },
        { { { advance = 0 / 0 } }, "advance takes a finite number of seconds >= 0, got NaN" },
        { { { advance = -(0 / 0) } }, "advance takes a finite number of seconds >= 0, got NaN" },
        { { { wait = 1 } }, "unknown key 'wait' in a step (a step has: advance, args, edge," },
      }
      for _, case in ipairs(cases) do
        local ok, f = pcall(testing.walk, def, case[1])
        assert.is_false(ok)
        assert.equal(#case[1], f.value.step)
        assert.matches(case[2], f.message, 1, true)
      end
    end)

    it("settles a job with the step's value or failure", function()
      local got
      local M = modal.machine {
        name = "job", initial = "working", methods = {},
        states = {
          working = { run = function() end,
                      on = { done = { to = "ok", action = function(_, v) got = v end },
                             error = { to = "failed", action = function(_, f) got = f end } } },
          ok = {}, failed = {},
        },
      }
      testing.walk(M, { { job = "done", args = { "value" } } })
      assert.equal("value", got)
      testing.walk(M, { { job = "error" } })
      assert.equal("error", got.kind)
      local f = modal.failure("refused", "no")
      testing.walk(M, { { job = "error", args = { f } } })
      assert.is_true(rawequal(f, got))
    end)

    it("leaves an installed clock's time and timers as they were: none of them runs", function()
      local clock = support.clock(100)
      local ran = {}
      modal.call_later(5, function() ran[#ran + 1] = modal.now() end)
      modal.call_later(0, function() ran[#ran + 1] = modal.now() end)
      local seen = {}
      local M = modal.machine {
        name = "timed", initial = "a", methods = {},
        states = { a = { timeout = 20, on = { timeout = "b" } },
                   b = { enter = function() seen[#seen + 1] = modal.now() end } },
      }
      testing.walk(M, { { advance = 20, to = "b" } })
      local found = testing.paths(M)
      assert.equal(1, #found)
      assert.same({ 20, 20 }, seen)            -- each replay starts at 0, whatever the caller's time
      assert.same({}, ran)
      assert.is_false(clock.closed)
      assert.equal(100, modal.now())
      assert.same({ 100, 105 }, clock:pending())
      clock:advance(5)
      assert.same({ 100, 105 }, ran)
    end)

    it("refuses a walk from a timer the clock is running, or inside another walk", function()
      local clock = support.clock()
      local got
      modal.call_later(1, function() got = { pcall(testing.walk, def, paths[1]) } end)
      clock:advance(1)
      assert.is_false(got[1])
      assert.matches("walk: called from a timer the clock is running", tostring(got[2]), 1, true)
      local inner
      local M = modal.machine {
        name = "nested", initial = "a", methods = {},
        states = { a = { on = { go = "b" } },
                   b = { enter = function() inner = { pcall(testing.walk, def, {}) } end } },
      }
      testing.walk(M, { { input = "go", to = "b" } })
      assert.is_false(inner[1])
      assert.matches("walk: called while another walk runs on this clock", tostring(inner[2]), 1,
        true)
      assert.equal(1, modal.now())
    end)

    it("installs a clock of its own when none is, and closes it", function()
      local states = testing.walk(def, path("connect>connecting job error>backoff advance 1.5>connecting"))
      assert.equal("connecting", states[#states])
      assert.is_false(require("modal.testing.clock").installed())
      assert.is_true(support.run_loop(1))     -- nothing of the walk keeps the loop alive
    end)
  end)

  describe("`modal test`", function()
    it("walks every path of a definition and prints the coverage", function()
      local status, out = run_cli({ "examples/reload/policy.lua" })
      assert.equal(0, status)
      assert.equal(table.concat({
        "examples/reload/policy.lua: path 1: ok: trying -close-> closed",
        "examples/reload/policy.lua: path 2: ok: trying -advance 0.2-> answering -close-> closed",
        "examples/reload/policy.lua: path 3: ok: trying -advance 0.2-> answering -advance 0.5-> "
          .. "trying",
        "examples/reload/policy.lua: 4/4 transitions taken",
      }, "\n") .. "\n", out)
    end)

    it("takes every transition of the examples' definitions", function()
      local status, out = run_cli({ "examples/echo_client.lua", "examples/reload/policy.lua" })
      assert.equal(0, status, out)
      assert.matches("examples/echo_client.lua: 10/10 transitions taken\n", out, 1, true)
      assert.matches("examples/reload/policy.lua: 4/4 transitions taken\n", out, 1, true)
      assert.is_nil(out:find("note:", 1, true), out)
    end)

    it("takes every transition of the examples' services with their options file", function()
      local files = { "examples/demo/policy.lua", "examples/echo/echo.lua",
        "examples/redis/redis.lua" }
      local status, out = run_cli({ "--options", "examples/service_test_options.lua",
        table.unpack(files) })
      assert.equal(0, status, out)
      for _, f in ipairs(files) do
        local n, m = out:match(f:gsub("%p", "%%%0") .. ": (%d+)/(%d+) transitions taken\n")
        assert.is_truthy(n, out)
        assert.equal(m, n, out)
      end
      assert.is_nil(out:find("not taken", 1, true), out)
      -- Without the options, classify's fatal branch is named as the one left
      status, out = run_cli({ "examples/echo/echo.lua" })
      assert.equal(0, status, out)
      assert.matches("not taken: states.connecting.on.error[1] (guarded: no argument tried", out,
        1, true)
    end)

    it("reads --options and reports full coverage of the valid fixtures", function()
      local args = { "--options", PATHS .. "options.lua" }
      for name in io.popen("ls " .. VALID):lines() do args[#args + 1] = VALID .. name end
      local status, out = run_cli(args)
      assert.equal(0, status, out)
      local summaries = 0
      for n, m in out:gmatch(": (%d+)/(%d+) transitions taken\n") do
        summaries = summaries + 1
        assert.equal(m, n, out)
      end
      assert.equal(#args - 2, summaries)
      assert.is_nil(out:find("not taken", 1, true))
    end)

    it("notes hook errors and lists the transitions not taken", function()
      local status, out = run_cli({ VALID .. "connection.lua" })
      assert.equal(0, status)
      assert.matches("connection.lua: note: error in timeout (state 'backoff'): ", out, 1, true)
      assert.matches("connection.lua: 9/10 transitions taken\n", out, 1, true)
      assert.matches("connection.lua: not taken: states.backoff.on.timeout\n", out, 1, true)
      status, out = run_cli({ VALID .. "six_states.lua" })
      assert.equal(0, status)
      assert.matches("not taken: states.connecting.on.error[1] (guarded: ", out, 1, true)
    end)

    it("exits 1 on a mismatch", function()
      local status, out = run_cli({ PATHS .. "first_time_only.lua" })
      assert.equal(1, status)
      assert.matches("first_time_only.lua: path 1: FAILED: walk: step 1 of 1 (draw, from 'start'): "
        .. "the instance is in 'unlucky', the path says 'lucky'", out, 1, true)
    end)

    it("prints each step with --steps", function()
      local _, out = run_cli({ "--steps", "--max-depth", "3", VALID .. "inputs_only.lua" })
      assert.matches("inputs_only.lua: path 1: step 1: tick (states.counting.on.tick) -> "
        .. "counting\n", out, 1, true)
    end)

    it("takes --max-depth=N and --options=FILE as well as their two-argument forms", function()
      local _, two = run_cli({ "--steps", "--max-depth", "3", VALID .. "inputs_only.lua" })
      local status, one = run_cli({ "--steps", "--max-depth=3", VALID .. "inputs_only.lua" })
      assert.equal(0, status)
      assert.equal(two, one)
      local err, _
      status, _, err = run_cli({ "--max-depth=", "x.lua" })
      assert.equal(2, status)
      assert.matches("modal test: --max-depth needs a value", err, 1, true)
      status, _, err = run_cli({ "--options=no/such.lua", "x.lua" })
      assert.equal(2, status)
      assert.matches("--options no/such.lua: ", err, 1, true)
    end)

    it("exits 1 on a file that does not load or is not valid, 2 on a usage error", function()
      local status, out = run_cli({ "specs/fixtures/invalid/missing_name.lua" })
      assert.equal(1, status)
      assert.matches("not a valid definition (see modal check)", out, 1, true)
      status, out = run_cli({ "no/such/file.lua" })
      assert.equal(1, status)
      assert.matches("no/such/file.lua: cannot load: ", out, 1, true)
      local err, _
      status, _, err = run_cli({})
      assert.equal(2, status)
      assert.matches("modal test: no FILE given", err, 1, true)
      status, _, err = run_cli({ "--max-depth", "zero", "x.lua" })
      assert.equal(2, status)
      assert.matches("--max-depth takes a whole number >= 1, got 'zero'", err, 1, true)
      status, _, err = run_cli({ "--options", "no/such.lua", "x.lua" })
      assert.equal(2, status)
      assert.matches("--options no/such.lua: ", err, 1, true)
      status, out = run_cli({ "--help" })
      assert.equal(0, status)
      assert.matches("^usage: modal test ", out)
    end)

    it("is a command of the host", function()
      local p = io.popen(BUILD .. "/modal test examples/reload/policy.lua; echo \"exit $?\"")
      local out = p:read("a")
      p:close()
      assert.matches("policy.lua: 4/4 transitions taken\nexit 0\n", out, 1, true)
      p = io.popen(BUILD .. "/modal test " .. PATHS .. "first_time_only.lua; echo \"exit $?\"")
      out = p:read("a")
      p:close()
      assert.matches("FAILED", out, 1, true)
      assert.matches("exit 1\n", out, 1, true)
      p = io.popen(BUILD .. "/modal --help")
      out = p:read("a")
      p:close()
      assert.matches("  test [--options LUAFILE]", out, 1, true)
    end)
  end)
end)
