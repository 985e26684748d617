-- specs/machine_lifetime_spec.lua — machine instances (doc/machines.md, driving rules 10-11):
-- when(), on_transition(), garbage collection, and the fields of instances and machines.
local modal = require "modal"
local support = require "support"
local defer = support.defer
local run_undo = support.run_undo
local quiet_unhandled = support.quiet_unhandled

local outcome, counter, run_loop = support.outcome, support.counter, support.run_loop



local function collect()
  collectgarbage()
  collectgarbage()
end

-- A connection: idle -> connecting -> ready -> idle, and closed or failed (final) from any.
local function connection(name)
  return modal.machine {
    name = name, version = 3, initial = "idle", methods = { "query" },
    defaults = { query = function(m) return m.state end },
    states = {
      idle = { on = { connect = "connecting", close = "closed", again = "idle",
                      poke = { action = function() end } } },
      connecting = { on = { ok = "ready", fail = "failed", close = "closed" } },
      ready = { on = { lost = "idle", close = "closed" } },
      closed = { final = true },
      failed = { final = true },
    },
  }
end

describe("machine instances", function()
  after_each(run_undo)

  describe("c:when(state)", function()
    it("raises for an unknown state name", function()
      local c = connection("when_unknown"):new()
      assert.has_error(function() c:when("redy") end)
    end)

    it("fails with kind 'stopped' at once when the instance is in a different final state", function()
      local c = connection("when_other_final"):new()
      c:fire("close")
      local state, f = outcome(c:when("ready"))
      assert.equal("failed", state)
      assert.equal("stopped", f.kind)
      state, f = outcome(c:when("failed"))
      assert.equal("failed", state)
      assert.equal("stopped", f.kind)
    end)

    it("fails with kind 'stopped' when the instance reaches a different final state", function()
      local c = connection("when_reaches_final"):new()
      local d = c:when("ready")
      c:fire("connect")
      assert.equal("pending", d:state())
      c:fire("fail")
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("stopped", f.kind)
    end)

    it("that was cancelled is left alone when the state is reached", function()
      quiet_unhandled()
      local c = connection("when_cancelled"):new()
      local d = c:when("ready")
      d:cancel()
      c:fire("connect")
      c:fire("ok")
      assert.equal("ready", c.state)
      local state, f = outcome(d)
      assert.equal("failed", state)
      assert.equal("cancelled", f.kind)
    end)

    it("that was cancelled is released by the instance at once", function()
      quiet_unhandled()
      local c = connection("when_released"):new()
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        for i = 1, 10 do
          local d = c:when("ready")
          d:cancel()
          outcome(d)
          weak[i] = d
        end
      end)()
      collect()
      assert.is_nil(next(weak), "cancelled when() Deferreds are still referenced")
    end)

    it("succeeds with c at once when the instance is in that state", function()
      local c = connection("when_now"):new()
      local state, v = outcome(c:when("idle"))
      assert.equal("succeeded", state)
      assert.is_true(rawequal(c, v))
      c:fire("close")
      state, v = outcome(c:when("closed"))
      assert.equal("succeeded", state)
      assert.is_true(rawequal(c, v))
    end)

    it("succeeds with c when the instance next enters that state, for every waiter", function()
      local c = connection("when_later"):new()
      local d1, d2 = c:when("ready"), c:when("ready")
      c:fire("connect")
      assert.equal("pending", d1:state())
      c:fire("ok")
      for _, d in ipairs { d1, d2 } do
        local state, v = outcome(d)
        assert.equal("succeeded", state)
        assert.is_true(rawequal(c, v))
      end
    end)

    it("succeeds for a state the instance passes through on queued inputs", function()
      local M = modal.machine {
        name = "when_passing", initial = "a", methods = {},
        states = {
          a = { on = { go = "b" } },
          b = { enter = function(m) m:fire("go") end, on = { go = "c" } },
          c = {},
        },
      }
      local c = M:new()
      local d = c:when("b")
      c:fire("go")
      assert.equal("c", c.state)
      local state, v = outcome(d)
      assert.equal("succeeded", state)
      assert.is_true(rawequal(c, v))
    end)

    it("succeeds when the final state waited for is the one reached", function()
      local c = connection("when_final"):new()
      local d = c:when("closed")
      c:fire("close")
      local state, v = outcome(d)
      assert.equal("succeeded", state)
      assert.is_true(rawequal(c, v))
    end)
  end)

  describe("c:on_transition(fn)", function()
    it("stops calling fn once its handle is cancelled", function()
      local seen = counter()
      local c = connection("observer_cancelled"):new()
      local handle = c:on_transition(seen.fn)
      c:fire("connect")
      assert.equal(1, seen.n)
      handle:cancel()
      c:fire("ok")
      c:fire("lost")
      assert.equal(1, seen.n)
    end)

    it("calls fn(c, from, to, input) for each external transition", function()
      local seen = counter()
      local c = connection("observer_args"):new()
      c:on_transition(seen.fn)
      c:fire("connect")
      c:fire("ok")
      assert.equal(2, seen.n)
      assert.is_true(rawequal(c, seen.args[1][1]))
      assert.same({ "idle", "connecting", "connect" }, { seen.args[1][2], seen.args[1][3], seen.args[1][4] })
      assert.same({ "connecting", "ready", "ok" }, { seen.args[2][2], seen.args[2][3], seen.args[2][4] })
    end)

    it("includes self transitions and leaves out internal ones", function()
      local seen = counter()
      local c = connection("observer_self"):new()
      c:on_transition(seen.fn)
      c:fire("poke")
      assert.equal(0, seen.n)
      c:fire("again")
      assert.equal(1, seen.n)
      assert.same({ "idle", "idle", "again" }, { seen.args[1][2], seen.args[1][3], seen.args[1][4] })
    end)

    it("sees transitions made by a timeout, with input 'timeout'", function()
      local seen = counter()
      local M = modal.machine {
        name = "observer_timeout", initial = "a", methods = {},
        states = { a = { timeout = 0.01, on = { timeout = "b" } }, b = {} },
      }
      local c = M:new()
      c:on_transition(seen.fn)
      assert.is_true(run_loop(2))
      assert.equal(1, seen.n)
      assert.same({ "a", "b", "timeout" }, { seen.args[1][2], seen.args[1][3], seen.args[1][4] })
    end)

    it("does not stop the transition when it raises; the error is logged with the instance", function()
      local lines = {}
      local previous = modal.on_log(function(level, message, fields)
        lines[#lines + 1] = { level = level, message = message, fields = fields or {} }
      end)
      defer(function() modal.on_log(previous) end)
      local after = counter()
      local c = connection("observer_raises"):new()
      c:on_transition(function() error("observer failed") end)
      c:on_transition(after.fn)
      c:fire("connect")
      assert.equal("connecting", c.state)
      assert.equal(1, after.n)
      local hits = 0
      for _, line in ipairs(lines) do
        if line.level == "error" and tostring(line.message):find("observer failed", 1, true) then
          hits = hits + 1
          assert.equal("observer_raises", line.fields.machine)
          assert.equal(c.id, line.fields.id)
        end
      end
      assert.equal(1, hits)
    end)

    it("leaves nothing behind once its handle is cancelled", function()
      local c = connection("observer_released"):new()
      local weak = setmetatable({}, { __mode = "v" })
      collect()
      local before = collectgarbage("count")
      ;(function()
        for i = 1, 20000 do
          local fn = function() end
          c:on_transition(fn):cancel()
          if i <= 10 then weak[i] = fn end
        end
      end)()
      collect()
      assert.is_nil(next(weak), "cancelled observers are still referenced")
      local grown = collectgarbage("count") - before
      assert.is_true(grown < 100, ("20,000 cancelled observers left %.0f KB behind"):format(grown))
    end)

    it("lets an observer cancel itself while it is called; the others are still called", function()
      local first, second = 0, 0
      local c = connection("observer_cancels_itself"):new()
      local handle
      handle = c:on_transition(function() first = first + 1; handle:cancel() end)
      c:on_transition(function() second = second + 1 end)
      c:fire("connect")
      c:fire("ok")
      assert.equal(1, first)
      assert.equal(2, second)
      assert.has_no_error(function() handle:cancel() end)
    end)

    it("sees transitions made by a hook error, with input 'error'", function()
      local previous = modal.on_log(function() end)
      defer(function() modal.on_log(previous) end)
      local seen = counter()
      local M = modal.machine {
        name = "observer_error", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { on = { go = "b" } },
          b = { enter = function() error("no") end, on = { error = "c" } },
          c = {},
        },
      }
      local c = M:new()
      c:on_transition(seen.fn)
      c:fire("go")
      assert.equal(2, seen.n)
      assert.same({ "b", "c", "error" }, { seen.args[2][2], seen.args[2][3], seen.args[2][4] })
    end)

    it("calls every observer", function()
      local one, two = counter(), counter()
      local c = connection("observers_all"):new()
      c:on_transition(one.fn)
      c:on_transition(two.fn)
      c:fire("connect")
      assert.equal(1, one.n)
      assert.equal(1, two.n)
    end)

    it("queues inputs fired by an observer until it returns", function()
      local trace = {}
      local c = connection("observer_fires"):new()
      c:on_transition(function(inst, from, to)
        trace[#trace + 1] = "begin " .. from .. "->" .. to
        if to == "connecting" then inst:fire("ok") end
        trace[#trace + 1] = "end " .. from .. "->" .. to
      end)
      c:fire("connect")
      assert.equal("ready", c.state)
      assert.same({ "begin idle->connecting", "end idle->connecting",
                    "begin connecting->ready", "end connecting->ready" }, trace)
    end)
  end)

  describe("garbage collection", function()
    it("keeps an instance with an armed timeout until the timeout has fired", function()
      local reached = {}
      local M = modal.machine {
        name = "gc_timeout", initial = "waiting", methods = {},
        states = {
          waiting = { timeout = 0.03, on = { timeout = "done" } },
          done = { final = true, enter = function(m) reached[m.id] = true end },
        },
      }
      local weak = setmetatable({}, { __mode = "v" })
      local id
      ;(function()
        local c = M:new()
        id = c.id
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] ~= nil, "collected while its timeout was armed")
      assert.is_true(run_loop(2))
      assert.is_true(reached[id])
      collect()
      assert.is_true(weak[1] == nil, "kept after its timeout fired")
    end)

    it("keeps an instance with a running job until the job has ended", function()
      local clock = support.clock()
      local reached = {}
      local M = modal.machine {
        name = "gc_job", initial = "working", methods = {},
        states = {
          working = { run = function() return modal.sleep(0.03) end, on = { done = "done", error = "done" } },
          done = { final = true, enter = function(m) reached[m.id] = true end },
        },
      }
      local weak = setmetatable({}, { __mode = "v" })
      local id
      ;(function()
        local c = M:new()
        id = c.id
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] ~= nil, "collected while its job was running")
      clock:advance(0.03)
      assert.is_true(reached[id])
      collect()
      assert.is_true(weak[1] == nil, "kept after its job ended")
    end)

    it("collects an idle unreferenced instance", function()
      local M = connection("gc_idle")
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        local c = M:new()
        c:query()
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] == nil, "an idle instance was kept")
    end)

    it("collects an idle instance referenced only by its own observer", function()
      local M = connection("gc_observer")
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        local c = M:new()
        c:on_transition(function() return c end)
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] == nil, "an instance held only by its observer was kept")
    end)

    it("keeps an instance with postponed calls alive until they are answered, held or not", function()
      -- Nothing could answer those calls once the instance is gone: it stays until they are
      -- answered or cancelled (at host exit they fail 'stopped'; doc/machines.md, rule 11).
      local M = modal.machine {
        name = "gc_postponed", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", on = { go = "ready" } },
          ready = { query = function() return "answered" end },
        },
      }
      local weak = setmetatable({}, { __mode = "v" })
      local calls = {}
      ;(function()
        local c = M:new()
        calls[1], calls[2] = c:query(), c:query()
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] ~= nil, "an instance with postponed calls was collected")
      weak[1]:fire("go")
      assert.equal("succeeded", calls[1]:state())
      assert.equal("succeeded", calls[2]:state())
      collect()
      assert.is_true(weak[1] == nil, "an idle instance whose calls were answered was kept")
    end)

    it("lets an instance go once its postponed calls were cancelled", function()
      local M = modal.machine {
        name = "gc_postponed_cancel", initial = "waiting", methods = { "query" },
        states = { waiting = { query = "postpone", on = { go = "ready" } },
                   ready = { query = function() end } },
      }
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        local c = M:new()
        local d1, d2 = c:query(), c:query()
        d1:add_errback(function() end); d2:add_errback(function() end)
        d1:cancel(); d2:cancel()
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] == nil, "an instance whose calls were cancelled was kept")
    end)

    it("collects an instance whose timeout and job were left behind", function()
      quiet_unhandled()
      local M = modal.machine {
        name = "gc_left", initial = "working", methods = {},
        states = {
          working = { timeout = 10, run = function() return modal.deferred() end,
                      on = { timeout = "idle", done = "idle", error = "idle", stop = "idle" } },
          idle = {},
        },
      }
      local weak = setmetatable({}, { __mode = "v" })
      ;(function()
        local c = M:new()
        c:fire("stop")
        weak[1] = c
      end)()
      collect()
      assert.is_true(weak[1] == nil, "an instance that left its timeout and job was kept")
      assert.is_true(run_loop(1))                    -- and no timer is left behind
    end)
  end)

  describe("fields", function()
    it("c.state is the name of the current state", function()
      local c = connection("field_state"):new()
      assert.equal("idle", c.state)
      c:fire("connect")
      assert.equal("connecting", c.state)
    end)

    it("c.data is the table given to new(), the same one hooks see as m.data", function()
      local seen
      local M = modal.machine {
        name = "field_data", initial = "a", methods = {},
        states = { a = { enter = function(m) seen = m.data end } },
      }
      local data = { host = "127.0.0.1" }
      local c = M:new(data)
      assert.is_true(rawequal(data, c.data))
      assert.is_true(rawequal(data, seen))
    end)

    it("c.data is a new empty table for each instance made without one", function()
      local M = connection("field_data_empty")
      local c1, c2 = M:new(), M:new()
      assert.same({}, c1.data)
      assert.is_table(c2.data)
      assert.is_false(rawequal(c1.data, c2.data))
      c1.data.x = 1
      assert.equal(1, c1.data.x)
      assert.is_nil(c2.data.x)
    end)

    it("c.machine is the machine, and m in hooks and handlers is c itself", function()
      local inside = {}
      local M = modal.machine {
        name = "field_machine", initial = "a", methods = { "query" },
        states = { a = { enter = function(m) inside[#inside + 1] = m end,
                         query = function(m) inside[#inside + 1] = m end } },
      }
      local c = M:new()
      c:query()
      assert.is_true(rawequal(M, c.machine))
      assert.equal(2, #inside)
      assert.is_true(rawequal(c, inside[1]))
      assert.is_true(rawequal(c, inside[2]))
    end)

    it("c.id is an integer, distinct for each instance", function()
      local M = connection("field_id")
      local seen = {}
      for _ = 1, 5 do
        local id = M:new().id
        assert.equal("integer", math.type(id))
        assert.is_nil(seen[id])
        seen[id] = true
      end
    end)

    it("c:postponed() counts the queued calls", function()
      local M = modal.machine {
        name = "field_postponed", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = "postpone", on = { go = "ready" } },
          ready = { query = function() return 1 end },
        },
      }
      local c = M:new()
      assert.equal(0, c:postponed())
      c:query()
      c:query()
      assert.equal(2, c:postponed())
      c:fire("go")
      assert.equal(0, c:postponed())
    end)

    it("M.name and M.version come from the definition", function()
      local M = connection("field_machine_name")
      assert.equal("field_machine_name", M.name)
      assert.equal(3, M.version)
    end)
  end)
end)
