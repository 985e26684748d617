-- specs/reload_load_spec.lua — hot reload under load (doc/reload.md):
-- 10,000 instances with calls flowing (answered through call_later and modal.sleep(0)) and
-- calls postponed, 50 reloads from a timer alternating two valid versions and, every fifth
-- time, a bad file. Every call is answered exactly once, none hangs, and no bad reload
-- changes anything.
--
-- Version A: ready answers through call_later; held postpones; cooling postpones until its
-- timeout. Version B: ready answers through modal.sleep(0); held is gone, replaced by parked
-- (B's migrate moves held -> parked, A's moves parked -> held), which answers calls of
-- even-numbered instances and postpones those of odd ones; cooling's timeout differs.
local modal = require "modal"
local support = require "support"

-- Under valgrind (make valgrind) everything runs ~30x slower: fewer instances, more time.
local SLOW = os.getenv("MODAL_VALGRIND") == "1"
local N = SLOW and 1000 or 10000   -- instances
local STEPS = 50              -- reloads, one per step
local CALLS = 2000            -- calls per step
local FLIPS = 600             -- inputs per step (hold, cool or release)
local NAME = "rlload_pool"

local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_reload_load.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end
local PATH = dir .. "/" .. NAME .. ".lua"

local function write(text)
  local f = assert(io.open(PATH, "w"))
  f:write(text)
  f:close()
end

-- Per-call counts, filled by the handlers (`handled`: handler runs that answered the call).
local handled = {}
local function count(id) handled[id] = handled[id] + 1 end

local function later(id, by)
  local d = modal.deferred()
  modal.call_later(0, function() d:callback({ id = id, by = by }) end)
  return d
end

local function slept(id, by)
  return modal.sleep(0):add_callback(function() return { id = id, by = by } end)
end

local builders = {}

function builders.A()
  return {
    name = NAME, version = 1, initial = "ready", methods = { "query" },
    migrate = function(_, old) if old == "parked" then return "held" end end,
    states = {
      ready = { query = function(_, id) count(id); return later(id, "A") end,
                on = { hold = "held", cool = "cooling" } },
      held = { query = "postpone", on = { release = "ready" } },
      cooling = { timeout = 0.002, query = "postpone", on = { timeout = "ready" } },
    },
  }
end

function builders.B()
  return {
    name = NAME, version = 2, initial = "ready", methods = { "query" },
    migrate = function(_, old) if old == "held" then return "parked" end end,
    states = {
      ready = { query = function(_, id) count(id); return slept(id, "B") end,
                on = { hold = "parked", cool = "cooling" } },
      parked = {
        query = function(m, id)
          if m.id % 2 == 1 then return m:postpone() end
          count(id)
          return slept(id, "B parked")
        end,
        on = { release = "ready" },
      },
      cooling = { timeout = 0.003, query = "postpone", on = { timeout = "ready" } },
    },
  }
end

-- Bad versions: each must be rejected whatever state the instances are in.
function builders.invalid()
  local d = builders.A()
  d.version = 3
  d.states.ready.on.hold = "hled"
  return d
end

function builders.renamed()
  local d = builders.B()
  d.name, d.version = NAME .. "_renamed", 3
  return d
end

-- Version C has neither held nor parked: instances there cannot be placed.
local function without_holding(migrate)
  return function()
    local d = builders.A()
    d.version, d.migrate = 3, migrate
    d.states.held = nil
    d.states.ready.on.hold = nil
    return d
  end
end
builders.no_migrate = without_holding(nil)
builders.migrate_raises = without_holding(function() error("migrate gave up") end)
builders.migrate_unknown = without_holding(function() return "nowhere" end)

package.loaded.reload_load_probe = { make = function(kind) return builders[kind]() end }

local function set(kind)
  write(("return require('reload_load_probe').make(%q)\n"):format(kind))
end

local bad_files = {
  function() write("return {\n  name = ,\n") end,
  function() set("invalid") end,
  function() set("renamed") end,
  function() set("no_migrate") end,
  function() write("error('this file does not load')\n") end,
  function() set("migrate_raises") end,
  function() set("migrate_unknown") end,
}

