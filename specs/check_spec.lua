-- specs/check_spec.lua — validation of machine definitions (doc/machines.md, "Validation")
-- and `modal check`: every fixture of specs/fixtures/invalid/ through modal.check
-- and through the cli, matched against its `-- expect: path: fragment` lines; then each rule,
-- unhappy paths first. Pure Lua: modal.cli captures modal.machine while a fixture runs, so
-- the C driver plays no part.
local INVALID = "specs/fixtures/invalid/"
local VALID = "specs/fixtures/valid/"

local function lua_files(dir)
  local p = assert(io.popen("ls " .. dir .. " 2>/dev/null"))
  local list = {}
  for name in p:lines() do
    if name:match("%.lua$") then list[#list + 1] = dir .. name end
  end
  p:close()
  table.sort(list)
  return list
end

-- The `-- expect:` lines that open a fixture.
local function expectations(file)
  local list = {}
  for line in io.lines(file) do
    local e = line:match("^%-%- expect: (.*)$")
    if not e then break end
    list[#list + 1] = e
  end
  return list
end

-- "path: message" split at the first ": " outside brackets, parentheses and quotes.
local function split(s)
  local depth, quoted = 0, false
  for i = 1, #s - 1 do
    local c = s:sub(i, i)
    if quoted then
      if c == '"' then quoted = false end
    elseif c == '"' then quoted = true
    elseif c == "[" or c == "(" then depth = depth + 1
    elseif c == "]" or c == ")" then depth = depth - 1
    elseif c == ":" and depth == 0 and s:sub(i + 1, i + 1) == " " then
      return s:sub(1, i - 1), s:sub(i + 2)
    end
  end
  return nil, s
end

-- True when the problem line "path: message" answers the expectation "path: fragment". The
-- expectation may leave out the "(file:line)" of a function value.
local function answers(line, expectation)
  local path, fragment = split(expectation)
  local lpath, message = split(line)
  if not path or not lpath then return false end
  if lpath ~= path and lpath:sub(1, #path + 2) ~= path .. " (" then return false end
  return message:find(fragment, 1, true) ~= nil
end

-- An output sink for cli.main.
local function buffer()
  local b = { parts = {} }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:text() return table.concat(self.parts) end
  function b:lines()
    local t = {}
    for l in self:text():gmatch("[^\n]+") do t[#t + 1] = l end
    return t
  end
  return b
end

local function run_cli(command, args)
  local out, err = buffer(), buffer()
  local status = require("modal.cli").main(command, args, out, err)
  return status, out, err
end

local function write_file(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- The problems of check.check(def) as lines, warnings as "path: warning: message".
local function problem_lines(def)
  local ok, errors, warnings = require("modal.check").check(def)
  local lines = {}
  for _, e in ipairs(errors) do lines[#lines + 1] = e end
  for _, w in ipairs(warnings) do
    local path, message = split(w)
    lines[#lines + 1] = path .. ": warning: " .. message
  end
  return ok, lines, errors, warnings
end

-- A small valid machine to break one piece at a time.
local function door()
  return {
    name = "door", initial = "closed",
    methods = { "open", "close" },
    states = {
      closed = {
        open = function(m) m:fire("open") end,
        close = function() end,
        on = { open = "opened" },
      },
      opened = {
        open = function() end,
        close = function(m) m:fire("close") end,
        on = { close = "closed" },
      },
    },
  }
end

local function has(list, text)
  for _, v in ipairs(list) do
    if v == text then return true end
  end
  return false
end

describe("modal.check", function()
  local check

  before_each(function()
    package.loaded["modal.check"] = nil
    check = require "modal.check"
  end)

  describe("the fixture catalogue", function()
    local invalid = lua_files(INVALID)

    it("holds at least 32 bad definitions, each with an expectation", function()
      assert.is_true(#invalid >= 32, #invalid .. " fixtures")
      for _, file in ipairs(invalid) do
        assert.is_true(#expectations(file) > 0, file .. " has no '-- expect:' line")
      end
    end)

    for _, file in ipairs(invalid) do
      it("reports " .. file .. " through modal.check, and nothing else", function()
        local expected = expectations(file)
        local loaded, def = require("modal.cli").load(file)
        assert.is_true(loaded, tostring(def))
        local ok, lines, errors = problem_lines(def)
        assert.is_false(ok)
        for _, e in ipairs(expected) do
          local found = false
          for _, l in ipairs(lines) do found = found or answers(l, e) end
          assert.is_true(found, "expected '" .. e .. "' among:\n" .. table.concat(lines, "\n"))
        end
        for _, l in ipairs(errors) do
          local found = false
          for _, e in ipairs(expected) do found = found or answers(l, e) end
          assert.is_true(found, "unexpected error: " .. l)
        end
      end)

      it("reports " .. file .. " through `modal check`, with status 1", function()
        local status, out, err = run_cli("check", { file })
        assert.are.equal(1, status)
        assert.are.equal("", err:text())
        local lines = {}
        for _, l in ipairs(out:lines()) do
          assert.are.equal(file .. ": ", l:sub(1, #file + 2))
          lines[#lines + 1] = l:sub(#file + 3)
        end
        for _, e in ipairs(expectations(file)) do
          local found = false
          for _, l in ipairs(lines) do found = found or answers(l, e) end
          assert.is_true(found, "expected '" .. e .. "' in:\n" .. out:text())
        end
      end)
    end

    for _, file in ipairs(lua_files(VALID)) do
      it("finds nothing wrong with " .. file, function()
        local loaded, def = require("modal.cli").load(file)
        assert.is_true(loaded, tostring(def))
        local ok, errors, warnings = check.check(def)
        assert.is_true(ok)
        assert.are.same({}, errors)
        assert.are.same({}, warnings)
        local status, out = run_cli("check", { file })
        assert.are.equal(0, status)
        assert.are.equal(file .. ": ok\n", out:text())
      end)
    end
  end)

  describe("check()", function()
    it("rejects a definition that is not a table, with one error", function()
      for _, v in ipairs { 42, "door", true, print } do
        local ok, errors, warnings = check.check(v)
        assert.is_false(ok)
        assert.are.equal(1, #errors)
        assert.matches("^definition: expected a table, got ", errors[1])
        assert.are.same({}, warnings)
      end
      assert.are.same({ "definition: expected a table, got nil" }, select(2, check.check(nil)))
      assert.are.same({ "definition: expected a table, got 'door'" },
        select(2, check.check("door")))
    end)

    it("reports every missing machine key of an empty table at once", function()
      local ok, errors, warnings = check.check {}
      assert.is_false(ok)
      assert.are.same({
        "name: missing (a string naming the machine)",
        "methods: missing (a list of method names, may be empty)",
        "states: missing (a table of states by name)",
        "initial: missing (the name of the first state)",
      }, errors)
      assert.are.same({}, warnings)
    end)

    it("never raises, whatever the input: cycles, hostile metatables, junk keys", function()
      local hostile = setmetatable({}, {
        __index = function() error("index") end, __newindex = function() error("newindex") end,
        __pairs = function() error("pairs") end, __len = function() error("len") end,
        __eq = function() error("eq") end, __tostring = function() error("tostring") end,
        __call = function() error("call") end, __lt = function() error("lt") end,
      })
      local cyclic = {}
      cyclic.name, cyclic.initial, cyclic.methods, cyclic.states = cyclic, cyclic, cyclic, cyclic
      cyclic[cyclic] = cyclic
      local inputs = {
        hostile, cyclic,
        { name = hostile, initial = hostile, methods = hostile, states = hostile,
          defaults = hostile, inputs = hostile, ignore = hostile, migrate = hostile },
        { name = "x", initial = "a", methods = { hostile, 1.5, "ok" },
          states = { a = { on = { [hostile] = hostile, go = { hostile, { to = hostile } } },
                           [hostile] = 1, [2.5] = true, timeout = 0 / 0, ok = hostile } } },
        { name = "x", initial = "a", methods = {}, states = { [true] = {}, a = hostile,
          [print] = print, [string.rep("x", 10000)] = {} } },
        { [1] = 1, [2] = 2, [10] = "hole", [-1] = 0, [math.huge] = 1, [math.mininteger] = 2 },
        setmetatable({ name = "x" }, { __index = { initial = "a" } }),
      }
      for i, def in ipairs(inputs) do
        local ok, errors, warnings
        assert.has_no.errors(function() ok, errors, warnings = check.check(def) end, "input " .. i)
        assert.is_false(ok, "input " .. i)
        assert.is_true(#errors > 0)
        for _, e in ipairs(errors) do
          assert.are.equal("string", type(e))
          assert.is_nil(e:find("\n"), e)             -- one line per problem
        end
        assert.are.equal("table", type(warnings))
      end
    end)

    it("reports every problem at once, each with its path", function()
      local def = door()
      def.name = 7                                          -- 1
      def.version = "2"                                     -- 2
      def.methods[3] = "run"                                -- 3
      def.max_postpone = 5                                  -- 4
      def.states.closed.on.open = "opend"                   -- 5
      def.states.opened.close = nil                         -- 6
      def.states.opened.timeout = 5                         -- 7 (no on.timeout)
      def.states.opened.colse = function() end              -- 8
      def.states.broken = { final = true, open = "postpone", close = function() end } -- 9
      local ok, errors = check.check(def)
      assert.is_false(ok)
      local paths = {}
      for _, e in ipairs(errors) do paths[#paths + 1] = (e:gsub(" %(.-%)", ""):match("^(.-): ")) end
      table.sort(paths)
      assert.are.same({ "max_postpone", "methods[3]", "name", "states.broken.open",
        "states.closed.on.open", "states.opened.close", "states.opened.colse",
        "states.opened.timeout", "version" }, paths)
    end)

    describe("names", function()
      it("suggests the nearest state for an unknown target (doc/machines.md's own example)", function()
        local def = {
          name = "connection", initial = "idle", methods = {},
          states = {
            idle = { on = { go = "connecting" } },
            connecting = { run = function() end,
                           on = { done = { to = "redy" }, error = "idle" } },
            ready = { on = { lost = "idle" } },
          },
        }
        local ok, errors = check.check(def)
        assert.is_false(ok)
        assert.are.same({
          "states.connecting.on.done.to: unknown state 'redy' (did you mean 'ready'?)" }, errors)
      end)

      it("suggests nothing when no name is near", function()
        local def = door()
        def.states.closed.on.open = "ajar"
        local _, errors = check.check(def)
        assert.are.same({ "states.closed.on.open: unknown state 'ajar'" }, errors)
      end)

      it("suggests for unknown keys at every level and for `initial`", function()
        local def = door()
        def.inital, def.initial = "closed", "colsed"
        def.states.closed.exitt = function() end
        def.states.closed.on.open = { too = "opened" }
        local _, errors = check.check(def)
        assert.is_true(has(errors, "inital: unknown key 'inital' (did you mean 'initial'?)"))
        assert.is_true(has(errors, "initial: unknown state 'colsed' (did you mean 'closed'?)"))
        assert.is_true(has(errors, "states.closed.on.open.too: unknown key 'too' (did you mean 'to'?)"))
        local found
        for _, e in ipairs(errors) do
          if e:find("^states%.closed%.exitt %(") then found = e end
        end
        assert.matches(": unknown key 'exitt' %(did you mean 'exit'%?%)$", found)
      end)

      it("suggests the state key behind on_enter and other near misses", function()
        local cases = {
          { "on_enter", print, "unknown key 'on_enter' (did you mean 'enter'?)" },
          { "onExit", print, "unknown key 'onExit' (did you mean 'exit'?)" },
          { "on_entry", print, "unknown key 'on_entry' (did you mean 'enter'?)" },
          { "is_final", true, "unknown key 'is_final' (did you mean 'final'?)" },
          { "timeout_secs", 3, "unknown key 'timeout_secs' (did you mean 'timeout'?)" },
          { "transitions", {}, "unknown key 'transitions' (did you mean 'on'?)" },
          { "job", print, "unknown key 'job' (did you mean 'run'?)" },
          { "on_done", "opened", "unknown key 'on_done' (did you mean 'on.done'?)" },
          { "onTimeout", "opened", "unknown key 'onTimeout' (did you mean 'on.timeout'?)" },
          { "on_close", print, "handler for undeclared method 'on_close' (did you mean 'close'?)" },
          { "reopen", print, "handler for undeclared method 'reopen' (did you mean 'open'?)" },
          { "frobnicate", print, "handler for undeclared method 'frobnicate'" },
          { "one", "x", "unknown key 'one' (did you mean 'on'?)" },
        }
        for _, case in ipairs(cases) do
          local def = door()
          def.states.closed[case[1]] = case[2]
          local _, errors = check.check(def)
          assert.are.equal(1, #errors, case[1])
          assert.are.equal("states.closed." .. case[1], (errors[1]:match("^(.-)[ :]")))
          assert.are.equal(case[3], errors[1]:match(": (.*)$"))
        end
      end)

      it("suggests the machine or transition key behind a near miss", function()
        local def = door()
        def.initial_state = "closed"
        def.events = { "x" }
        def.states.closed.on.open = { target = "opened" }
        def.states.opened.on.close = { to = "closed", when = print }
        local _, errors = check.check(def)
        table.sort(errors)
        assert.are.equal("events: unknown key 'events' (did you mean 'inputs'?)", errors[1])
        assert.are.equal("initial_state: unknown key 'initial_state' (did you mean 'initial'?)",
          errors[2])
        assert.are.equal("states.closed.on.open.target: unknown key 'target' (did you mean 'to'?)",
          errors[3])
        assert.are.equal("states.opened.on.close.when: unknown key 'when' (did you mean 'guard'?)",
          errors[4])
      end)

      it("nearest() takes transpositions and case as one edit, and the closest wins", function()
        assert.are.equal("idle", check.nearest("idel", { "ready", "idle" }))
        assert.are.equal("ready", check.nearest("Ready", { "ready", "read" }))
        assert.are.equal("ready", check.nearest("readyy", { "reader", "ready" }))
        assert.is_nil(check.nearest("go", { "on" }))          -- short words: one edit at most
        assert.is_nil(check.nearest("ajar", { "opened", "closed" }))
        assert.is_nil(check.nearest(42, { "x" }))
      end)

      it("rejects names that are not identifiers or that collide", function()
        local def = door()
        def.methods = { "open", "close", "get-x", "end", "state", "postponed", "exit" }
        def.inputs = { "on" }
        for _, s in pairs(def.states) do
          for _, m in ipairs { "get-x", "end", "state", "postponed", "exit" } do s[m] = s.open end
        end
        def.states.new = { open = function() end, close = function() end }
        def.states.closed.on.renew = "new"
        local _, errors = check.check(def)
        assert.is_true(has(errors, "methods[3]: method name 'get-x' is not a Lua identifier"))
        assert.is_true(has(errors,
          "methods[4]: method name 'end' is not a Lua identifier (it is a keyword)"))
        assert.is_true(has(errors,
          "methods[5]: method name 'state' collides with the instance field 'state'"))
        assert.is_true(has(errors,
          "methods[6]: method name 'postponed' collides with the instance method 'postponed'"))
        assert.is_true(has(errors, "methods[7]: method name 'exit' collides with the state key 'exit'"))
        assert.is_true(has(errors, "inputs[1]: input name 'on' collides with the state key 'on'"))
        assert.is_true(has(errors, "states.new: state name 'new' collides with the instance method 'new'"))
      end)

      it("does not cascade: a bad method name is not demanded of every state", function()
        local def = door()
        def.methods[3] = "get-x"
        local _, errors = check.check(def)
        assert.are.same({ "methods[3]: method name 'get-x' is not a Lua identifier" }, errors)
      end)
    end)

    describe("function values", function()
      it("carry the file:line where the function is defined", function()
        local def = door()
        local run = function() end
        def.states.opened.run = run
        local info = debug.getinfo(run, "S")
        local _, errors = check.check(def)
        assert.are.same({ string.format(
          "states.opened.run (%s:%d): run without on.done and on.error: its job's outcome "
          .. "fires input 'done' or 'error'; take them in `on`, or list them in `ignore` to "
          .. "drop them", info.short_src, info.linedefined) }, errors)
      end)

      it("warns of a state that ignores an input its own `on` takes", function()
        local def = door()
        def.states.closed.ignore = { "tick", "open" }
        local ok, lines = problem_lines(def)
        assert.is_true(ok)
        assert.are.same({ "states.closed.ignore[2]: warning: 'open' is also in on.open, which "
          .. "takes it (the ignore entry has no effect)" }, lines)
        def.states.closed.ignore = nil
        def.ignore = { "open" }                 -- the machine's ignore is a default: no warning
        ok, lines = problem_lines(def)
        assert.is_true(ok)
        assert.are.same({}, lines)
      end)

      it("invalid methods do not hide a state's unknown keys", function()
        local def = door()
        def.methods = "open"
        def.states.closed.bogus = 1
        def.states.closed.timout = 5
        local _, errors = check.check(def)
        assert.are.same({
          "methods: expected a list of method names, got 'open'",
          "states.closed.bogus: unknown key 'bogus'",
          "states.closed.timout: unknown key 'timout' (did you mean 'timeout'?)",
        }, errors)
      end)

      it("a run whose outcome inputs are ignored, by the state or the machine, is valid", function()
        local def = door()
        def.states.opened.run = function() end
        def.states.opened.ignore = { "done" }
        local _, errors = check.check(def)
        assert.are.equal(1, #errors)
        assert.matches("run without on.error: its job's outcome fires input 'error'; take it "
          .. "in `on`, or list it in `ignore` to drop it$", errors[1])
        def.ignore = { "error" }
        local ok, errs = check.check(def)
        assert.is_true(ok, errs and errs[1])
      end)

      it("C functions have no location to show", function()
        local def = door()
        def.states.broken = { final = true, run = print, open = print, close = print }
        def.states.opened.on.smash = "broken"
        local _, errors = check.check(def)
        assert.are.same({ "states.broken.run: not allowed in a final state" }, errors)
      end)
    end)

    describe("warnings", function()
      it("warns about each state unreachable from initial, and stays ok", function()
        local def = door()
        def.states.island = { open = print, close = print, on = { swim = "atoll" } }
        def.states.atoll = { open = print, close = print, on = { swim = "island" } }
        def.migrate = function() return "island" end     -- migrate adds no reachability
        local ok, errors, warnings = check.check(def)
        assert.is_true(ok)
        assert.are.same({}, errors)
        assert.are.same({
          "states.atoll: unreachable from the initial state 'closed' (no transition leads here)",
          "states.island: unreachable from the initial state 'closed' (no transition leads here)",
        }, warnings)
      end)

      it("follows guarded lists and transition tables for reachability", function()
        local def = door()
        def.states.closed.on.open = { { to = "locked", guard = function() end }, { to = "opened" } }
        def.states.locked = { open = print, close = print, on = { unlock = { to = "closed" } } }
        local ok, errors, warnings = check.check(def)
        assert.is_true(ok, errors[1])
        assert.are.same({}, warnings)
      end)

      it("warns about a transition that does nothing", function()
        local def = door()
        def.states.opened.on.nudge = {}
        local ok, _, warnings = check.check(def)
        assert.is_true(ok)
        assert.are.same({ "states.opened.on.nudge: transition does nothing (no 'to' and no 'action')" },
          warnings)
      end)
    end)

    describe("accepts what doc/machines.md allows", function()
      local function ok_with(patch)
        local def = door()
        patch(def)
        local ok, errors, warnings = check.check(def)
        assert.are.same({}, errors)
        assert.is_true(ok)
        return warnings
      end

      it("an empty methods list (a machine driven by inputs only)", function()
        local ok, errors = check.check { name = "toggle", initial = "off", methods = {},
          states = { off = { on = { flip = "on_" } }, on_ = { on = { flip = "off" } } } }
        assert.is_true(ok)
        assert.are.same({}, errors)
      end)

      it("optional machine keys with good values", function()
        ok_with(function(d)
          d.version = 2.5
          d.max_postponed = 1e4            -- a float with an integer value
          d.migrate = function() return "closed" end
          d.ignore = { "tick" }
          d.inputs = { "kick" }
          d.defaults = { open = "postpone" }
          d.states.opened.open = nil
          d.states.opened.timeout = 0
          d.states.opened.on.timeout = "closed"
        end)
      end)

      it("on.done and on.error without run when listed in inputs", function()
        ok_with(function(d)
          d.inputs = { "done", "error" }
          d.states.opened.on.done = "closed"
          d.states.opened.on.error = "closed"
        end)
      end)

      it("a postponing state left by a timeout only, or by an input only", function()
        ok_with(function(d)
          d.states.opened.open = "postpone"
          d.states.waiting = { open = "postpone", close = print, timeout = function() return 1 end,
                               on = { timeout = "opened" } }
          d.states.closed.on.wait = "waiting"
        end)
      end)

      it("a final state with its own handler where the default postpones", function()
        ok_with(function(d)
          d.defaults = { open = "postpone" }
          d.states.broken = { final = true, open = print, close = print,
                              enter = print, exit = print, ignore = { "x" } }
          d.states.opened.on.smash = "broken"
          d.states.opened.final = false
        end)
      end)

      it("lists with string entries, internal and self transitions", function()
        ok_with(function(d)
          d.states.closed.on.open = { { to = "closed", guard = print }, "opened" }
          d.states.opened.on.tick = { action = print }
          d.states.opened.on.reset = { to = "opened", guard = print, action = print }
        end)
      end)
    end)

    it("is also the module's __call", function()
      local ok, errors = check(door())
      assert.is_true(ok)
      assert.are.same({}, errors)
      assert.are.same({ check.check(42) }, { check(42) })
    end)
  end)

  describe("KEYS", function()
    it("lists exactly the keys doc/machines.md allows at each level", function()
      assert.are.same({ "name", "version", "initial", "methods", "inputs", "defaults", "ignore",
        "max_postponed", "migrate", "states" }, check.KEYS.machine)
      assert.are.same({ "enter", "exit", "on", "run", "timeout", "final", "ignore" },
        check.KEYS.state)
      assert.are.same({ "to", "guard", "action" }, check.KEYS.transition)
    end)
  end)

  describe("format()", function()
    it("prefixes each problem and labels warnings after the path", function()
      local def = door()
      def.states.closed.on.open = "ajar"
      def.states["a b"] = { open = print, close = print }
      local _, errors, warnings = check.check(def)
      assert.are.equal('door.lua: states["a b"]: state name \'a b\' is not a Lua identifier\n'
        .. "door.lua: states.closed.on.open: unknown state 'ajar'\n",
        check.format(errors, "door.lua"))
      assert.matches('^door%.lua: states%["a b"%]: warning: unreachable', check.format(warnings,
        "door.lua", "warning"))
      local errs = check.problems(def)
      assert.are.equal(check.format(errors, "f"), check.format(errs, "f"))
      assert.are.equal("", check.format({}, "f"))
      assert.are.equal("x: y\n", check.format({ "x: y" }))
    end)
  end)
end)

describe("modal.cli", function()
  local cli

  before_each(function()
    package.loaded["modal.cli"] = nil
    cli = require "modal.cli"
  end)

  describe("usage errors (status 2)", function()
    it("an unknown command", function()
      local status, out, err = run_cli("frobnicate", {})
      assert.are.equal(2, status)
      assert.are.equal("", out:text())
      assert.matches("unknown command 'frobnicate'", err:text(), 1, true)
    end)

    it("check without a FILE, or with an unknown option", function()
      local status, _, err = run_cli("check", {})
      assert.are.equal(2, status)
      assert.matches("modal check: no FILE given\nusage: modal check FILE...", err:text(), 1, true)
      status, _, err = run_cli("check", { "--strict", VALID .. "connection.lua" })
      assert.are.equal(2, status)
      assert.matches("unknown option '--strict'", err:text(), 1, true)
    end)

    it("graph without a FILE, with two, with a bad or missing format", function()
      local file = VALID .. "six_states.lua"
      for _, args in ipairs { {}, { file, file }, { file, "--format", "png" }, { file, "--format" },
                              { "--format=svg", file }, { "-x", file } } do
        local status, out, err = run_cli("graph", args)
        assert.are.equal(2, status, table.concat(args, " "))
        assert.are.equal("", out:text())
        assert.matches("^modal graph: .*\nusage: modal graph FILE", err:text())
      end
    end)

    it("refuses arguments that are not strings", function()
      assert.are.equal(2, (run_cli("check", { VALID .. "connection.lua", 7 })))
    end)
  end)

  it("--help prints the usage to stdout with status 0", function()
    for _, command in ipairs { "check", "graph" } do
      for _, flag in ipairs { "--help", "-h" } do
        local status, out, err = run_cli(command, { flag })
        assert.are.equal(0, status)
        assert.are.equal(cli.USAGE[command], out:text())
        assert.are.equal("", err:text())
      end
    end
  end)

  describe("a file that does not load", function()
    it("a syntax error, a raising file, a missing file, a file returning nothing", function()
      local bad = write_file("return {\n  name = 'x',, }\n")
      local raising = write_file("error('no database configured')\n")
      local nothing = write_file("local x = 1\n")
      local missing = os.tmpname()
      os.remove(missing)
      local status, out = run_cli("check", { bad, raising, missing, nothing })
      assert.are.equal(1, status)
      local lines = out:lines()
      assert.are.equal(4, #lines)
      assert.matches("^" .. bad .. ": cannot load: .*unexpected symbol", lines[1])
      assert.matches(raising .. ": cannot load: " .. raising .. ":1: no database configured",
        lines[2], 1, true)
      assert.matches("^" .. missing .. ": cannot load: .*No such file", lines[3])
      assert.are.equal(nothing .. ": cannot load: the file returned nothing, not a machine "
        .. "definition (a table)", lines[4])
      os.remove(bad); os.remove(raising); os.remove(nothing)
    end)
  end)

  describe("load()", function()
    it("captures modal.machine's argument and restores modal.machine, also on error", function()
      local has_modal, modal = pcall(require, "modal")
      local before = has_modal and rawget(modal, "machine")
      local good = write_file('local modal = require "modal"\nreturn modal.machine { name = "x" }\n')
      local raising = write_file('local modal = require "modal"\nmodal.machine { name = "x" }\n'
        .. 'error("after")\n')
      local ok, def = cli.load(good)
      assert.is_true(ok)
      assert.are.same({ name = "x" }, def)
      ok, def = cli.load(raising)
      assert.is_false(ok)
      assert.matches(":3: after", def, 1, true)
      if has_modal then
        assert.are.equal(before, rawget(modal, "machine"))
        assert.are.equal(modal, package.loaded.modal)
      else
        assert.is_nil(package.loaded.modal)       -- the stand-in does not stay behind
      end
      os.remove(good); os.remove(raising)
    end)

    it("takes a plain table returned without modal.machine", function()
      local plain = write_file('return { name = "plain", initial = "a", methods = {}, '
        .. 'states = { a = {} } }\n')
      local status, out = run_cli("check", { plain })
      assert.are.equal(0, status)
      assert.are.equal(plain .. ": ok\n", out:text())
      os.remove(plain)
    end)
  end)

  describe("a program instead of a definition file", function()
    local PROGRAM = [[
local modal = require "modal"
local A = modal.machine { name = "a", initial = "idle", methods = {},
  states = { idle = { on = { go = "busy" } }, busy = {} } }
local B = modal.machine { name = "b", initial = "idle", methods = { "q" },
  states = { idle = { on = { go = "bsy" } } } }
local a = A:new()
a:fire("go")
error("never reached: modal check stops the program where it first uses a machine")
]]

    it("checks every machine defined before its first use, and says where it stopped", function()
      local file = write_file(PROGRAM)
      local status, out = run_cli("check", { file })
      assert.are.equal(1, status)
      assert.are.equal(file .. ": note: a program, not a definition file: it uses a machine at "
        .. "line 6, where modal check stopped it; checked the 2 machines defined before (a "
        .. "definition file ends `return modal.machine { ... }`)\n"
        .. file .. " (machine a): ok\n"
        .. file .. " (machine b): states.idle.on.go: unknown state 'bsy'\n"
        .. file .. " (machine b): states.idle.q: missing handler for method 'q' (and no "
        .. "defaults.q)\n", out:text())
      os.remove(file)
    end)

    it("stops a program that runs the loop or exits without using a machine: check, graph and test",
       function()
      -- through the host, as a user runs them: what the file starts (a luv timer, a modal
      -- timer) must not outlive the check in this process
      local support = require "support"
      local head = 'local modal = require "modal"\nlocal uv = require "luv"\n'
        .. 'local M = modal.machine { name = "looper", initial = "a", methods = {}, '
        .. 'states = { a = { on = { go = "b" } }, b = {} } }\n'
      for _, case in ipairs {
        { "local t = uv.new_timer(); t:start(1000, 1000, function() end)\nuv.run()\n",
          "it runs the event loop at line 5" },
        { "modal.call_later(100, print, 'x')\nmodal.run()\n", "it runs the event loop at line 5" },
        { "os.exit(3)\n", "it exits at line 4" },
      } do
        local file = write_file(head .. case[1])
        local status, out, err = support.modal_cmd("check", file)
        assert.are.equal(0, status, out .. err)
        assert.matches(case[2] .. ", where modal check stopped it; checked the 1 machine", out, 1, true)
        status, out = support.modal_cmd("graph", file)
        assert.are.equal(0, status)
        assert.matches('"a" -> "b"', out, 1, true)
        status, out = support.modal_cmd("test", file)
        assert.are.equal(0, status)
        assert.matches("1/1 transitions taken", out, 1, true)
        os.remove(file)
      end
    end)

    it("puts back what it stopped a program with: modal.run, luv's run, os.exit", function()
      local originals = { require("luv").run, rawget(require("modal"), "run"), os.exit }
      local file = write_file('local modal = require "modal"\n'
        .. 'local M = modal.machine { name = "exits", initial = "a", methods = {}, '
        .. 'states = { a = {} } }\nos.exit(3)\n')
      local status, out = run_cli("check", { file })
      assert.are.equal(0, status, out:text())
      assert.matches("it exits at line 3", out:text(), 1, true)
      assert.are.equal(originals[1], require("luv").run)
      assert.are.equal(originals[2], rawget(require("modal"), "run"))
      assert.are.equal(originals[3], os.exit)
      os.remove(file)
    end)

    it("passes a program whose one machine is valid, under its file name", function()
      local file = write_file('local modal = require "modal"\n'
        .. 'local M = modal.machine { name = "one", initial = "a", methods = {}, '
        .. 'states = { a = {} } }\n'
        .. 'print(M:new():state())\n')
      local status, out = run_cli("check", { file })
      assert.are.equal(0, status)
      assert.matches("^" .. file:gsub("%p", "%%%0") .. ": note: a program, not a definition file: "
        .. "it uses a machine at line 3,", out:text())
      assert.matches("\n" .. file:gsub("%p", "%%%0") .. ": ok\n$", out:text())
      os.remove(file)
    end)

    it("runs what a program loads with modal.load, a plain definition or a service file", function()
      for _, loaded in ipairs({ "specs/fixtures/valid/connection.lua", "examples/echo/echo.lua" }) do
        local file = write_file('local modal = require "modal"\n'
          .. ('local C = modal.load(%q)\n'):format(loaded)
          .. 'C:new {}\n')
        local status, out = run_cli("check", { file })
        assert.are.equal(0, status, out:text())
        assert.matches("it uses a machine at line 3, where modal check stopped it; checked the 1 "
          .. "machine defined before", out:text(), 1, true)
        assert.matches("\n" .. file:gsub("%p", "%%%0") .. ": ok\n$", out:text())
        os.remove(file)
      end
    end)

    it("gives the program its arg, as modal run does (the examples find their folder by it)", function()
      for _, program in ipairs({ "examples/echo/main.lua", "examples/reload/serve.lua",
        "examples/demo/main.lua" }) do
        local status, out = run_cli("check", { program })
        assert.are.equal(0, status, out:text())
        assert.matches(program:gsub("%p", "%%%0") .. ": ok\n$", out:text())
      end
      local file = write_file('assert(io.open(arg[0]) and #arg == 0, "arg[0] names this file")\n'
        .. 'return { name = "x", initial = "a", methods = {}, states = { a = {} } }\n')
      local status, out = run_cli("check", { file })
      assert.are.equal(0, status, out:text())
      os.remove(file)
    end)

    it("reports a program that raises after defining machines, and checks them", function()
      local file = write_file('local modal = require "modal"\n'
        .. 'modal.machine { name = "one", initial = "a", methods = {}, states = { a = {} } }\n'
        .. 'error("no database configured")\n')
      local status, out = run_cli("check", { file })
      assert.are.equal(1, status)
      assert.are.equal(file .. ": cannot load: " .. file .. ":3: no database configured\n"
        .. file .. ": ok\n", out:text())
      os.remove(file)
    end)

    it("graph and test refuse a file with several machines, naming them", function()
      local file = write_file(PROGRAM)
      local status, _, err = run_cli("graph", { file })
      assert.are.equal(1, status)
      assert.are.equal(file .. ": cannot load: the file defines 2 machines (a, b); give a file "
        .. "with one\n", err:text())
      os.remove(file)
    end)
  end)

  describe("check", function()
    it("checks every file, and fails when any has errors", function()
      local good, bad = VALID .. "connection.lua", INVALID .. "missing_name.lua"
      local status, out = run_cli("check", { good, bad })
      assert.are.equal(1, status)
      assert.are.equal(good .. ": ok\n" .. bad .. ": name: missing (a string naming the machine)\n",
        out:text())
      assert.are.equal(0, (run_cli("check", { good, VALID .. "six_states.lua" })))
    end)

    it("passes a file with warnings only, printing them", function()
      local file = write_file([[
return { name = "w", initial = "a", methods = {},
  states = { a = { on = { go = "a" } }, b = { on = { go = "a" } } } }
]])
      local status, out = run_cli("check", { file })
      assert.are.equal(0, status)
      assert.are.equal(file .. ": states.b: warning: unreachable from the initial state 'a' "
        .. "(no transition leads here)\n", out:text())
      os.remove(file)
    end)

    it("writes to io.output() and io.stderr by default", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      local previous = io.output()
      io.output(f)
      local ok, status = pcall(cli.main, "check", { INVALID .. "missing_name.lua" })
      io.output(previous)
      f:close()
      assert.is_true(ok, status)
      assert.are.equal(1, status)
      local g = assert(io.open(path))
      local text = g:read("a")
      g:close()
      os.remove(path)
      assert.are.equal(INVALID .. "missing_name.lua: name: missing (a string naming the machine)\n",
        text)
    end)
  end)

  describe("graph", function()
    it("prints dot by default and mermaid on request", function()
      local file = VALID .. "six_states.lua"
      local status, out, err = run_cli("graph", { file })
      assert.are.equal(0, status)
      assert.are.equal("", err:text())
      assert.matches('^digraph "six_states" {', out:text())
      status, out = run_cli("graph", { "--format", "mermaid", file })
      assert.are.equal(0, status)
      assert.matches("^stateDiagram%-v2\n", out:text())
      status, out = run_cli("graph", { file, "--format=dot" })
      assert.are.equal(0, status)
      assert.matches("^digraph", out:text())
    end)

    it("refuses an invalid definition, listing its errors on stderr (status 1)", function()
      local file = INVALID .. "target_typo.lua"
      local status, out, err = run_cli("graph", { file })
      assert.are.equal(1, status)
      assert.are.equal("", out:text())
      assert.matches(file .. ": states.connecting.on.done.to: unknown state 'redy'", err:text(), 1,
        true)
      local status2, _, err2 = run_cli("graph", { "/nonexistent/x.lua" })
      assert.are.equal(1, status2)
      assert.matches("^/nonexistent/x.lua: cannot load: ", err2:text())
    end)
  end)
end)
