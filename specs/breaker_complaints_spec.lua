-- specs/breaker_complaints_spec.lua — modal.breaker against what users of circuit breakers
-- complain about (doc/policies.md, "Breaker"): a stampede of calls through a half-open
-- breaker, trials that hang and keep it half open for ever, a cancelled trial that reopens it
-- or uses up its only slot. On the testing clock, against a scriptable target.
local support = require "support"
local bs = require "breaker_support"

describe("modal.breaker, from users' complaints", function()
  local clock
  before_each(function() clock = support.clock() end)
  after_each(support.run_undo)

  local function half_open(t, opts)
    local o = { window = 2, min_calls = 2, open_wait = { initial = 5, multiplier = 2, jitter = 0 } }
    for k, v in pairs(opts or {}) do o[k] = v end
    local b = bs.breaker(t, o)
    bs.calls(b, { "fail", "fail" })
    clock:advance(5)
    assert.equal("half_open", b.state)
    return b
  end

  it("half-open stampede: with trials = 1, of five concurrent calls one goes through, four fail fast",
     function()
    local t = bs.target()
    local b = half_open(t, { trials = 1 })
    local before = t.calls
    local got = bs.calls(b, { "hang", "hang", "hang", "hang", "hang" })
    assert.equal(before + 1, t.calls)
    assert.is_false(got[1].fired)
    for i = 2, 5 do
      assert.is_true(got[i].fired)
      assert.equal("unavailable", got[i].value.kind)
      assert.matches("is half_open: its trial call is taken", got[i].value.message, 1, true)
      assert.equal("half_open", got[i].value.value.state)
    end
    t.pending[1]:callback("through")
    assert.equal("through", got[1].value)
    assert.equal("closed", b.state)
  end)

  it("hung trials fail at trial_timeout and reopen the breaker with a longer wait", function()
    local t = bs.target()
    local b = half_open(t, { trials = 2, trial_timeout = 3 })
    local got = bs.calls(b, { "hang", "hang" })
    clock:advance(2.999)
    assert.is_false(got[1].fired or got[2].fired)
    assert.equal("half_open", b.state)
    clock:advance(0.001)
    assert.equal("timeout", got[1].value.kind)
    assert.equal("open", b.state)
    local f = bs.watch(b:call("ok")).value
    assert.equal("unavailable", f.kind)
    assert.matches("is open: a trial call timed out after 3.0 s; next trial in 10 s", f.message, 1, true)
    assert.equal(10, f.value.retry_in)
    assert.equal(1, got[1].n)
    assert.equal(1, got[2].n)
  end)

  it("a cancelled trial neither reopens the breaker nor uses up the slot", function()
    local t = bs.target()
    local b = half_open(t, { trials = 1 })
    local d = b:call("hang")
    local trial = bs.watch(d)
    d:cancel()
    assert.equal("cancelled", trial.value.kind)
    assert.equal("half_open", b.state)
    local before = t.calls
    local next_trial = bs.watch(b:call("ok"))        -- the slot is free again
    assert.equal(before + 1, t.calls)
    assert.equal("ok", next_trial.value)
    assert.equal("closed", b.state)
  end)

  it("a caller's own deadline on a trial counts as a failed trial, and frees nothing twice", function()
    local t = bs.target()
    local b = half_open(t, { trials = 1, trial_timeout = 30 })
    local d = b:call("hang"):add_timeout(1)
    local got = bs.watch(d)
    clock:advance(1)
    assert.equal("timeout", got.value.kind)
    assert.equal("open", b.state)
    assert.equal(1, got.n)
  end)
end)
