-- specs/capi_spec.lua — the C API of src/modal.h, used by a C module (specs/fixtures/capi).
local modal = require "modal"
local capi = require "capi_test"

describe("the C API (modal.h)", function()
  local saved
  before_each(function() saved = modal.on_unhandled(function() end) end)
  after_each(function() modal.on_unhandled(saved) end)

  it("refuses a second fire from C with -1 and keeps the first result", function()
    local d = capi.new_deferred()
    assert.equal(0, capi.fire(d, "first"))
    assert.equal(-1, capi.fire(d, "second"))
    assert.equal(-1, capi.fail(d, "third"))
    local got
    d:add_callback(function(v) got = v end)
    assert.equal("first", got)
  end)

  it("returns -1 for a value that is not a Deferred", function()
    assert.equal(-1, capi.fire({}, 1))
    assert.equal(-1, capi.fire("nope", 1))
  end)

  it("keeps an error raised by a callback fired from C inside the Deferred", function()
    local d = capi.new_deferred()
    local seen
    d:add_callback(function() error("boom in a callback") end)
    d:add_errback(function(f) seen = f end)
    assert.equal(0, capi.fire(d, 1))
    assert.equal("error", seen.kind)
    assert.matches("boom in a callback", seen.message, 1, true)
  end)

  it("wraps a plain value given to modal_errback in a failure of kind 'error'", function()
    local d = capi.new_deferred()
    assert.equal(0, capi.fail(d, "went wrong"))
    local f
    d:add_errback(function(x) f = x end)
    assert.is_true(modal.is_failure(f))
    assert.equal("error", f.kind)
    assert.equal("went wrong", f.message)
  end)

  it("makes pending Deferreds that Lua code chains on", function()
    local d = capi.new_deferred()
    assert.is_true(capi.is_deferred(d))
    assert.is_false(capi.is_deferred({}))
    assert.equal("pending", d:state())
    local got
    d:add_callback(function(v) return v * 2 end):add_callback(function(v) got = v end)
    capi.fire(d, 21)
    assert.equal(42, got)
    assert.equal("succeeded", d:state())
  end)

  it("makes failures with kind and message", function()
    local f = capi.new_failure("unavailable", "no route")
    assert.is_true(capi.is_failure(f))
    assert.is_true(modal.is_failure(f))
    assert.equal("unavailable: no route", tostring(f))
    assert.is_true(f:is("unavailable"))
    local d = capi.new_deferred()
    capi.fail(d, f)
    local got
    d:add_errback(function(x) got = x end)
    assert.is_true(rawequal(f, got))
  end)

  it("reports its version", function()
    assert.equal(modal._VERSION, capi.version())
  end)
end)
