-- specs/driver_reentry_spec.lua — the driver when user code comes back in (doc/machines.md,
-- rules 4, 7, 12 and 13; doc/reload.md): the input queue with arguments and nil holes, inputs
-- queued while it drains, job outcomes that belong to their entry, reloads refused from
-- inside, bound methods, migrate that only reads, values whose metamethods raise, and
-- timeout functions that return what is not seconds.
local modal = require "modal"
local support = require "support"

local run_undo, capture_log = support.run_undo, support.capture_log

-- A definition file in a fresh folder: returns its path and a writer.
local function def_file(name)
  local p = assert(io.popen("mktemp -d /tmp/modal_reentry.XXXXXX"))
  local dir = assert(p:read("l"))
  p:close()
  support.defer(function() os.execute("rm -rf '" .. dir .. "'") end)
  local path = dir .. "/" .. name .. ".lua"
  return path, function(text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
  end
end

describe("the driver when user code comes back in", function()
  after_each(run_undo)

  describe("the input queue", function()
    it("keeps a plain-value run's done behind what the enter hook fired, and invents nothing", function()
      local lines = capture_log()
      local n = 0
      local M = modal.machine {
        name = "pingpong", initial = "b", methods = {},
        states = {
          a = { run = function() return 42 end, on = { done = "b", error = "b" } },
          b = { enter = function(m) n = n + 1; if n < 20 then m:fire("go") end end, on = { go = "a" } },
        },
      }
      local c = M:new()
      assert.equal(20, n)                       -- 19 round trips while M:new drains
      c:fire("go")
      assert.equal(21, n)
      for _, line in ipairs(lines) do
        assert.is_nil(line.message:find("timeout"), "an input nobody fired: " .. line.message)
      end
    end)

    it("handles 3,000 inputs with nil arguments fired while it drains, in order, each once", function()
      local handled, fired, last, bad = 0, 1, 0, {}
      local M = modal.machine {
        name = "chain", initial = "a", methods = {}, inputs = { "tick" },
        states = { a = { on = { tick = { action = function(m, seq, x, y, z, ...)
          handled = handled + 1
          if seq ~= last + 1 then bad[#bad + 1] = "order at " .. seq end
          last = seq
          if not (x == nil and y == "y" .. seq and z == nil and select("#", ...) == 2) then
            bad[#bad + 1] = "arguments at " .. seq
          end
          if seq < 3000 then
            fired = fired + 1
            m:fire("tick", seq + 1, nil, "y" .. (seq + 1), nil, nil, nil)
          end
        end } } } },
      }
      M:new():fire("tick", 1, nil, "y1", nil, nil, nil)
      assert.equal(3000, fired)
      assert.equal(3000, handled)
      assert.same({}, bad)
    end)

    it("keeps each queued input's own argument count, trailing nils included", function()
      local seen = {}
      local M = modal.machine {
        name = "counts", initial = "a", methods = { "kick" }, inputs = { "x" },
        states = { a = {
          kick = function(m)
            m:fire("x")
            m:fire("x", nil)
            m:fire("x", nil, nil, nil)
            m:fire("x", 1, nil)
          end,
          on = { x = { action = function(_, ...) seen[#seen + 1] = select("#", ...) end } },
        } },
      }
      M:new():kick()
      assert.same({ 0, 1, 3, 2 }, seen)
    end)

    it("queues what observers, when() callbacks and job cancellers fire behind the current input", function()
      local order = {}
      local M = modal.machine {
        name = "from_everywhere", initial = "a", methods = {}, inputs = { "note" },
        states = {
          a = { run = function()
                  return modal.deferred(function() order[#order + 1] = "cancelled a's job" end)
                end,
                on = { go = "b", done = "b", error = "b",
                       note = { action = function(_, what) order[#order + 1] = what end } } },
          b = { on = { note = { action = function(_, what) order[#order + 1] = "b: " .. what end } } },
        },
      }
      local c = M:new()
      c:on_transition(function(m) m:fire("note", "observer") end)
      c:when("b"):add_callback(function(m) m:fire("note", "when") end)
      c:fire("go")
      assert.equal("b", c.state)
      assert.same({ "cancelled a's job", "b: observer", "b: when" }, order)
    end)
  end)

  describe("a job's outcome belongs to its entry", function()
    it("is dropped, not taken by a later entry or another state, when its entry ended first", function()
      local lines = capture_log()
      modal.log_level("debug")
      support.defer(function() modal.log_level("info") end)
      local results, k = {}, 0
      local M = modal.machine {
        name = "jobs", initial = "idle", methods = {}, inputs = { "go", "hop" },
        states = {
          idle = { on = { go = "a" } },
          a = { enter = function(m) if k == 0 then m:fire("hop") end end,
                run = function() k = k + 1; return "a" .. k end,
                on = { hop = "b", error = "fin",
                       done = { to = "fin", action = function(_, v) results[#results + 1] = v end } } },
          b = { run = function() return modal.deferred() end,
                on = { error = "fin", hop = "a",
                       done = { to = "fin", action = function(_, v) results[#results + 1] = v end } } },
          fin = { final = true },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("b", c.state)
      assert.same({}, results)
      local dropped = false
      for _, line in ipairs(lines) do
        if line.level == "debug" and line.fields.input == "done" then dropped = true end
      end
      assert.is_true(dropped, "the stale done was not logged at debug")
      c:fire("hop")                              -- a again: a new entry with a job of its own
      assert.equal("fin", c.state)
      assert.same({ "a2" }, results)
    end)
  end)

  describe("modal.reload from inside a drive", function()
    it("is refused from a handler run by the retry of postponed calls; each call answered once", function()
      local path, write = def_file("reloader")
      write([[
local modal = require "modal"
return {
  name = "reloader_spec", initial = "a", methods = { "q", "r" },
  states = {
    a = { q = "postpone", r = "postpone", on = { go = "b" } },
    b = { q = function() return "q" end,
          r = function()
            RELOADER.runs = RELOADER.runs + 1
            local ok, err = pcall(modal.reload, RELOADER.path)
            RELOADER.refused = (not ok) and tostring(err) or nil
            return "r"
          end,
          on = { back = "a" } },
  },
}]])
      _G.RELOADER = { runs = 0, path = path }
      support.defer(function() _G.RELOADER = nil end)
      local c = modal.load(path):new()
      local r, q1, q2 = c:r(), c:q(), c:q()
      c:fire("go")
      assert.equal(1, _G.RELOADER.runs)
      assert.matches("modal.call_later(0, modal.reload", _G.RELOADER.refused, 1, true)
      assert.same({ "succeeded", "r" }, { support.outcome(r) })
      assert.same({ "succeeded", "q" }, { support.outcome(q1) })
      assert.same({ "succeeded", "q" }, { support.outcome(q2) })
      assert.equal(0, c:postponed())
      c:fire("back")
      local q3 = c:q()
      c:fire("go")
      assert.same({ "succeeded", "q" }, { support.outcome(q3) })
    end)

    it("is refused from a job's canceller mid-transition, and the transition completes", function()
      capture_log()
      local path, write = def_file("shrinker")
      write([[
local modal = require "modal"
local states
if not SHRINKER.shrunk then
  states = {
    a = { run = function()
            return modal.deferred(function()
              SHRINKER.shrunk = true
              SHRINKER.refused = not pcall(modal.reload, SHRINKER.path)
            end)
          end,
          on = { done = "b", error = "b", go = "z" } },
    b = { on = { go = "a" } },
  }
  for i = ("c"):byte(), ("z"):byte() do states[string.char(i)] = { on = { go = "a" } } end
else
  states = { a = { on = { go = "b" } }, b = { on = { go = "a" } } }
end
return { name = "shrinker_spec", initial = "a", methods = {}, states = states }
]])
      _G.SHRINKER = { path = path }
      support.defer(function() _G.SHRINKER = nil end)
      local c = modal.load(path):new()
      c:fire("go")
      assert.is_true(_G.SHRINKER.refused)
      assert.equal("z", c.state)
    end)
  end)

  describe("bound methods", function()
    it("follow their name across a reload: a removed one fails with kind error, a kept one runs", function()
      capture_log()
      local path, write = def_file("wide")
      local function version(n)
        write(([[
local methods, defaults = {}, {}
for i = 1, %d do methods[i] = "m" .. i; defaults["m" .. i] = function() return "m" .. i end end
return { name = "wide_spec", initial = "s", methods = methods, defaults = defaults, states = { s = {} } }
]]):format(n))
      end
      version(100)
      local M = modal.load(path)
      local c = M:new()
      local m100, m1 = c.m100, c.m1
      version(1)
      assert.equal(M, modal.reload(path))
      local state, f = support.outcome(m100(c))
      assert.equal("failed", state)
      assert.equal("error", f.kind)
      assert.equal("method 'm100' was removed by a reload", f.message)
      assert.same({ "succeeded", "m1" }, { support.outcome(m1(c)) })
      version(3)                                 -- it comes back: the cached one works again
      assert.equal(M, modal.reload(path))
      assert.same({ "succeeded", "m3" }, { support.outcome(c.m3(c)) })
    end)

    it("raise when called on an instance of another machine, or on something else", function()
      local Wide = modal.machine { name = "wide_other", initial = "s", methods = { "p" },
        states = { s = { p = function() return 1 end } } }
      local Narrow = modal.machine { name = "narrow_other", initial = "s", methods = { "p" },
        states = { s = { p = function() return 2 end } } }
      local p = Wide:new().p
      local ok, err = pcall(p, Narrow:new())
      assert.is_false(ok)
      assert.matches("method 'p' of machine 'wide_other' called on an instance of another machine",
        tostring(err), 1, true)
      ok, err = pcall(p, {})
      assert.is_false(ok)
      assert.matches("called on table", tostring(err), 1, true)
    end)
  end)

  describe("migrate only reads", function()
    for i, what in ipairs { "M:new()", "m:fire()", "a method call" } do
      it("makes a reload fail when it tries " .. what .. "; nothing changes", function()
        capture_log()
        local path, write = def_file("grower")
        write(([[
if not GROWER.two then
  local states = {}
  for i = ("a"):byte(), ("z"):byte() do
    states[string.char(i)] = { on = { go = "x" }, poke = function() end }
  end
  return { name = "grower_spec%d", version = 1, initial = "z", methods = { "poke" }, states = states }
end
return { name = "grower_spec%d", version = 2, initial = "a", methods = { "poke" },
  migrate = function(m)
    local what = %q
    if what == "M:new()" then GROWER.made = m.machine:new()
    elseif what == "m:fire()" then m:fire("go")
    else m:poke() end
    return "a"
  end,
  states = { a = { on = { go = "b" }, poke = function() end },
             b = { on = { go = "a" }, poke = function() end } } }
]]):format(i, i, what))
        _G.GROWER = {}
        support.defer(function() _G.GROWER = nil end)
        local M = modal.load(path)
        local c = M:new()
        _G.GROWER.two = true
        local ok, err = modal.reload(path)
        assert.is_nil(ok)
        assert.matches("migrate raised", err, 1, true)
        assert.matches("migrate", err, 1, true)
        assert.equal(1, M.version)
        assert.equal("z", c.state)
        assert.is_nil(_G.GROWER.made)
      end)
    end
  end)

  describe("values whose metamethods raise", function()
    it("never leave an instance busy: a raising __tostring fired as an input", function()
      capture_log()
      local M = modal.machine {
        name = "raising_tostring", initial = "a", methods = { "poke" },
        states = {
          a = { poke = function(m) m:fire(setmetatable({}, { __tostring = function() error("no") end })) end,
                on = { go = "b" } },
          b = { poke = function() end },
        },
      }
      local c = M:new()
      local state, f = support.outcome(c:poke())
      assert.equal("failed", state)
      assert.matches("input name expected, got table", f.message, 1, true)
      c:fire("go")
      assert.equal("b", c.state)
    end)
  end)

  describe("timeout functions", function()
    for _, case in ipairs { { "NaN", 0 / 0, "NaN" }, { "inf", math.huge, "inf" }, { "-1", -1, "-1" },
                            { "a string", "5", "a string" } } do
      it("returning " .. case[1] .. " is a hook error: input error, never a timer", function()
        local lines = capture_log()
        local M = modal.machine { name = "bad_timeout", initial = "a", methods = {}, inputs = { "error" },
          states = { a = { timeout = function() return case[2] end, on = { timeout = "b", error = "c" } },
                     b = {}, c = {} } }
        local c = M:new()
        assert.equal("c", c.state)
        local said = false
        for _, line in ipairs(lines) do
          local wanted = "timeout function returned " .. case[3]
          if line.level == "error" and line.message:find(wanted, 1, true) then
            said = true
          end
        end
        assert.is_true(said, "the error names what the function returned")
      end)
    end
  end)
end)
