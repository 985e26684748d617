-- specs/async_spec.lua — modal.async and modal.await: coroutines over Deferreds.
local support = require "support"

local outcome = support.outcome

describe("modal.async", function()
  local modal
  before_each(function()
    modal = require "modal"
  end)

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

    it("waits on timers from the loop, one await after another", function()
      local steps = 0
      local d = modal.async(function()
        for _ = 1, 3 do
          modal.await(modal.sleep(0.01))
          steps = steps + 1
        end
        return steps
      end)()
      assert.equal(0, steps)
      assert.is_true(support.run_loop(5))
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
  end)
end)
