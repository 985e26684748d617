-- specs/deferred_edges_spec.lua — Deferreds at their edges (man modal(1), "Deferreds"): what
-- tostring says (of a timer handle too), the errors for methods called on the wrong thing or
-- given something that is not a function or not seconds, callable tables as links, a failure
-- given to callback, add_callbacks with one side only, a link that returns its own Deferred or
-- a userdata that is not one, and plain values in the lists of all, settled and race.
local modal = require "modal"
local support = require "support"

local outcome = support.outcome

describe("a Deferred at its edges", function()
  after_each(support.run_undo)

  describe("tostring(d)", function()
    it("names the state: pending, then succeeded", function()
      local d = modal.deferred()
      assert.matches("^modal%.deferred %(pending%): 0x%x+$", tostring(d))
      d:callback(1)
      assert.matches("^modal%.deferred %(succeeded%): 0x%x+$", tostring(d))
    end)

    it("says pending while paused on an inner Deferred, then failed, then succeeded, recovered", function()
      local inner = modal.deferred()
      local outer = modal.succeed(1):add_callback(function() return inner end)
      assert.matches("(pending)", tostring(outer), 1, true)
      inner:errback("refused")
      assert.matches("(failed)", tostring(outer), 1, true)
      outer:add_errback(function() return "recovered" end)
      assert.matches("(succeeded)", tostring(outer), 1, true)
    end)
  end)

  describe("a method called on something that is not a Deferred", function()
    it("raises naming the method and what it got", function()
      local d = modal.deferred()
      local ok, err = pcall(function() d.callback(42) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'callback' (modal.deferred expected, got number)", err, 1, true)
      ok, err = pcall(function() d.state({}) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'state' (modal.deferred expected, got table)", err, 1, true)
      assert.equal("pending", d:state())                 -- d itself was not touched
    end)
  end)

  describe("a link that is not a function", function()
    local cases = {
      { "add_callback", function(d) d:add_callback(5) end, "(function expected, got number)" },
      { "add_errback", function(d) d:add_errback("log") end, "(function expected, got string)" },
      { "add_both", function(d) d:add_both() end, "(function expected, got no value)" },
      { "add_callbacks", function(d) d:add_callbacks(print, true) end,
        "(function expected, got boolean)" },
    }
    for _, case in ipairs(cases) do
      it("is refused by " .. case[1] .. ", naming the argument, and adds nothing", function()
        local d = modal.deferred()
        local ok, err = pcall(case[2], d)
        assert.is_false(ok)
        assert.matches("to '" .. case[1] .. "' " .. case[3], err, 1, true)
        d:callback("through")
        assert.same({ "succeeded", "through" }, { outcome(d) })
      end)
    end

    it("is accepted when it is a table with __call, which gets the result and the extra arguments", function()
      local seen
      local double = setmetatable({}, { __call = function(self, v, a, b)
        seen = { self = self, a = a, b = b }
        return v * 2
      end })
      local d = modal.deferred():add_callback(double, "x", "y")
      d:callback(21)
      assert.same({ "succeeded", 42 }, { outcome(d) })
      assert.equal(double, seen.self)
      assert.equal("x", seen.a)
      assert.equal("y", seen.b)
    end)
  end)

  describe("add_timeout", function()
    it("refuses no seconds at all, and NaN, naming what it got; d stays as it was", function()
      local d = modal.deferred()
      local ok, err = pcall(d.add_timeout, d)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'add_timeout' (seconds expected, got no value)", err, 1, true)
      ok, err = pcall(d.add_timeout, d, 0 / 0)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'add_timeout' (seconds must be a number >= 0, got NaN)",
        err, 1, true)
      assert.equal("pending", d:state())
    end)
  end)

  it("tostring of a call_later handle says whether it is active", function()
    local h = modal.call_later(60, function() end)
    assert.matches("^modal%.timer %(active%): 0x%x+$", tostring(h))
    h:cancel()
    assert.matches("^modal%.timer %(inactive%): 0x%x+$", tostring(h))
  end)

  it("callback(failure) starts the errback path with that very failure", function()
    local f = modal.failure("auth", "bad password")
    local d, got = modal.deferred(), nil
    d:add_callback(function() error("a callback ran") end)
    d:callback(f)
    assert.equal("failed", d:state())
    d:add_errback(function(g) got = g end)
    assert.equal(f, got)
  end)

  it("add_callbacks(cb) lets a failure pass by, and add_callbacks(nil, eb) a value", function()
    local d, ran = modal.deferred(), 0
    d:add_callbacks(function() ran = ran + 1 end)
    d:errback("boom")
    local state, f = outcome(d)
    assert.equal(0, ran)
    assert.equal("failed", state)
    assert.equal("error", f.kind)
    assert.equal("boom", f.message)

    local e = modal.deferred():add_callbacks(nil, function() ran = ran + 1 end)
    e:callback("value")
    assert.same({ "succeeded", "value" }, { outcome(e) })
    assert.equal(0, ran)
  end)

  it("fails with kind 'error' when a callback returns the Deferred it is attached to", function()
    local d
    d = modal.deferred():add_callback(function() return d end)
    d:callback(1)
    local state, f = outcome(d)
    assert.equal("failed", state)
    assert.equal("error", f.kind)
    assert.equal("a callback returned the Deferred it is attached to", f.message)
  end)

  it("passes on a userdata that is not a Deferred as a plain value", function()
    local d = modal.succeed(1):add_callback(function() return io.stdout end)
    assert.same({ "succeeded", io.stdout }, { outcome(d) })
  end)

  describe("plain values in the list of", function()
    it("modal.all count as already succeeded, in their place", function()
      local later = modal.deferred()
      local d = modal.all({ "a", later, 3 })
      assert.equal("pending", d:state())
      later:callback("b")
      local state, r = outcome(d)
      assert.equal("succeeded", state)
      assert.same({ "a", "b", 3 }, r)
    end)

    it("modal.settled count as ok entries", function()
      local state, r = outcome(modal.settled({ false, modal.fail("no", "nope") }))
      assert.equal("succeeded", state)
      assert.same({ ok = true, value = false }, r[1])
      assert.is_false(r[2].ok)
      assert.equal("nope", r[2].failure.message)
    end)

    it("modal.race win at once, and the pending inputs are cancelled", function()
      local slow = modal.deferred()
      local state, r = outcome(modal.race({ slow, "now" }))
      assert.equal("succeeded", state)
      assert.equal("now", r)
      local slow_state, f = outcome(slow)
      assert.equal("failed", slow_state)
      assert.equal("cancelled", f.kind)
    end)
  end)
end)