describe("hot reload under load", function()
  local previous_log, previous_reporter
  local errors, unhandled = 0, 0

  setup(function()
    previous_log = modal.on_log(function(level, _, fields)
      if level == "error" and fields and fields.machine == NAME then errors = errors + 1 end
    end)
    previous_reporter = modal.on_unhandled(function() unhandled = unhandled + 1 end)
  end)

  teardown(function()
    modal.on_unhandled(previous_reporter)
    modal.on_log(previous_log)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("answers every call exactly once through 50 reloads, and bad files change nothing", function()
    math.randomseed(20240605)
    set("A")
    local M = modal.load(PATH)
    local inst = {}
    for i = 1, N do inst[i] = M:new() end

    local answered, wrong, failures = {}, 0, 0
    local ncalls = 0
    local function call(c)
      ncalls = ncalls + 1
      local id = ncalls
      answered[id], handled[id] = 0, 0
      c:query(id):add_both(function(r)
        answered[id] = answered[id] + 1
        if modal.is_failure(r) then
          failures = failures + 1
        elseif type(r) ~= "table" or r.id ~= id then
          wrong = wrong + 1
        end
      end)
    end

    local function holding(c) return c.state == "held" or c.state == "parked" end

    local function snapshot()
      local states, postponed = {}, 0
      for i = 1, N do
        states[i] = inst[i].state
        postponed = postponed + inst[i]:postponed()
      end
      return states, postponed
    end

    local problems = {}
    local function problem(text)
      if #problems < 20 then problems[#problems + 1] = text end
    end

    local good, bad, version = 0, 0, 1
    local finished = false
    local function step(k)
      for _ = 1, CALLS do call(inst[math.random(N)]) end
      for _ = 1, FLIPS do
        local c = inst[math.random(N)]
        if c.state == "ready" then
          c:fire(math.random() < 0.7 and "hold" or "cool")
        elseif holding(c) then
          c:fire("release")
        end
      end
      if k % 5 == 0 then
        local held = 0
        for i = 1, N do if holding(inst[i]) then held = held + 1 end end
        if held == 0 then problem(("step %d: no instance held before a bad reload"):format(k)) end
        bad_files[(k // 5 - 1) % #bad_files + 1]()
        local states, postponed = snapshot()
        local ok, err = modal.reload(PATH)
        if ok ~= nil or type(err) ~= "string" then
          problem(("step %d: a bad file reloaded: %s, %s"):format(k, tostring(ok), tostring(err)))
        else
          bad = bad + 1
        end
        if M.version ~= version then
          problem(("step %d: version %s after a bad reload"):format(k, tostring(M.version)))
        end
        local after, postponed_after = snapshot()
        if postponed_after ~= postponed then
          problem(("step %d: %d postponed calls before a bad reload, %d after")
            :format(k, postponed, postponed_after))
        end
        for i = 1, N do
          if after[i] ~= states[i] then
            problem(("step %d: instance %d went from %s to %s in a bad reload")
              :format(k, i, states[i], after[i]))
            break
          end
        end
      else
        local kind = (good % 2 == 0) and "B" or "A"
        set(kind)
        local ok, err = modal.reload(PATH)
        if ok ~= M then
          problem(("step %d: reload to %s failed: %s"):format(k, kind, tostring(err)))
        else
          good = good + 1
          version = kind == "A" and 1 or 2
        end
        if M.version ~= version then
          problem(("step %d: version %s after reloading %s"):format(k, tostring(M.version), kind))
        end
      end
      if k < STEPS then
        modal.call_later(0, step, k + 1)
      else
        for i = 1, N do
          if holding(inst[i]) then inst[i]:fire("release") end
        end
        finished = true
      end
    end

    local started = os.clock()
    modal.call_later(0, step, 1)
    assert.is_true(support.run_loop(SLOW and 120 or 10),
      "the loop did not finish: a call or a timer hangs")
    assert.is_true(finished)
    assert.same({}, problems)
    assert.equal(40, good)
    assert.equal(10, bad)
    assert.equal(10, errors)                      -- each bad reload logged once, at error

    local postponed = 0
    for i = 1, N do
      postponed = postponed + inst[i]:postponed()
      assert.is_false(holding(inst[i]))
    end
    assert.equal(0, postponed)

    assert.equal(STEPS * CALLS, ncalls)
    local never, twice, dispatched = 0, 0, 0
    for id = 1, ncalls do
      if answered[id] == 0 then never = never + 1 elseif answered[id] > 1 then twice = twice + 1 end
      if handled[id] ~= 1 then dispatched = dispatched + 1 end
    end
    assert.equal(0, never, "calls never answered")
    assert.equal(0, twice, "calls answered more than once")
    assert.equal(0, dispatched, "calls whose answering handler did not run exactly once")
    assert.equal(0, wrong, "calls answered with another call's result")
    assert.equal(0, failures, "calls that failed")
    collectgarbage()
    collectgarbage()
    support.run_loop(0.05)
    assert.equal(0, unhandled, "unhandled failures were reported")
    assert.is_true(os.clock() - started < (SLOW and 120 or 5),
      ("took %.1f s of CPU"):format(os.clock() - started))
  end)
end)
