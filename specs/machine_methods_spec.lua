-- specs/machine_methods_spec.lua — machine methods (doc/machines.md, driving rules 1-2):
-- handlers and what they return or raise, postpone, its bound, cancel-removal and retry.
local modal = require "modal"
local support = require "support"
local run_undo = support.run_undo
local quiet_unhandled = support.quiet_unhandled

local outcome, counter, run_loop = support.outcome, support.counter, support.run_loop



-- Asserts that Deferred d has failed with a failure of `kind`; returns the failure.
local function assert_failed(kind, d)
  local state, f = outcome(d)
  assert.equal("failed", state)
  assert.is_true(modal.is_failure(f))
  assert.equal(kind, f.kind)
  return f
end

-- Asserts that Deferred d has succeeded with `value`.
local function assert_succeeded(value, d)
  local state, v = outcome(d)
  assert.equal("succeeded", state)
  assert.equal(value, v)
end

-- A machine that postpones `query` in `waiting` and answers it in `ready` with `answer`
-- (default: the first argument); `go` moves waiting -> ready, `wait` ready -> waiting.
local function waiter(name, answer, extra)
  local def = {
    name = name, initial = "waiting", methods = { "query" },
    states = {
      waiting = { query = "postpone", on = { go = "ready", poke = { action = function() end },
                                             again = "waiting" } },
      ready = { query = answer or function(_, x) return x end, on = { wait = "waiting" } },
    },
  }
  for k, v in pairs(extra or {}) do def[k] = v end
  return modal.machine(def)
end

