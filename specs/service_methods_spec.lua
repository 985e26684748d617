-- specs/service_methods_spec.lua — what a service's method bodies receive and return
-- (doc/policies.md, "Service"): every argument reaches a body with a fixed parameter list or
-- with `...`, whatever it returns (a Deferred, a plain value, nil, a failure, an error) reaches
-- the caller, and close() still waits for the calls in flight when the bodies returned a mix.
-- Over a real echo server on 127.0.0.1.
local modal = require "modal"
local ss = require "service_support"

local watch, wait = ss.watch, ss.wait

describe("modal.service method bodies", function()
  after_each(ss.cleanup)

  it("get every argument, with fixed parameters or `...`, and the caller gets what they return",
    function()
      local s = ss.server { mode = "echo" }
      local seen = {}
      local Svc = ss.echo { methods = {
        none = function(_, conn) seen.none = conn ~= nil; return "none" end,
        one = function(_, _, a) return a end,
        two = function(_, _, a, b) return a .. "+" .. tostring(b) end,
        three = function(_, _, a, b, c) return a .. b .. c end,
        rest = function(_, _, ...) return select("#", ...) end,
        opt = function(_, _, a, b) return b == nil and a .. ": b is nil" or b end,
        nothing = function() end,
        failing = function() return modal.fail("busy", "try later") end,
        raising = function() error("body exploded") end,
        echo = function(_, conn, text, suffix) return conn:request(text .. (suffix or "")) end,
      } }
      local c = ss.new(Svc, { port = s.port })
      local got = {
        none = watch(c:none("ignored", "extra")),
        one = watch(c:one("a", "extra")),
        two = watch(c:two("a", 2, "extra")),
        three = watch(c:three("a", "b", "c", "extra")),
        rest = watch(c:rest(1, nil, 3, nil)),
        opt = watch(c:opt("a")),
        nothing = watch(c:nothing()),
        failing = watch(c:failing()),
        raising = watch(c:raising()),
        echo = watch(c:echo("hello", "!")),
      }
      assert.is_true(wait(function()
        for _, g in pairs(got) do if not g.fired then return false end end
        return true
      end, 5))
      assert.is_true(seen.none)
      assert.same({ true, "none" }, { got.none.ok, got.none.value })
      assert.same({ true, "a" }, { got.one.ok, got.one.value })
      assert.same({ true, "a+2" }, { got.two.ok, got.two.value })
      assert.same({ true, "abc" }, { got.three.ok, got.three.value })
      assert.same({ true, 4 }, { got.rest.ok, got.rest.value })
      assert.same({ true, "a: b is nil" }, { got.opt.ok, got.opt.value })
      assert.same({ true }, { got.nothing.ok, got.nothing.value })
      assert.is_false(got.failing.ok)
      assert.equal("busy", got.failing.value.kind)
      assert.is_false(got.raising.ok)
      assert.matches("body exploded", got.raising.value.message, 1, true)
      assert.same({ true, "hello!" }, { got.echo.ok, got.echo.value })
    end)

  it("close() waits for the calls in flight among plain answers, and answers each once", function()
    local s = ss.server { mode = "echo" }
    local Svc = ss.echo { methods = {
      plain = function(_, _, i) return i end,
      echo = function(_, conn, text) return conn:request(text) end,
    } }
    local c = ss.new(Svc, { port = s.port })
    local ready = watch(c:connect_now())    -- calls made while connecting would fail on close
    assert.is_true(wait(function() return ready.fired end, 5))
    local answers, count = {}, 0
    for i = 1, 300 do                      -- past the list's first prune (64), with holes
      local d = (i % 3 == 0) and c:plain(i) or c:echo("line " .. i)
      d:add_both(function(v)
        count = count + 1
        answers[i] = answers[i] == nil and v or "answered twice"
      end)
    end
    local closed = watch(c:close())
    assert.is_true(wait(function() return closed.fired end, 5))
    assert.is_true(closed.ok)
    assert.equal(300, count)
    for i = 1, 300 do
      assert.equal(i % 3 == 0 and i or ("line " .. i), answers[i], "call " .. i)
    end
  end)
end)
