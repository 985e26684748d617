-- specs/pool_complaints_spec.lua — modal.pool against what users of worker pools complain
-- about (doc/policies.md, "Pool"): a worker that crashes on every start leaves calls hanging,
-- or restarts for ever; a worker killed mid-call takes other calls down with it, or is never
-- replaced. Workers are real processes; the restart backoff runs on the testing clock.
local modal = require "modal"
local uv = require "luv"
local support = require "support"
local ps = require "pool_support"

local function call(p, ...) return ps.watch(p:call(...)) end

-- Moves the testing clock past each restart wait until the pool fails (or `rounds` waits).
local function crash_until_failed(p, clock, rounds)
  for _ = 1, rounds do
    if p.state == "failed" then return true end
    ps.wait(function() return p.state == "failed" or modal.pool.status(p).retry_in ~= nil end)
    local wait = modal.pool.status(p).retry_in
    if wait then clock:advance(wait) end
  end
  return p.state == "failed"
end

describe("modal.pool, from users' complaints", function()
  after_each(ps.cleanup)

  it("a worker that crashes on every start: waiting calls fail with the diagnosis rather than hang, " ..
     "and new calls fail fast once the limit is hit", function()
    local clock = support.clock()
    local p = ps.pool { size = 2, max_restarts = 5, env = { POOL_WORKER_MODE = "crash_at_start",
      PATH = os.getenv("PATH") } }
    local calls = {}
    for i = 1, 10 do calls[i] = call(p, "echo " .. i) end
    ps.pids(p)
    assert.is_true(crash_until_failed(p, clock, 20))
    -- A worker started beside the sixth (size 2) may still hold its call when the pool fails:
    -- that call fails once the worker is gone, with its own diagnosis. No call hangs.
    ps.wait(function()
      for _, got in ipairs(calls) do if not got.fired then return false end end
      return true
    end)
    local kinds = {}
    for i, got in ipairs(calls) do
      assert.is_true(got.fired, "call " .. i .. " hangs")
      assert.equal(1, got.n)
      kinds[got.value.kind] = (kinds[got.value.kind] or 0) + 1
      assert.matches("exited with status 2", got.value.message, 1, true)
      assert.matches("last stderr: worker: cannot start: missing config", got.value.message, 1, true)
    end
    -- each start took a call with it, then died: six to reach the limit, at most one beside them
    assert.is_true(kinds.worker == 6 or kinds.worker == 7, tostring(kinds.worker))
    assert.equal(10, kinds.worker + kinds.unavailable)
    assert.matches("failed: 6 worker restarts within 30 s (more than max_restarts = 5)",
      calls[10].value.message, 1, true)
    local t0 = uv.hrtime()
    local later = call(p, "echo later")
    assert.is_true(later.fired)                     -- at once: no worker is started for it
    assert.is_true(uv.hrtime() - t0 < 0.05e9 * support.SLACK)
    assert.equal("unavailable", later.value.kind)
    assert.same({}, modal.pool.pids(p))
  end)

  it("a program that is not on PATH: the calls fail with the reason once the limit is hit", function()
    local clock = support.clock()
    local p = ps.pool { cmd = { "modal-no-such-worker-program" }, max_restarts = 2 }
    local got = call(p, "echo x")
    assert.is_true(crash_until_failed(p, clock, 10))
    assert.is_true(got.fired)
    assert.equal("unavailable", got.value.kind)
    assert.matches("could not start: spawn modal-no-such-worker-program: ENOENT", got.value.message, 1,
      true)
  end)

  it("a worker killed with SIGKILL mid-call fails that call only, and is replaced after the backoff",
     function()
    local clock = support.clock()
    local p = ps.pool { size = 2, backoff = { initial = 0.5, multiplier = 2, jitter = 0 } }
    local a, b = call(p, "sleep 300 a"), call(p, "sleep 300 b")
    local pids = ps.pids(p)
    assert.equal(2, #pids)
    uv.kill(pids[1], "sigkill")
    assert.is_true(ps.wait(function() return a.fired or b.fired end))
    local killed, other = a, b
    if b.fired and not a.fired then killed, other = b, a end
    if a.fired and b.fired and a.ok then killed, other = b, a end
    assert.is_false(killed.ok)
    assert.equal("worker", killed.value.kind)
    assert.matches("worker pid " .. pids[1] .. " killed by SIGKILL (signal 9)", killed.value.message, 1, true)
    assert.matches("restart 1 (at most 5 within 30 s) in 0.50 s", killed.value.message, 1, true)
    local more = { call(p, "sleep 100 c"), call(p, "sleep 100 d") }
    assert.same({ pids[2] }, modal.pool.pids(p))    -- not replaced before the backoff
    clock:advance(0.49)
    assert.same({ pids[2] }, modal.pool.pids(p))
    clock:advance(0.01)
    assert.equal(2, #ps.pids(p))                    -- replaced
    assert.is_true(ps.wait(function() return other.fired and more[1].fired and more[2].fired end))
    assert.is_true(other.ok)
    assert.is_true(more[1].ok and more[2].ok)
    assert.equal(1, modal.pool.status(p).restarts_total)
    for _, got in ipairs { a, b, more[1], more[2] } do assert.equal(1, got.n) end
  end)
end)
