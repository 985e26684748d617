-- specs/machine_edges_spec.lua — machines and instances at their edges (doc/machines.md): what
-- tostring(c) says, fields that do not exist, a fractional version, a bound fire used on an
-- instance of another machine or on something that is no instance, a retried call answered
-- with its own Deferred, a definition that loops without waiting (one warn line naming the
-- cycle, and the run still ends), observers that cancel many others while they are being told,
-- and the loop-level calls that refuse misuse: modal.log_level with an unknown level, modal.run
-- inside a running loop.
local modal = require "modal"
local uv = require "luv"
local support = require "support"

local function door(extra)
  local def = { name = "door", initial = "shut", methods = {},
    states = { shut = { on = { open = "open" } }, open = { on = { shut = "shut" } } } }
  for k, v in pairs(extra or {}) do def[k] = v end
  return modal.machine(def)
end

describe("machines and instances at their edges", function()
  after_each(support.run_undo)

  it("tostring(c) says name#id (state), and follows the state", function()
    local M = door()
    local c1, c2 = M:new(), M:new()
    assert.equal("door#" .. c1.id .. " (shut)", tostring(c1))
    c2:fire("open")
    assert.equal("door#" .. c2.id .. " (open)", tostring(c2))
    assert.equal(c1.id + 1, c2.id)
  end)

  it("reads nil for fields that do not exist, on instances, machines and the module", function()
    local M = door()
    local c = M:new()
    assert.is_nil(c.nothing)
    assert.is_nil(c[1])
    assert.is_nil(M.nothing)
    assert.is_nil(M[1])
    assert.is_nil(modal.nothing)
    assert.is_nil(modal[1])
    assert.is_nil(c[true])
    assert.is_nil(M[true])
    assert.is_nil(modal[true])
  end)

  it("keeps a fractional version as given, and no version as nil", function()
    assert.equal(1.5, door({ version = 1.5 }).version)
    assert.equal(3, door({ version = 3 }).version)
    assert.equal(math.type(3), math.type(door({ version = 3 }).version))
    assert.is_nil(door().version)
  end)

  describe("a bound fire", function()
    it("used on an instance of another machine drives that instance by its own definition", function()
      local c = door():new()
      local Lamp = modal.machine { name = "lamp", initial = "off", methods = {},
        states = { off = { on = { flip = "lit" } }, lit = { on = { flip = "off" } } } }
      local lamp = Lamp:new()
      local fire = c.fire
      fire(lamp, "flip")
      assert.equal("lit", lamp.state)
      assert.equal("shut", c.state)
      local ok, err = pcall(fire, lamp, "open")          -- door's input, not lamp's
      assert.is_false(ok)
      assert.matches("lamp#1 in state 'lit' does not take input 'open' (no state does)", err, 1, true)
    end)

    it("used on something that is not an instance raises naming what it got", function()
      local c = door():new()
      local ok, err = pcall(c.fire, 42, "open")
      assert.is_false(ok)
      assert.matches("(modal.instance expected, got number)", err, 1, true)
      assert.equal("shut", c.state)
    end)
  end)

  it("takes an input whose name is longer than 40 characters like any other, every time", function()
    local long = "open_the_door_when_the_badge_reader_says_yes"
    assert.is_true(#long > 40)
    local M = modal.machine { name = "long_door", initial = "shut", methods = {},
      states = { shut = { on = { [long] = "open" } }, open = { on = { shut = "shut" } } } }
    local c = M:new()
    for _ = 1, 3 do
      c:fire(long)
      assert.equal("open", c.state)
      c:fire("shut")
    end
    local ok, err = pcall(c.fire, c, long .. "_twice")
    assert.is_false(ok)
    assert.matches("does not take input '" .. long .. "_twice'", err, 1, true)
  end)

  it("fails a retried call with kind error when its handler returns the call's own Deferred", function()
    local d
    local M = modal.machine { name = "gate", initial = "shut", methods = { "q" },
      states = { shut = { q = "postpone", on = { open = "open" } },
                 open = { q = function() return d end } } }
    local c = M:new()
    d = c:q()
    c:fire("open")                                     -- the retry: its handler returns d itself
    local state, f = support.outcome(d)
    assert.equal("failed", state)
    assert.equal("error", f.kind)
    assert.equal("a Deferred cannot follow itself", f.message)
    assert.equal(0, c:postponed())
  end)

  describe("a definition that loops without waiting", function()
    local function pingpong(rounds)
      local n = 0
      local M = modal.machine { name = "pingpong", initial = "idle", methods = {},
        states = {
          idle = { on = { start = "ping" } },
          ping = { enter = function(m)
                     n = n + 1
                     m:fire(n < rounds and "hit" or "rest")
                   end,
                   on = { hit = "pong", rest = "idle" } },
          pong = { enter = function(m) m:fire("hit") end, on = { hit = "ping" } },
        } }
      return M, function() return n end
    end

    it("is said once per run to completion, at warn, with the cycle; the run still ends", function()
      local lines = support.capture_log()
      local M, rounds = pingpong(60000)                   -- 120,000 transitions in one run
      local c = M:new()
      c:fire("start")
      assert.equal("idle", c.state)
      assert.equal(60000, rounds())
      local warned = {}
      for _, line in ipairs(lines) do
        if line.level == "warn" then warned[#warned + 1] = line end
      end
      assert.equal(1, #warned)
      assert.equal("100000 transitions in one run to completion: the definition loops without "
        .. "waiting (cycle: ping -> pong -> ping)", warned[1].message)
      assert.equal("pingpong", warned[1].fields.machine)
      assert.equal(c.id, warned[1].fields.id)
    end)

    it("is not said for a run shorter than 100,000 transitions", function()
      local lines = support.capture_log()
      local M = pingpong(40000)
      M:new():fire("start")
      for _, line in ipairs(lines) do assert.not_equal("warn", line.level, line.message) end
    end)
  end)

  it("tells only the observers still there when one cancels many others while being told", function()
    local c = door():new()
    local told, handles = {}, {}
    handles[1] = c:on_transition(function(_, from, to)
      told[#told + 1] = "first " .. from .. "->" .. to
      for i = 2, #handles do handles[i]:cancel() end
    end)
    for i = 2, 40 do
      handles[i] = c:on_transition(function() told[#told + 1] = "observer " .. i end)
    end
    c:fire("open")
    assert.same({ "first shut->open" }, told)
    c:on_transition(function(_, _, to) told[#told + 1] = "late " .. to end)
    c:fire("shut")
    assert.same({ "first shut->open", "first open->shut", "late shut" }, told)
  end)

  it("modal.log_level refuses an unknown level and keeps the one set", function()
    local previous = modal.log_level("warn")
    support.defer(function() modal.log_level(previous) end)
    local ok, err = pcall(modal.log_level, "verbose")
    assert.is_false(ok)
    assert.matches("level must be error, warn, info or debug", err, 1, true)
    assert.equal("warn", modal.log_level())
  end)

  describe("modal.run inside a running loop", function()
    it("raises from a modal callback and from a luv callback; the outer run goes on", function()
      local said = {}
      modal.call_later(0, function()
        local ok, err = pcall(modal.run)
        said[#said + 1] = tostring(ok) .. " " .. err
      end)
      local t = uv.new_timer()
      t:start(0, 0, function()
        t:close()
        local ok, err = pcall(modal.run)
        said[#said + 1] = tostring(ok) .. " " .. err
      end)
      local later = false
      modal.call_later(0.01, function() later = true end)
      assert.is_true(support.run_loop(2))
      assert.equal(2, #said)
      for _, s in ipairs(said) do
        assert.matches("^false .*modal%.run: the loop is already running$", s)
      end
      assert.is_true(later)
    end)

    it("raises inside luv's own uv.run() too", function()
      local said
      local t = uv.new_timer()
      t:start(0, 0, function()
        t:close()
        local ok, err = pcall(modal.run)
        said = tostring(ok) .. " " .. err
      end)
      uv.run()
      assert.matches("^false .*modal%.run: the loop is already running$", said)
    end)
  end)
end)
