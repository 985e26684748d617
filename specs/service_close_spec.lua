-- specs/service_close_spec.lua — close() from each state of a modal.service, with calls
-- waiting and in flight (doc/policies.md, "Closing"): the attempt is cancelled, the backoff
-- wait stopped, calls in flight drain (bounded by close_timeout) before disconnect, waiting and
-- later calls fail with kind stopped, and close() itself answers once closed, every time.
local modal = require "modal"
local ss = require "service_support"
local support = require "support"

local watch, wait, pause = ss.watch, ss.wait, ss.pause
local status = modal.service.status

local function fired(got) return function() return got.fired end end

-- A body in flight for `seconds` before it asks the server.
local function slow_echo(seconds)
  return function(_, conn, text)
    return modal.sleep(seconds):add_callback(function() return conn:request(text) end)
  end
end

local function assert_stopped(got, c)
  assert.is_true(got.fired)
  assert.is_false(got.ok)
  assert.equal("stopped", got.value.kind)
  assert.matches("^" .. c.machine.name .. "#" .. c.id .. " is clos", got.value.message)
end

describe("modal.service close()", function()
  after_each(ss.cleanup)

  it("in connecting: cancels the attempt (its socket closes), fails the waiting calls, answers "
    .. "once closed", function()
    local s = ss.server { slow_greeting = 5 }
    local c = ss.new(ss.echo(), { port = s.port, greeting = true })
    local seen = ss.transitions(c)
    local waiting = watch(c:echo("a"))
    assert.is_true(wait(function() return s.open == 1 end))
    assert.equal("connecting", c.state)
    local closed = watch(c:close())
    assert.is_true(closed.fired and closed.ok)
    assert.equal("closed", c.state)
    assert.same({ "idle>connecting:connect", "connecting>closing:close", "closing>closed:done" }, seen)
    assert_stopped(waiting, c)
    assert.is_true(wait(function() return s.open == 0 end))
    assert_stopped(watch(c:echo("later")), c)
    assert_stopped(watch(c:connect_now()), c)
  end)

  it("in backoff: stops the wait (no more attempts) and fails the waiting calls", function()
    local s = ss.server { mode = "refuse" }
    local c = ss.new(ss.echo { backoff = { initial = 0.05, jitter = 0 } }, { port = s.port })
    local waiting = { watch(c:echo("a")), watch(c:echo("b")) }
    assert.is_true(wait(function() return c.state == "backoff" end))
    local attempts = status(c).attempts
    local closed = watch(c:close())
    assert.is_true(closed.fired and closed.ok)
    for _, got in ipairs(waiting) do assert_stopped(got, c) end
    pause(0.15)
    assert.equal(attempts, status(c).attempts)
    assert.equal("closed", c.state)
  end)

  it("in idle: closes at once", function()
    local c = ss.new(ss.echo(), { port = 1 })
    local closed = watch(c:close())
    assert.is_true(closed.fired and closed.ok)
    assert.is_nil(closed.value)
    assert.equal("closed", c.state)
    local f = watch(c:echo("x")).value
    assert.equal("closed", f.value.state)
    assert.equal(0, f.value.attempts)
  end)

  it("in ready: lets calls in flight finish first, fails calls made meanwhile, then disconnects", function()
    local s = ss.server()
    local c = ss.new(ss.echo { methods = { echo = slow_echo(0.1) } }, { port = s.port })
    assert.is_true(wait(fired(watch(c:connect_now()))))
    local conn = c.data.conn
    local order = {}
    local inflight = c:echo("in flight")
    inflight:add_both(function(v) order[#order + 1] = "answer"; return v end)
    local answer = watch(inflight)
    local closed = c:close()
    closed:add_both(function(v) order[#order + 1] = "closed"; return v end)
    local closed_got = watch(closed)
    assert.equal("closing", c.state)
    assert_stopped(watch(c:echo("meanwhile")), c)
    assert.is_nil(ss.disconnected[conn])           -- not while a call is in flight
    assert.is_true(wait(fired(closed_got)))
    assert.is_true(answer.ok)
    assert.equal("in flight", answer.value)
    assert.same({ "answer", "closed" }, order)
    assert.equal(1, ss.disconnected[conn])
    assert.equal("closed", c.state)
    assert.is_nil(c.data.conn)
  end)

  it("in ready: bounds the drain by close_timeout; the connection fails what is left", function()
    local s = ss.server { mode = "silent" }
    local c = ss.new(ss.echo { close_timeout = 0.1 }, { port = s.port })
    assert.is_true(wait(fired(watch(c:connect_now()))))
    local stuck = watch(c:echo("never answered"))
    local t0 = modal.now()
    local closed = watch(c:close())
    assert.is_true(wait(fired(closed)))
    local took = closed.at - t0
    assert.is_true(took >= 0.099 and took < 0.1 + 0.1 * support.SLACK, tostring(took))
    assert.is_true(stuck.fired)
    assert.equal("unavailable", stuck.value.kind)       -- the connection's own failure
  end)

  it("close_timeout defaults to connect_timeout", function()
    local s = ss.server { mode = "silent" }
    local c = ss.new(ss.echo { connect_timeout = 0.12 }, { port = s.port })
    assert.is_true(wait(fired(watch(c:connect_now()))))
    watch(c:echo("never answered"))
    local t0 = modal.now()
    local closed = watch(c:close())
    assert.is_true(wait(fired(closed)))
    assert.is_true(closed.at - t0 >= 0.119)
  end)

  it("waits for a disconnect that returns a Deferred, bounded by connect_timeout", function()
    local s = ss.server()
    local release
    local c = ss.new(ss.echo { connect_timeout = 0.3, disconnect = function(_, conn)
      conn:close()
      release = modal.deferred()
      return release
    end }, { port = s.port })
    assert.is_true(wait(fired(watch(c:connect_now()))))
    local closed = watch(c:close())
    assert.equal("closing", c.state)
    pause(0.05)
    assert.is_false(closed.fired)
    release:callback()
    assert.is_true(closed.fired)

    local lines = require("support").capture_log()
    local d = ss.new(ss.echo { connect_timeout = 0.1, disconnect = function(_, conn)
      conn:close()
      return modal.deferred()                          -- never fires
    end }, { port = s.port })
    assert.is_true(wait(fired(watch(d:echo("x")))))
    local t0 = modal.now()
    local closed2 = watch(d:close())
    assert.is_true(wait(fired(closed2)))
    assert.is_true(closed2.ok)
    assert.is_true(closed2.at - t0 >= 0.099)
    assert.matches("disconnect failed: timeout", lines[#lines].message, 1, true)
  end)

  it("again, while closing and once closed, answers once closed", function()
    local s = ss.server()
    local c = ss.new(ss.echo { methods = { echo = slow_echo(0.05) } }, { port = s.port })
    assert.is_true(wait(fired(watch(c:connect_now()))))
    watch(c:echo("x"))
    local first = watch(c:close())
    local second = watch(c:close())
    assert.is_false(first.fired)
    assert.is_true(wait(fired(second)))
    assert.is_true(first.fired and first.ok and second.ok)
    local third = watch(c:close())
    assert.is_true(third.fired and third.ok)
  end)

  it("in failed: succeeds at once and stays failed", function()
    local s = ss.server { auth = "pw" }
    local c = ss.new(ss.echo { classify = function() return "fatal" end }, { port = s.port, auth = "no" })
    assert.is_true(wait(fired(watch(c:echo("x")))))
    assert.equal("failed", c.state)
    local closed = watch(c:close())
    assert.is_true(closed.fired and closed.ok)
    assert.equal("failed", c.state)
  end)

  it("with a full queue of waiting calls, still answers once closed (never overloaded)", function()
    local s = ss.server { mode = "refuse" }
    local c = ss.new(ss.echo { max_postponed = 3 }, { port = s.port })
    local waiting = {}
    for i = 1, 3 do waiting[i] = watch(c:echo(i)) end
    local closed = watch(c:close())
    assert.is_true(closed.fired and closed.ok)
    for _, got in ipairs(waiting) do assert_stopped(got, c) end
  end)

  it("of an instance nobody holds leaves nothing behind", function()
    local s = ss.server()
    local M = ss.echo()
    do
      local c = M:new { port = s.port }
      assert.is_true(wait(fired(watch(c:echo("x")))))
      c:close()
    end
    assert.is_true(wait(function() return s.open == 0 end))
    collectgarbage(); collectgarbage()
    local st = modal.stats().machines[M.name]
    assert.is_true(st == nil or st.instances == 0)
  end)
end)
