-- specs/failure_spec.lua — failures: modal.failure, modal.is_failure, fields, f:is, tostring.
local support = require "support"

-- The failure a chain ends with (consumed, so nothing is left unhandled).
local function failure_of(d)
  local got
  d:add_errback(function(f) got = f end)
  assert.is_not_nil(got, "the Deferred has not failed")
  return got
end

describe("modal failures", function()
  local modal
  before_each(function()
    modal = require "modal"
  end)

  describe("modal.failure()", function()
    it("makes a failure with kind and message, no value and no traceback", function()
      local f = modal.failure("unavailable", "service is down")
      assert.is_true(modal.is_failure(f))
      assert.equal("unavailable", f.kind)
      assert.equal("service is down", f.message)
      assert.is_nil(f.value)
      assert.is_nil(f.traceback)
    end)

    it("keeps the optional value as it is", function()
      local value = { status = 503 }
      local f = modal.failure("unavailable", "service is down", value)
      assert.is_true(rawequal(value, f.value))
      assert.equal("service is down", f.message)
      local g = modal.failure("custom", "numeric", 17)
      assert.equal(17, g.value)
    end)

    it("makes a new object on every call", function()
      local a = modal.failure("custom", "m")
      local b = modal.failure("custom", "m")
      assert.is_false(rawequal(a, b))
    end)
  end)

  describe("modal.is_failure()", function()
    it("is true for failures made by modal.failure, errback, raised errors and cancel", function()
      local d = modal.deferred()
      d:cancel()
      assert.is_true(modal.is_failure(modal.failure("custom", "m")))
      assert.is_true(modal.is_failure(failure_of(modal.fail("string error"))))
      assert.is_true(modal.is_failure(failure_of(modal.succeed():add_callback(function() error("x") end))))
      assert.is_true(modal.is_failure(failure_of(d)))
    end)

    it("is false for anything else, look-alike tables included", function()
      assert.is_false(modal.is_failure(nil))
      assert.is_false(modal.is_failure("error: message"))
      assert.is_false(modal.is_failure(42))
      assert.is_false(modal.is_failure({ kind = "error", message = "m" }))
      assert.is_false(modal.is_failure(modal.deferred()))
      assert.is_false(modal.is_failure(print))
    end)
  end)

  describe("fields", function()
    it("message is tostring(value) for a non-string error value", function()
      local f = failure_of(modal.fail(404))
      assert.equal("error", f.kind)
      assert.equal("404", f.message)
      assert.equal(404, f.value)
    end)

    it("message uses the value's __tostring", function()
      local value = setmetatable({}, { __tostring = function() return "custom error object" end })
      local f = failure_of(modal.succeed():add_callback(function() error(value) end))
      assert.equal("custom error object", f.message)
      assert.is_true(rawequal(value, f.value))
    end)

    it("message says so when the value's __tostring raises or returns no string", function()
      for _, tostring_fn in ipairs { function() error("no") end, function() return {} end } do
        local value = setmetatable({}, { __tostring = tostring_fn })
        local f = failure_of(modal.succeed():add_callback(function() error(value) end))
        assert.equal("error", f.kind)
        assert.equal("(error object is a table value whose __tostring failed)", f.message)
        assert.is_true(rawequal(value, f.value))
        f = modal.failure("odd", nil, value)
        assert.equal("odd: (error object is a table value whose __tostring failed)", tostring(f))
      end
    end)

    it("value is the original error value of a raised error", function()
      local f = failure_of(modal.succeed():add_callback(function() error("plain", 0) end))
      assert.equal("plain", f.value)
      assert.equal("plain", f.message)
    end)

    it("traceback tells where a Lua error was raised", function()
      local function deep_raiser() error("from deep down") end
      local f = failure_of(modal.succeed():add_callback(function() deep_raiser() end))
      assert.is_string(f.traceback)
      assert.matches("failure_spec.lua", f.traceback, 1, true)
    end)

    it("traceback is nil for a cancel failure", function()
      local d = modal.deferred()
      d:cancel()
      local f = failure_of(d)
      assert.equal("cancelled", f.kind)
      assert.is_string(f.message)
      assert.is_nil(f.traceback)
    end)
  end)

  describe("f:is()", function()
    it("is true for the failure's own kind only", function()
      local f = modal.failure("overloaded", "queue full")
      assert.is_true(f:is("overloaded"))
      assert.is_false(f:is("error"))
      assert.is_false(f:is("Overloaded"))
    end)

    it("works on the kinds modal produces", function()
      local cancelled = modal.deferred()
      cancelled:cancel()
      assert.is_true(failure_of(cancelled):is("cancelled"))
      assert.is_true(failure_of(modal.fail("x")):is("error"))
      assert.is_true(failure_of(modal.fail("stopped", "closed")):is("stopped"))
    end)

    it("reports kind 'timeout' for an expired add_timeout", function()
      local d = modal.deferred()
      d:add_timeout(0.01)
      assert.is_true(support.run_loop(5))
      local f = failure_of(d)
      assert.is_true(f:is("timeout"))
      assert.is_false(f:is("cancelled"))
    end)
  end)

  describe("tostring()", function()
    it("is 'kind: message'", function()
      assert.equal("unavailable: service is down",
        tostring(modal.failure("unavailable", "service is down")))
      assert.equal("error: 404", tostring(failure_of(modal.fail(404))))
      assert.equal("error: plain",
        tostring(failure_of(modal.succeed():add_callback(function() error("plain", 0) end))))
    end)
  end)
end)
