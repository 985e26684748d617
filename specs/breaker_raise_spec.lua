-- specs/breaker_raise_spec.lua — modal.breaker over a target whose method raises (doc/policies.md,
-- "Breaker"): the raise is that call's failed outcome (kind error), counted like any failure in
-- closed, reopening in half_open, and a trial slot is never lost to it; then the default names
-- of breakers made with modal.breaker{} are distinct. Timers run on the testing clock.
local modal = require "modal"
local support = require "support"

-- A plain object (not an instance): get("raise") raises, get("fail") answers a failure,
-- anything else succeeds at once.
local function plain_target()
  local t = { calls = 0 }
  function t.get(_, k)
    t.calls = t.calls + 1
    if k == "raise" then error("the target raised on " .. k) end
    if k == "fail" then return modal.fail("remote", "boom") end
    return modal.succeed(k)
  end
  return t
end

local function watch(d)
  local got = {}
  d:add_both(function(v) got.fired, got.value = true, v end)
  return got
end

describe("modal.breaker over a target whose method raises", function()
  local clock
  before_each(function() clock = support.clock() end)
  after_each(support.run_undo)

  it("in half_open: a raising trial reopens at once and its slot is not kept taken", function()
    local t = plain_target()
    local b = modal.breaker { target = t, methods = { "get" }, name = "raise_trial", trials = 1,
      trial_timeout = 0.5, open_wait = { initial = 1, jitter = 0 } }
    b:force("open"); b:force(nil)
    assert.equal("half_open", b.state)
    local got = watch(b:get("raise"))
    assert.is_true(got.fired)
    assert.equal("error", got.value.kind)
    assert.matches("the target raised on raise", got.value.message)
    assert.is_string(got.value.traceback)
    assert.equal("open", b.state)                    -- the trial failed: open again
    assert.matches("a trial call failed %(error: .*the target raised on raise%)",
      modal.breaker.status(b).reason)
    clock:advance(1)                                  -- the open wait: a new trial period
    assert.equal("half_open", b.state)
    local ok = watch(b:get("ok"))
    assert.is_true(ok.fired)
    assert.equal("ok", ok.value)
    assert.equal("closed", b.state)
  end)

  it("in half_open with trials = 2: a raise never leaves its slot taken", function()
    local t = plain_target()
    local b = modal.breaker { target = t, methods = { "get" }, name = "raise_trials", trials = 2,
      counts = function(f) return f.kind ~= "error" end, open_wait = { initial = 1, jitter = 0 } }
    b:force("open"); b:force(nil)
    for _ = 1, 5 do                                   -- excluded by counts: each frees its slot
      local got = watch(b:get("raise"))
      assert.equal("error", got.value.kind)
      assert.equal("half_open", b.state)
      assert.equal(0, modal.breaker.status(b).trials.taken)
    end
    watch(b:get("a")); watch(b:get("b"))
    assert.equal("closed", b.state)
  end)

  it("in closed: a raise counts as a failure in the window and opens the breaker", function()
    local t = plain_target()
    local b = modal.breaker { target = t, methods = { "get" }, name = "raise_closed", window = 2,
      min_calls = 2, open_wait = { initial = 1, jitter = 0 } }
    local first = watch(b:get("raise"))
    assert.equal("error", first.value.kind)
    assert.equal("closed", b.state)
    local st = modal.breaker.status(b)
    assert.equal(1, st.calls)
    assert.equal(1, st.failure_rate)
    assert.equal("error", st.last.kind)
    watch(b:get("ok"))
    assert.equal("open", b.state)                     -- 1 of 2 failed: 50 %
    local f = watch(b:get("ok")).value
    assert.equal("unavailable", f.kind)
    assert.matches("1 of 2 calls failed %(50 %%; last: error: .*the target raised on raise%)",
      f.message)
    assert.equal(2, t.calls)                          -- open: the target is not called
  end)

  it("in closed: a failed Deferred a plain object returns is a failure, not a success", function()
    local t = plain_target()
    local b = modal.breaker { target = t, methods = { "get" }, name = "plain_failed", window = 2,
      min_calls = 2 }
    local got = watch(b:get("fail"))
    assert.equal("remote", got.value.kind)
    watch(b:get("fail"))
    assert.equal("open", b.state)
  end)

  it("in closed: counts sees the raise as kind error and may exclude it", function()
    local t = plain_target()
    local seen = {}
    local b = modal.breaker { target = t, methods = { "get" }, name = "raise_excluded", window = 2,
      min_calls = 2, counts = function(f) seen[#seen + 1] = f.kind; return f.kind ~= "error" end }
    for _ = 1, 4 do watch(b:get("raise")) end
    assert.same({ "error", "error", "error", "error" }, seen)
    assert.equal("closed", b.state)
    assert.equal(0, modal.breaker.status(b).calls)
  end)

  it("in closed with slow_call: a raise is counted too", function()
    local t = plain_target()
    local b = modal.breaker { target = t, methods = { "get" }, name = "raise_slow", window = 2,
      min_calls = 2, slow_call = 1 }
    watch(b:get("raise")); watch(b:get("raise"))
    assert.equal("open", b.state)
  end)

  it("a raised failure object is the outcome as it is", function()
    local raised = modal.failure("auth", "bad password")
    local t = { get = function() error(raised) end }
    local b = modal.breaker { target = t, methods = { "get" }, name = "raise_failure" }
    assert.equal(raised, watch(b:get()).value)
  end)
end)

describe("modal.breaker's default names", function()
  after_each(support.run_undo)

  it("are distinct for breakers made without a name, over plain objects or instances", function()
    local t = { get = function() return modal.succeed(1) end }
    local names = {}
    for i = 1, 3 do
      local b = modal.breaker { target = t, methods = { "get" } }
      names[i] = b.machine.name
      b:force("open")
      assert.matches("^unavailable: " .. names[i] .. "#1 is open", tostring(watch(b:get()).value))
    end
    assert.matches("^breaker", names[1])             -- "breaker", unless one took it already
    assert.matches("^breaker_%d+$", names[2])
    assert.matches("^breaker_%d+$", names[3])
    assert.is_true(names[1] ~= names[2] and names[2] ~= names[3] and names[1] ~= names[3])
    local M = modal.machine { name = "named_target", initial = "up", methods = { "get" },
      states = { up = { get = function() return 1 end } } }
    local b1 = modal.breaker { target = M:new(), methods = { "get" } }
    local b2 = modal.breaker { target = M:new(), methods = { "get" } }
    assert.equal("named_target_breaker", b1.machine.name)
    assert.equal("named_target_breaker_2", b2.machine.name)
    local b3 = modal.breaker { target = M:new(), methods = { "get" }, name = "chosen" }
    assert.equal("chosen", b3.machine.name)            -- a name given is kept as it is
  end)
end)
