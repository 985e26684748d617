-- specs/async_spec.lua — modal.async and modal.await: coroutines over Deferreds.
local support = require "support"

local outcome = support.outcome

describe("modal.async", function()
  local modal
  before_each(function()
    modal = require "modal"
  end)
  after_each(support.run_undo)          -- closes the testing clock of timer tests

  describe("modal.await() outside modal.async", function()
    it("raises an error that names modal.await", function()
      local d = modal.succeed(1)
      assert.has_error(function() modal.await(d) end)
      local ok, err = pcall(modal.await, d)
      assert.is_false(ok)
      assert.matches("modal.await", tostring(err), 1, true)
    end)

    it("raises in a plain coroutine too", function()
      local pending = modal.deferred()
      local co = coroutine.create(function() return modal.await(pending) end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.matches("modal.await", tostring(err), 1, true)
      pending:callback("nobody waits")
      assert.equal("dead", coroutine.status(co))
    end)
  end)

  describe("errors", function()
    it("fails the Deferred with kind 'error' when fn raises", function()
      local d = modal.async(function() error("exploded", 0) end)()
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.is_true(modal.is_failure(f))
      assert.equal("error", f.kind)
      assert.equal("exploded", f.message)
      assert.is_string(f.traceback)
    end)

    it("fails with kind 'error' when fn raises after a wait", function()
      local inner = modal.deferred()
      local d = modal.async(function()
        modal.await(inner)
        error({ code = 7 })
      end)()
      assert.equal("pending", d:state())
      inner:callback()
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("error", f.kind)
      assert.equal(7, f.value.code)
    end)

    it("fails with kind 'error', keeping the value, when the raised value's __tostring raises", function()
      local bad = setmetatable({}, { __tostring = function() error("no text for you") end })
      local gate = modal.deferred()
      local calls = {
        modal.async(function() error(bad) end)(),
        modal.async(function() modal.await(gate); error(bad) end)(),
      }
      gate:callback()
      for _, d in ipairs(calls) do
        local state, f = outcome(d)
        assert.equal("failed", state)
        assert.equal("error", f.kind)
        assert.is_true(rawequal(bad, f.value))
      end
    end)

    it("fails with a raised failure object as it is", function()
      local f = modal.failure("unavailable", "no backend")
      local state, got = outcome(modal.async(function() error(f) end)())
      assert.equal("failed", state)
      assert.is_true(rawequal(f, got))
    end)
  end)

  describe("modal.async()", function()
    it("runs fn at once, up to its first wait", function()
      local log = {}
      local inner = modal.deferred()
      local run = modal.async(function()
        log[#log + 1] = "start"
        local v = modal.await(inner)
        log[#log + 1] = v
        return v * 2
      end)
      assert.same({}, log)
      local d = run()
      assert.same({ "start" }, log)
      assert.equal("pending", d:state())
      inner:callback(21)
      assert.same({ "start", 21 }, log)
      assert.same({ "succeeded", 42 }, { outcome(d) })
    end)

    it("passes the arguments to fn", function()
      local got
      local d = modal.async(function(...) got = table.pack(...); return "done" end)("a", nil, 3)
      assert.same({ n = 3, "a", nil, 3 }, got)
      assert.same({ "succeeded", "done" }, { outcome(d) })
    end)

    it("returns an already-fired Deferred when fn finishes without waiting", function()
      local d = modal.async(function(x) return x + 1 end)(41)
      assert.equal("succeeded", d:state())
      assert.same({ "succeeded", 42 }, { outcome(d) })
      local none = modal.async(function() end)()
      local state, v = outcome(none)
      assert.equal("succeeded", state)
      assert.is_nil(v)
    end)

    it("runs each call in its own coroutine", function()
      local gates = { modal.deferred(), modal.deferred() }
      local run = modal.async(function(i) return "call " .. i .. " got " .. modal.await(gates[i]) end)
      local first, second = run(1), run(2)
      gates[2]:callback("two")
      assert.equal("pending", first:state())
      assert.same({ "succeeded", "call 2 got two" }, { outcome(second) })
      gates[1]:callback("one")
      assert.same({ "succeeded", "call 1 got one" }, { outcome(first) })
    end)

    it("awaits another async function's Deferred", function()
      local gate = modal.deferred()
      local inner = modal.async(function() return modal.await(gate) + 1 end)
      local outer = modal.async(function() return modal.await(inner()) * 10 end)
      local d = outer()
      assert.equal("pending", d:state())
      gate:callback(4)
      assert.same({ "succeeded", 50 }, { outcome(d) })
    end)

    it("waits on timers, one await after another", function()
      local clock = support.clock()
      local steps, at = 0, {}
      local d = modal.async(function()
        for _ = 1, 3 do
          modal.await(modal.sleep(0.01))
          steps = steps + 1
          at[steps] = modal.now()
        end
        return steps
      end)()
      assert.equal(0, steps)
      clock:advance(0.03)
      assert.same({ 0.01, 0.02, 0.03 }, at)
      assert.same({ "succeeded", 3 }, { outcome(d) })
    end)
  end)

  describe("modal.await()", function()
    it("returns the value of a Deferred that fires later", function()
      local inner = modal.deferred()
      local got
      local d = modal.async(function() got = modal.await(inner); return got end)()
      assert.is_nil(got)
      inner:callback({ answer = 42 })
      assert.same({ answer = 42 }, got)
      assert.equal("succeeded", d:state())
      outcome(d)
    end)

    it("returns the value of an already-fired Deferred", function()
      local d = modal.async(function() return modal.await(modal.succeed("ready")) end)()
      assert.same({ "succeeded", "ready" }, { outcome(d) })
    end)

    it("raises the failure object itself", function()
      local f = modal.failure("custom", "awaited failure")
      local inner = modal.deferred()
      local caught
      local d = modal.async(function()
        local ok, err = pcall(modal.await, inner)
        assert(not ok, "await should have raised")
        caught = err
        return "recovered"
      end)()
      inner:errback(f)
      assert.is_true(rawequal(f, caught))
      assert.same({ "succeeded", "recovered" }, { outcome(d) })
    end)

    it("raises an already-failed Deferred's failure", function()
      local f = modal.failure("custom", "failed before the await")
      local caught
      modal.async(function()
        local _, err = pcall(modal.await, modal.fail(f))
        caught = err
      end)()
      assert.is_true(rawequal(f, caught))
    end)

    it("fails the outer Deferred with an uncaught awaited failure, the same object", function()
      local f = modal.failure("stopped", "closed")
      local inner = modal.deferred()
      local after = false
      local d = modal.async(function() modal.await(inner); after = true end)()
      inner:errback(f)
      assert.is_false(after)
      local state, got = outcome(d)
      assert.equal("failed", state)
      assert.is_true(rawequal(f, got))
    end)
  end)

  describe("cancelling", function()
    it("cancels the Deferred being awaited", function()
      local canceller = support.counter()
      local inner = modal.deferred(canceller.fn)
      local d = modal.async(function() return modal.await(inner) end)()
      assert.equal("pending", d:state())
      d:cancel()
      assert.equal(1, canceller.n)
      assert.is_true(rawequal(inner, canceller.args[1][1]))
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("cancelled", f.kind)
    end)

    it("cancels a sleep being awaited, so the loop has nothing left", function()
      local d = modal.async(function() modal.await(modal.sleep(10)) end)()
      d:cancel()
      local finished = support.run_loop(1)
      assert.is_true(finished)
      local _, f = outcome(d)
      assert.equal("cancelled", f.kind)
    end)

    it("behaves as a chain paused on the awaited Deferred: fires only when the coroutine ends", function()
      local later = modal.deferred()
      local awaited = modal.deferred()
      awaited:add_errback(function(f) if f.kind == "cancelled" then return later end; return f end)
      local d = modal.async(function() return modal.await(awaited) + 1 end)()
      d:cancel()
      assert.equal("pending", d:state())
      later:callback(41)
      assert.same({ "succeeded", 42 }, { outcome(d) })
    end)

    it("reaches the next wait when the coroutine caught the first cancel", function()
      local first = modal.deferred()
      local canceller = support.counter()
      local second = modal.deferred(canceller.fn)
      local d = modal.async(function()
        local _, f = pcall(modal.await, first)
        assert(f.kind == "cancelled")
        return modal.await(second)
      end)()
      d:cancel()
      assert.equal("pending", d:state())
      assert.equal(0, canceller.n)
      d:cancel()
      assert.equal(1, canceller.n)
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("cancelled", f.kind)
    end)

    it("ends with the coroutine's result when it recovers from the cancel", function()
      local w = modal.deferred()
      local d = modal.async(function()
        local ok = pcall(modal.await, w)
        return ok and "not cancelled" or "recovered"
      end)()
      d:cancel()
      assert.same({ "succeeded", "recovered" }, { outcome(d) })
    end)

    it("does nothing while the coroutine runs (as for a chain that runs)", function()
      local went_on = false
      local gate = modal.deferred()
      local call
      call = modal.async(function()
        modal.await(gate)
        call:cancel()
        went_on = true
        return "finished"
      end)()
      gate:callback()
      assert.is_true(went_on)
      assert.same({ "succeeded", "finished" }, { outcome(call) })
    end)
  end)

  describe("add_timeout on an async call", function()
    it("makes await raise kind 'timeout' and the call fail with it", function()
      local canceller = support.counter()
      local inner = modal.deferred(canceller.fn)
      local seen
      local d = modal.async(function()
        local ok, f = pcall(modal.await, inner)
        seen = (not ok) and f.kind or "none"
        error(f)
      end)()
      local kind
      local clock = support.clock()
      d:add_timeout(0.02):add_errback(function(f) kind = f.kind end)
      clock:advance(0.02)
      assert.equal(1, canceller.n)
      assert.equal("timeout", seen)
      assert.equal("timeout", kind)
    end)

    it("lets a coroutine that catches the timeout end with its own result", function()
      local d = modal.async(function()
        local _, f = pcall(modal.await, modal.deferred())
        return "caught " .. f.kind
      end)()
      local clock = support.clock()
      d:add_timeout(0.01)
      clock:advance(0.01)
      assert.same({ "succeeded", "caught timeout" }, { outcome(d) })
    end)

    it("fails with kind 'timeout' when the coroutine does not catch it", function()
      local clock = support.clock()
      local d = modal.async(function() return modal.await(modal.sleep(10)) end)()
      d:add_timeout(0.01)
      clock:advance(0.01)
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("timeout", f.kind)
      assert.same({}, clock:pending())                -- the sleep was cancelled inward
    end)
  end)

  describe("arguments and results", function()
    it("passes any number of arguments: 300 arrive", function()
      local args = {}
      for i = 1, 300 do args[i] = i end
      local d = modal.async(function(...) return select("#", ...), select(300, ...) end)(table.unpack(args))
      assert.same({ "succeeded", 300 }, { outcome(d) })
    end)

    it("passes 300 arguments to a call that waits before it returns", function()
      local args = {}
      for i = 1, 300 do args[i] = i end
      local gate = modal.deferred()
      local d = modal.async(function(...)
        local n = select("#", ...)
        modal.await(gate)
        return n
      end)(table.unpack(args))
      gate:callback()
      assert.same({ "succeeded", 300 }, { outcome(d) })
    end)

    it("takes the function's first return value as the result", function()
      local d = modal.async(function() return "first", "second", "third" end)()
      assert.same({ "succeeded", "first" }, { outcome(d) })
      local gate = modal.deferred()
      local later = modal.async(function() modal.await(gate); return 1, 2, 3 end)()
      gate:callback()
      assert.same({ "succeeded", 1 }, { outcome(later) })
    end)

    it("fails when the function returns a failure, as a link that returns one", function()
      local f = modal.failure("custom", "returned")
      local state, got = outcome(modal.async(function() return f end)())
      assert.equal("failed", state)
      assert.is_true(rawequal(f, got))
    end)
  end)

  describe("waiting", function()
    it("lets the awaited Deferred keep its outcome, so every coroutine awaiting it gets it", function()
      local w = modal.deferred()
      local run = modal.async(function(tag) return tag .. ":" .. modal.await(w) end)
      local one, two = run("one"), run("two")
      w:callback("v")
      assert.same({ "succeeded", "one:v" }, { outcome(one) })
      assert.same({ "succeeded", "two:v" }, { outcome(two) })
      local three = run("three")                 -- already fired: at once
      assert.same({ "succeeded", "three:v" }, { outcome(three) })
      assert.same({ "succeeded", "v" }, { outcome(w) })
    end)

    it("counts an awaited failure as handled: the coroutine got it", function()
      local reports = {}
      local previous = modal.on_unhandled(function(f) reports[#reports + 1] = f end)
      do
        local w = modal.deferred()
        modal.async(function() pcall(modal.await, w) end)()
        w:errback(modal.failure("custom", "went to the coroutine"))
      end
      collectgarbage(); collectgarbage()
      support.run_loop(0.05)
      modal.on_unhandled(previous)
      assert.equal(0, #reports)
    end)

    it("raises, inside the coroutine, an await of the call's own Deferred", function()
      local gate, d, caught = modal.deferred(), nil, nil
      d = modal.async(function()
        modal.await(gate)
        caught = select(2, pcall(modal.await, d))
        return "went on"
      end)()
      gate:callback()
      assert.equal("error", caught.kind)
      assert.matches("its own Deferred", caught.message, 1, true)
      assert.same({ "succeeded", "went on" }, { outcome(d) })
    end)

    it("raises a clear error where the coroutine cannot yield, and does not wait", function()
      local w = modal.deferred()
      local err
      local d = modal.async(function()
        local ok, e = pcall(table.sort, { 3, 1, 2 }, function(a, b) modal.await(w); return a < b end)
        err = e
        return ok
      end)()
      assert.matches("cannot wait here", tostring(err), 1, true)
      assert.same({ "succeeded", false }, { outcome(d) })
      w:callback("kept")
      assert.same({ "succeeded", "kept" }, { outcome(w) })
    end)

    it("raises, inside the coroutine, a resume by anything but modal", function()
      local co, err
      local w = modal.deferred()
      local d = modal.async(function()
        co = coroutine.running()
        err = select(2, pcall(modal.await, w))
        return modal.await(modal.deferred())
      end)()
      assert.is_true(coroutine.resume(co, "meddling"))
      assert.matches("resumed by something other than modal", tostring(err), 1, true)
      assert.equal("pending", d:state())
    end)

    it("fails the call, once, when its coroutine was closed while it waited", function()
      local co
      local w = modal.deferred()
      local d = modal.async(function() co = coroutine.running(); return modal.await(w) end)()
      assert.is_true(coroutine.close(co))
      w:callback(1)
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("error", f.kind)
      assert.matches("no longer waiting", f.message, 1, true)
    end)

    it("abandons the coroutine when its Deferred is fired from outside", function()
      local w = modal.deferred()
      local resumed = false
      local d = modal.async(function() modal.await(w); resumed = true end)()
      d:callback("from outside")
      w:callback("not for the coroutine any more")
      assert.is_false(resumed)
      assert.same({ "succeeded", "from outside" }, { outcome(d) })
      assert.same({ "succeeded", "not for the coroutine any more" }, { outcome(w) })
    end)
  end)
end)