describe("machine methods", function()
  after_each(run_undo)

  describe("a definition", function()
    it("that is invalid makes modal.machine() raise with the path of the problem", function()
      local ok, err = pcall(modal.machine, {
        name = "no_handler", initial = "idle", methods = { "query" },
        states = { idle = { on = { go = "idle" } } },
      })
      assert.is_false(ok)
      assert.matches("query", tostring(err), 1, true)
    end)

    it("with a method that is not in `methods` raises", function()
      local ok, err = pcall(modal.machine, {
        name = "stray_handler", initial = "idle", methods = { "query" },
        states = { idle = { query = function() end, quer = function() end } },
      })
      assert.is_false(ok)
      assert.matches("states.idle.quer", tostring(err), 1, true)
    end)
  end)

  describe("a handler", function()
    it("that raises fails the call with kind 'error', keeps the traceback and the state", function()
      local M = modal.machine {
        name = "raising_handler", initial = "ready", methods = { "query" },
        states = {
          ready = {
            query = function(_, x)
              if x == "bad" then error("handler boom") end
              return x
            end,
            on = { go = "ready" },
          },
        },
      }
      local c = M:new()
      local f = assert_failed("error", c:query("bad"))
      assert.matches("handler boom", f.message, 1, true)
      assert.is_string(f.traceback)
      assert.equal("ready", c.state)
      assert_succeeded("fine", c:query("fine"))
    end)

    it("that raises a non-string value fails the call with that value in the failure", function()
      local value = { code = 7 }
      local M = modal.machine {
        name = "raising_table", initial = "ready", methods = { "query" },
        states = { ready = { query = function() error(value) end } },
      }
      local f = assert_failed("error", M:new():query())
      assert.is_true(rawequal(value, f.value))
    end)

    it("that returns a Deferred that has fired gives the caller that Deferred", function()
      local returned = {}
      local M = modal.machine {
        name = "returns_fired", initial = "ready", methods = { "ok", "bad" },
        states = { ready = {
          ok = function(_, x) returned.ok = modal.succeed(x); return returned.ok end,
          bad = function() returned.bad = modal.fail("nope", "denied"); return returned.bad end,
        } },
      }
      local c = M:new()
      local d = c:ok(5)
      assert.equal(returned.ok, d)
      assert_succeeded(5, d)
      local f = assert_failed("nope", c:bad())
      assert.equal("denied", f.message)
    end)

    it("that returns a pending Deferred gives the caller that Deferred; the call waits for it", function()
      local inner = modal.deferred()
      local M = modal.machine {
        name = "returns_pending", initial = "ready", methods = { "query" },
        states = { ready = { query = function() return inner end } },
      }
      local d = M:new():query()
      assert.equal(inner, d)
      assert.equal("pending", d:state())
      inner:callback(42)
      assert_succeeded(42, d)
    end)

    it("that returns a failure fails the call with that failure", function()
      local denied = modal.failure("auth", "denied")
      local M = modal.machine {
        name = "returns_failure", initial = "ready", methods = { "query" },
        states = { ready = { query = function() return denied end } },
      }
      local f = assert_failed("auth", M:new():query())
      assert.is_true(rawequal(denied, f))
    end)

    it("that returns a failed Deferred fails the call with its failure", function()
      local M = modal.machine {
        name = "returns_failed", initial = "ready", methods = { "query" },
        states = { ready = { query = function() return modal.fail("auth", "denied") end } },
      }
      local f = assert_failed("auth", M:new():query())
      assert.equal("denied", f.message)
    end)

    it("that returns a pending Deferred: the call waits for it, then has its result", function()
      local inner = modal.deferred()
      local M = modal.machine {
        name = "returns_pending", initial = "ready", methods = { "query" },
        states = { ready = { query = function() return inner end } },
      }
      local d = M:new():query()
      assert.equal("pending", d:state())
      inner:callback("later")
      assert_succeeded("later", d)
    end)

    it("that returns a pending Deferred: cancelling the call cancels that Deferred", function()
      quiet_unhandled()
      local cancelled = counter()
      local inner = modal.deferred(cancelled.fn)
      local M = modal.machine {
        name = "cancel_follows", initial = "ready", methods = { "query" },
        states = { ready = { query = function() return inner end } },
      }
      local d = M:new():query()
      d:cancel()
      assert.equal(1, cancelled.n)
      assert_failed("cancelled", d)
    end)

    it("that returns a pending Deferred that later fails: the call fails with its failure", function()
      local inner = modal.deferred()
      local M = modal.machine {
        name = "returns_pending_fails", initial = "ready", methods = { "query" },
        states = { ready = { query = function() return inner end } },
      }
      local d = M:new():query()
      inner:errback(modal.failure("refused", "no"))
      assert.equal("no", assert_failed("refused", d).message)
    end)

    it("made with modal.async answers once its coroutine finishes", function()
      local M = modal.machine {
        name = "async_handler", initial = "ready", methods = { "query" },
        states = {
          ready = {
            query = modal.async(function(m, x)
              modal.await(modal.sleep(0.01))
              return m.state .. ":" .. x
            end),
          },
        },
      }
      local clock = support.clock()
      local d = M:new():query("x")
      assert.equal("pending", d:state())
      clock:advance(0.01)
      assert_succeeded("ready:x", d)
    end)

    it("that returns a plain value succeeds the call with it; returning nothing gives nil", function()
      local M = modal.machine {
        name = "returns_value", initial = "ready", methods = { "query", "close" },
        states = { ready = { query = function(_, x) return { x } end, close = function() end } },
      }
      local c = M:new()
      local state, v = outcome(c:query(5))
      assert.equal("succeeded", state)
      assert.same({ 5 }, v)
      assert_succeeded(nil, c:close())
    end)

    it("that returns modal.succeed(v) succeeds the call with v", function()
      local M = modal.machine {
        name = "returns_succeed", initial = "ready", methods = { "query" },
        states = { ready = { query = function(_, x) return modal.succeed(x + 1) end } },
      }
      assert_succeeded(42, M:new():query(41))
    end)

    it("runs as handler(m, ...) with m the instance and every argument, nils included", function()
      local seen = counter()
      local M = modal.machine {
        name = "handler_args", initial = "ready", methods = { "query" },
        states = { ready = { query = seen.fn } },
      }
      local c = M:new()
      c:query(1, nil, "three", nil)
      assert.equal(1, seen.n)
      assert.is_true(rawequal(c, seen.args[1][1]))
      assert.equal(5, seen.args[1].n)
      assert.equal(1, seen.args[1][2])
      assert.is_nil(seen.args[1][3])
      assert.equal("three", seen.args[1][4])
    end)

    it("comes from `defaults` when the state has none, and the state's own one wins", function()
      local M = modal.machine {
        name = "defaulted", initial = "plain", methods = { "query" },
        defaults = { query = function() return "default" end },
        states = {
          plain = { on = { go = "special" } },
          special = { query = function() return "special" end, on = { back = "plain" } },
        },
      }
      local c = M:new()
      assert_succeeded("default", c:query())
      c:fire("go")
      assert_succeeded("special", c:query())
    end)

    it("answers with a Deferred in every state, final ones included", function()
      local M = modal.machine {
        name = "every_state", initial = "one", methods = { "query" },
        states = {
          one = { query = function() return 1 end, on = { go = "two" } },
          two = { query = function() return modal.fail("stopped", "two") end, on = { go = "done" } },
          done = { final = true, query = function() return "done" end },
        },
      }
      local c = M:new()
      assert_succeeded(1, c:query())
      c:fire("go")
      assert_failed("stopped", c:query())
      c:fire("go")
      assert_succeeded("done", c:query())
    end)
  end)

  describe("instances", function()
    it("each have their own state and queue", function()
      local M = waiter("independent")
      local c1, c2 = M:new(), M:new()
      local d1, d2 = c1:query(1), c2:query(2)
      c1:fire("go")
      assert.equal("ready", c1.state)
      assert.equal("waiting", c2.state)
      assert_succeeded(1, d1)
      assert.equal("pending", d2:state())
      assert.equal(1, c2:postponed())
    end)
  end)

  describe("method calls made from inside a handler or hook", function()
    it("run at once, inside a handler", function()
      local M = modal.machine {
        name = "nested_calls", initial = "ready", methods = { "outer", "inner" },
        states = {
          ready = {
            inner = function(_, x) return x * 2 end,
            outer = function(m, x)
              local state, v = outcome(m:inner(x))
              return state .. ":" .. tostring(v)
            end,
          },
        },
      }
      assert_succeeded("succeeded:42", M:new():outer(21))
    end)

    it("run at once against the current state, inside an enter hook", function()
      local got
      local M = modal.machine {
        name = "call_from_enter", initial = "idle", methods = { "query" },
        states = {
          idle = { query = function() return "idle" end, on = { go = "busy" } },
          busy = {
            enter = function(m)
              local state, v = outcome(m:query())
              got = state .. ":" .. tostring(v)
            end,
            query = function(m) return "busy:" .. m.state end,
          },
        },
      }
      M:new():fire("go")
      assert.equal("succeeded:busy:busy", got)
    end)
  end)

  describe("m:postpone()", function()
    it("raises when called outside a handler", function()
      local M = waiter("postpone_outside")
      local c = M:new()
      assert.has_error(function() c:postpone() end)
      assert.equal(0, c:postponed())
    end)

    it("raises when called from a hook", function()
      local raised
      local M = modal.machine {
        name = "postpone_in_hook", initial = "idle", methods = {},
        states = {
          idle = { on = { go = "busy" } },
          busy = { enter = function(m) raised = not pcall(function() return m:postpone() end) end },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.is_true(raised)
      assert.equal(0, c:postponed())
    end)

    it("in a final state fails that call with kind 'error'", function()
      local M = modal.machine {
        name = "postpone_final", initial = "open", methods = { "query" },
        states = {
          open = { query = function() return "open" end, on = { close = "closed" } },
          closed = { final = true, query = function(m) return m:postpone() end },
        },
      }
      local c = M:new()
      c:fire("close")
      assert_failed("error", c:query())
      assert.equal(0, c:postponed())
    end)

    it("in a final state fails a retried call with kind 'error'", function()
      local M = modal.machine {
        name = "postpone_retried_final", initial = "open", methods = { "query" },
        states = {
          open = { query = "postpone", on = { close = "closed" } },
          closed = { final = true, query = function(m) return m:postpone() end },
        },
      }
      local c = M:new()
      local d = c:query()
      assert.equal("pending", d:state())
      c:fire("close")
      assert_failed("error", d)
      assert.equal(0, c:postponed())
    end)

    it("queues the call: the caller's Deferred waits and postponed() counts it", function()
      local M = modal.machine {
        name = "postpone_fn", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = function(m) return m:postpone() end, on = { go = "ready" } },
          ready = { query = function(_, x) return x end },
        },
      }
      local c = M:new()
      local d = c:query("q")
      assert.equal("pending", d:state())
      assert.equal(1, c:postponed())
      c:fire("go")
      assert_succeeded("q", d)
      assert.equal(0, c:postponed())
    end)
  end)

  describe("the postpone bound", function()
    it("fails a call past max_postponed at once with kind 'overloaded'", function()
      local M = waiter("bounded", nil, { max_postponed = 2 })
      local c = M:new()
      local d1, d2 = c:query(1), c:query(2)
      local f = assert_failed("overloaded", c:query(3))
      assert.is_string(f.message)
      assert.equal(2, c:postponed())
      c:fire("go")
      assert_succeeded(1, d1)
      assert_succeeded(2, d2)
    end)

    it("takes calls again once the queue is below the bound", function()
      quiet_unhandled()
      local M = waiter("bound_frees", nil, { max_postponed = 2 })
      local c = M:new()
      local d1 = c:query(1)
      c:query(2):cancel()
      local d3 = c:query(3)
      assert.equal("pending", d3:state())
      assert.equal(2, c:postponed())
      assert_failed("overloaded", c:query(4))
      c:fire("go")
      assert_succeeded(1, d1)
      assert_succeeded(3, d3)
    end)

    it("does not fail retried calls that postpone again while the queue is full", function()
      local M = modal.machine {
        name = "bound_repostpone", initial = "waiting", methods = { "query" }, max_postponed = 2,
        states = {
          waiting = { query = "postpone", on = { go = "picky" } },
          picky = { query = function(m) return m:postpone() end, on = { go = "ready" } },
          ready = { query = function(_, x) return x end },
        },
      }
      local c = M:new()
      local d1, d2 = c:query(1), c:query(2)
      c:fire("go")
      assert.equal("pending", d1:state())
      assert.equal("pending", d2:state())
      assert.equal(2, c:postponed())
      c:fire("go")
      assert_succeeded(1, d1)
      assert_succeeded(2, d2)
    end)

    it("is 10,000 by default", function()
      local M = waiter("bound_default")
      local c = M:new()
      local first, last
      for i = 1, 10000 do
        local d = c:query(i)
        if i == 1 then first = d end
        last = d
      end
      assert.equal(10000, c:postponed())
      assert.equal("pending", last:state())
      assert_failed("overloaded", c:query(10001))
      c:fire("go")
      assert.equal(0, c:postponed())
      assert_succeeded(1, first)
      assert_succeeded(10000, last)
    end)
  end)

  describe("cancelling a postponed call", function()
    it("takes it out of the queue: it fails 'cancelled' and is never retried", function()
      quiet_unhandled()
      local handled = counter(function(_, x) return x end)
      local M = waiter("cancel_removes", handled.fn)
      local c = M:new()
      local d1, d2, d3 = c:query(1), c:query(2), c:query(3)
      d2:cancel()
      assert.equal(2, c:postponed())
      assert_failed("cancelled", d2)
      c:fire("go")
      assert.equal(2, handled.n)
      assert.equal(1, handled.args[1][2])
      assert.equal(3, handled.args[2][2])
      assert_succeeded(1, d1)
      assert_succeeded(3, d3)
    end)

    it("by its own add_timeout takes it out of the queue with kind 'timeout'", function()
      quiet_unhandled()
      local handled = counter(function(_, x) return x end)
      local M = waiter("timeout_removes", handled.fn)
      local clock = support.clock()
      local c = M:new()
      local d = c:query("timed")
      d:add_timeout(0.02)
      local other = c:query("kept")
      clock:advance(0.02)
      assert_failed("timeout", d)
      assert.equal(1, c:postponed())
      c:fire("go")
      assert.equal(1, handled.n)
      assert.equal("kept", handled.args[1][2])
      assert_succeeded("kept", other)
    end)

    it("releases it at once: the instance keeps no reference to it", function()
      quiet_unhandled()
      local c = waiter("cancel_releases"):new()
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        for i = 1, 10 do
          local d = c:query(i)
          d:cancel()
          outcome(d)
          weak[i] = d
        end
      end)()
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak), "cancelled postponed calls are still referenced")
      assert.equal(0, c:postponed())
    end)

    it("releases it no later than the next change of state", function()
      quiet_unhandled()
      local c = waiter("cancel_releases_later"):new()
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        for i = 1, 10 do
          local d = c:query(i)
          d:cancel()
          outcome(d)
          weak[i] = d
        end
      end)()
      c:fire("go")
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak), "cancelled postponed calls are still referenced after a retry")
    end)

    it("while the queue is being retried keeps that call from running", function()
      quiet_unhandled()
      local calls = {}
      local later
      local M = waiter("cancel_during_retry", function(_, x)
        calls[#calls + 1] = x
        if x == 1 then later:cancel() end
        return x
      end)
      local c = M:new()
      local d1 = c:query(1)
      later = c:query(2)
      local d3 = c:query(3)
      c:fire("go")
      assert.same({ 1, 3 }, calls)
      assert_succeeded(1, d1)
      assert_failed("cancelled", later)
      assert_succeeded(3, d3)
    end)
  end)

  describe("retrying postponed calls", function()
    it("does not happen on an internal transition", function()
      local handled = counter(function(_, x) return x end)
      local M = waiter("no_retry_internal", handled.fn)
      local c = M:new()
      local d = c:query(1)
      c:fire("poke")
      assert.equal(0, handled.n)
      assert.equal(1, c:postponed())
      assert.equal("pending", d:state())
    end)

    it("does not happen on a self transition (the state name did not change)", function()
      local tries = counter(function(m) return m:postpone() end)
      local M = modal.machine {
        name = "no_retry_self", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = tries.fn, on = { again = "waiting", go = "ready" } },
          ready = { query = function(_, x) return x end },
        },
      }
      local c = M:new()
      local d = c:query(1)
      assert.equal(1, tries.n)
      c:fire("again")
      assert.equal(1, tries.n)
      assert.equal(1, c:postponed())
      c:fire("go")
      assert_succeeded(1, d)
    end)

    it("happens, oldest first, before an outside fire() returns", function()
      local order = {}
      local M = waiter("retry_order", function(_, x)
        order[#order + 1] = x
        return x * 10
      end)
      local c = M:new()
      local ds = {}
      for i = 1, 3 do ds[i] = c:query(i) end
      assert.equal(3, c:postponed())
      c:fire("go")
      assert.same({ 1, 2, 3 }, order)
      for i = 1, 3 do assert_succeeded(i * 10, ds[i]) end
      assert.equal(0, c:postponed())
    end)

    it("works the same for the handler string \"postpone\" and every argument, nils included", function()
      local seen = counter(function() return "ok" end)
      local M = waiter("retry_args", seen.fn)
      local c = M:new()
      local d = c:query(1, nil, 3, nil)
      c:fire("go")
      assert_succeeded("ok", d)
      assert.equal(1, seen.n)
      assert.is_true(rawequal(c, seen.args[1][1]))
      assert.equal(5, seen.args[1].n)
      assert.equal(1, seen.args[1][2])
      assert.is_nil(seen.args[1][3])
      assert.equal(3, seen.args[1][4])
    end)

    it("happens after a change of state made by a timeout", function()
      local M = modal.machine {
        name = "retry_on_timeout", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", timeout = 0.01, on = { timeout = "ready" } },
          ready = { query = function(_, x) return x end },
        },
      }
      local c = M:new()
      local d = c:query("x")
      assert.is_true(run_loop(2))
      assert.equal("ready", c.state)
      assert_succeeded("x", d)
    end)

    it("keeps the place of a retried call that postpones again", function()
      local order = {}
      local M = modal.machine {
        name = "retry_keeps_place", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", on = { go = "picky" } },
          picky = {
            query = function(m, x)
              if x % 2 == 1 then return m:postpone() end
              return x
            end,
            on = { go = "ready" },
          },
          ready = { query = function(_, x) order[#order + 1] = x; return x end },
        },
      }
      local c = M:new()
      local ds = {}
      for i = 1, 4 do ds[i] = c:query(i) end
      c:fire("go")
      assert.equal(2, c:postponed())
      assert_succeeded(2, ds[2])
      assert_succeeded(4, ds[4])
      assert.equal("pending", ds[1]:state())
      ds[5] = c:query(5)
      assert_succeeded(6, c:query(6))
      assert.equal(3, c:postponed())
      c:fire("go")
      assert.same({ 1, 3, 5 }, order)
      assert_succeeded(1, ds[1])
      assert_succeeded(3, ds[3])
      assert_succeeded(5, ds[5])
    end)

    it("finishes the whole queue in the new state before an input fired by a retried call", function()
      local log = {}
      local M = modal.machine {
        name = "retry_then_input", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", on = { go = "picky" } },
          picky = {
            query = function(m, x)
              log[#log + 1] = "picky:" .. x
              if x == 2 then m:fire("go") end
              if x % 2 == 1 then return m:postpone() end
              return x
            end,
            on = { go = "ready" },
          },
          ready = { query = function(_, x) log[#log + 1] = "ready:" .. x; return x end },
        },
      }
      local c = M:new()
      local ds = {}
      for i = 1, 4 do ds[i] = c:query(i) end
      c:fire("go")
      assert.same({ "picky:1", "picky:2", "picky:3", "picky:4", "ready:1", "ready:3" }, log)
      assert.equal("ready", c.state)
      for i = 1, 4 do assert_succeeded(i, ds[i]) end
    end)

    it("queues a call made during a retry behind the others, and tries it once", function()
      local order = {}
      local M = modal.machine {
        name = "call_during_retry", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", on = { go = "picky" } },
          picky = {
            query = function(m, x)
              order[#order + 1] = "picky:" .. x
              if x == 1 then m:query(99) end
              if x % 2 == 1 then return m:postpone() end
              return x
            end,
            on = { go = "ready" },
          },
          ready = { query = function(_, x) order[#order + 1] = "ready:" .. x; return x end },
        },
      }
      local c = M:new()
      for i = 1, 3 do c:query(i) end
      c:fire("go")
      assert.same({ "picky:1", "picky:99", "picky:2", "picky:3" }, order)
      assert.equal(3, c:postponed())
      c:fire("go")
      assert.same({ "picky:1", "picky:99", "picky:2", "picky:3", "ready:1", "ready:3", "ready:99" }, order)
      assert.equal(0, c:postponed())
    end)

    it("lets a retried call follow the Deferred its handler returns", function()
      local inner = modal.deferred()
      local M = waiter("retry_follows", function() return inner end)
      local c = M:new()
      local d = c:query()
      c:fire("go")
      assert.equal("pending", d:state())
      assert.equal(0, c:postponed())
      inner:callback("late")
      assert_succeeded("late", d)
    end)

    it("works for a \"postpone\" entry in `defaults`", function()
      local M = modal.machine {
        name = "default_postpone", initial = "waiting", methods = { "query" },
        defaults = { query = "postpone" },
        states = {
          waiting = { on = { go = "ready" } },
          ready = { query = function(_, x) return x end },
        },
      }
      local c = M:new()
      local d = c:query("x")
      assert.equal(1, c:postponed())
      c:fire("go")
      assert_succeeded("x", d)
    end)

    it("answers queued calls with the final state's handler when one is reached", function()
      local M = modal.machine {
        name = "retry_into_final", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", on = { close = "closed" } },
          closed = { final = true, query = function() return modal.fail("stopped", "closed") end },
        },
      }
      local c = M:new()
      local d1, d2 = c:query(), c:query()
      c:fire("close")
      assert_failed("stopped", d1)
      assert_failed("stopped", d2)
      assert.equal(0, c:postponed())
    end)

    it("retries again on every later change of state name", function()
      local tries = {}
      local M = modal.machine {
        name = "retry_every_change", initial = "a", methods = { "query" },
        states = {
          a = { query = function(m) tries[#tries + 1] = "a"; return m:postpone() end, on = { go = "b" } },
          b = { query = function(m) tries[#tries + 1] = "b"; return m:postpone() end, on = { go = "c" } },
          c = { query = function() tries[#tries + 1] = "c"; return "c" end },
        },
      }
      local inst = M:new()
      local d = inst:query()
      inst:fire("go")
      assert.equal("pending", d:state())
      inst:fire("go")
      assert.same({ "a", "b", "c" }, tries)
      assert_succeeded("c", d)
    end)
  end)
end)
