-- specs/compile_spec.lua — from a definition to its compiled form (doc/machines.md,
-- "Validation"): modal.machine, modal.load and modal.reload read the definition once, raw
-- (modal.check's normalize), and the C compile reads only that normalized form. Here: the
-- compiled object's user values, the compile's own checks on a malformed normalized form
-- (a clear error, never a write out of bounds: run under `make asan`), and hostile, huge and
-- degenerate definitions through modal.machine.
local modal = require "modal"
local check = require "modal.check"
local support = require "support"

local compile = debug.getregistry()["modal.compile"]
local K_FNS, K_INPUTS, K_STATES, K_DEF, K_METHODS = 1, 2, 3, 4, 5   -- src/machine.h

local METATABLE = "has a metatable; modal reads definitions raw — copy shared fields instead"

local function door()
  local close = function() end
  return {
    name = "door", version = 2, initial = "closed",
    methods = { "open", "close" },
    inputs = { "kick" },
    defaults = { close = close },
    ignore = { "tick" },
    states = {
      closed = {
        open = function(m) m:fire("open") end,
        ignore = { "bump" },
        on = { open = "opened", kick = { { to = "opened", guard = function() end }, "closed" } },
      },
      opened = {
        open = "postpone",
        timeout = 5,
        on = { close = { to = "closed", action = function() end }, timeout = "closed" },
      },
    },
  }
end

-- A fresh normalized form of door(), changed by `patch`.
local function norm_of(patch)
  local norm = assert(check.normalize(door()))
  if patch then patch(norm) end
  return norm
end

describe("the compile", function()
  after_each(support.run_undo)

  describe("of a normalized form", function()
    it("keeps every name and function in the user values: nothing reads the definition again",
      function()
        local def = door()
        local k = compile(assert(check.normalize(def)), def)
        assert.are.equal("userdata", type(k))
        assert.are.same({ "open", "close" }, debug.getuservalue(k, K_METHODS))
        assert.are.same({ closed = 0, opened = 1 }, debug.getuservalue(k, K_STATES))
        local inputs = debug.getuservalue(k, K_INPUTS)
        local names = { "timeout", "done", "error", "kick", "tick", "open", "bump", "close" }
        for i, name in ipairs(names) do
          assert.are.equal(i - 1, inputs[name])
          assert.are.equal(name, inputs[i])
        end
        assert.are.equal(def, debug.getuservalue(k, K_DEF))
        local fns, seen = debug.getuservalue(k, K_FNS), {}
        for _, v in ipairs(fns) do
          assert.is_nil(seen[v], "fns holds a value twice")          -- each value once
          seen[v] = true
        end
        for _, v in ipairs { "door", "closed", "opened", def.defaults.close, def.states.closed.open,
            def.states.closed.on.kick[1].guard, def.states.opened.on.close.action } do
          assert.is_true(seen[v], tostring(v))
        end
      end)

    it("takes no definition at all (M.definition is then nil)", function()
      assert.are.equal("userdata", type(compile(norm_of())))
      assert.is_nil(debug.getuservalue(compile(norm_of()), K_DEF))
    end)

    -- Each change to a good normalized form, with the error the compile must raise.
    local malformed = {
      { "a count of transitions too small", function(n) n.ntransitions = 1 end,
        "states[1].on[1].transitions: more transitions than ntransitions (1)" },
      { "a count of transitions too large", function(n) n.ntransitions = 100 end,
        "ntransitions: 100, but the states have 5" },
      { "a negative count of transitions", function(n) n.ntransitions = -1 end,
        "ntransitions: expected an integer from 0 to 4194304" },
      { "an unknown target", function(n) n.states[1].on[1].transitions[1].to = "nowhere" end,
        "states[1].on (input 'kick'): transitions[1].to: unknown state 'nowhere'" },
      { "a target that is not a name", function(n) n.states[2].on[1].transitions[1].to = 1 end,
        "states[2].on[1].transitions[1].to: expected a state name or nil, got number" },
      { "an unknown input", function(n) n.states[1].on[1].input = "nope" end,
        "states[1].on[1]: input 'nope' is not in input_names" },
      { "an entry without an input", function(n) n.states[1].on[1].input = nil end,
        "states[1].on[1]: expected an input name, got nil" },
      { "one input twice in a state", function(n) n.states[1].on[2] = n.states[1].on[1] end,
        "states[1].on[2]: a second entry for one input" },
      { "an unknown ignored input", function(n) n.states[2].ignore[2] = "zzz" end,
        "states[2].ignore[2]: input 'zzz' is not in input_names" },
      { "a handler too many", function(n) n.states[1].handlers[3] = print end,
        "states[1].handlers: 3 handlers for 2 methods" },
      { "a handler missing", function(n) n.states[2].handlers[2] = nil end,
        "states[2].handlers: 1 handlers for 2 methods" },
      { "a handler that is neither", function(n) n.states[1].handlers[1] = "later" end,
        "states[1].handlers[1]: expected a function or 'postpone', got string" },
      { "a handler that only starts with postpone", function(n)
          n.states[2].handlers[1] = "postpone\0"
        end, "states[2].handlers[1]: expected a function or 'postpone', got string" },
      { "two states of one name", function(n) n.states[2].name = "closed" end,
        "states[2]: duplicate state 'closed'" },
      { "no state", function(n) n.states = {} end, "states: no state" },
      { "states that are not a list", function(n) n.states = "closed" end,
        "states: expected a list, got string" },
      { "a state that is not a table", function(n) n.states[2] = "opened" end,
        "states[2]: expected a table, got string" },
      { "65536 states", function(n) for i = 3, 65536 do n.states[i] = n.states[1] end end,
        "states: 65536 entries, more than 65535" },
      { "65536 methods", function(n) for i = 1, 65536 do n.methods[i] = "m" .. i end end,
        "methods: 65536 entries, more than 65535" },
      { "too many cells", function(n)
          for i = 1, 2100 do n.methods[i] = "m" .. i end
          for i = 3, 2000 do n.states[i] = n.states[1] end
        end, "states: 2000 states by 2100 methods or 8 inputs: more than 4194304 cells" },
      { "256 transitions for one input", function(n)
          local list = {}
          for i = 1, 256 do list[i] = { to = "closed" } end
          n.states[1].on[1].transitions = list
          n.ntransitions = n.ntransitions + 254
        end, "states[1].on[1].transitions: 256 entries, more than 255" },
      { "an empty transition list", function(n) n.states[1].on[1].transitions = {} end,
        "states[1].on[1].transitions: empty" },
      { "a duplicate method", function(n) n.methods[2] = "open" end,
        "methods[2]: duplicate method 'open'" },
      { "built-in inputs out of place", function(n) n.input_names[1] = "done" end,
        "input_names[1]: expected 'timeout', got 'done'" },
      { "a duplicate input", function(n) n.input_names[5] = "kick" end,
        "input_names[5]: duplicate input 'kick'" },
      { "an unknown initial state", function(n) n.initial = "ajar" end,
        "initial: unknown state 'ajar'" },
      { "max_postponed of 0", function(n) n.max_postponed = 0 end,
        "max_postponed: expected an integer from 1 to 2147483647" },
      { "max_postponed as a float", function(n) n.max_postponed = 10.0 end,
        "max_postponed: expected an integer from 1 to 2147483647" },
      { "a NaN timeout", function(n) n.states[2].timeout = 0 / 0 end,
        "states[2].timeout: expected a non-negative finite number" },
      { "an infinite timeout", function(n) n.states[2].timeout = math.huge end,
        "states[2].timeout: expected a non-negative finite number" },
      { "a timeout that is a string", function(n) n.states[2].timeout = "5" end,
        "states[2].timeout: expected seconds, a function or nil, got string" },
      { "a hook that is not a function", function(n) n.states[1].enter = true end,
        "states[1].enter: expected a function or nil, got boolean" },
      { "a guard that is not a function", function(n)
          n.states[1].on[1].transitions[1].guard = "yes"
        end, "states[1].on[1].transitions[1].guard: expected a function or nil, got string" },
      { "final not a boolean", function(n) n.states[1].final = nil end,
        "states[1].final: expected a boolean, got nil" },
      { "a name that is not a string", function(n) n.name = 7 end,
        "name: expected a string, got number" },
      { "a version that is not a number", function(n) n.version = "2" end,
        "version: expected a number or nil, got string" },
      { "a migrate that is not a function", function(n) n.migrate = {} end,
        "migrate: expected a function or nil, got table" },
    }

    for _, case in ipairs(malformed) do
      it("refuses " .. case[1] .. " with a clear error", function()
        local ok, err = pcall(compile, norm_of(case[2]))
        assert.is_false(ok)
        assert.are.equal("modal.compile: malformed normalized definition: " .. case[3], err)
      end)
    end

    it("refuses what is not a table", function()
      assert.has.error(function() compile("door") end)
      assert.has.error(function() compile(nil) end)
    end)

    it("reads the form raw: its metatables are not consulted", function()
      local norm = norm_of()
      setmetatable(norm, { __index = function() error("a metamethod ran") end })
      setmetatable(norm.states[1], { __index = function() error("a metamethod ran") end })
      assert.are.equal("userdata", type(compile(norm)))
      norm = norm_of(function(n) n.migrate = nil end)
      setmetatable(norm, { __index = { migrate = print } })
      local k = compile(norm)
      for _, v in ipairs(debug.getuservalue(k, K_FNS)) do assert.are_not.equal(print, v) end
    end)
  end)

  describe("through modal.machine", function()
    it("raises for every invalid fixture with exactly the errors modal.check reports", function()
      local p = assert(io.popen("ls specs/fixtures/invalid/*.lua"))
      local n = 0
      for file in p:lines() do
        local loaded, def = require("modal.cli").load(file)
        assert.is_true(loaded, file)
        local _, errors = check.check(def)
        local ok, err = pcall(dofile, file)
        assert.is_false(ok, file)
        if type(def) ~= "table" then
          assert.matches("bad argument #1 to 'machine' %(table expected", err)
        else
          local lines = {}
          for line in tostring(err):gmatch("\n  ([^\n]*)") do lines[#lines + 1] = line end
          assert.are.same(errors, lines, file)
        end
        n = n + 1
      end
      p:close()
      assert.is_true(n >= 62)
    end)

    it("builds every valid fixture", function()
      local p = assert(io.popen("ls specs/fixtures/valid/*.lua"))
      for file in p:lines() do
        local M = dofile(file)
        assert.are.equal("modal.machine", (tostring(M):match("^(modal%.machine) ")), file)
      end
      p:close()
    end)

    it("refuses an inherited state, naming its path (a typo'd target would be a silent no-op)",
      function()
        local base = { on = { go = "nowhere" } }
        local ok, err = pcall(modal.machine, { name = "inherit", initial = "a", methods = {},
          states = { a = setmetatable({}, { __index = base }) } })
        assert.is_false(ok)
        assert.are.equal("modal.machine: invalid definition 'inherit':\n  states.a: " .. METATABLE,
          err)
      end)

    it("refuses a shifty __index that answers differently each time, calling it never",
      function()
        local n = 0
        local shifty = setmetatable({}, { __index = function(_, k)
          n = n + 1
          if k ~= "on" then return nil end
          local on = {}
          for i = 1, n * 40 do on["in" .. i] = "a" end
          return on
        end })
        local ok, err = pcall(modal.machine, { name = "shifty", initial = "a", methods = {},
          states = { a = shifty } })
        assert.is_false(ok)
        assert.matches("states%.a: has a metatable", err)
        assert.are.equal(0, n)
      end)

    it("refuses a definition with a metatable whose every metamethod raises, naming nothing it "
      .. "would have to read through it", function()
        local function boom() error("a metamethod ran") end
        local def = setmetatable({}, { __index = boom, __pairs = boom, __len = boom })
        local ok, err = pcall(modal.machine, def)
        assert.is_false(ok)
        assert.matches("^modal%.machine: invalid definition:\n  definition: has a metatable", err)
        assert.is_nil(err:find("a metamethod ran", 1, true))
      end)

    it("refuses metatables at every level at once, each with its path", function()
      local def = door()
      for _, t in ipairs { def.states, def.states.closed.on, def.states.closed.on.kick[1],
          def.methods, def.defaults, def.inputs, def.ignore } do
        setmetatable(t, {})
      end
      local ok, err = pcall(modal.machine, def)
      assert.is_false(ok)
      for _, path in ipairs { "states", "states.closed.on", "states.closed.on.kick[1]", "methods",
          "defaults", "inputs", "ignore" } do
        assert.is_truthy(err:find("\n  " .. path .. ": " .. METATABLE, 1, true), path)
      end
    end)

    it("refuses a file whose definition has a metatable (modal.load), with the path", function()
      local path = os.tmpname() .. ".lua"
      support.defer(function() os.remove(path) end)
      local f = assert(io.open(path, "w"))
      f:write([[return setmetatable({ name = "mt_file", initial = "a", methods = {},
        states = { a = {} } }, { __index = {} })]])
      f:close()
      local ok, err = pcall(modal.load, path)
      assert.is_false(ok)
      assert.matches("definition: has a metatable", err)
    end)

    it("compiles what was checked: changing the definition afterwards changes nothing", function()
      local def = door()
      local M = modal.machine(def)
      def.states.closed.on.open = "nowhere"
      def.states.closed.open = "postpone"
      def.methods[1] = "shut"
      local c = M:new()
      c:open()
      assert.are.equal("opened", c.state)
      assert.are.equal(def, M.definition)
      c:fire("close")                     -- leaves no timeout armed for the specs after this one
    end)

    it("runs a machine of one state and no methods", function()
      local M = modal.machine { name = "one", initial = "only", methods = {},
        states = { only = { on = { poke = { action = function(m) m.data.n = (m.data.n or 0) + 1 end } } } } }
      local c = M:new()
      c:fire("poke")
      c:fire("poke")
      assert.are.equal(2, c.data.n)
      assert.are.equal("only", c.state)
    end)

    it("runs a machine of one state with 10,000 inputs", function()
      local on = {}
      for i = 1, 10000 do on["in" .. i] = { to = "only", guard = function() return i % 2 == 0 end } end
      local entered = 0
      local M = modal.machine { name = "wide", initial = "only", methods = {},
        states = { only = { on = on, enter = function() entered = entered + 1 end } } }
      local c = M:new()
      c:fire("in9999")                    -- guard fails: dropped
      c:fire("in10000")                   -- a self transition
      assert.are.equal(2, entered)
    end)

    it("runs a machine of 20,000 methods and 2 states: each call runs its own handler", function()
      local methods = {}
      for i = 1, 20000 do methods[i] = "m" .. i end
      local def = { name = "huge", initial = "wait", methods = methods,
        states = { wait = { on = { go = "ready" } }, ready = {} } }
      for i = 1, 20000 do
        def.states.wait["m" .. i] = "postpone"
        def.states.ready["m" .. i] = function() return "m" .. i end
      end
      local M = modal.machine(def)
      local c = M:new()
      c:fire("go")
      for _, i in ipairs { 1, 16383, 16384, 16385, 20000 } do
        assert.are.same({ "succeeded", "m" .. i }, { support.outcome(c["m" .. i](c)) })
      end
    end)

    it("retries postponed calls of a 20,000-method machine with their own method", function()
      local methods = {}
      for i = 1, 20000 do methods[i] = "m" .. i end
      local def = { name = "huge_postponed", initial = "wait", methods = methods,
                    states = { wait = { on = { go = "ready" } }, ready = {} } }
      for i = 1, 20000 do
        def.states.wait["m" .. i] = "postpone"
        def.states.ready["m" .. i] = function(_, x) return "m" .. i .. ":" .. x end
      end
      local c = modal.machine(def):new()
      local calls = {}
      for _, i in ipairs { 20000, 16385, 16384, 16383, 1 } do calls[#calls + 1] = { i, c["m" .. i](c, i) } end
      assert.equal(5, c:postponed())
      c:fire("go")
      assert.equal(0, c:postponed())
      for _, call in ipairs(calls) do
        assert.are.same({ "succeeded", "m" .. call[1] .. ":" .. call[1] }, { support.outcome(call[2]) })
      end
    end)

    it("refuses 65,536 methods, naming the limit", function()
      local methods = {}
      for i = 1, 65536 do methods[i] = "m" .. i end
      local ok, err = pcall(modal.machine, { name = "wide", initial = "a", methods = methods,
        states = { a = {} } })
      assert.is_false(ok)
      assert.is_truthy(err:find("methods: 65536 methods, more than modal supports (at most 65535)",
        1, true))
    end)
  end)
end)
