-- specs/reload_spec.lua — hot reload (doc/reload.md): modal.load, modal.reload,
-- modal.loaded and modal.stats. Unhappy paths first: loads that raise, reloads of what was never
-- loaded, a reload rejected for each reason doc/reload.md names (and nothing changed afterwards),
-- reloads from where they are not allowed; then what a successful reload does to the machine,
-- to instances that stay in their state (timeouts, jobs) and to instances that migrate, and to
-- postponed calls.
--
-- Definition files are written at run time into a temp folder. Most are one line,
--   return require("reload_probe").make(KEY, VERSION)
-- which builds version VERSION of the definition this spec registered under KEY (KEY is also
-- the machine's name), so each test controls its versions with plain Lua and every reload has
-- to read the file again to see the new VERSION. A few files are self-contained sources.
local modal = require "modal"
local support = require "support"
local run_undo = support.run_undo

local outcome, counter, run_loop = support.outcome, support.counter, support.run_loop

local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_reload_spec.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- The probe the definition files require: make(key, version) counts the run and builds.
local builders, runs = {}, {}
package.loaded.reload_probe = {
  make = function(key, version)
    runs[key] = (runs[key] or 0) + 1
    return builders[key](version, key)
  end,
}

-- A definition file at a new path; builder(version, name) returns that version's definition
-- (a table or a machine). file.set(v) rewrites the file to build version v; file.source(text)
-- replaces it with `text`; file.runs() counts how often the file ran.
local serial = 0
local function def_file(builder)
  serial = serial + 1
  local key = "rl_" .. serial
  builders[key] = builder
  local file = { name = key, path = dir .. "/" .. key .. ".lua" }
  function file.set(version)
    write(file.path, ("return require('reload_probe').make(%q, %d)\n"):format(key, version))
  end
  function file.source(text) write(file.path, text) end
  function file.runs() return runs[key] or 0 end
  return file
end

-- Asserts that every fragment occurs in tostring(text).
local function assert_mentions(text, fragments)
  text = tostring(text)
  for _, fragment in ipairs(fragments) do
    assert.is_truthy(text:find(fragment, 1, true),
      ("expected the error to mention '%s', got: %s"):format(fragment, text))
  end
end


-- Every test runs with a capturing log sink (restored after it) and quiet unhandled reports
-- (cancelled jobs); `lines` holds what the current test logged.
local lines
local function capture()
  lines = support.capture_log()
  support.quiet_unhandled()               -- undone first: collects, then restores the reporter
end

-- The captured lines at `level` for machine `name`.
local function logged(level, name)
  local found = {}
  for _, line in ipairs(lines) do
    if line.level == level and line.fields.machine == name then found[#found + 1] = line end
  end
  return found
end

-- A Deferred's answers: how many times its chain reached this link, and the results (the
-- link passes the result on).
local function answers(d)
  local a = { n = 0, results = {} }
  d:add_both(function(r)
    a.n = a.n + 1
    a.results[a.n] = r
    return r
  end)
  return a
end

-- Adds (unreachable) states whose names sort before and after the others, so that the new
-- version numbers its states differently from the old one. `handlers` (optional) are the
-- method handlers each of them gets.
local function pad(states, handlers)
  for _, name in ipairs { "A_pad", "zz_pad" } do
    local state = {}
    for k, v in pairs(handlers or {}) do state[k] = v end
    states[name] = state
  end
  return states
end

-- A small machine: version v answers query with "v<version> <state>"; states a and b (and,
-- in even versions, padding).
local function simple(version, name)
  local tag = "v" .. version
  local states = { a = { on = { go = "b" } }, b = { on = { back = "a" } } }
  return {
    name = name, version = version, initial = "a", methods = { "query" },
    defaults = { query = function(m) return tag .. " " .. m.state end },
    states = version % 2 == 0 and pad(states) or states,
  }
end

describe("hot reload", function()
  before_each(capture)
  after_each(run_undo)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe("modal.load(path)", function()
    it("raises naming the path for a file that does not exist", function()
      local path = dir .. "/no_such_definition.lua"
      local ok, err = pcall(modal.load, path)
      assert.is_false(ok)
      assert_mentions(err, { path })
    end)

    it("raises naming the path and the line for a syntax error", function()
      local file = def_file(simple)
      file.source("return {\n  name = ,\n}\n")
      local ok, err = pcall(modal.load, file.path)
      assert.is_false(ok)
      assert_mentions(err, { file.path, ":2:" })
      assert.is_nil(modal.loaded()[file.name])
    end)

    it("refuses a precompiled file, naming the path: Lua does not check binary chunks", function()
      local file = def_file(simple)
      file.source(string.dump(function() return {} end))
      local ok, err = pcall(modal.load, file.path)
      assert.is_false(ok)
      assert_mentions(err, { file.path, "precompiled (binary) chunk" })
      assert.is_nil(modal.loaded()[file.name])
    end)

    it("raises naming the path when the file raises while it runs", function()
      local file = def_file(simple)
      file.source("error('definition exploded')\n")
      local ok, err = pcall(modal.load, file.path)
      assert.is_false(ok)
      assert_mentions(err, { file.path, "definition exploded" })
    end)

    it("names the path when the file raises an error object, or one whose __tostring raises",
       function()
      for _, case in ipairs {
        { "error(setmetatable({}, { __tostring = function() return 'custom object' end }))\n",
          ": custom object" },
        { "error(setmetatable({}, { __tostring = function() error('again') end }))\n",
          ": (error object is a table value whose __tostring failed)" },
        { "error('no position', 0)\n", ": no position" },
      } do
        local file = def_file(simple)
        file.source(case[1])
        local ok, err = pcall(modal.load, file.path)
        assert.is_false(ok)
        assert.equal("modal.load: " .. file.path .. case[2], err)
      end
    end)

    it("raises naming the path when the file returns neither a definition nor a machine", function()
      local file = def_file(simple)
      file.source("return 42\n")
      local ok, err = pcall(modal.load, file.path)
      assert.is_false(ok)
      assert_mentions(err, { file.path })
    end)

    it("raises naming the path and every problem of an invalid definition", function()
      local file = def_file(function(_, name)
        return {
          name = name, version = 1, initial = "a", methods = {},
          states = { a = { on = { go = "bb" } }, b = { on = { back = "zz" } } },
        }
      end)
      file.set(1)
      local ok, err = pcall(modal.load, file.path)
      assert.is_false(ok)
      assert_mentions(err, { file.path, "states.a.on.go", "'bb'", "states.b.on.back", "'zz'" })
      assert.is_nil(modal.loaded()[file.name])
    end)

    it("registers nothing when it raises: the path loads once the file is fixed", function()
      local file = def_file(function(version, name)
        if version == 1 then return { name = name, initial = "nowhere", methods = {}, states = {} } end
        return simple(version, name)
      end)
      file.set(1)
      assert.is_false(pcall(modal.load, file.path))
      file.set(2)
      local M = modal.load(file.path)
      assert.equal(2, M.version)
      assert.equal(file.path, modal.loaded()[file.name])
      assert.equal(2, file.runs())
    end)

    it("raises when another path already registered the name; the first one stays", function()
      local first = def_file(simple)
      first.set(1)
      local M = modal.load(first.path)
      local second = def_file(function(version) return simple(version, first.name) end)
      second.set(5)
      local ok, err = pcall(modal.load, second.path)
      assert.is_false(ok)
      assert_mentions(err, { second.path, first.name })
      assert.equal(first.path, modal.loaded()[first.name])
      for _, path in pairs(modal.loaded()) do assert.is_not.equal(second.path, path) end
      assert.equal(1, M.version)
      local state, v = outcome(M:new():query())
      assert.equal("succeeded", state)
      assert.equal("v1 a", v)
      support.reloaded(modal.reload(first.name))       -- the name still means the first file
      assert.equal(1, second.runs())
    end)

    it("returns the same M for a path loaded again, without running the file again", function()
      local file = def_file(simple)
      file.set(1)
      local M = modal.load(file.path)
      file.set(2)                                    -- a load is not a reload
      local again = modal.load(file.path)
      assert.is_true(rawequal(M, again))
      assert.equal(1, file.runs())
      assert.equal(1, M.version)
    end)

    it("returns a machine named and versioned by the definition, registered in modal.loaded()", function()
      local file = def_file(simple)
      file.set(7)
      local M = modal.load(file.path)
      assert.equal(file.name, M.name)
      assert.equal(7, M.version)
      assert.equal(file.path, modal.loaded()[file.name])
      local c = M:new()
      assert.is_true(rawequal(M, c.machine))
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("v7 a", v)
    end)

    it("accepts a file that returns a machine made by modal.machine", function()
      local file = def_file(function(version, name) return modal.machine(simple(version, name)) end)
      file.set(1)
      local M = modal.load(file.path)
      assert.equal(file.name, M.name)
      local c = M:new()
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.equal(2, M.version)
      assert.is_true(rawequal(M, c.machine))
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("v2 a", v)
    end)

    it("reads a self-contained file, and a reload reads the file again from disk", function()
      local name = "rl_self_contained"
      local path = dir .. "/" .. name .. ".lua"
      local source = [[
local modal = require "modal"
return {
  name = "rl_self_contained", version = %d, initial = "idle", methods = { "query" },
  states = {
    idle = { query = function() return "%s" end, on = { go = "idle" } },
  },
}
]]
      write(path, source:format(1, "first"))
      local M = modal.load(path)
      local c = M:new()
      assert.equal("first", select(2, outcome(c:query())))
      write(path, source:format(2, "second"))
      support.reloaded(modal.reload(path))
      assert.equal(2, M.version)
      assert.equal("second", select(2, outcome(c:query())))
    end)
  end)

  describe("modal.reload of what was never loaded", function()
    it("returns nil and an error for an unknown path, and does not run that file", function()
      local file = def_file(simple)
      file.set(1)
      local ok, err = modal.reload(file.path)
      assert.is_nil(ok)
      assert_mentions(err, { file.path })
      assert.equal(0, file.runs())
      assert.is_nil(modal.loaded()[file.name])
    end)

    it("returns nil and an error for a path that does not exist", function()
      local path = dir .. "/never_written.lua"
      local ok, err = modal.reload(path)
      assert.is_nil(ok)
      assert_mentions(err, { path })
    end)

    it("returns nil and an error for an unknown name", function()
      local ok, err = modal.reload("rl_no_machine_has_this_name")
      assert.is_nil(ok)
      assert_mentions(err, { "rl_no_machine_has_this_name" })
    end)
  end)

  describe("a rejected reload changes nothing", function()
    -- Version 1 of the scenario: instances in idle, legacy (two), waiting (two calls
    -- postponed), timed (timeout armed) and working (job running). Version 2 builders start
    -- from the same states; `opts.without_legacy` removes the state legacy.
    local function scenario_def(name, version, P, opts)
      opts = opts or {}
      local tag = "v" .. version
      local states = {
        idle = { enter = P.enter.fn,
                 on = { go = "legacy", hold = "waiting", time = "timed", work = "working" } },
        legacy = { enter = P.enter.fn, exit = P.exit.fn, on = { back = "idle" } },
        waiting = { query = "postpone", on = { release = "idle" } },
        timed = { timeout = 0.05, on = { timeout = "expired" } },
        working = { run = function(m) local d = modal.deferred(); P.jobs[m.id] = d; return d end,
                    on = { done = "worked", error = "idle" } },
        expired = { on = { back = "idle" } },
        worked = { on = { back = "idle" } },
      }
      if opts.without_legacy then
        states.legacy = nil
        states.idle.on.go = nil
      end
      return {
        name = name, version = version, initial = "idle", methods = { "query" },
        defaults = { query = function(m) return tag .. " " .. m.state end },
        migrate = opts.migrate, states = states,
      }
    end

    local function scenario(variant)
      local clock = support.clock()       -- the timeout of `timed` runs on virtual time
      local P = { enter = counter(), exit = counter(), seen = counter(), jobs = {} }
      local file = def_file(function(version, name)
        if version == 1 then return scenario_def(name, 1, P) end
        return variant(name, P)
      end)
      file.set(1)
      local M = modal.load(file.path)
      local c, expected = {}, {}
      for _, key in ipairs { "idle", "legacy", "legacy_too", "waiting", "timed", "working" } do
        c[key] = M:new()
      end
      c.legacy:fire("go")
      c.legacy_too:fire("go")
      c.waiting:fire("hold")
      c.timed:fire("time")
      c.working:fire("work")
      for key, inst in pairs(c) do
        expected[key] = inst.state
        inst:on_transition(P.seen.fn)
      end
      assert.equal("legacy", expected.legacy_too)
      local queued = { c.waiting:query("first"), c.waiting:query("second") }
      return { file = file, M = M, P = P, c = c, expected = expected, queued = queued,
               enters = P.enter.n, exits = P.exit.n, clock = clock }
    end

    local function assert_unchanged(S, err)
      local M, P, c = S.M, S.P, S.c
      assert.equal(1, M.version)
      assert.equal(S.file.path, modal.loaded()[S.file.name])
      for key, inst in pairs(c) do
        assert.equal(S.expected[key], inst.state)
        assert.is_true(rawequal(M, inst.machine))
      end
      assert.equal(S.enters, P.enter.n, "an enter ran")
      assert.equal(S.exits, P.exit.n, "an exit ran")
      assert.equal(0, P.seen.n, "an observer saw a transition")
      -- the old handlers answer
      for _, key in ipairs { "idle", "legacy", "legacy_too", "timed", "working" } do
        local state, v = outcome(c[key]:query())
        assert.equal("succeeded", state)
        assert.equal("v1 " .. S.expected[key], v)
      end
      -- the postponed calls are still queued, and the job still runs
      assert.equal(2, c.waiting:postponed())
      local got = {}
      for i, d in ipairs(S.queued) do
        assert.equal("pending", d:state())
        got[i] = answers(d)
      end
      local job = P.jobs[c.working.id]
      assert.equal("pending", job:state())
      -- the failure was logged and recorded
      assert.is_true(#logged("error", S.file.name) >= 1, "the failed reload was not logged at error")
      local st = modal.stats().machines[S.file.name]
      assert.equal(1, st.version)
      assert.is_false(st.last_reload.ok)
      assert.equal(tostring(err), st.last_reload.error)
      -- and the old definition drives on: old transitions, old timeout, queued calls answered once
      c.legacy:fire("back")
      assert.equal("idle", c.legacy.state)
      c.waiting:fire("release")
      for _, a in ipairs(got) do
        assert.equal(1, a.n)
        assert.equal("v1 idle", a.results[1])
      end
      job:callback("result")
      assert.equal("worked", c.working.state)
      S.clock:advance(0.049)
      assert.equal("timed", c.timed.state)
      S.clock:advance(0.001)
      assert.equal("expired", c.timed.state)
    end

    local function without_legacy(migrate)
      return function(name, P)
        return scenario_def(name, 2, P, { without_legacy = true, migrate = migrate })
      end
    end

    local rejections = {
      { "when the file no longer exists",
        prepare = function(S) os.remove(S.file.path) end,
        expect = function(S) return { S.file.path } end },
      { "when the file has a syntax error",
        prepare = function(S) S.file.source("return {\n  name = ,\n}\n") end,
        expect = function(S) return { S.file.path, ":2:" } end },
      { "when the file is precompiled (a corrupt binary chunk would crash Lua)",
        prepare = function(S)
          S.file.source(string.dump(function() return {} end))
        end,
        expect = function(S) return { S.file.path, "precompiled (binary) chunk" } end },
      { "when the file raises while it runs", by_name = true,
        prepare = function(S) S.file.source("error('definition exploded')\n") end,
        expect = function() return { "definition exploded" } end },
      { "when the file returns no definition",
        prepare = function(S) S.file.source("return 42\n") end,
        expect = function(S) return { S.file.path } end },
      { "when the new definition fails validation (every problem reported)",
        variant = function(name, P)
          local d = scenario_def(name, 2, P)
          d.states.idle.on.go = "legcy"
          d.states.timed.on.timeout = "expird"
          return d
        end,
        expect = function(S)
          return { S.file.path, "states.idle.on.go", "'legcy'", "states.timed.on.timeout", "'expird'" }
        end },
      { "when the new definition changes the name",
        variant = function(name, P) return scenario_def(name .. "_renamed", 2, P) end,
        expect = function(S) return { S.file.name, S.file.name .. "_renamed" } end },
      { "when an instance is in a removed state and there is no migrate", by_name = true,
        variant = without_legacy(nil),
        expect = function() return { "legacy", "migrate" } end },
      { "when migrate raises",
        variant = without_legacy(function() error("migrate exploded") end),
        expect = function() return { "migrate exploded", "legacy" } end },
      { "when migrate returns a state the new definition does not have",
        variant = without_legacy(function() return "nowhere" end),
        expect = function() return { "nowhere", "legacy" } end },
      { "when migrate returns the removed state itself",
        variant = without_legacy(function(_, old_state) return old_state end),
        expect = function() return { "legacy" } end },
      { "when migrate returns nothing",
        variant = without_legacy(function() end),
        expect = function() return { "legacy" } end },
      { "when migrate places one instance and fails for the next (planning changed nothing)",
        variant = function(name, P)
          local calls = 0
          return scenario_def(name, 2, P, { without_legacy = true, migrate = function()
            calls = calls + 1
            if calls == 1 then return "idle" end
            error("second migrate failed")
          end })
        end,
        expect = function() return { "second migrate failed", "legacy" } end },
    }

    for _, case in ipairs(rejections) do
      it(case[1], function()
        local S = scenario(case.variant or function() error("version 2 is not built here") end)
        if case.prepare then case.prepare(S) else S.file.set(2) end
        local before = S.file.runs()
        local ok, err = modal.reload(case.by_name and S.file.name or S.file.path)
        assert.is_nil(ok)
        assert_mentions(err, case.expect(S))
        if case.variant then assert.equal(before + 1, S.file.runs()) end
        assert_unchanged(S, err)
      end)
    end

    it("and the old definition keeps serving until a good version is reloaded", function()
      local S = scenario(function(name, P)
        local d = scenario_def(name, 2, P)
        d.states.idle.on.go = "legcy"
        return d
      end)
      S.file.set(2)
      assert.is_nil((modal.reload(S.file.path)))
      builders[S.file.name] = function(version, name) return scenario_def(name, version, S.P) end
      S.file.set(3)
      support.reloaded(modal.reload(S.file.path))
      assert.equal(3, S.M.version)
      assert.equal("v3 idle", select(2, outcome(S.c.idle:query())))
      S.c.waiting:fire("release")
      for _, d in ipairs(S.queued) do assert.equal("succeeded", (outcome(d))) end
      S.P.jobs[S.c.working.id]:callback()
      S.clock:advance(0.05)
      assert.equal("expired", S.c.timed.state)
    end)
  end)

  describe("modal.reload from inside an instance", function()
    -- A machine loaded from a file whose `context` calls attempt(m, ...): enter, exit, action,
    -- guard, run or timeout function of a transition a -> b (or, for "observer", an
    -- on_transition observer).
    local function host_def(name, version, context, attempt)
      local a, b = { on = { go = "b" } }, { on = { back = "a" } }
      if context == "enter" then b.enter = attempt
      elseif context == "exit" then a.exit = attempt
      elseif context == "action" then a.on.go = { to = "b", action = attempt }
      elseif context == "guard" then
        a.on.go = { to = "b", guard = function(...) attempt(...); return true end }
      elseif context == "run" then
        b.run = function(...) attempt(...); return "ran" end
        b.on.done, b.on.error = "a", "a"
      elseif context == "timeout function" then
        b.timeout = function(...) attempt(...); return nil end
        b.on.timeout = "a"
      end
      return { name = name, version = version, initial = "a", methods = {}, states = { a = a, b = b } }
    end

    for _, context in ipairs { "enter", "exit", "action", "guard", "run", "timeout function", "observer" } do
      it("raises in a " .. context .. ", for its own machine and for another; nothing is reloaded", function()
        local other = def_file(simple)
        other.set(1)
        local OM = modal.load(other.path)
        local own
        local tries = {}
        local function attempt()
          for _, path in ipairs { own.path, other.path } do
            local ok, r1, r2 = pcall(modal.reload, path)
            tries[#tries + 1] = { ok = ok, r1 = r1, r2 = r2 }
          end
        end
        own = def_file(function(version, name) return host_def(name, version, context, attempt) end)
        own.set(1)
        local M = modal.load(own.path)
        own.set(2)
        other.set(2)
        local c = M:new()
        if context == "observer" then c:on_transition(attempt) end
        c:fire("go")
        assert.equal(2, #tries)
        for _, t in ipairs(tries) do
          assert.is_false(t.ok, "modal.reload returned instead of raising")
        end
        assert.equal(1, M.version)
        assert.equal(1, OM.version)
        support.reloaded(modal.reload(other.path))       -- from outside it is allowed
        assert.equal(2, OM.version)
        support.reloaded(modal.reload(own.path))
        assert.equal(2, M.version)
        assert.is_true(run_loop(1))
      end)
    end

    it("raises in a method handler, for its own machine and for another, naming the way out", function()
      local other = def_file(simple)
      other.set(1)
      local OM = modal.load(other.path)
      local own = def_file(function(version, name)
        return {
          name = name, version = version, initial = "a", methods = { "query", "reload" },
          states = { a = {
            query = function() return "v" .. version end,
            reload = function(_, path) return { pcall(modal.reload, path) } end,
          } },
        }
      end)
      own.set(1)
      local M = modal.load(own.path)
      own.set(2)
      other.set(2)
      local c = M:new()
      for _, path in ipairs { other.path, own.path } do
        local a = answers(c:reload(path))
        assert.equal(1, a.n)
        assert.is_false(a.results[1][1])
        assert.matches("modal.call_later(0, modal.reload", tostring(a.results[1][2]), 1, true)
      end
      assert.equal(1, OM.version)
      assert.equal(1, M.version)
      assert.equal("v1", select(2, outcome(c:query())))
      local done = {}
      modal.call_later(0, function()                -- the way out the message names
        done[1] = modal.reload(own.path)
      end)
      assert.is_true(run_loop(1))
      assert.equal(M, done[1])
      assert.equal(2, M.version)
      assert.equal("v2", select(2, outcome(c:query())))
    end)

    it("raises in a handler that fired inputs first: the queued inputs still run, as before", function()
      local own = def_file(function(version, name)
        local a = { on = { step = "b" }, kick = function(m, path)
          m:fire("step")                     -- queued: the handler runs
          return { pcall(modal.reload, path) }
        end }
        local states = { a = a, b = {}, gone = {} }
        if version == 2 then
          a.on.aaa, a.on.abc = "gone", "gone"
        end
        return { name = name, version = version, initial = "a", methods = { "kick" },
                 defaults = { kick = function() return "no" end }, states = states }
      end)
      own.set(1)
      local M = modal.load(own.path)
      local c = M:new()
      own.set(2)
      local a = answers(c:kick(own.path))
      assert.is_false(a.results[1][1])
      assert.equal(1, M.version)
      assert.equal("b", c.state)             -- "step" was handled after the handler
    end)

    it("is allowed in a timer callback and in a callback of a Deferred fired by the loop", function()
      local file = def_file(simple)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      local results = {}
      modal.call_later(0.01, function()
        file.set(2)
        results[1] = { modal.reload(file.path) }
        modal.sleep(0.01):add_callback(function()
          file.set(3)
          results[2] = { modal.reload(file.name) }
        end)
      end)
      assert.is_true(run_loop(2))
      assert.same({ M }, results[1])
      assert.same({ M }, results[2])
      assert.equal(3, M.version)
      assert.equal("v3 a", select(2, outcome(c:query())))
    end)
  end)

  describe("a successful reload", function()
    it("updates M in place: version, handlers and initial state, for old and new instances", function()
      local P = { enter = counter(), exit = counter(), seen = counter() }
      local file = def_file(function(version, name)
        local d = simple(version, name)
        d.states.a.enter, d.states.a.exit = P.enter.fn, P.exit.fn
        d.states.b.enter, d.states.b.exit = P.enter.fn, P.exit.fn
        if version == 2 then
          d.initial = "b"
          d.states.c = { on = { back = "a" } }
          d.states.b.on.onward = "c"
        end
        return d
      end)
      file.set(1)
      local M = modal.load(file.path)
      local old_a, old_b = M:new(), M:new()
      old_b:fire("go")
      old_a:on_transition(P.seen.fn)
      old_b:on_transition(P.seen.fn)
      local enters, exits = P.enter.n, P.exit.n
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.equal(2, M.version)
      assert.equal(file.name, M.name)
      assert.equal(file.path, modal.loaded()[file.name])
      -- instances that stay: same state, no hooks, no transition seen
      assert.equal("a", old_a.state)
      assert.equal("b", old_b.state)
      assert.equal(enters, P.enter.n)
      assert.equal(exits, P.exit.n)
      assert.equal(0, P.seen.n)
      -- old instances run the new handlers and transitions
      assert.is_true(rawequal(M, old_a.machine))
      assert.is_true(rawequal(M, old_b.machine))
      assert.equal("v2 a", select(2, outcome(old_a:query())))
      assert.equal("v2 b", select(2, outcome(old_b:query())))
      old_b:fire("onward")
      assert.equal("c", old_b.state)
      -- M:new makes new-version instances
      local new = M:new()
      assert.is_true(rawequal(M, new.machine))
      assert.equal("b", new.state)
      assert.equal("v2 b", select(2, outcome(new:query())))
      -- and loading the path again still returns M without running the file
      local ran = file.runs()
      assert.is_true(rawequal(M, modal.load(file.path)))
      assert.equal(ran, file.runs())
    end)

    it("resolves a when() made before it once the state is reached after it", function()
      local file = def_file(simple)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      local reached = answers(c:when("b"))
      local seen = counter()
      c:on_transition(seen.fn)
      file.set(2)                                      -- renumbers the states
      support.reloaded(modal.reload(file.path))
      c:fire("go")
      assert.equal("b", c.state)
      assert.equal(1, seen.n)
      assert.equal(1, reached.n)
      assert.is_true(rawequal(c, reached.results[1]))
    end)

    it("works by name as well as by path, and again and again", function()
      local file = def_file(simple)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      for version = 2, 6 do
        file.set(version)
        support.reloaded(modal.reload(version % 2 == 0 and file.name or file.path))
        assert.equal(version, M.version)
        assert.equal("v" .. version .. " a", select(2, outcome(c:query())))
      end
      assert.equal(6, file.runs())
    end)

    it("gives old instances a method the new version adds", function()
      local file = def_file(function(version, name)
        local d = simple(version, name)
        if version == 2 then
          d.methods = { "query", "ping" }
          d.defaults.ping = function() return "pong" end
        end
        return d
      end)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      file.set(2)
      support.reloaded(modal.reload(file.path))
      local state, v = outcome(c:ping())
      assert.equal("succeeded", state)
      assert.equal("pong", v)
    end)

    it("needs no migrate for a removed state no instance is in", function()
      local file = def_file(function(version, name)
        local d = simple(version, name)
        if version == 2 then
          d.states.b = nil
          d.states.a.on = { go = "a" }
        end
        return d
      end)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.equal("a", c.state)
      assert.equal(2, M.version)
    end)

    it("logs no error and records the reload in modal.stats()", function()
      local file = def_file(simple)
      file.set(1)
      modal.load(file.path)
      local before = modal.stats().machines[file.name].reloads
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.equal(0, #logged("error", file.name))
      local st = modal.stats().machines[file.name]
      assert.equal(2, st.version)
      assert.equal(before + 1, st.reloads)
      assert.is_true(st.last_reload.ok)
      assert.is_number(st.last_reload.at)
    end)
  end)

  describe("an instance that stays in its state", function()
    it("keeps its armed timeout's deadline; the expiry goes to the new transition", function()
      local asked = counter(function() return 1 end)
      local file = def_file(function(version, name)
        return {
          name = name, version = version, initial = "wait", methods = {},
          states = pad {
            wait = { timeout = version == 1 and 0.2 or asked.fn,
                     on = { timeout = version == 1 and "old_after" or "new_after" } },
            old_after = {}, new_after = {},
          },
        }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local clock = support.clock()
      local c, fired_at, reloaded = M:new(), nil, nil
      c:on_transition(function() fired_at = modal.now() end)
      modal.call_later(0.15, function()
        file.set(2)
        reloaded = modal.reload(file.path)             -- from a timer: allowed
      end)
      clock:advance(0.15)
      support.reloaded(reloaded)
      assert.equal("wait", c.state)
      clock:advance(0.05)
      assert.equal(0, asked.n)                         -- the new timeout function was not asked
      assert.equal("new_after", c.state)
      assert.equal(0.2, fired_at)                      -- the deadline armed at entry
    end)

    it("has its timeout cancelled when the new state has none", function()
      local file = def_file(function(version, name)
        local wait = version == 1 and { timeout = 0.5, on = { timeout = "after" } }
                     or { on = { go = "after" } }
        return { name = name, version = version, initial = "wait", methods = {},
                 states = { wait = wait, after = {} } }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local clock = support.clock()
      local c = M:new()
      assert.same({ 0.5 }, clock:pending())
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.same({}, clock:pending())                 -- the old timeout is gone
      clock:advance(1)
      assert.equal("wait", c.state)
    end)

    it("keeps its running job, whose done and error go to the new transitions", function()
      local jobs, started = {}, { 0, 0 }
      local got = counter()
      local file = def_file(function(version, name)
        local work = {
          run = function(m)
            started[version] = started[version] + 1
            local d = modal.deferred()
            jobs[m.id] = d
            return d
          end,
        }
        if version == 1 then
          work.on = { done = "old_done", error = "old_failed" }
        else
          work.on = { done = { to = "new_done", action = got.fn },
                      error = { to = "new_failed", action = got.fn } }
        end
        local states = { work = work, old_done = {}, old_failed = {}, new_done = {}, new_failed = {} }
        return { name = name, version = version, initial = "work", methods = {},
                 states = version == 2 and pad(states) or states }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local ok_c, err_c = M:new(), M:new()
      local ok_job, err_job = jobs[ok_c.id], jobs[err_c.id]
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.same({ 2, 0 }, started)                  -- no new job was started
      assert.equal("pending", ok_job:state())
      assert.equal("pending", err_job:state())
      assert.equal("work", ok_c.state)
      ok_job:callback(42)
      assert.equal("new_done", ok_c.state)
      assert.equal(42, got.args[1][2])
      local f = modal.failure("error", "job failed")
      err_job:errback(f)
      assert.equal("new_failed", err_c.state)
      assert.is_true(rawequal(f, got.args[2][2]))
    end)

    it("has its job's done dropped, at debug, when the new state no longer takes it", function()
      local jobs = {}
      local file = def_file(function(version, name)
        local work
        if version == 1 then
          work = { run = function(m) jobs[m.id] = modal.deferred(); return jobs[m.id] end,
                   on = { done = "after", error = "after" } }
        else
          work = { on = { go = "after" } }
        end
        return { name = name, version = version, initial = "work", methods = {},
                 states = { work = work, after = {} } }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      file.set(2)
      support.reloaded(modal.reload(file.path))
      jobs[c.id]:callback("late")
      assert.is_true(run_loop(1))
      assert.equal("work", c.state)
      local dropped = 0
      for _, line in ipairs(logged("debug", file.name)) do
        if line.fields.input == "done" or tostring(line.message):find("done", 1, true) then
          dropped = dropped + 1
        end
      end
      assert.is_true(dropped >= 1, "no debug line for the dropped 'done'")
      assert.equal(0, #logged("error", file.name))
      assert.equal(0, #logged("warn", file.name))
    end)
  end)

  describe("an instance whose state was removed", function()
    -- Version 1: idle -> legacy (timeout 0.05 and a job; modern exists but is not reached).
    -- Version 2: no legacy; migrate sends it to modern, whose enter, run and timeout (0.3)
    -- are recorded.
    local function migration(P)
      return def_file(function(version, name)
        local states = {
          idle = { on = { go = "legacy" } },
          modern = { enter = P.enter.fn,
                     run = function() P.runs = P.runs + 1; return modal.deferred() end,
                     timeout = 0.3, on = { timeout = "after", done = "after", error = "after" } },
          after = {},
        }
        if version == 1 then
          states.legacy = { exit = P.exit.fn, timeout = 0.05,
                            run = function(m) P.jobs[m.id] = modal.deferred(); return P.jobs[m.id] end,
                            on = { timeout = "expired", done = "expired", error = "expired" } }
          states.expired = {}
          states.idle.on.go = "legacy"
        else
          states.idle.on.go = "modern"
          pad(states)
        end
        return {
          name = name, version = version, initial = "idle", methods = { "query" },
          defaults = { query = function(m) return "v" .. version .. " " .. m.state end },
          migrate = version == 2 and P.migrate.fn or nil,
          states = states,
        }
      end)
    end

    it("is placed by migrate(m, old_state, old_version), called while nothing has changed", function()
      local P = { enter = counter(), exit = counter(), runs = 0, jobs = {} }
      local during = {}
      local M
      P.migrate = counter(function(m)
        during[#during + 1] = { state = m.state, version = M.version, machine_version = m.machine.version }
        return "modern"
      end)
      local file = migration(P)
      file.set(1)
      M = modal.load(file.path)
      local clock = support.clock()
      local stays, moves = M:new(), M:new()
      moves:fire("go")
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.equal(1, P.migrate.n)                     -- not called for the instance that stays
      local args = P.migrate.args[1]
      assert.is_true(rawequal(moves, args[1]))
      assert.equal("legacy", args[2])
      assert.equal(1, args[3])
      assert.same({ state = "legacy", version = 1, machine_version = 1 }, during[1])
      assert.equal("idle", stays.state)
      assert.equal("modern", moves.state)
      clock:advance(0.3)
      assert.equal("after", moves.state)
    end)

    it("has its old timer and job cancelled and its old exit skipped, and enters the new state", function()
      local P = { enter = counter(), exit = counter(), runs = 0, jobs = {} }
      P.migrate = counter(function() return "modern" end)
      local file = migration(P)
      file.set(1)
      local M = modal.load(file.path)
      local clock = support.clock()
      local c = M:new()
      c:fire("go")
      local job = P.jobs[c.id]
      local seen = counter()
      c:on_transition(seen.fn)
      local reached = answers(c:when("modern"))
      assert.equal(0, reached.n)
      file.set(2)
      clock:advance(0.01)                              -- the new timeout counts from the switch
      support.reloaded(modal.reload(file.path))
      assert.equal("modern", c.state)
      assert.equal(0, P.exit.n, "the old exit ran")
      local state, f = outcome(job)
      assert.equal("failed", state)
      assert.equal("cancelled", f.kind)
      assert.equal(1, P.enter.n)
      assert.is_true(rawequal(c, P.enter.args[1][1]))
      assert.equal("legacy", P.enter.args[1][2])
      assert.equal("reload", P.enter.args[1][3])
      assert.equal(1, P.runs)                          -- the new state's run started
      assert.equal(1, seen.n)
      assert.is_true(rawequal(c, seen.args[1][1]))
      assert.same({ "legacy", "modern", "reload" }, { seen.args[1][2], seen.args[1][3], seen.args[1][4] })
      assert.equal(1, reached.n)
      assert.is_true(rawequal(c, reached.results[1]))
      assert.equal("v2 modern", select(2, outcome(c:query())))
      -- the old 0.05 s timeout is gone; the new state's 0.3 s one takes it to after
      assert.same({ 0.31 }, clock:pending())
      clock:advance(0.299)
      assert.equal("modern", c.state, "the old timeout fired into the new state")
      clock:advance(0.001)
      assert.equal("after", c.state)
      assert.equal(2, seen.n)
      assert.same({ "modern", "after", "timeout" }, { seen.args[2][2], seen.args[2][3], seen.args[2][4] })
    end)

    it("may be sent by migrate to different states, each entered with input 'reload'", function()
      local entered = {}
      local file = def_file(function(version, name)
        local record = function(m, from, input) entered[#entered + 1] = { m.id, from, input, m.state } end
        local states = { idle = { on = { one = "east", two = "west" } },
                         north = { enter = record, on = { back = "idle" } },
                         south = { enter = record, on = { back = "idle" } } }
        if version == 1 then
          states.east, states.west = { on = { back = "idle" } }, { on = { back = "idle" } }
        else
          states.idle.on = { one = "north", two = "south" }
        end
        return {
          name = name, version = version, initial = "idle", methods = {},
          migrate = function(_, old) return ({ east = "north", west = "south" })[old] end,
          states = states,
        }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local e, w = M:new(), M:new()
      e:fire("one")
      w:fire("two")
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.equal("north", e.state)
      assert.equal("south", w.state)
      table.sort(entered, function(x, y) return x[1] < y[1] end)
      assert.same({ { e.id, "east", "reload", "north" }, { w.id, "west", "reload", "south" } }, entered)
    end)
  end)

  describe("postponed calls", function()
    -- Version 1: waiting postpones query, release -> ready. Version 2's waiting comes from
    -- `waiting2` (its query handler gets (m, x)).
    local function queue_file(waiting2, max1, max2)
      return def_file(function(version, name)
        local waiting = version == 1 and { query = "postpone", on = { release = "ready" } }
                        or waiting2
        return {
          name = name, version = version, initial = "waiting", methods = { "query" },
          max_postponed = version == 1 and max1 or max2,
          states = pad({
            waiting = waiting,
            ready = { query = function(_, x) return "v" .. version .. " ready " .. x end,
                      on = { hold = "waiting" } },
          }, { query = function() end }),
        }
      end)
    end

    it("are retried once after the switch, for every instance, and answered by the new handlers", function()
      local tries = counter()
      local file = queue_file({ query = function(_, x) tries.fn(x); return "v2 waiting " .. x end,
                                on = { release = "ready" } })
      file.set(1)
      local M = modal.load(file.path)
      local c1, c2 = M:new(), M:new()
      local got, order = {}, {}
      for i = 1, 3 do
        for _, c in ipairs { c1, c2 } do
          local key = c.id .. ":" .. i
          local d = c:query(key)
          d:add_callback(function(v) order[#order + 1] = v; return v end)
          got[key] = answers(d)
        end
      end
      assert.equal(3, c1:postponed())
      assert.equal(3, c2:postponed())
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.is_true(run_loop(1))
      assert.equal(0, c1:postponed())
      assert.equal(0, c2:postponed())
      assert.equal(6, tries.n)                         -- each of the 6 queued calls, once
      for key, a in pairs(got) do
        assert.equal(1, a.n)
        assert.equal("v2 waiting " .. key, a.results[1])
      end
      -- oldest first, per instance
      local per = {}
      for _, v in ipairs(order) do
        local id, i = v:match("v2 waiting (%d+):(%d+)")
        per[id] = per[id] or {}
        per[id][#per[id] + 1] = tonumber(i)
      end
      for _, list in pairs(per) do assert.same({ 1, 2, 3 }, list) end
    end)

    it("stay queued, in order, when the new state still postpones them (retried once)", function()
      local tries = counter()
      local file = queue_file({ query = function(m, x) tries.fn(x); return m:postpone() end,
                                on = { release = "ready" } })
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      local order, got = {}, {}
      for i = 1, 3 do
        local d = c:query(i)
        d:add_callback(function(v) order[#order + 1] = v; return v end)
        got[i] = answers(d)
      end
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.is_true(run_loop(1))
      assert.equal(3, c:postponed())
      assert.same({ 1, 2, 3 }, { tries.args[1][1], tries.args[2][1], tries.args[3][1] })
      assert.equal(3, tries.n)
      for i = 1, 3 do assert.equal(0, got[i].n) end
      c:fire("release")
      assert.same({ "v2 ready 1", "v2 ready 2", "v2 ready 3" }, order)
      for i = 1, 3 do assert.equal(1, got[i].n) end
      assert.equal(3, tries.n)
    end)

    it("of a migrated instance are retried once in its new state", function()
      local tries = counter()
      local file = def_file(function(version, name)
        local states = { ready = { query = function(_, x) tries.fn(x); return "v" .. version .. " " .. x end,
                                   on = { hold = version == 1 and "holding" or "ready" } } }
        if version == 1 then
          states.holding = { query = "postpone", on = { release = "ready" } }
        end
        return { name = name, version = version, initial = "ready", methods = { "query" },
                 migrate = function() return "ready" end, states = states }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      c:fire("hold")
      local got = { answers(c:query("a")), answers(c:query("b")) }
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.is_true(run_loop(1))
      assert.equal("ready", c.state)
      assert.equal(2, tries.n)
      assert.same({ 1, 1 }, { got[1].n, got[2].n })
      assert.same({ "v2 a", "v2 b" }, { got[1].results[1], got[2].results[1] })
    end)

    it("are kept when max_postponed is lowered; new ones fail 'overloaded' until below it", function()
      local file = queue_file({ query = "postpone", on = { release = "ready" } }, 10, 2)
      file.set(1)
      local M = modal.load(file.path)
      local c = M:new()
      local queued = {}
      for i = 1, 5 do queued[i] = c:query(i) end
      file.set(2)
      support.reloaded(modal.reload(file.path))
      assert.is_true(run_loop(1))
      assert.equal(5, c:postponed())
      for i = 1, 5 do assert.equal("pending", queued[i]:state()) end
      local state, f = outcome(c:query("over"))
      assert.equal("failed", state)
      assert.equal("overloaded", f.kind)
      assert.equal(5, c:postponed())
      for i = 1, 4 do queued[i]:cancel() end
      assert.equal(1, c:postponed())
      local sixth = c:query(6)                         -- 1 < 2: queued
      assert.equal("pending", sixth:state())
      assert.equal(2, c:postponed())
      state, f = outcome(c:query("over again"))
      assert.equal("failed", state)
      assert.equal("overloaded", f.kind)
      c:fire("release")
      assert.equal("v2 ready 5", select(2, outcome(queued[5])))
      assert.equal("v2 ready 6", select(2, outcome(sixth)))
    end)
  end)

  describe("modal.stats()", function()
    it("counts instances per state, postponed calls, transitions and reloads of a loaded machine", function()
      local file = def_file(function(version, name)
        return {
          name = name, version = version, initial = "a", methods = { "query" },
          states = { a = { query = "postpone", on = { go = "b" } },
                     b = { query = function() return "b" end, on = { back = "a" } } },
        }
      end)
      file.set(1)
      local M = modal.load(file.path)
      local c1, c2, c3 = M:new(), M:new(), M:new()
      c1:query(); c1:query(); c2:query()
      local before = modal.stats().machines[file.name]
      c3:fire("go")
      c3:fire("back")
      c3:fire("go")
      local st = modal.stats().machines[file.name]
      assert.equal(file.name, st.name)
      assert.equal(1, st.version)
      assert.equal(file.path, st.path)
      assert.equal(3, st.instances)
      assert.equal(2, st.states.a)
      assert.equal(1, st.states.b)
      assert.equal(3, st.postponed)
      assert.equal(3, st.transitions - before.transitions)
      assert.equal(0, st.reloads)
      -- a good reload, then a bad one
      file.set(2)
      support.reloaded(modal.reload(file.path))
      st = modal.stats().machines[file.name]
      assert.equal(2, st.version)
      assert.equal(1, st.reloads)
      assert.is_true(st.last_reload.ok)
      assert.is_number(st.last_reload.at)
      file.source("return {\n")
      assert.is_nil((modal.reload(file.path)))
      st = modal.stats().machines[file.name]
      assert.equal(2, st.version)
      assert.is_false(st.last_reload.ok)
      assert.matches(file.path, st.last_reload.error, 1, true)
      assert.is_number(st.last_reload.at)
      assert.equal(3, st.postponed)
      assert.equal(3, st.instances)
      local _ = { c1, c2, c3 }
    end)
  end)
end)
