-- specs/normalize_spec.lua — the one reader of a definition (doc/machines.md, "Validation"):
-- modal.check reads every table once, raw, refuses tables with metatables (with their path),
-- refuses what the compiled form cannot hold (with the limit named) and hands back the plain
-- normalized form that the C compile reads. Pure Lua: no C module is loaded here.

-- A small valid machine to break one piece at a time: every kind of table a definition has.
local function door()
  return {
    name = "door", version = 2, initial = "closed",
    methods = { "open", "close" },
    inputs = { "kick" },
    defaults = { close = function() end },
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

local METATABLE = "has a metatable; modal reads definitions raw — copy shared fields instead"

-- A metatable whose every metamethod raises: reading the table through it would fail.
local function hostile_mt()
  local function boom() error("a metamethod ran") end
  return { __index = boom, __newindex = boom, __pairs = boom, __len = boom, __eq = boom,
           __lt = boom, __le = boom, __call = boom, __tostring = boom, __concat = boom }
end

describe("modal.check reads a definition once, raw", function()
  local check

  before_each(function()
    package.loaded["modal.check"] = nil
    check = require "modal.check"
  end)

  describe("normalize()", function()
    it("returns the plain normalized form of a valid definition", function()
      local def = door()
      local norm, errors, warnings = check.normalize(def)
      assert.are.same({}, errors)
      assert.are.same({}, warnings)
      assert.are.equal("door", norm.name)
      assert.are.equal(2, norm.version)
      assert.are.equal("closed", norm.initial)
      assert.are.equal(10000, norm.max_postponed)          -- the default, folded in
      assert.is_nil(norm.migrate)
      assert.are.same({ "open", "close" }, norm.methods)
      assert.are.same({ "kick" }, norm.inputs)
      assert.are.same({ "tick" }, norm.ignore)
      -- built-in inputs first, then declared, ignored, then as the states name them
      assert.are.same({ "timeout", "done", "error", "kick", "tick", "open", "bump", "close" },
        norm.input_names)
      assert.are.equal(5, norm.ntransitions)
      assert.are.equal(2, #norm.states)
      local closed, opened = norm.states[1], norm.states[2]
      assert.are.equal("closed", closed.name)             -- sorted by name
      assert.are.equal("opened", opened.name)
      assert.is_false(closed.final)
      assert.are.equal(def.states.closed.open, closed.handlers[1])
      assert.are.equal(def.defaults.close, closed.handlers[2])   -- defaults folded in
      assert.are.same({ "postpone", def.defaults.close }, opened.handlers)
      assert.are.same({ "tick", "bump" }, closed.ignore)  -- the machine's, then the state's
      assert.are.same({ "tick" }, opened.ignore)
      assert.are.equal(5, opened.timeout)
      assert.is_nil(closed.timeout)
      assert.are.same({
        { input = "kick", transitions = {
          { to = "opened", guard = def.states.closed.on.kick[1].guard }, { to = "closed" } } },
        { input = "open", transitions = { { to = "opened" } } },
      }, closed.on)
      assert.are.same({
        { input = "close", transitions = { { to = "closed",
          action = def.states.opened.on.close.action } } },
        { input = "timeout", transitions = { { to = "closed" } } },
      }, opened.on)
    end)

    it("shares no table with the definition, and none has a metatable", function()
      local def = door()
      local norm = check.normalize(def)
      local mine = {}
      local function walk(t)
        mine[t] = true
        for _, v in pairs(t) do if type(v) == "table" then walk(v) end end
      end
      walk(def)
      local function check_plain(t, path)
        assert.is_nil(debug.getmetatable(t), path)
        assert.is_nil(mine[t], path .. " is the definition's own table")
        for k, v in pairs(t) do
          if type(v) == "table" then check_plain(v, path .. "." .. tostring(k)) end
        end
      end
      check_plain(norm, "norm")
    end)

    it("normalizes what the definition can leave out or write another way", function()
      local def = door()
      def.max_postponed = 2e3                            -- a float with an integer value
      def.states.opened.timeout = function() return 1 end
      def.states.opened.final = false
      def.states.opened.on.close = { { to = "closed" } } -- a list of one
      def.states.closed.on.nudge = { action = print }    -- internal: no `to`
      local norm = check.normalize(def)
      assert.are.equal(2000, norm.max_postponed)
      assert.are.equal("integer", math.type(norm.max_postponed))
      assert.are.equal(def.states.opened.timeout, norm.states[2].timeout)
      assert.are.same({ { to = "closed" } }, norm.states[2].on[1].transitions)
      assert.are.same({ { action = print } }, norm.states[1].on[2].transitions)
    end)

    it("gives a machine without methods empty handler lists", function()
      local norm = check.normalize { name = "bare", initial = "a", methods = {},
        states = { a = {} } }
      assert.are.same({}, norm.methods)
      assert.are.same({ { name = "a", final = false, handlers = {}, ignore = {}, on = {} } },
        norm.states)
      assert.are.equal(0, norm.ntransitions)
    end)

    it("returns nil and the errors of an invalid definition, like check()", function()
      local def = door()
      def.states.closed.on.open = "opend"
      local norm, errors, warnings = check.normalize(def)
      assert.is_nil(norm)
      assert.are.same({ "states.closed.on.open: unknown state 'opend' (did you mean 'opened'?)" },
        errors)
      assert.are.same({ check.check(def) }, { false, errors, warnings })
      assert.are.same({}, warnings)
      assert.are.same({ nil, { "definition: expected a table, got 42" }, {} },
        { check.normalize(42) })
    end)
  end)

  describe("a table with a metatable", function()
    -- Each place a definition has a table, with the path its error has.
    local places = {
      { "definition", function(d) return d end },
      { "states", function(d) return d.states end },
      { "states.closed", function(d) return d.states.closed end },
      { "states.closed.on", function(d) return d.states.closed.on end },
      { "states.opened.on.close", function(d) return d.states.opened.on.close end },
      { "states.closed.on.kick", function(d) return d.states.closed.on.kick end },
      { "states.closed.on.kick[1]", function(d) return d.states.closed.on.kick[1] end },
      { "methods", function(d) return d.methods end },
      { "inputs", function(d) return d.inputs end },
      { "defaults", function(d) return d.defaults end },
      { "ignore", function(d) return d.ignore end },
      { "states.closed.ignore", function(d) return d.states.closed.ignore end },
    }

    for _, place in ipairs(places) do
      local path, pick = place[1], place[2]

      it("is an error at " .. path .. ", even an empty metatable", function()
        local def = door()
        setmetatable(pick(def), {})
        local ok, errors = check.check(def)
        assert.is_false(ok)
        assert.are.same({ path .. ": " .. METATABLE }, errors)
      end)

      it("at " .. path .. " is never read through: metamethods that raise do not run", function()
        local def = door()
        setmetatable(pick(def), hostile_mt())
        local ok, errors
        assert.has_no.errors(function() ok, errors = check.check(def) end)
        assert.is_false(ok)
        assert.are.same({ path .. ": " .. METATABLE }, errors)
      end)
    end

    it("hides nothing: what only __index supplies is missing (the case of an inherited state)",
      function()
        local base = { on = { go = "nowhere" } }
        local ok, errors = check.check { name = "inherit", initial = "a", methods = {},
          states = { a = setmetatable({}, { __index = base }) } }
        assert.is_false(ok)
        assert.are.same({ "states.a: " .. METATABLE }, errors)
      end)

    it("is reported at every level at once", function()
      local def = door()
      setmetatable(def.states.closed, {})
      setmetatable(def.methods, {})
      setmetatable(def.states.opened.on, { __index = function() return "closed" end })
      local _, errors = check.check(def)
      assert.are.same({ "methods: " .. METATABLE, "states.closed: " .. METATABLE,
        "states.opened.on: " .. METATABLE }, errors)
    end)

    it("reads each table once: __index, __len and __pairs that change answers change nothing",
      function()
        local calls = 0
        local shifty = setmetatable({}, {
          __index = function(_, k)
            calls = calls + 1
            if k == "on" then
              local on = {}
              for i = 1, calls * 40 do on["in" .. i] = "a" end
              return on
            end
          end,
          __len = function() calls = calls + 1; return calls end,
          __pairs = function() calls = calls + 1; return next, { on = {} }, nil end,
        })
        local ok, errors = check.check { name = "shifty", initial = "a", methods = {},
          states = { a = shifty } }
        assert.is_false(ok)
        assert.are.same({ "states.a: " .. METATABLE }, errors)
        assert.are.equal(0, calls)
      end)

    it("is not asked for by a string, a function or a value modal does not read as a table",
      function()
        local def = door()
        def.states.closed.open = setmetatable({}, { __call = function() end })  -- callable
        local _, errors = check.check(def)
        assert.are.equal(1, #errors)
        assert.matches("^states%.closed%.open: expected a function or 'postpone', got a table",
          errors[1])
      end)
  end)

  describe("limits of the compiled form", function()
    local L

    before_each(function() L = check.LIMITS end)

    it("are the numbers the C compile has (src/machine.h)", function()
      assert.are.same({ states = 65535, methods = 65535, choices = 255, cells = 4194304,
        transitions = 4194304, max_postponed = 2147483647 }, L)
    end)

    local function machine(nstates, nmethods, extra)
      local methods = {}
      for i = 1, nmethods do methods[i] = "m" .. i end
      local def = { name = "big", initial = "s1", methods = methods, states = {},
        defaults = {} }
      for i = 1, nmethods do def.defaults["m" .. i] = print end
      for i = 1, nstates do def.states["s" .. i] = {} end
      if extra then extra(def) end
      return def
    end

    it("65535 states pass; 65536 are refused, with the limit named", function()
      local ok, errors, warnings = check.check(machine(65535, 0))
      assert.is_true(ok, errors[1])
      assert.are.equal(65534, #warnings)                  -- unreachable, all but s1
      ok, errors = check.check(machine(65536, 0))
      assert.is_false(ok)
      assert.are.same({ "states: 65536 states, more than modal supports (at most 65535: an "
        .. "instance keeps its state in 16 bits)" }, errors)
    end)

    it("20,000 methods pass; 65536 are refused, with the limit named", function()
      assert.is_true((check.check(machine(2, 20000, function(d)
        d.states.s1.on = { go = "s2" }
      end))))
      local ok, errors = check.check(machine(1, 65536))
      assert.is_false(ok)
      assert.are.same({ "methods: 65536 methods, more than modal supports (at most 65535)" },
        errors)
    end)

    it("states times methods past the cells is refused at once, without checking each",
      function()
        local t = os.clock()
        local ok, errors = check.check(machine(2049, 2048))
        assert.is_false(ok)
        assert.are.same({ "states: 2049 states and 2048 methods make 4196352 handlers, more "
          .. "than modal supports (at most 4194304)" }, errors)
        -- at once: well under the 4 million cells' checking (valgrind runs ~50 times slower)
        assert.is_true(os.clock() - t < (os.getenv("MODAL_VALGRIND") == "1" and 60 or 2))
      end)

    it("states times inputs past the cells is refused", function()
      local def = machine(32768, 0)
      def.inputs = {}
      for i = 1, 126 do def.inputs[i] = "i" .. i end      -- + 3 built-in: 129
      local ok, errors = check.check(def)
      assert.is_false(ok)
      assert.are.same({ "states: 32768 states and 129 inputs make 4227072 cells, more than "
        .. "modal supports (at most 4194304)" }, errors)
    end)

    it("255 transitions for one input pass; 256 are refused at that input", function()
      local function choices(n)
        return machine(1, 0, function(d)
          local list = {}
          for i = 1, n - 1 do list[i] = { to = "s1", guard = print } end
          list[n] = "s1"
          d.states.s1.on = { go = list }
        end)
      end
      assert.is_true((check.check(choices(255))))
      local ok, errors = check.check(choices(256))
      assert.is_false(ok)
      assert.are.same({ "states.s1.on.go: 256 transitions for one input, more than modal "
        .. "supports (at most 255)" }, errors)
    end)

    it("max_postponed above 2^31 - 1 is refused, with the limit named", function()
      local def = door()
      def.max_postponed = 2147483647
      assert.is_true((check.check(def)))
      def.max_postponed = 2147483648
      assert.are.same({ "max_postponed: 2147483648 is more than modal supports (at most "
        .. "2147483647)" }, select(2, check.check(def)))
    end)
  end)

  describe("degenerate and hostile values, each an error with its path", function()
    local function errors_of(patch)
      local def = door()
      patch(def)
      local ok, errors
      assert.has_no.errors(function() ok, errors = check.check(def) end)
      assert.is_false(ok)
      return errors
    end

    it("NaN, infinite and negative timeouts", function()
      for v, shown in pairs { [-1] = "-1", [math.huge] = "inf", [-math.huge] = "-inf" } do
        assert.are.same({ "states.opened.timeout: expected a finite number of seconds >= 0 (or a "
          .. "function), got " .. shown }, errors_of(function(d) d.states.opened.timeout = v end))
      end
      assert.are.same({ "states.opened.timeout: expected a finite number of seconds >= 0 (or a "
        .. "function), got NaN" }, errors_of(function(d) d.states.opened.timeout = 0 / 0 end))
    end)

    it("NaN, infinite, negative, zero and fractional max_postponed", function()
      for _, v in ipairs { 0 / 0, math.huge, -math.huge, -3, 0, 2.5 } do
        local errors = errors_of(function(d) d.max_postponed = v end)
        assert.are.equal(1, #errors)
        assert.matches("^max_postponed: expected a positive integer, got ", errors[1])
      end
    end)

    it("NaN and infinite versions", function()
      assert.are.same({ "version: expected a finite number, got NaN" },
        errors_of(function(d) d.version = 0 / 0 end))
      assert.are.same({ "version: expected a finite number, got -inf" },
        errors_of(function(d) d.version = -math.huge end))
    end)

    it("sparse lists: a nil hole in methods, inputs, ignore and a transition list", function()
      assert.are.same({ "methods: expected a list of method names, but [2] is missing (a hole "
        .. "before [3])" }, errors_of(function(d) d.methods = { "open", nil, "close" } end))
      assert.are.same({ "inputs: expected a list of input names, but [1] is missing (a hole "
        .. "before [2])" }, errors_of(function(d) d.inputs = { nil, "kick" } end))
      assert.are.same({ "ignore: expected a list of input names, but [2] is missing (a hole "
        .. "before [5])" }, errors_of(function(d) d.ignore = { "a", [5] = "b" } end))
      assert.are.same({ "states.closed.on.kick[4]: list of transitions has a hole here" },
        errors_of(function(d) d.states.closed.on.kick[4] = "closed" end))
    end)

    it("non-string keys at every level", function()
      local errors = errors_of(function(d)
        d[1] = true
        d.states[false] = {}
        d.states.closed[print] = print
        d.states.closed.on[2.5] = "closed"
        d.states.opened.on.close[true] = 1
        d.defaults[7] = print
      end)
      table.sort(errors)
      assert.are.same({
        "[1]: unknown key 1",
        "defaults[7]: expected a method name, got 7",
        "states.closed.on[2.5]: expected an input name (a string), got 2.5",
        "states.closed[<function>]: unknown key a function",
        "states.opened.on.close[true]: unknown key true",
        "states[false]: expected a state name (a string), got false",
      }, errors)
    end)

    it("a state list given where a transition table belongs, and junk list entries", function()
      assert.are.same({ "states.closed.on.kick[1]: expected a state name or a transition table, "
        .. "got 42" }, errors_of(function(d) d.states.closed.on.kick[1] = 42 end))
    end)

    it("cycles: a definition that contains itself", function()
      local errors = errors_of(function(d)
        d.states.closed.on.open = d
        d.defaults.open = d
      end)
      assert.is_true(#errors >= 2)
    end)
  end)
end)
