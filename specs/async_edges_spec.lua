-- specs/async_edges_spec.lua — modal.async and modal.await at their edges (man modal(1),
-- "Coroutines"): a bare coroutine.yield inside an async function, await of a plain value,
-- and a coroutine that fires its own call's Deferred: that outcome stands, a later await says
-- why it cannot wait, and a failure the coroutine raises afterwards is reported, never lost.
local modal = require "modal"
local support = require "support"

local outcome = support.outcome

describe("modal.async at its edges", function()
  after_each(support.run_undo)

  it("fails the call with kind 'error' naming modal.await when fn uses coroutine.yield", function()
    local resumed = false
    local d = modal.async(function()
      coroutine.yield("a value")
      resumed = true
    end)()
    local state, f = outcome(d)
    assert.equal("failed", state)
    assert.equal("error", f.kind)
    assert.equal("coroutine.yield inside modal.async: use modal.await", f.message)
    assert.is_false(resumed)                               -- the coroutine is abandoned
  end)

  it("returns a plain value given to modal.await at once, without waiting", function()
    local t = {}
    local d = modal.async(function()
      local a = modal.await(42)
      local b = modal.await(t)
      local c = modal.await(nil)
      return { a, b, c }
    end)()
    local state, r = outcome(d)                            -- fired before async returned
    assert.equal("succeeded", state)
    assert.equal(42, r[1])
    assert.equal(t, r[2])
    assert.is_nil(r[3])
  end)

  describe("a coroutine that fires its own call's Deferred", function()
    it("keeps that outcome; a later await raises why; a later failure is reported unhandled", function()
      local reported = {}
      local previous = modal.on_unhandled(function(f) reported[#reported + 1] = f end)
      support.defer(function() modal.on_unhandled(previous) end)
      local gate, awaited = modal.deferred(), nil
      local call
      call = modal.async(function()
        modal.await(gate)
        call:callback("answered by the coroutine itself")
        local ok, err = pcall(modal.await, modal.deferred())
        awaited = { ok = ok, err = err }
        error("a failure after the answer", 0)
      end)()
      assert.equal("pending", call:state())
      gate:callback()
      assert.same({ "succeeded", "answered by the coroutine itself" }, { outcome(call) })
      assert.is_false(awaited.ok)
      assert.equal("error", awaited.err.kind)
      assert.equal("modal.await: the Deferred of this modal.async call has already fired",
        awaited.err.message)
      support.run_loop(1)                                  -- a report may come on the next turn
      assert.equal(1, #reported)
      assert.equal("error", reported[1].kind)
      assert.equal("a failure after the answer", reported[1].message)
    end)

    it("reports nothing more when the coroutine then ends normally", function()
      local reported = 0
      local previous = modal.on_unhandled(function() reported = reported + 1 end)
      support.defer(function() modal.on_unhandled(previous) end)
      local gate = modal.deferred()
      local call
      call = modal.async(function()
        modal.await(gate)
        call:callback("first")
        return "second"
      end)()
      gate:callback()
      collectgarbage()
      collectgarbage()
      support.run_loop(1)
      assert.same({ "succeeded", "first" }, { outcome(call) })
      assert.equal(0, reported)
    end)
  end)
end)
