-- specs/service_complaints_spec.lua — what users of reconnecting clients complain about, each
-- as a spec against modal.service over real sockets (doc/policies.md): deadlines against a
-- down server, a blackholed server, a server that accepts and drops, a connection that
-- arrives too late, a thundering herd after an outage.
local modal = require "modal"
local uv = require "luv"
local ss = require "service_support"
local support = require "support"

local watch, wait, pause = ss.watch, ss.wait, ss.pause

local SLOW = os.getenv("MODAL_VALGRIND") == "1"
-- Expiring 10,000 deadlines at once takes the core about 100 ms (more under the sanitizers and
-- valgrind): a call fails "in time" within this much of its deadline.
local SLACK = SLOW and 10 or os.getenv("MODAL_SANITIZE") == "1" and 1.5 or 0.3

-- The open-file limit of this process (each instance here costs two sockets).
local function fd_limit()
  local p = io.popen("ulimit -n")
  local n = p and tonumber(p:read("l"))
  if p then p:close() end
  return n or 1024
end

describe("modal.service complaints", function()
  after_each(ss.cleanup)

  it("10,000 calls with a deadline against a down server all fail timeout in time; "
    .. "the 10,001st fails overloaded", function()
    local s = ss.server { mode = "refuse" }
    local c = ss.new(ss.echo { backoff = { initial = 0.05, jitter = 0.2, max = 0.1 } }, { port = s.port })
    local N, deadline = 10000, 0.3
    local got = {}
    uv.update_time()
    local t0 = modal.now()
    for i = 1, N do got[i] = watch(c:echo(i):add_timeout(deadline)) end
    assert.equal(N, c:postponed())
    local extra = watch(c:echo("one too many"))
    assert.is_true(extra.fired)
    assert.equal("overloaded", extra.value.kind)
    assert.is_true(wait(function() return got[N].fired end, 5))
    local late, wrong = 0, 0
    for i = 1, N do
      local g = got[i]
      if not g.fired or g.ok or g.value.kind ~= "timeout" or g.n ~= 1 then wrong = wrong + 1 end
      if g.fired and (g.at - t0 < deadline - 0.002 or g.at - t0 > deadline + SLACK) then late = late + 1 end
    end
    assert.equal(0, wrong)
    assert.equal(0, late)
    assert.equal(0, c:postponed())
  end)

  it("a blackholed server: no call outlives its deadline, and keepalive fires lost within interval + timeout",
    function()
    local s = ss.server()
    local pings = 0
    local c = ss.new(ss.echo {
      keepalive = { ping = function(_, conn) pings = pings + 1; return conn:request("PING") end,
        interval = 0.2, timeout = 0.1 },
      backoff = { initial = 5, jitter = 0 },
    }, { port = s.port })
    local seen, at = ss.transitions(c)
    local ready = watch(c:connect_now())
    assert.is_true(wait(function() return ready.fired end))
    local answered = watch(c:echo("answered"))
    assert.is_true(wait(function() return answered.fired end))
    local t0 = modal.now()
    s:set("blackhole")
    local calls = {}
    for i = 1, 50 do calls[i] = { got = watch(c:echo(i):add_timeout(0.05 + i * 0.002)),
      deadline = 0.05 + i * 0.002,
      t = modal.now() } end
    assert.is_true(wait(function() return c.state == "backoff" end, 2))
    for i = 1, 50 do
      local call = calls[i]
      assert.is_true(call.got.fired)
      assert.is_false(call.got.ok)
      assert.is_true(call.got.at - call.t <= call.deadline + 0.03 * support.SLACK,
        string.format("call %d outlived its deadline", i))
    end
    local lost_at = at[#seen] - t0
    assert.equal("ready>backoff:lost", seen[#seen])
    assert.is_true(lost_at <= 0.2 + 0.1 + 0.04 * support.SLACK, string.format("lost after %.3f s", lost_at))
    assert.equal(1, pings)
  end)

  it("a server that accepts then closes, with stable_after: no reconnect faster than the backoff", function()
    local s = ss.server { mode = "accept_close" }
    local schedule = { initial = 0.02, multiplier = 2, jitter = 0.2, max = 0.16 }
    local c = ss.new(ss.echo { stable_after = 5, backoff = schedule }, { port = s.port })
    local seen, at = ss.transitions(c)
    watch(c:connect_now())
    pause(0.8)
    c:close()
    local k, base = 0, schedule.initial
    for i = 1, #seen - 1 do
      if seen[i] == "ready>backoff:lost" and seen[i + 1] == "backoff>connecting:timeout" then
        k = k + 1
        local floor = math.min(base, schedule.max) * (1 - schedule.jitter)
        assert.is_true(at[i + 1] - at[i] >= floor - 0.002,
          string.format("reconnect %d after %.3f s, faster than the backoff (>= %.3f)", k,
            at[i + 1] - at[i], floor))
        base = base * schedule.multiplier
      end
    end
    assert.is_true(k >= 3)
    -- at most one accept per backoff wait: 0.016 + 0.032 + 0.064 + 0.128 + 0.128 ... in 0.8 s
    assert.is_true(s.accepts <= 10, tostring(s.accepts))
  end)

  it("a connection that arrives after its timeout is disconnected once and never used "
    .. "(open sockets on the server)", function()
    local s = ss.server { slow_greeting = 0.15 }
    local conns = {}
    local M = ss.echo {
      connect_timeout = 0.05,
      backoff = { initial = 0.3, jitter = 0 },
      connect = function(m)          -- a handshake that cannot be interrupted
        local real = ss.line.connect(m, { port = m.data.port, greeting = true })
        real:add_callback(function(conn) conns[#conns + 1] = conn; return conn end)
        local d = modal.deferred()
        local gave_up = false
        real:add_both(function(v)
          if not gave_up then if modal.is_failure(v) then d:errback(v) else d:callback(v) end end
          return v
        end)
        d:add_errback(function(f)
          if f:is("cancelled") then gave_up = true; return real end
          return f
        end)
        return d
      end,
    }
    local c = ss.new(M, { port = s.port })
    local waiting = watch(c:echo("x"))
    assert.is_true(wait(function() return s.open == 1 end))
    assert.is_true(wait(function() return #conns == 1 end))      -- arrived late, at 0.15 s
    assert.is_true(wait(function() return s.open == 0 end))      -- and was closed at once
    assert.equal(1, ss.disconnected[conns[1]])
    assert.equal(0, s.lines)
    s:set { slow_greeting = false, greeting = true }
    assert.is_true(wait(function() return waiting.fired end))
    assert.equal("x", waiting.value)
    assert.equal(1, ss.disconnected[conns[1]])
    assert.equal(2, s.accepts)
    assert.equal(1, s.open)                                      -- only the live one
    assert.equal(conns[2], c.data.conn)
  end)

  it("instances that lose the server at once spread their next attempts over the jitter band", function()
    local N = math.min(SLOW and 200 or 1000, (fd_limit() - 200) // 2)
    local s = ss.server()
    local band = { initial = 1, multiplier = 2, jitter = 0.5, max = 10 }
    local M = ss.echo { backoff = band }
    local instances, attempts, own = {}, {}, {}
    local last_loss = 0
    for i = 1, N do
      local c = ss.new(M, { port = s.port })
      instances[i] = c
      local entered, tried
      c:on_transition(function(_, from, to)
        if to == "backoff" then
          entered = modal.now()
          last_loss = math.max(last_loss, entered)
        elseif from == "backoff" and to == "connecting" and not tried then
          tried = true                   -- its first attempt after the loss; later ones are refused
          attempts[#attempts + 1] = modal.now()
          own[#own + 1] = modal.now() - entered
        end
      end)
      watch(c:connect_now())
    end
    assert.is_true(wait(function() return s.open == N end, 10))
    for i = 1, N do assert.equal("ready", instances[i].state) end
    local lost_at = modal.now()
    s:stop()
    -- Generous: under a sanitizer on a loaded machine 1000 closes take seconds to arrive.
    local all_tried = wait(function() return #attempts == N end, 15)
    local states = {}
    for i = 1, N do states[instances[i].state] = (states[instances[i].state] or 0) + 1 end
    assert.is_true(all_tried, string.format("%d of %d attempts; states %s", #attempts, N,
      require("cjson").encode(states)))
    for _, d in ipairs(own) do          -- each one's wait: within the band
      assert.is_true(d >= 0.5 - 0.002 and d <= 1.5 + 0.05 * support.SLACK,
        string.format("a wait of %.3f s", d))
    end
    local lag = last_loss - lost_at      -- the time the herd took to notice the loss
    -- The attempts as the server sees them, from the loss. When noticing the loss took the herd
    -- itself a while (valgrind, ASan on a loaded machine: 1000 sockets closing one by one), the
    -- server's view mixes that lag into the band, so each instance's own wait is bucketed.
    local own_view = SLOW or lag > 0.05
    local buckets = {}
    for k = 1, 10 do buckets[k] = 0 end
    for i, t in ipairs(attempts) do
      local d = t - lost_at
      assert.is_true(d >= 0.5 - 0.002 and d <= 1.5 + lag + 0.05 * support.SLACK,
        string.format("an attempt %.3f s after the loss", d))
      if own_view then d = own[i] end
      local k = math.max(1, math.min(10, math.floor((d - 0.5) / 0.1) + 1))
      buckets[k] = buckets[k] + 1
    end
    local share = N / 10
    for k = 1, 10 do
      assert.is_true(buckets[k] <= 3 * share, string.format("bucket %d holds %d (share %d): %s", k,
        buckets[k],
        share, table.concat(buckets, " ")))
    end
  end)
end)
