-- specs/testing_newcomer_spec.lua — paths, walk and `modal test` as doc/testing.md promises
-- them to a newcomer: definitions that draw from math.random walk as they were searched,
-- options and steps are checked, and the messages say what the path expected.
local modal = require "modal"
local support = require "support"
local testing = require "modal.testing"
local cli = require "modal.cli"

local DIR = "specs/fixtures/newcomer/"

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

local function connection()
  local ok, def = cli.load(DIR .. "connection.lua")
  assert(ok, def)
  return def
end

local function jittered() return { backoff = modal.backoff { initial = 1 } } end

describe("modal.testing for a newcomer", function()
  after_each(support.run_undo)

  describe("options", function()
    it("refuses misspelt options with the one meant, all at once", function()
      local ok, err = pcall(testing.paths, connection(), { max_dept = 1, dta = {} })
      assert.is_false(ok)
      assert.matches("paths: unknown option 'dta' (did you mean 'data'?)", err, 1, true)
      assert.matches("unknown option 'max_dept' (did you mean 'max_depth'?)", err, 1, true)
      ok, err = pcall(testing.walk, connection(), {}, { bogus = 1 })
      assert.is_false(ok)
      assert.matches("walk: unknown option 'bogus' (options: args, data, max_depth, max_nodes)",
        err, 1, true)
    end)

    it("refuses max_depth 0 as modal test --max-depth 0 does", function()
      local ok, err = pcall(testing.paths, connection(), { max_depth = 0 })
      assert.is_false(ok)
      assert.matches("paths: max_depth takes a whole number >= 1, got 0", err, 1, true)
      local status, _, cerr = run_cli { "--max-depth", "0", DIR .. "connection.lua" }
      assert.equal(2, status)
      assert.matches("--max-depth takes a whole number >= 1, got '0'", cerr, 1, true)
      ok, err = pcall(testing.paths, connection(), { max_nodes = 1.5, data = 3 })
      assert.is_false(ok)
      assert.matches("max_nodes takes a whole number >= 1, got 1.5", err, 1, true)
      assert.matches("data takes a table or a function returning one, got number", err, 1, true)
      ok, err = pcall(testing.paths, connection(), { max_depth = -(0 / 0) })
      assert.is_false(ok)
      assert.matches("max_depth takes a whole number >= 1, got NaN", err, 1, true)
      ok, err = pcall(testing.paths, connection(), { args = { go = { 42 } } })
      assert.is_false(ok)
      assert.matches("paths: args.go[1] takes a list of arguments { ... }, got number (write "
        .. "{ { 42 } } for one call with that argument)", err, 1, true)
    end)

    it("modal test refuses a misspelt --options file with exit status 2", function()
      local status, out, err = run_cli { "--options", DIR .. "typo_options.lua",
                                         DIR .. "connection.lua" }
      assert.equal(2, status)
      assert.equal("", out)
      assert.matches("--options " .. DIR .. "typo_options.lua: unknown option 'dta' "
        .. "(did you mean 'data'?); unknown option 'max_dept' (did you mean 'max_depth'?)",
        err, 1, true)
    end)

    it("accepts one table for paths and walk", function()
      local opts = { data = jittered, max_depth = 4 }
      local paths = testing.paths(connection(), opts)
      assert.is_true(#paths > 0)
      local states = testing.walk(connection(), paths[1], opts)
      assert.equal("idle", states[1])
    end)
  end)

  describe("math.random", function()
    it("a definition whose timeout draws a jittered backoff walks every path it was searched on",
      function()
        for _ = 1, 5 do                  -- the default jitter drew differently every run before
          local paths, coverage = testing.paths(connection(), { data = jittered })
          assert.equal(coverage.total, coverage.taken)
          local taken = {}
          for _, path in ipairs(paths) do
            local _, ids = testing.walk(connection(), path, { data = jittered })
            for _, id in ipairs(ids) do taken[id] = true end
          end
          assert.is_true(taken["states.backing_off.on.timeout"])
        end
      end)

    it("is random again for the caller afterwards", function()
      testing.paths(connection(), { data = jittered })
      local a = { math.random(), math.random(), math.random() }
      testing.paths(connection(), { data = jittered })
      local b = { math.random(), math.random(), math.random() }
      assert.are_not.same(a, b)
    end)

    it("modal test walks the README's machine with a jittered backoff", function()
      local status, out = run_cli { "--options", DIR .. "connection_options.lua",
                                    DIR .. "connection.lua" }
      assert.is_nil(out:find("FAILED", 1, true), out)
      assert.matches("connection.lua: 10/10 transitions taken\n", out, 1, true)
      assert.equal(0, status)
    end)
  end)

  describe("modal test's summary", function()
    it("a transition found on a path whose walk failed is not walked, not 'not taken'", function()
      local status, out = run_cli { DIR .. "outside_counter.lua" }
      assert.equal(1, status)
      assert.matches("path 1: FAILED: walk: step 2 of 2", out, 1, true)
      assert.matches("1/2 transitions taken (1 more found by the search on a path whose walk "
        .. "failed)", out, 1, true)
      assert.matches("not walked: states.b.on.timeout (found on path 1, whose walk failed)",
        out, 1, true)
      assert.is_nil(out:find("not taken", 1, true), out)
    end)

    it("a guard that raised is named with what it raised", function()
      local status, out = run_cli { DIR .. "raising_guard.lua" }
      assert.equal(0, status)
      assert.matches("not taken: states.a.on.go (guarded: its guard raised: the guard blew up)",
        out, 1, true)
      assert.is_nil(out:find("no argument tried passed", 1, true), out)
      local _, coverage = testing.paths(dofile(DIR .. "raising_guard.lua"))
      assert.equal("the guard blew up", coverage.edges[1].guard_error)
    end)
  end)

  describe("walk's messages", function()
    it("an advance shorter than the timeout says the timeout had not come yet", function()
      local ok, f = pcall(testing.walk, connection(), { { input = "connect" }, { advance = 4 } },
        { data = jittered })
      assert.is_false(ok)
      assert.equal("walk", f.kind)
      assert.equal("walk: step 2 of 2 (advance 4, from 'connecting'): the definition expects "
        .. "'backing_off' after advance 4, but the timeout of 'connecting' had not come yet (due "
        .. "in 5 s of the 5 armed): the instance stayed in 'connecting'", tostring(f))
      ok, f = pcall(testing.walk, connection(), { { advance = 4, to = "connecting" } })
      assert.is_false(ok)
      assert.matches("but state 'idle' has no timeout armed", tostring(f), 1, true)
    end)

    it("a step with no known key is refused before anything runs, naming the keys", function()
      local ok, f = pcall(testing.walk, connection(), { { input = "connect" }, { frobnicate = 1 } })
      assert.is_false(ok)
      assert.equal("walk: step 2 of 2: unknown key 'frobnicate' in a step (a step has: advance, "
        .. "args, edge, input, job, to)", tostring(f))
      assert.equal(2, f.value.step)
      assert.are.same({}, f.value.states)
      ok, f = pcall(testing.walk, connection(), { {} })
      assert.is_false(ok)
      assert.matches("step 1 of 1: a step has exactly one of `input`, `advance`, `job`, this one "
        .. "has none", tostring(f), 1, true)
      ok, f = pcall(testing.walk, connection(), { { input = "connect", advance = 1 } })
      assert.is_false(ok)
      assert.matches("this one has `input` and `advance`", tostring(f), 1, true)
      ok, f = pcall(testing.walk, connection(), { { inptu = "connect" } })
      assert.is_false(ok)
      assert.matches("unknown key 'inptu' in a step (did you mean 'input'?)", tostring(f), 1, true)
    end)

    it("a well-formed path still walks", function()
      local states, ids = testing.walk(connection(), { { input = "connect", to = "connecting" },
        { job = "done", args = { "conn" } }, { input = "close" } }, { data = jittered })
      assert.are.same({ "idle", "connecting", "ready", "closed" }, states)
      assert.are.same({ "states.idle.on.connect", "states.connecting.on.done",
                        "states.ready.on.close" }, ids)
    end)
  end)
end)
