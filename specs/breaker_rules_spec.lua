-- specs/breaker_rules_spec.lua — modal.breaker, each rule of doc/policies.md ("Breaker"),
-- unhappy paths first: fail-fast in open and its self-explaining failure, what opens it (count
-- and time windows, min_calls, the failure rate and the slow-call rate, compared with >=), the
-- open wait's backoff, the half-open trials, trial_timeout, cancelled and excluded calls,
-- force(), outcomes of an earlier period; then options, transitions and paths. Every timer
-- runs on the testing clock; the target is a scriptable instance (specs/breaker_support.lua).
local modal = require "modal"
local support = require "support"
local testing = require "modal.testing"
local bs = require "breaker_support"

local function opened(t, opts, list)
  local b = bs.breaker(t, opts)
  bs.calls(b, list or { "fail", "fail", "fail", "fail" })
  assert.equal("open", b.state)
  return b
end

describe("modal.breaker", function()
  local clock
  before_each(function() clock = support.clock() end)
  after_each(support.run_undo)

  describe("in open", function()
    it("fails every call at once, without touching the target: unavailable, saying why and until when",
       function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 4, min_calls = 4, open_wait = { initial = 5, jitter = 0 } })
      bs.calls(b, { "ok", "fail", "ok", "fail" })
      assert.equal("open", b.state)
      assert.equal(4, t.calls)
      local got = bs.watch(b:call("ok"))
      assert.is_true(got.fired)
      assert.equal(4, t.calls)
      local f = got.value
      assert.equal("unavailable", f.kind)
      assert.equal(b.machine.name .. "#" .. b.id .. " is open: 2 of 4 calls failed (50 %; " ..
        "last: remote: boom); next trial in 5.0 s", f.message)
      assert.equal("open", f.value.state)
      assert.equal(5, f.value.retry_in)
      assert.equal(0.5, f.value.failure_rate)
      assert.equal("remote", f.value.last.kind)
      clock:advance(2)
      f = bs.watch(b:call("ok")).value
      assert.equal(3, f.value.retry_in)
      assert.matches("next trial in 3.0 s$", f.message)
    end)
  end)

  describe("in closed", function()
    it("does not open before min_calls outcomes are in the window", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 10, min_calls = 5 })
      bs.calls(b, { "fail", "fail", "fail", "fail" })
      assert.equal("closed", b.state)
      bs.calls(b, { "fail" })
      assert.equal("open", b.state)
    end)

    it("opens once the failure rate reaches failure_rate (>=), not below it", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 10, min_calls = 10, failure_rate = 0.3 })
      bs.calls(b, { "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "fail", "fail" })
      assert.equal("closed", b.state)                 -- 2 of 10: 20 %
      bs.calls(b, { "ok" })                           -- an ok leaves, an ok comes: 20 %
      assert.equal("closed", b.state)
      bs.calls(b, { "fail" })                         -- 3 of 10: 30 %
      assert.equal("open", b.state)
      assert.equal(0.3, modal.breaker.status(b).failure_rate)
    end)

    it("counts the last `window` calls only: old failures leave the window", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 4, min_calls = 4 })
      bs.calls(b, { "fail", "ok", "ok", "ok", "ok", "fail" })   -- the first failure has left
      assert.equal("closed", b.state)
      bs.calls(b, { "fail" })                                  -- ok ok fail fail: 50 %
      assert.equal("open", b.state)
    end)

    it("with window_time, counts the calls of the last window_time seconds only", function()
      local t = bs.target()
      local b = bs.breaker(t, { window_time = 10, min_calls = 2 })
      bs.calls(b, { "fail" })
      clock:advance(10)                                -- 10 s later: that failure has left
      bs.calls(b, { "ok" })
      assert.equal("closed", b.state)
      assert.equal(1, modal.breaker.status(b).calls)
      clock:advance(5)
      bs.calls(b, { "ok", "fail" })                   -- ok ok fail within 10 s: 33 %
      assert.equal("closed", b.state)
      bs.calls(b, { "fail" })                         -- 2 of 4
      assert.equal("open", b.state)
    end)

    it("opens once the rate of calls slower than slow_call reaches slow_rate", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 4, min_calls = 4, slow_call = 2 })   -- slow_rate 1.0
      local got = bs.calls(b, { "slow 2", "slow 3", "slow 2.5", "slow 1" })
      clock:advance(3)
      for i = 1, 4 do assert.is_true(got[i].ok) end
      assert.equal("closed", b.state)                 -- 2 of 4 slower than 2 s: 50 % < 100 %
      bs.calls(b, { "slow 2", "slow 2", "slow 2", "slow 2" })
      clock:advance(2)
      assert.equal("closed", b.state)                 -- exactly slow_call is not slower
      bs.calls(b, { "slow 2.5", "slow 2.5", "slow 2.5", "slow 2.5" })
      clock:advance(2.5)
      assert.equal("open", b.state)
      local f = bs.watch(b:call("ok")).value
      assert.matches("is open: 4 of 4 calls took more than 2.0 s %(100 %%%); next trial in 5.0 s",
        f.message)
      assert.equal(1, f.value.slow_rate)

      local b2 = bs.breaker(t, { window = 4, min_calls = 4, slow_call = 1, slow_rate = 0.5 })
      bs.calls(b2, { "slow 1.5", "ok", "slow 2", "ok" })
      clock:advance(2)
      assert.equal("open", b2.state)
    end)

    it("does not count cancelled calls, nor failures counts() excludes", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 2, min_calls = 2,
        counts = function(f) return f.kind ~= "notfound" end })
      bs.calls(b, { "notfound", "notfound", "notfound" })
      local d = b:call("hang")
      d:cancel()
      assert.equal("closed", b.state)
      assert.equal(0, modal.breaker.status(b).calls)
      bs.calls(b, { "fail", "fail" })
      assert.equal("open", b.state)
    end)

    it("does not count a call of an earlier period: one made before it opened answers later", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 2, min_calls = 2, open_wait = { initial = 5, jitter = 0 },
        trials = 1 })
      local late = bs.watch(b:call("hang"))
      bs.calls(b, { "fail", "fail" })
      assert.equal("open", b.state)
      clock:advance(5)
      assert.equal("half_open", b.state)
      t.pending[1]:errback(modal.failure("remote", "late"))
      assert.is_true(late.fired)
      assert.equal("half_open", b.state)             -- not a failed trial
      bs.calls(b, { "ok" })
      assert.equal("closed", b.state)
    end)
  end)

  describe("open_wait", function()
    it("grows each time a trial fails, is capped, and starts again from initial once closed", function()
      local t = bs.target()
      local b = bs.breaker(t, { window = 2, min_calls = 2, trials = 1,
        open_wait = { initial = 5, multiplier = 2, max = 12, jitter = 0 } })
      local seen, at = bs.transitions(b)
      bs.calls(b, { "fail", "fail" })
      local waits = {}
      for _ = 1, 3 do
        waits[#waits + 1] = modal.breaker.status(b).retry_in
        clock:next()
        assert.equal("half_open", b.state)
        bs.calls(b, { "fail" })
      end
      waits[#waits + 1] = modal.breaker.status(b).retry_in
      assert.same({ 5, 10, 12, 12 }, waits)
      clock:next()
      bs.calls(b, { "ok" })
      assert.equal("closed", b.state)
      bs.calls(b, { "fail", "fail" })
      assert.equal(5, modal.breaker.status(b).retry_in)
      assert.same({ "closed>open:trip", "open>half_open:timeout", "half_open>open:trip",
        "open>half_open:timeout", "half_open>open:trip", "open>half_open:timeout", "half_open>open:trip",
        "open>half_open:timeout", "half_open>closed:recovered", "closed>open:trip" }, seen)
      assert.equal(5, at[2] - at[1])
      assert.equal(10, at[4] - at[3])
    end)

    it("is jittered by default: each wait within ±20 % of its base", function()
      local t = bs.target()
      local b = modal.breaker { target = t.c, methods = { "call" }, name = bs.name(), window = 2,
        min_calls = 2 }
      bs.calls(b, { "fail", "fail" })
      local w = modal.breaker.status(b).retry_in
      assert.is_true(w >= 4 and w <= 6, tostring(w))
    end)
  end)

  describe("in half_open", function()
    it("lets at most `trials` calls through, concurrent ones included; the rest fail at once", function()
      local t = bs.target()
      local b = opened(t, { window = 2, min_calls = 2, trials = 3 }, { "fail", "fail" })
      clock:next()
      local before = t.calls
      local got = bs.calls(b, { "hang", "hang", "hang", "ok" })
      assert.equal(before + 3, t.calls)
      assert.equal("unavailable", got[4].value.kind)
      assert.matches("is half_open: all 3 trial calls are taken (opened: 2 of 2 calls failed (100 %; " ..
        "last: remote: boom))", got[4].value.message, 1, true)
      for i = 1, 3 do t.pending[i]:callback("fine") end
      assert.equal("closed", b.state)
      for i = 1, 3 do assert.equal("fine", got[i].value) end
    end)

    it("closes once `trials` calls one after another have succeeded", function()
      local t = bs.target()
      local b = opened(t, { window = 2, min_calls = 2, trials = 2 }, { "fail", "fail" })
      clock:next()
      bs.calls(b, { "ok" })
      assert.equal("half_open", b.state)
      bs.calls(b, { "ok" })
      assert.equal("closed", b.state)
    end)

    it("opens again at the first trial that fails", function()
      local t = bs.target()
      local b = opened(t, { window = 2, min_calls = 2, trials = 3 }, { "fail", "fail" })
      clock:next()
      bs.calls(b, { "ok", "fail" })
      assert.equal("open", b.state)
      local f = bs.watch(b:call("ok")).value
      assert.matches("is open: a trial call failed %(remote: boom%); next trial in 10 s", f.message)
    end)

    it("opens again when its trials were slow", function()
      local t = bs.target()
      local b = opened(t, { window = 2, min_calls = 2, trials = 2, slow_call = 1 }, { "fail", "fail" })
      clock:next()
      bs.calls(b, { "slow 1.5", "slow 2" })
      clock:advance(2)
      assert.equal("open", b.state)
      assert.matches("2 of 2 trial calls took more than 1.0 s (100 %)",
        bs.watch(b:call("ok")).value.message, 1, true)
    end)

    it("frees the slot of a trial whose failure counts() excludes, without counting it", function()
      local t = bs.target()
      local b = opened(t, { window = 2, min_calls = 2, trials = 1,
        counts = function(f) return f.kind ~= "notfound" end }, { "fail", "fail" })
      clock:next()
      bs.calls(b, { "notfound" })
      assert.equal("half_open", b.state)
      bs.calls(b, { "ok" })
      assert.equal("closed", b.state)
    end)
  end)

  describe("force()", function()
    it("holds open for operators, with no timer, until force(nil) goes to half_open", function()
      local t = bs.target()
      local b = bs.breaker(t, {})
      assert.is_true(bs.watch(b:force("open")).ok)
      assert.equal("open", b.state)
      assert.same({}, clock:pending())
      local f = bs.watch(b:call("ok")).value
      assert.equal(b.machine.name .. "#" .. b.id .. " is open: forced open by an operator", f.message)
      assert.is_nil(f.value.retry_in)
      assert.equal("open", f.value.forced)
      clock:advance(1000)
      assert.equal("open", b.state)
      b:force(nil)
      assert.equal("half_open", b.state)
      bs.calls(b, { "ok", "ok", "ok" })
      assert.equal("closed", b.state)
    end)

    it("holds closed for operators: failures do not open it until force(nil), which starts a fresh window",
       function()
      local t = bs.target()
      local b = opened(t, { window = 2, min_calls = 2 }, { "fail", "fail" })
      b:force("closed")
      assert.equal("closed", b.state)
      bs.calls(b, { "fail", "fail", "fail" })
      assert.equal("closed", b.state)
      b:force()
      assert.equal("closed", b.state)
      bs.calls(b, { "fail" })
      assert.equal("closed", b.state)
      bs.calls(b, { "fail" })
      assert.equal("open", b.state)
    end)

    it("refuses anything but \"open\", \"closed\" or nil", function()
      local b = bs.breaker(bs.target(), {})
      local got = bs.watch(b:force("half_open"))
      assert.equal("error", got.value.kind)
      assert.matches('force: expected "open", "closed" or nil, got "half_open"', got.value.message, 1, true)
    end)
  end)

  describe("options", function()
    it("are checked before anything is made, every problem at once, each named", function()
      local t = bs.target()
      local ok, err = pcall(modal.breaker, { target = t.c, methods = { "call", "nope", "force" }, windw = 3,
        failure_rate = 1.5, min_calls = 30, trials = 0, slow_rate = 0.5, open_wait = { initial = -1 },
        counts = "all" })
      assert.is_false(ok)
      for _, text in ipairs {
        "windw: unknown option (did you mean 'window'?)",
        "methods[2]: the target has no method 'nope'",
        "methods[3]: 'force' is a method every breaker has; choose another name",
        "min_calls: 30 is more than the window's 20 calls: the breaker could never open",
        "failure_rate: expected a rate > 0 and <= 1, got 1.5",
        "slow_rate: needs slow_call (the seconds a call must take more than to be slow)",
        "trials: expected a whole number of calls >= 1, got 0",
        "counts: expected function(failure) -> boolean, got \"all\"",
        "open_wait.initial: expected a number of seconds >= 0, got -1",
      } do
        assert.matches(text, err, 1, true)
      end
      ok, err = pcall(modal.breaker, { methods = { "call" } })
      assert.is_false(ok)
      assert.matches("target: expected the instance to guard", err, 1, true)
      err = select(2, pcall(modal.breaker, { target = t.c, methods = { "call" }, window = 1e300 }))
      assert.matches("window: expected a whole number of calls from 1 to 10000000, got 1e+300", err, 1,
        true)
      err = select(2, pcall(modal.breaker, { target = t.c, methods = { "call" }, window = 5,
        window_time = 3 }))
      assert.matches("window_time: give window (calls) or window_time (seconds), not both", err, 1, true)
    end)

    it("default to a name after the target's machine, a window of 20 calls and min_calls 20", function()
      local t = bs.target()
      local b = modal.breaker { target = t.c, methods = { "call" } }
      assert.equal(t.c.machine.name .. "_breaker", b.machine.name)
      local list = {}
      for i = 1, 19 do list[i] = "fail" end
      bs.calls(b, list)
      assert.equal("closed", b.state)
      bs.calls(b, { "ok" })                            -- 19 of 20
      assert.equal("open", b.state)
    end)
  end)

  it("guards any object with the methods: a plain value answers as a success, a failure as one", function()
    local n = 0
    local api = { get = function(_, k) n = n + 1; if k == "bad" then return modal.failure("api", "bad") end
      return "value of " .. k end }
    local b = modal.breaker { target = api, methods = { "get" }, window = 2, min_calls = 2 }
    local got = bs.watch(b:get("x"))
    assert.equal("value of x", got.value)
    local got2 = bs.calls(setmetatable({ call = function(_, k) return b:get(k) end }, {}), { "bad", "bad" })
    assert.equal("open", b.state)                   -- ok, bad: 50 %
    assert.equal("api", got2[1].value.kind)
    assert.equal("unavailable", got2[2].value.kind)
    assert.equal(2, n)
  end)

  it("is a machine: its transitions are observed, and its paths take every transition", function()
    local B = modal.breaker.machine { name = bs.name("paths"), methods = { "call" },
      open_wait = { jitter = 0 } }
    local paths, coverage = testing.paths(B, { data = function() return { target = bs.target().c } end })
    assert.equal(coverage.total, coverage.taken)
    for _, path in ipairs(paths) do
      testing.walk(B, path, { data = function() return { target = bs.target().c } end })
    end
  end)
end)
