-- specs/service_beyond_spec.lua — what modal.service does beyond the usual reconnecting
-- client (doc/policies.md): a late connection is never leaked, failures explain themselves,
-- stable_after, keepalive pings that find a half-open connection, and connect_now().
local modal = require "modal"
local ss = require "service_support"
local support = require "support"

local watch, wait, pause = ss.watch, ss.wait, ss.pause
local status = modal.service.status

local function fired(got) return function() return got.fired end end

-- A connect whose handshake cannot be interrupted: when the service gives up on it (cancel),
-- its chain recovers and succeeds once the connection arrives anyway.
local function stubborn_connect(m)
  local real = ss.line.connect(m, { port = m.data.port, greeting = true })   -- never cancelled
  local d = modal.deferred()
  local gave_up = false
  real:add_both(function(v)
    if not gave_up then
      if modal.is_failure(v) then d:errback(v) else d:callback(v) end
    end
    return v
  end)
  d:add_errback(function(f)
    if f:is("cancelled") or f:is("timeout") then
      gave_up = true
      return real
    end
    return f
  end)
  return d
end

describe("modal.service beyond the usual", function()
  after_each(ss.cleanup)

  describe("a late connection", function()
    it("that arrives after its connect timeout goes to disconnect exactly once and is never used", function()
      local s = ss.server { slow_greeting = 0.2 }
      local late
      local M = ss.echo { connect = stubborn_connect, connect_timeout = 0.05,
        backoff = { initial = 10, jitter = 0 },
        disconnect = function(_, conn)
          late = conn
          ss.disconnect(nil, conn)
        end }
      local c = ss.new(M, { port = s.port })
      local seen = ss.transitions(c)
      local waiting = watch(c:echo("x"))
      assert.is_true(wait(function() return s.open == 1 end))
      assert.is_true(wait(function() return late ~= nil end))
      assert.same({ "idle>connecting:connect", "connecting>backoff:timeout" }, seen)
      assert.is_true(wait(function() return s.open == 0 end))   -- the server sees it closed
      pause(0.05)
      assert.equal(1, ss.disconnected[late])
      assert.equal(0, s.lines)                                   -- never used: nothing was sent on it
      assert.equal(1, s.accepts)
      assert.is_false(waiting.fired)
      assert.equal("backoff", c.state)
      assert.is_nil(c.data.conn)
    end)

    it("that arrives after close() goes to disconnect exactly once", function()
      local s = ss.server { slow_greeting = 0.1 }
      local c = ss.new(ss.echo { connect = stubborn_connect }, { port = s.port })
      watch(c:echo("x"))
      assert.is_true(wait(function() return s.open == 1 end))
      assert.is_true(watch(c:close()).ok)
      assert.is_true(wait(function() return next(ss.disconnected) ~= nil and s.open == 0 end))
      local conn, n = next(ss.disconnected)
      assert.equal(1, n)
      assert.equal(0, s.lines)
      pause(0.05)
      assert.equal(1, ss.disconnected[conn])
    end)
  end)

  describe("self-explaining failures", function()
    it("say where the service stands: state, attempts, the last failure and the next attempt", function()
      local s = ss.server { mode = "refuse" }
      local M = ss.echo { name = "echo", wait_for_ready = false,
        backoff = { initial = 0.0019, multiplier = 10, jitter = 0, max = 120 } }
      ss.new(M, { port = s.port }); ss.new(M, { port = s.port })
      local c = ss.new(M, { port = s.port })
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts == 4 and c.state == "backoff" end))
      local f = watch(c:echo("b")).value
      assert.equal("unavailable", f.kind)
      assert.equal("echo#3 in backoff after 4 failed attempts (last: connect: ECONNREFUSED); "
        .. "next attempt in 1.9 s", f.message)
      assert.equal("unavailable: " .. f.message, tostring(f))
      assert.equal("backoff", f.value.state)
      assert.equal(4, f.value.attempts)
      assert.equal("connect: ECONNREFUSED", f.value.last.message)
      local r = f.value.retry_in
      assert.is_true(r > 1.8 and r <= 1.9 + 1e-9, tostring(r))   -- 0.0019 * 10^3 in binary
      assert.same(f.value.attempts, status(c).attempts)

      c:close()
      local g = watch(c:echo("c")).value
      assert.equal("stopped", g.kind)
      assert.equal("echo#3 is closed after 4 failed attempts (last: connect: ECONNREFUSED)", g.message)
      assert.equal("closed", g.value.state)
      assert.is_nil(g.value.retry_in)
    end)

    it("after a loss, say what was lost", function()
      local s = ss.server()
      local c = ss.new(ss.echo { wait_for_ready = false, backoff = { initial = 1, jitter = 0 } },
        { port = s.port })
      assert.is_true(wait(fired(watch(c:connect_now()))))
      s:stop()
      assert.is_true(wait(function() return c.state == "backoff" end))
      local f = watch(c:echo("x")).value
      assert.matches("^" .. c.machine.name
        .. "#1 in backoff %(last: connection lost: EOF%); next attempt in [01]%.%d+ s$",
        f.message)
    end)
  end)

  describe("stable_after", function()
    local function waits_after_losses(stable_after)
      local s = ss.server { mode = "accept_close" }
      local c = ss.new(ss.echo { stable_after = stable_after,
        backoff = { initial = 0.02, multiplier = 2, jitter = 0, max = 0.16 } }, { port = s.port })
      local seen, at = ss.transitions(c)
      watch(c:connect_now())
      pause(0.5)
      c:close()
      local waits = {}
      for i = 1, #seen - 1 do
        if seen[i] == "ready>backoff:lost" and seen[i + 1] == "backoff>connecting:timeout" then
          waits[#waits + 1] = at[i + 1] - at[i]
        end
      end
      return waits, s.accepts
    end

    it("keeps a server that accepts and drops every connection from causing a reconnect storm", function()
      local waits, accepts = waits_after_losses(1)
      local want = { 0.02, 0.04, 0.08, 0.16 }
      for i, w in ipairs(want) do
        assert.is_true(waits[i] >= w - 0.002, string.format("wait %d: %.3f < %.2f", i, waits[i], w))
      end
      assert.is_true(accepts <= 7, tostring(accepts))
      local storm_waits, storm_accepts = waits_after_losses(0)   -- stable_after = 0: reset each time
      assert.is_true(storm_waits[4] < 0.04)
      assert.is_true(storm_accepts > accepts * 2, storm_accepts .. " vs " .. accepts)
    end)

    it("resets the attempt count once the connection has stayed ready that long", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { stable_after = 0.1 }, { port = s.port })
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 2 end))
      s:set("echo")
      assert.is_true(wait(function() return c.state == "ready" end))
      local n = status(c).attempts
      assert.is_true(n >= 2)
      pause(0.05)
      assert.equal(n, status(c).attempts)
      assert.is_true(wait(function() return status(c).attempts == 0 end))
    end)
  end)

  describe("keepalive", function()
    local function pinger(count)
      return function(_, conn)
        count.n = count.n + 1
        return conn:request("PING")
      end
    end

    it("pings a connection with no reply for interval seconds, and keeps it while answered", function()
      local s = ss.server()
      local pings = { n = 0 }
      local c = ss.new(ss.echo { keepalive = { ping = pinger(pings), interval = 0.05, timeout = 0.05 } },
        { port = s.port })
      assert.is_true(wait(fired(watch(c:connect_now()))))
      pause(0.28)
      assert.is_true(pings.n >= 4 and pings.n <= 6, tostring(pings.n))
      assert.equal("ready", c.state)
      assert.equal(1, s.accepts)
    end)

    it("does not ping while calls are answered", function()
      local s = ss.server()
      local pings = { n = 0 }
      -- the interval is longer than any gap between answers, allowing for a slow run (ASan)
      local c = ss.new(ss.echo { keepalive = { ping = pinger(pings), interval = 0.08 * support.SLACK,
        timeout = 0.05 } }, { port = s.port })
      assert.is_true(wait(fired(watch(c:connect_now()))))
      for _ = 1, 10 do
        assert.is_true(wait(fired(watch(c:echo("x")))))
        pause(0.03)
      end
      assert.equal(0, pings.n)
    end)

    it("finds a half-open connection: lost within interval + timeout, and it goes to disconnect", function()
      local s = ss.server()
      local pings = { n = 0 }
      local c = ss.new(ss.echo { keepalive = { ping = pinger(pings), interval = 0.1, timeout = 0.05 },
        backoff = { initial = 5, jitter = 0 } }, { port = s.port })
      local seen, at = ss.transitions(c)
      assert.is_true(wait(fired(watch(c:echo("last reply")))))
      local t0 = modal.now()
      local conn = c.data.conn
      s:set("blackhole")
      assert.is_true(wait(function() return c.state == "backoff" end))
      assert.equal("ready>backoff:lost", seen[#seen])
      local took = at[#seen] - t0
      assert.is_true(took >= 0.149 and took < 0.15 + 0.04 * support.SLACK, tostring(took))
      assert.equal(1, ss.disconnected[conn])
      local f = status(c).last
      assert.equal("timeout", f.kind)
      assert.matches("keepalive: no answer to a ping within 0.05 s", f.message, 1, true)
      assert.equal(1, pings.n)
    end)

    it("fires lost when a ping fails or raises", function()
      local s = ss.server()
      local c = ss.new(ss.echo { keepalive = { ping = function() return modal.fail("unavailable",
        "pong?") end,
        interval = 0.03 }, backoff = { initial = 5 } }, { port = s.port })
      assert.is_true(wait(fired(watch(c:connect_now()))))
      assert.is_true(wait(function() return c.state == "backoff" end))
      assert.matches("keepalive: ping failed: pong?", status(c).last.message, 1, true)

      local d = ss.new(ss.echo { keepalive = { ping = function() error("no ping") end, interval = 0.03 },
        backoff = { initial = 5 } }, { port = s.port })
      assert.is_true(wait(fired(watch(d:connect_now()))))
      assert.is_true(wait(function() return d.state == "backoff" end))
      assert.matches("no ping", status(d).last.message, 1, true)
    end)
  end)

  describe("connect_now()", function()
    it("in backoff: cancels the wait, connects at once with the backoff reset, succeeds with c", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { backoff = { initial = 0.02, multiplier = 100, jitter = 0 } },
        { port = s.port })
      local seen = ss.transitions(c)
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts == 2 end))   -- now waiting 2 s
      s:set("echo")
      local got = watch(c:connect_now())
      assert.is_true(wait(fired(got)))
      assert.is_true(got.ok)
      assert.equal(c, got.value)
      assert.equal("backoff>connecting:connect_now", seen[#seen - 1])
    end)

    it("resets the backoff: the next wait is initial again", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { backoff = { initial = 0.02, multiplier = 100, jitter = 0 } },
        { port = s.port })
      local seen, at = ss.transitions(c)
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts == 2 end))
      watch(c:connect_now())
      local n = #seen
      -- connecting>backoff, then backoff>connecting
      assert.is_true(wait(function() return seen[n + 2] ~= nil end))
      assert.is_true(at[n + 2] - at[n + 1] < 0.02 + 0.03 * support.SLACK)
    end)

    it("in idle: starts connecting", function()
      local s = ss.server()
      local c = ss.new(ss.echo(), { port = s.port })
      local got = watch(c:connect_now())
      assert.equal("connecting", c.state)
      assert.is_true(wait(fired(got)))
      assert.equal(c, got.value)
      assert.equal("ready", c.state)
    end)

    it("in connecting and ready: does nothing (no second attempt); in ready succeeds at once", function()
      local s = ss.server { slow_greeting = 0.05 }
      local c = ss.new(ss.echo(), { port = s.port, greeting = true })
      local a = watch(c:connect_now())
      local b = watch(c:connect_now())
      assert.is_true(wait(function() return a.fired and b.fired end))
      assert.equal(1, s.accepts)
      local now = watch(c:connect_now())
      assert.is_true(now.fired)
      assert.equal(c, now.value)
      assert.equal(1, s.accepts)
    end)

    it("acts once: a retry in backoff waits for the delay instead of connecting again", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { backoff = { initial = 0.15, multiplier = 1, jitter = 0 } },
        { port = s.port })
      local seen, at = ss.transitions(c)
      local got = watch(c:connect_now())           -- idle: connects, fails, backs off
      assert.is_true(wait(function() return #seen >= 4 end))
      assert.same({ "idle>connecting:connect", "connecting>backoff:error", "backoff>connecting:timeout",
        "connecting>backoff:error" }, { seen[1], seen[2], seen[3], seen[4] })
      assert.is_true(at[3] - at[2] >= 0.149)       -- the wait was not cut short by a retry
      assert.is_false(got.fired)
      assert.equal(1, c:postponed())
      s:set("echo")
      assert.is_true(wait(fired(got)))
      assert.equal(c, got.value)
    end)

    it("waits like any postponed call: fail-fast, fail_after and cancel apply", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { fail_after = 2 }, { port = s.port })
      local got = watch(c:connect_now())
      assert.is_true(wait(fired(got)))
      assert.equal("unavailable", got.value.kind)
      assert.equal(2, got.value.value.attempts)
      local d = ss.new(ss.echo { wait_for_ready = false }, { port = s.port })
      local ff = watch(d:connect_now())
      assert.is_true(wait(fired(ff)))
      assert.equal("unavailable", ff.value.kind)
      local e = ss.new(ss.echo(), { port = s.port })
      local cn = e:connect_now()
      local cg = watch(cn)
      assert.is_true(wait(function() return e.state == "backoff" end))
      assert.equal(1, e:postponed())
      cn:cancel()
      assert.equal(0, e:postponed())
      assert.equal("cancelled", cg.value.kind)
    end)
  end)
end)
