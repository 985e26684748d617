-- specs/service_rules_spec.lua — modal.service's rules (doc/policies.md, "Service"), over real
-- sockets on 127.0.0.1 against the fault server: waiting and backing off, the connect timeout,
-- classify and failed, fail-fast, fail_after, losses in each state, idle_timeout, and the
-- waiting calls themselves. Unhappy paths first.
local modal = require "modal"
local ss = require "service_support"
local support = require "support"

local watch, wait, pause = ss.watch, ss.wait, ss.pause
local status = modal.service.status

local function fired(got) return function() return got.fired end end

describe("modal.service rules", function()
  after_each(ss.cleanup)

  describe("a server that refuses", function()
    it("makes calls wait while the service backs off, counting failed attempts", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo(), { port = s.port })
      local seen = ss.transitions(c)
      local got = watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 3 end))
      assert.is_false(got.fired)
      assert.equal(1, c:postponed())
      assert.same({ "idle>connecting:connect", "connecting>backoff:error", "backoff>connecting:timeout" },
        { seen[1], seen[2], seen[3] })
      local f = status(c).last
      assert.equal("unavailable", f.kind)
      assert.equal("connect: ECONNREFUSED", f.message)
    end)

    it("waits backoff:next() between attempts: initial, times the multiplier, capped", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo(), { port = s.port })
      local seen, at = ss.transitions(c)
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 5 end))
      local waits = {}
      for i = 1, #seen - 1 do
        if seen[i]:match("^connecting>backoff") and seen[i + 1] == "backoff>connecting:timeout" then
          waits[#waits + 1] = at[i + 1] - at[i]
        end
      end
      local want = { 0.02, 0.04, 0.08, 0.08 }
      for i, w in ipairs(want) do
        assert.is_true(waits[i] >= w - 0.002 and waits[i] < w + 0.04 * support.SLACK,
          string.format("wait %d: %.4f, want %.2f", i, waits[i], w))
      end
    end)

    it("answers the waiting calls once the server accepts, within the delay then pending plus a "
      .. "connect", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo(), { port = s.port })
      local calls = {}
      for i = 1, 20 do calls[i] = watch(c:echo("call " .. i)) end
      assert.is_true(wait(function() return status(c).attempts >= 4 end))
      local up = modal.now()
      s:set("echo")
      assert.is_true(wait(function() return calls[20].fired end))
      for i = 1, 20 do
        assert.is_true(calls[i].ok)
        assert.equal("call " .. i, calls[i].value)
        assert.is_true(calls[i].at - up < 0.08 + 0.05 * support.SLACK, tostring(calls[i].at - up))
      end
      assert.equal(0, status(c).attempts)        -- a successful connect resets the count
      assert.equal(1, s.accepts)
    end)

    it("starts the schedule again after a successful connect", function()
      local s = ss.server()
      local c = ss.new(ss.echo { backoff = { initial = 0.05, multiplier = 4, jitter = 0, max = 1 } },
        { port = s.port })
      local seen, at = ss.transitions(c)
      assert.is_true(wait(fired(watch(c:echo("a")))))
      s:stop()
      assert.is_true(wait(function() return status(c).attempts >= 2 end))   -- 0.05, then 0.2
      s:start()
      assert.is_true(wait(function() return c.state == "ready" end))
      local n = #seen
      s:stop()
      assert.is_true(wait(function() return seen[n + 2] ~= nil end))
      assert.same({ "ready>backoff:lost", "backoff>connecting:timeout" }, { seen[n + 1], seen[n + 2] })
      local delay = at[n + 2] - at[n + 1]
      assert.is_true(delay >= 0.049 and delay < 0.05 + 0.04 * support.SLACK,
        "the first delay after a connect is initial again")
    end)
  end)

  describe("connect_timeout", function()
    it("abandons a connect that takes longer, closing its socket, and backs off", function()
      local s = ss.server { slow_greeting = 5 }
      local c = ss.new(ss.echo { connect_timeout = 0.1 }, { port = s.port, greeting = true })
      local seen, at = ss.transitions(c)
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 2 end))
      assert.equal("connecting>backoff:timeout", seen[2])
      assert.is_true(at[2] - at[1] >= 0.099)
      assert.is_true(wait(function() return s.open <= 1 end))   -- the timed-out sockets are closed
      local f = status(c).last
      assert.equal("timeout", f.kind)
      assert.matches("^" .. c.machine.name .. "#" .. c.id
        .. " connect attempt %d timed out after 0.10 s$", f.message)
    end)
  end)

  describe("classify", function()
    local function is_auth(f) return f:is("auth") and "fatal" or "retry" end

    it("sends a fatal connect failure to failed, which answers every waiting and later call with "
      .. "it", function()
      local s = ss.server { auth = "secret" }
      local c = ss.new(ss.echo { classify = is_auth }, { port = s.port, auth = "guess" })
      local a, b = watch(c:echo("a")), watch(c:echo("b"))
      assert.is_true(wait(fired(b)))
      assert.equal("failed", c.state)
      for _, got in ipairs { a, b, watch(c:echo("later")), watch(c:connect_now()) } do
        assert.is_false(got.ok)
        assert.equal("auth", got.value.kind)
        assert.equal("-ERR auth", got.value.message)
      end
      assert.equal(a.value, b.value)               -- that failure itself
      local closed = watch(c:close())
      assert.is_true(closed.fired and closed.ok)   -- close() in failed succeeds at once
      assert.equal("failed", c.state)
      assert.equal(1, s.accepts)                   -- no retry
    end)

    it("retries every failure by default, a fatal-looking one included", function()
      local s = ss.server { auth = "secret" }
      local c = ss.new(ss.echo(), { port = s.port, auth = "guess" })
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 3 end))
      assert.is_true(c.state == "backoff" or c.state == "connecting")
    end)

    it("counts a classify that raises as retry, and logs it", function()
      local lines = support.capture_log()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { classify = function() error("oops") end }, { port = s.port })
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 2 end))
      local found = false
      for _, l in ipairs(lines) do
        if l.level == "error" and l.message:find("classify raised", 1, true) then found = true end
      end
      assert.is_true(found)
    end)
  end)

  describe("wait_for_ready = false (fail-fast)", function()
    it("fails the waiting calls on entering backoff, and calls in backoff at once, with "
      .. "unavailable", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { wait_for_ready = false, backoff = { initial = 0.2, jitter = 0 } },
        { port = s.port })
      local waiting = watch(c:echo("a"))
      assert.equal("connecting", c.state)            -- idle and connecting still wait
      assert.is_false(waiting.fired)
      assert.is_true(wait(fired(waiting)))
      assert.equal("backoff", c.state)
      assert.equal("unavailable", waiting.value.kind)
      local now = watch(c:echo("b"))
      assert.is_true(now.fired)
      assert.equal("unavailable", now.value.kind)
      assert.matches("^" .. c.machine.name .. "#%d+ in backoff after 1 failed attempt %(last: connect: " ..
        "ECONNREFUSED%); next attempt in 0%.%d+ s$", now.value.message)
      s:set("echo")
      local later = watch(c:connect_now():add_callback(function() return c:echo("c") end))
      assert.is_true(wait(fired(later)))
      assert.equal("c", later.value)
    end)
  end)

  describe("fail_after", function()
    it("fails the waiting calls with the last failure once N attempts in a row failed; later calls "
      .. "wait", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { fail_after = 3 }, { port = s.port })
      local first = watch(c:echo("a"))
      assert.is_true(wait(fired(first)))
      assert.equal(3, status(c).attempts)
      local f = first.value
      assert.equal("unavailable", f.kind)
      assert.equal("connect: ECONNREFUSED", f.message)
      assert.equal("backoff", f.value.state)
      assert.equal(3, f.value.attempts)
      assert.equal("number", type(f.value.retry_in))
      assert.equal("connect: ECONNREFUSED", f.value.last.message)
      local later = watch(c:echo("b"))               -- reconnecting goes on; this one waits ...
      assert.is_false(later.fired)
      assert.is_true(wait(fired(later)))             -- ... until the next attempt fails too
      assert.equal(4, later.value.value.attempts)
      s:set("echo")
      local ok = watch(c:echo("c"))
      assert.is_true(wait(fired(ok)))
      assert.equal("c", ok.value)
    end)

    it("fails them with kind timeout when the last attempt timed out", function()
      local s = ss.server { slow_greeting = 5 }
      local c = ss.new(ss.echo { fail_after = 1, connect_timeout = 0.05 }, { port = s.port, greeting = true })
      local got = watch(c:echo("a"))
      assert.is_true(wait(fired(got)))
      assert.equal("timeout", got.value.kind)
      assert.matches("connect attempt 1 timed out after 0.05 s", got.value.message, 1, true)
      assert.equal(1, got.value.value.attempts)
    end)

    it("does not count a loss as an attempt", function()
      local s = ss.server { mode = "accept_close" }
      local c = ss.new(ss.echo { fail_after = 1 }, { port = s.port })
      local got = watch(c:echo("a"))
      assert.is_true(wait(function() return s.accepts >= 3 end))
      assert.equal(0, status(c).attempts)
      assert.is_true(got.fired)                       -- the connection failed it, in flight ...
      assert.equal("unavailable", got.value.kind)
      assert.matches("^connection lost", got.value.message) -- ... not fail_after
    end)
  end)

  describe("a lost connection", function()
    it("in ready: the connection fails its calls in flight, the service backs off and reconnects; "
      .. "nothing is re-sent", function()
      local s = ss.server { mode = "silent" }
      local c = ss.new(ss.echo(), { port = s.port })
      local seen = ss.transitions(c)
      local inflight = watch(c:echo("once"))
      assert.is_true(wait(function() return s.lines == 1 end))
      local conn = c.data.conn
      s:drop()
      assert.is_true(wait(fired(inflight)))
      assert.equal("unavailable", inflight.value.kind)
      assert.is_true(wait(function() return s.accepts == 2 end))
      pause(0.05)
      assert.equal(1, s.lines)
      assert.equal("ready>backoff:lost", seen[3])
      assert.equal(1, ss.disconnected[conn])
    end)

    it("in connecting: abandons the attempt, backs off, and hands the connection to disconnect "
      .. "once", function()
      local s = ss.server { mode = "silent" }
      local conns = {}
      local M = ss.echo {
        connect = function(m)   -- a handshake after the TCP connect: HELLO must be answered
          return ss.line.connect(m, { port = m.data.port }):add_callback(function(conn)
            conns[#conns + 1] = conn
            return conn:request("HELLO"):add_callback(function() return conn end)
          end)
        end,
      }
      local c = ss.new(M, { port = s.port })
      local seen = ss.transitions(c)
      watch(c:echo("a"))
      assert.is_true(wait(function() return s.lines == 1 end))
      s:drop()
      assert.is_true(wait(function() return seen[2] ~= nil end))
      assert.equal("connecting>backoff:lost", seen[2])
      assert.is_true(wait(function() return ss.disconnected[conns[1]] == 1 end))
      pause(0.05)
      assert.equal(1, ss.disconnected[conns[1]])
    end)

    it("is ignored in idle, backoff and closed", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { backoff = { initial = 1, jitter = 0 } }, { port = s.port })
      c:fire("lost", modal.failure("unavailable", "x"))
      assert.equal("idle", c.state)
      watch(c:echo("a"))
      assert.is_true(wait(function() return c.state == "backoff" end))
      c:fire("lost")
      assert.equal("backoff", c.state)
      c:close()
      c:fire("lost")
      assert.equal("closed", c.state)
    end)

    it("reported with a connection already handed to disconnect, is dropped", function()
      local s = ss.server()
      local c = ss.new(ss.echo(), { port = s.port })
      assert.is_true(wait(fired(watch(c:echo("a")))))
      local old = c.data.conn
      s:drop()
      assert.is_true(wait(function() return c.state == "ready" and c.data.conn ~= old end))
      c:fire("lost", modal.failure("unavailable", "late news"), old)
      assert.equal("ready", c.state)
      c:fire("lost", modal.failure("unavailable", "this one"), c.data.conn)
      assert.equal("backoff", c.state)
    end)
  end)

  describe("idle_timeout", function()
    it("disconnects a ready connection with no call for that long; the next call reconnects", function()
      local s = ss.server()
      local c = ss.new(ss.echo { idle_timeout = 0.1 }, { port = s.port })
      local seen, at = ss.transitions(c)
      assert.is_true(wait(fired(watch(c:echo("a")))))
      local conn = c.data.conn
      assert.is_true(wait(function() return c.state == "idle" end))
      assert.equal("ready>idle:idle", seen[#seen])
      assert.is_true(at[#seen] - at[#seen - 1] >= 0.099)
      assert.equal(1, ss.disconnected[conn])
      assert.is_nil(c.data.conn)
      assert.is_true(wait(function() return s.open == 0 end))
      local again = watch(c:echo("b"))
      assert.is_true(wait(fired(again)))
      assert.equal("b", again.value)
      assert.equal(2, s.accepts)
    end)

    it("keeps a connection with a call in flight, and counts from the last answer", function()
      local s = ss.server { mode = "silent" }
      local c = ss.new(ss.echo { idle_timeout = 0.1 }, { port = s.port })
      local slow = c:echo("a")
      local got = watch(slow)
      assert.is_true(wait(function() return c.state == "ready" end))
      pause(0.2)
      assert.equal("ready", c.state)
      slow:cancel()                                   -- the caller gives up: no call in flight
      assert.is_true(got.fired)
      local t0 = modal.now()
      assert.is_true(wait(function() return c.state == "idle" end))
      assert.is_true(modal.now() - t0 >= 0.09)
    end)
  end)

  describe("waiting calls", function()
    it("are postponed calls: counted by c:postponed(), removed when cancelled or timed out", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo(), { port = s.port })
      local a, b, d = c:echo("a"), c:echo("b"), c:echo("c")
      watch(a); watch(d)
      assert.equal(3, c:postponed())
      a:cancel()
      assert.equal(2, c:postponed())
      local got = watch(b:add_timeout(0.05))
      assert.is_true(wait(fired(got)))
      assert.equal("timeout", got.value.kind)        -- the caller's own deadline: the core's failure
      assert.equal(1, c:postponed())
      d:cancel()
    end)

    it("past max_postponed, fail at once with overloaded", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo { max_postponed = 2 }, { port = s.port })
      watch(c:echo("a")); watch(c:echo("b"))
      local third = watch(c:echo("c"))
      assert.is_true(third.fired)
      assert.equal("overloaded", third.value.kind)
    end)

    it("see m.data.conn: the live connection in ready, gone after", function()
      local s = ss.server()
      local seen_conn
      local M = ss.echo { methods = { echo = function(m, conn, text)
        seen_conn = rawequal(m.data.conn, conn)
        return conn:request(text)
      end } }
      local c = ss.new(M, { port = s.port })
      assert.is_true(wait(fired(watch(c:echo("a")))))
      assert.is_true(seen_conn)
      s:stop()
      assert.is_true(wait(function() return c.state == "backoff" end))
      assert.is_nil(c.data.conn)
    end)

    it("fail with kind error when a body raises; the service stays ready", function()
      local s = ss.server()
      local M = ss.echo { methods = { echo = function(_, conn, text) return conn:request(text) end,
        boom = function() error("body broke") end } }
      local c = ss.new(M, { port = s.port })
      assert.is_true(wait(fired(watch(c:echo("a")))))
      local got = watch(c:boom())
      assert.equal("error", got.value.kind)
      assert.matches("body broke", got.value.message, 1, true)
      assert.equal("ready", c.state)
    end)
  end)

  describe("connect", function()
    it("that raises fails the attempt (kind error, logged) and backs off", function()
      local lines = support.capture_log()
      local n = 0
      local c = ss.new(ss.echo { connect = function() n = n + 1; error("no socket today") end }, {})
      watch(c:echo("a"))
      assert.is_true(wait(function() return n >= 2 end))
      assert.equal("error", status(c).last.kind)
      assert.matches("no socket today", status(c).last.message, 1, true)
      assert.is_true(#lines > 0)
    end)

    it("that returns nothing fails the attempt, saying what it should return", function()
      local c = ss.new(ss.echo { connect = function() end }, {})
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 1 end))
      assert.matches("connect returned nothing", status(c).last.message, 1, true)
    end)

    it("that returns a connection (not a Deferred) is ready at once", function()
      local conn = { request = function(_, text) return "direct " .. text end }
      local c = ss.new(ss.echo { connect = function() return conn end, disconnect = false,
        methods = { echo = function(_, k, text) return k:request(text) end } }, {})
      local got = watch(c:echo("x"))
      assert.is_true(got.fired)
      assert.equal("direct x", got.value)
      assert.equal("ready", c.state)
      assert.equal(conn, c.data.conn)
    end)

    it("that returns a failure fails the attempt with it", function()
      local c = ss.new(ss.echo { connect = function() return modal.failure("nope", "not today") end }, {})
      watch(c:echo("a"))
      assert.is_true(wait(function() return status(c).attempts >= 1 end))
      assert.equal("nope", status(c).last.kind)
    end)
  end)
end)
