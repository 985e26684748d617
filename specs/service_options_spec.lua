-- specs/service_options_spec.lua — modal.service's options (doc/policies.md, "Service"):
-- clear errors naming the option, every problem at once; the generated definition is a
-- machine like any other (modal.check, states, methods), and extend() shapes it.
local modal = require "modal"
local ss = require "service_support"

local function error_of(opts)
  local ok, err = pcall(modal.service, opts)
  assert.is_false(ok, "expected modal.service to raise")
  return tostring(err)
end

describe("modal.service options", function()
  after_each(ss.cleanup)

  describe("bad options (first)", function()
    it("refuses options that are not a table", function()
      assert.matches("modal.service: expected a table of options, got string", error_of("echo"), 1, true)
    end)

    it("needs name, connect and methods, and names each", function()
      local err = error_of({})
      assert.matches("name: expected a Lua identifier", err, 1, true)
      assert.matches("connect: expected function(m) -> Deferred(connection), got nil", err, 1, true)
      assert.matches("methods: expected a table { name = function(m, conn, ...) }, got nil", err, 1, true)
    end)

    it("suggests the option meant by a misspelt one", function()
      local err = error_of(ss.options { conect_timeout = 3 })
      assert.matches("conect_timeout: unknown option (did you mean 'connect_timeout'?)", err, 1, true)
    end)

    it("names bad durations, booleans and counts", function()
      local err = error_of(ss.options { connect_timeout = 0, close_timeout = -1, idle_timeout = "5",
        stable_after = 0 / 0, wait_for_ready = "yes", fail_after = 2.5, max_postponed = -3 })
      assert.matches("connect_timeout: expected a number of seconds > 0, got 0", err, 1, true)
      assert.matches("close_timeout: expected a number of seconds >= 0, got -1", err, 1, true)
      assert.matches('idle_timeout: expected a number of seconds > 0, got "5"', err, 1, true)
      assert.matches("stable_after: expected a number of seconds >= 0", err, 1, true)
      assert.matches('wait_for_ready: expected a boolean, got "yes"', err, 1, true)
      assert.matches("fail_after: expected a whole number of attempts >= 1, got 2.5", err, 1, true)
      assert.matches("max_postponed: expected a whole number >= 0, got -3", err, 1, true)
    end)

    it("refuses fail_after = 0 and infinities", function()
      assert.matches("fail_after: expected a whole number", error_of(ss.options { fail_after = 0 }), 1, true)
      assert.matches("connect_timeout: expected", error_of(ss.options { connect_timeout = math.huge }), 1,
        true)
    end)

    it("names bad method names and bodies", function()
      local err = error_of(ss.options { methods = { close = function() end, ["not ok"] = function() end,
        timeout = function() end, query = "postpone", data = function() end } })
      assert.matches("methods.close: 'close' is a method every service has", err, 1, true)
      assert.matches('methods: "not ok": a method name must be a Lua identifier', err, 1, true)
      assert.matches("methods.timeout: 'timeout' is a state key", err, 1, true)
      assert.matches('methods.query: expected function(m, conn, ...), got "postpone"', err, 1, true)
      assert.matches("methods.data: 'data' is an instance field", err, 1, true)
    end)

    it("names bad backoff options under backoff.", function()
      local err = error_of(ss.options { backoff = { initial = -1, jiter = 1 } })
      assert.matches("backoff.initial: expected a number of seconds >= 0, got -1", err, 1, true)
      assert.matches("backoff.jiter: unknown option (did you mean 'jitter'?)", err, 1, true)
      assert.matches("backoff: expected a table of options, got number",
        error_of(ss.options { backoff = 3 }), 1,
        true)
    end)

    it("names bad keepalive options", function()
      local err = error_of(ss.options { keepalive = { interval = 0, timout = 1 } })
      assert.matches("keepalive.ping: expected function(m, conn) -> Deferred, got nil", err, 1, true)
      assert.matches("keepalive.interval: expected a number of seconds > 0, got 0", err, 1, true)
      assert.matches("keepalive.timout: unknown option (did you mean 'timeout'?)", err, 1, true)
    end)

    it("names functions that are not functions", function()
      local err = error_of(ss.options { disconnect = 1, classify = "fatal", extend = {} })
      assert.matches("disconnect: expected a function, got 1", err, 1, true)
      assert.matches('classify: expected a function, got "fatal"', err, 1, true)
      assert.matches("extend: expected a function, got table", err, 1, true)
    end)

    it("blames the caller's line", function()
      local ok, err = pcall(function() modal.service {} end)
      assert.is_false(ok)
      assert.matches("service_options_spec.lua:%d+: modal.service: ", err)
    end)

    it("says when extend returns something else than the definition", function()
      local err = error_of(ss.options { extend = function() return 42 end })
      assert.matches("extend: expected it to return the definition table (or nothing), got number", err,
        1, true)
    end)

    it("lets modal.machine report a definition extend broke, with its path", function()
      local err = error_of(ss.options { extend = function(def) def.states.ready.on.lost = "nowhere" end })
      assert.matches("states.ready.on.lost: unknown state 'nowhere'", err, 1, true)
    end)
  end)

  describe("the machine it makes", function()
    it("is a machine with the service's states, the user's methods, close and connect_now", function()
      local M = ss.echo { name = "opt_shape", version = 4, classify = function() return "retry" end,
        methods = { b = function() end, a = function() end } }
      assert.equal("opt_shape", M.name)
      assert.equal(4, M.version)
      local states = M.states
      table.sort(states)
      assert.same({ "backoff", "closed", "closing", "connecting", "failed", "idle", "ready" }, states)
      local c = ss.new(M, {})
      assert.equal("idle", c.state)
      for _, name in ipairs { "a", "b", "close", "connect_now" } do
        assert.equal("function", type(c[name]), name)
      end
    end)

    it("has no failed state without classify (no failure can be fatal)", function()
      local states = ss.echo().states
      table.sort(states)
      assert.same({ "backoff", "closed", "closing", "connecting", "idle", "ready" }, states)
    end)

    it("validates under modal.check with no error and no warning", function()
      for _, classify in ipairs { false, function() return "fatal" end } do
        local def
        ss.echo { classify = classify, extend = function(d) def = d end }
        local ok, errors, warnings = modal.check(def)
        assert.is_true(ok, table.concat(errors or {}, "\n"))
        assert.same({}, warnings)
      end
    end)

    it("is reachable as require 'modal.service' too, and takes an empty methods table", function()
      local M = require("modal.service")(ss.options { methods = {} })
      local c = ss.new(M, {})
      assert.equal("idle", c.state)
    end)

    it("extend can add a state, an input and a hook", function()
      local entered = 0
      local M = ss.echo {
        extend = function(def)
          def.states.degraded = { echo = function() return "degraded" end, close = function() end,
            connect_now = function() end, on = { recover = "idle" } }
          def.states.ready.on.degrade = "degraded"
          def.inputs[#def.inputs + 1] = "degrade"
          def.inputs[#def.inputs + 1] = "recover"
          local enter = def.states.idle.enter
          def.states.idle.enter = function(m, ...)
            entered = entered + 1
            return enter(m, ...)
          end
        end,
      }
      local s = ss.server()
      local c = ss.new(M, { port = s.port })
      local got = ss.watch(c:echo("hi"))
      assert.is_true(ss.wait(function() return got.fired end))
      assert.equal("hi", got.value)
      c:fire("degrade")
      assert.equal("degraded", c.state)
      assert.equal("degraded", ss.watch(c:echo("x")).value)
      c:fire("recover")
      assert.equal("idle", c.state)
      assert.equal(2, entered)
    end)

    it("status(c) says where an instance stands", function()
      local M = ss.echo()
      local c = ss.new(M, { port = 1 })
      assert.same({ state = "idle", attempts = 0 }, modal.service.status(c))
    end)
  end)
end)
