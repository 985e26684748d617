-- specs/testing_kit_edges_spec.lua — the testing kit at its edges (doc/testing.md), each from
-- what a new user tried: a definition that loops without waiting (the search and the walk
-- stop and say so instead of hanging), steps with a malformed `args`, `to` or `edge`, paths
-- with holes, timers armed before a search (none of them runs), the search cut short by
-- max_depth, and `modal test`/`modal graph` on files that arm timers or install a clock.
local modal = require "modal"
local uv = require "luv"
local support = require "support"
local testing = require "modal.testing"
local cli = require "modal.cli"

local function buffer()
  local b = { parts = {} }
  function b:write(s) self.parts[#self.parts + 1] = s end
  function b:text() return table.concat(self.parts) end
  return b
end

local function run_cli(command, args)
  local out, err = buffer(), buffer()
  local status = cli.main(command, args, out, err)
  return status, out:text(), err:text()
end

local dir
local function file(name, text) return support.write_file(dir .. "/" .. name, text) end

-- a -start-> b, whose enter fires back, to c, whose enter fires go, to b: for ever
local LOOP_AFTER_STEP = [[
local modal = require "modal"
return modal.machine { name = "pingpong", initial = "a", methods = {}, inputs = { "go", "back", "start" },
  states = { a = { on = { start = "b" } },
             b = { enter = function(m) m:fire("back") end, on = { back = "c" } },
             c = { enter = function(m) m:fire("go") end, on = { go = "b" } } } }
]]

-- the initial state's own enter starts the loop
local LOOP_AT_ONCE = [[
local modal = require "modal"
return modal.machine { name = "spin", initial = "a", methods = {}, inputs = { "go", "back" },
  states = { a = { enter = function(m) m:fire("go") end, on = { go = "b" } },
             b = { enter = function(m) m:fire("back") end, on = { back = "a" } } } }
]]

describe("the testing kit at its edges", function()
  setup(function() dir = support.tmpdir("kit_edges") end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  after_each(support.run_undo)

  describe("a definition that loops without waiting", function()
    it("ends the search, which says where in coverage.loops and errors", function()
      local M = dofile(file("pingpong.lua", LOOP_AFTER_STEP))
      local t0 = uv.hrtime()
      local found, coverage = testing.paths(M)
      assert.is_true((uv.hrtime() - t0) / 1e9 < 10 * support.SLACK)
      assert.same({}, found)
      assert.equal(1, #coverage.loops)
      assert.matches("^after steps start: 1000%d transitions in one run to completion: the "
        .. "definition loops without waiting %(cycle: [bc] %-> [bc] %-> [bc]%)$", coverage.loops[1])
      assert.equal(coverage.loops[1], coverage.errors[1])
      assert.equal(0, coverage.taken)
    end)

    it("fails the walk at the step that loops, or at the first entry", function()
      local M = dofile(file("pingpong.lua", LOOP_AFTER_STEP))
      local ok, f = pcall(testing.walk, M, { { input = "start" } })
      assert.is_false(ok)
      assert.equal(1, f.value.step)
      assert.matches("step 1 of 1 (start, from 'a'): 1000", f.message, 1, true)
      assert.matches("the definition loops without waiting (cycle:", f.message, 1, true)
      local S = dofile(file("spin.lua", LOOP_AT_ONCE))
      ok, f = pcall(testing.walk, S, { { input = "go" } })
      assert.is_false(ok)
      assert.equal(0, f.value.step)
      assert.equal(1, f.message:find("the first entry (from 'a'): 1000", 1, true))
    end)

    it("gives `modal test` a LOOPS line and exit status 1, not a hang", function()
      local path = file("spin.lua", LOOP_AT_ONCE)
      local status, out = run_cli("test", { path })
      assert.equal(1, status, out)
      assert.matches(path .. ": LOOPS: after the first entry: 1000%d transitions in one run to "
        .. "completion: the definition loops without waiting %(cycle: [ab] %-> [ab] %-> [ab]%)\n", out)
      assert.matches(path .. ": 0/2 transitions taken\n", out, 1, true)
    end)

    it("is caught through internal transitions too (they enter no state)", function()
      local path = file("loopint.lua", [[
local modal = require "modal"
return modal.machine { name = "loopint", initial = "a", methods = {}, states = {
  a = { on = { go = "b" } },
  b = { enter = function(m) m:fire("x") end,
        on = { x = { action = function(m) m:fire("x"); m:fire("x") end } } } } }
]])
      local status, out = run_cli("test", { path })
      assert.equal(1, status, out)
      assert.matches(path .. ": LOOPS: after steps go: 1000%d transitions in one run to completion: "
        .. "the definition loops without waiting %(cycle: b %-> b%)\n", out)
      -- outside the kit it is said, and goes on (this one ends by itself at 150,000)
      local M = modal.machine { name = "loopint_bounded", initial = "b", methods = {},
        states = { b = { enter = function(m) m:fire("x") end, on = { x = { action = function(m)
          m.data.n = (m.data.n or 0) + 1
          if m.data.n < 150000 then m:fire("x") end
        end } } } } }
      local lines = {}
      local previous = modal.on_log(function(level, message) lines[#lines + 1] = level .. " " .. message end)
      local c = M:new()
      modal.on_log(previous)
      assert.equal(150000, c.data.n)
      assert.matches("warn .*100000 transitions in one run to completion: the definition loops "
        .. "without waiting %(cycle: b %-> b%)", table.concat(lines, "\n"))
    end)

    it("is only warned about outside the kit, as before", function()
      local S = dofile(file("spin.lua", LOOP_AT_ONCE:gsub("m:fire%(\"back\"%)",
        "m.data.n = (m.data.n or 0) + 1; if m.data.n < 60000 then m:fire('back') end")))
      local lines = {}
      local previous = modal.on_log(function(level, message) lines[#lines + 1] = level .. " " .. message end)
      local c = S:new()
      modal.on_log(previous)
      assert.equal(60000, c.data.n)
      assert.matches("warn .*100000 transitions in one run to completion", table.concat(lines, "\n"))
    end)
  end)

  describe("options and steps the walk cannot use", function()
    local M = modal.machine {
      name = "timed_edges", initial = "a", methods = {},
      states = { a = { on = { poke = "b" } }, b = {} },
    }

    it("refuse an argument list whose n is not a whole number >= 0, in paths as in a step", function()
      local ok, err = pcall(testing.paths, M, { args = { poke = { { n = -3 } } } })
      assert.is_false(ok)
      assert.matches("paths: args.poke[1].n is the number of arguments, a whole number >= 0, got -3",
        err, 1, true)
    end)

    it("fail the walk at a step that advances past the clock's range", function()
      local ok, f = pcall(testing.walk, M, { { input = "poke" }, { advance = 1e300 } })
      assert.is_false(ok)
      assert.is_true(modal.is_failure(f), tostring(f))
      assert.equal(2, f.value.step)
      assert.matches("step 2 of 2 (advance 1e+300, from 'b'): clock:advance: 1e+300 seconds is past "
        .. "the clock's range", f.message, 1, true)
    end)

    it("name a data function that returns no table", function()
      local ok, err = pcall(testing.paths, M, { data = function() return 5 end })
      assert.is_false(ok)
      assert.matches("data: the function returned a number, not a table (an instance's data)",
        tostring(err), 1, true)
    end)
  end)

  describe("a step", function()
    local M = modal.machine {
      name = "steps", initial = "idle", methods = {},
      states = { idle = { on = { kick = "work", poke = "idle" } },
                 work = { run = function() end, on = { done = "idle", error = "idle" } } },
    }

    it("whose args, to or edge has the wrong type fails before anything runs", function()
      local cases = {
        { { input = "kick", args = 42 }, "args is the list of the step's arguments { ... }, got number" },
        { { input = "kick", args = { n = "x" } },
          "args.n is the number of arguments, a whole number >= 0, got \"x\"" },
        { { input = "kick", args = { n = -1 } },
          "args.n is the number of arguments, a whole number >= 0, got -1" },
        { { job = "done", args = 5 }, "args is the list of the step's arguments { ... }, got number" },
        { { input = "kick", to = 5 }, "to is the name of the state the step leads to, got number" },
        { { input = "kick", to = false }, "to is the name of the state the step leads to, got boolean" },
        { { input = "kick", edge = 3 }, "edge is the path of the transition the step takes" },
      }
      for _, case in ipairs(cases) do
        local ok, f = pcall(testing.walk, M, { case[1] })
        assert.is_false(ok)
        assert.is_true(modal.is_failure(f), tostring(f))
        assert.equal("walk", f.kind)
        assert.equal(1, f.value.step)
        assert.matches("step 1 of 1: " .. case[2], f.message, 1, true)
      end
    end)

    it("with an edge is checked against the transition it takes", function()
      local states = testing.walk(M, { { input = "kick", edge = "states.idle.on.kick" } })
      assert.same({ "idle", "work" }, states)
      local ok, f = pcall(testing.walk, M, { { input = "kick", edge = "states.idle.on.poke" } })
      assert.is_false(ok)
      assert.matches("step 1 of 1 (kick, from 'idle'): the step took states.idle.on.kick, the path "
        .. "says it takes states.idle.on.poke", f.message, 1, true)
      local found = testing.paths(M)
      for _, path in ipairs(found) do testing.walk(M, path) end   -- what paths writes walks
      ok, f = pcall(testing.walk, M, { { input = "kick", to = "idle" } })
      assert.is_false(ok)
      assert.equal("idle", f.value.expected)                     -- a name, plain
      assert.equal("work", f.value.state)
    end)

    it("list with a hole, or a key that is no step number, is refused", function()
      local ok, err = pcall(testing.walk, M, { [1] = { input = "kick" }, [3] = { job = "done" } })
      assert.is_false(ok)
      assert.matches("walk: a path is a list of steps 1..n, without holes", err, 1, true)
      ok, err = pcall(testing.walk, M, { { input = "kick" }, name = "x" })
      assert.is_false(ok)
      assert.matches("it has key \"name\" beside steps 1..1", err, 1, true)
    end)
  end)

  describe("timers armed before a search", function()
    it("in real time: none runs during it, each is still armed after", function()
      local ran = 0
      local h = modal.call_later(0, function() ran = ran + 1 end)
      local M = modal.machine {
        name = "timed", initial = "a", methods = {},
        states = { a = { timeout = 5, on = { timeout = "b" } }, b = {} },
      }
      testing.paths(M)
      testing.walk(M, { { advance = 5 } })
      assert.equal(0, ran)
      assert.is_true(h:active())
      assert.is_false(require("modal.testing.clock").installed())
      assert.is_true(support.run_loop(1))
      assert.equal(1, ran)
    end)
  end)

  it("says when max_depth cut the search short, for the transitions left out", function()
    local path = file("chain.lua", [[
local modal = require "modal"
return modal.machine { name = "chain", initial = "s1", methods = {},
  states = { s1 = { on = { go = "s2" } }, s2 = { on = { go = "s3" } },
             s3 = { on = { go = "s4" } }, s4 = {} } }
]])
    local _, coverage = testing.paths(dofile(path), { max_depth = 2 })
    assert.equal("max_depth", coverage.cut)
    local status, out = run_cli("test", { "--max-depth", "2", path })
    assert.equal(0, status, out)
    assert.matches(path .. ": not taken: states.s3.on.go (the search stopped at --max-depth 2: a "
      .. "longer path may take it)\n", out, 1, true)
    _, coverage = testing.paths(dofile(path))
    assert.is_nil(coverage.cut)
  end)

  it("notes args for an input no state takes, with the input meant", function()
    local M = modal.machine {
      name = "poked", initial = "idle", methods = {},
      states = { idle = { on = { poke = { { to = "hit", guard = function(_, x) return x == 42 end } } } },
                 hit = {} },
    }
    local _, coverage = testing.paths(M, { args = { pok = { { 42 } } } })
    assert.same({ "args.pok: no state takes input 'pok' (did you mean 'poke'?)" }, coverage.notes)
    assert.equal(0, coverage.taken)
    _, coverage = testing.paths(M, { args = { poke = { { 42 } } } })
    assert.same({}, coverage.notes)
    assert.equal(1, coverage.taken)
  end)

  describe("the commands on files that arm timers or install a clock", function()
    it("`modal graph` prints the diagram alone: the file's timers never run", function()
      local path = file("prog_t0.lua", [[
local modal = require "modal"
local A = modal.machine { name = "a", initial = "x", methods = {}, states = { x = { final = true } } }
modal.call_later(0, function() print("T0 fired") end)
modal.sleep(0):add_callback(function() print("sleep0 fired") end)
require("luv").new_timer():start(0, 0, function() print("luv fired") end)
]])
      for _, command in ipairs { "graph", "check", "test" } do
        local status, out, err = support.modal_cmd(command, path)
        assert.equal(0, status, out .. err)
        assert.is_nil(out:find("fired", 1, true), command .. ": " .. out)
      end
    end)

    it("never call a file's luv callbacks in their last pass: output and status stay theirs",
      function()
      -- closing every handle cancels a pending connect, whose callback libuv then calls with
      -- ECANCELED: this one would print after the diagram, raise, and exit 42
      local path = file("connects.lua", [[
local modal = require "modal"
local uv = require "luv"
local sock = uv.new_tcp()
sock:connect("127.0.0.1", 9, function(err) print("CONNECT CB", err); sock:close(); os.exit(42) end)
return modal.machine { name = "c", initial = "x", methods = {}, states = { x = { final = true } } }
]])
      local status, out, err = support.modal_cmd("check", path)
      assert.equal(0, status, out .. err)
      assert.equal(path .. ": ok\n", out)
      for _, command in ipairs { "graph", "test" } do
        status, out, err = support.modal_cmd(command, path)
        assert.equal(0, status, out .. err)
        assert.is_nil(out:find("CONNECT CB", 1, true), out)
        assert.is_nil(err:find("luv callback", 1, true), err)
      end
    end)

    it("`modal test A B`: what A left (a clock, its timers) does not reach B", function()
      local text = [[
local modal = require "modal"
local T = require "modal.testing"
local clock = T.clock()
modal.call_later(0.5, function() print("the file's timer ran") end)
return modal.machine { name = "A", initial = "a", methods = {}, inputs = { "go" },
  states = { a = { timeout = 1, on = { go = "b", timeout = "b" } }, b = { final = true } } }
]]
      local a, b = file("sleepy.lua", text), file("sleepy2.lua", text)
      local status, out, err = support.modal_cmd("test", a, b)
      assert.equal(0, status, out .. err)
      assert.matches(a .. ": 2/2 transitions taken\n", out, 1, true)
      assert.matches(b .. ": 2/2 transitions taken\n", out, 1, true)
      assert.is_nil(out:find("timer ran", 1, true), out)
      local c = file("current.lua", "local T = require 'modal.testing'\n"
        .. "assert(T.current_clock() == nil, 'a clock is left: ' .. tostring(T.current_clock()))\n"
        .. "return dofile(" .. string.format("%q", a) .. ")\n")
      status, out, err = support.modal_cmd("check", a, c)     -- a's clock is closed as clock:close
      assert.equal(0, status, out .. err)
    end)

    it("say where a file stopped when it defined no machine", function()
      local path = file("runs.lua", "local modal = require 'modal'\nlocal x = 1\nmodal.run()\n")
      local status, out = run_cli("check", { path })
      assert.equal(1, status)
      assert.matches(path .. ": cannot load: the file runs the event loop at line 3, where it had "
        .. "defined no machine", out, 1, true)
    end)
  end)

  it("refuses a state timeout of math.huge naming what it must be", function()
    local ok, err = pcall(modal.machine, { name = "inf", initial = "a", methods = {},
      states = { a = { timeout = math.huge, on = { timeout = "a" } } } })
    assert.is_false(ok)
    assert.matches("states.a.timeout: expected a finite number of seconds >= 0 (or a function), "
      .. "got inf", err, 1, true)
  end)
end)
