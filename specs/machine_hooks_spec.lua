-- specs/machine_hooks_spec.lua — machine hooks (doc/machines.md, driving rules 5-9): enter and
-- exit, the order of a transition, state timeouts, run jobs, final states and contained hook errors.
local modal = require "modal"
local support = require "support"
local run_undo = support.run_undo
local quiet_unhandled = support.quiet_unhandled
local capture_log = support.capture_log

local outcome, counter, run_loop = support.outcome, support.counter, support.run_loop




-- The captured lines at `level` for machine `name`.
local function logged(lines, level, name)
  local found = {}
  for _, line in ipairs(lines) do
    if line.level == level and line.fields.machine == name then found[#found + 1] = line end
  end
  return found
end

-- Asserts that an error line was logged for instance c of machine `name` that mentions
-- `text` (in its message or one of its fields).
local function assert_error_logged(lines, name, c, text)
  local hits = 0
  for _, line in ipairs(logged(lines, "error", name)) do
    local said = tostring(line.message)
    for _, v in pairs(line.fields) do said = said .. " " .. tostring(v) end
    if line.fields.id == c.id and said:find(text, 1, true) then hits = hits + 1 end
  end
  assert.is_true(hits >= 1, "expected an error line mentioning '" .. text .. "'")
end

-- Asserts that f is a failure of kind "error" whose message mentions `text`.
local function assert_error_failure(text, f)
  assert.is_true(modal.is_failure(f))
  assert.equal("error", f.kind)
  assert.matches(text, f.message, 1, true)
  assert.is_string(f.traceback)
end

describe("machine hooks", function()
  after_each(run_undo)

  describe("an error in a hook", function()
    it("in enter is logged, queued as input 'error' and taken by the new state", function()
      local lines = capture_log()
      local recovered = counter()
      local M = modal.machine {
        name = "enter_raises", initial = "idle", methods = { "query" }, inputs = { "error" },
        states = {
          idle = { query = function() return "idle" end, on = { go = "broken" } },
          broken = {
            enter = function() error("enter failed") end,
            query = function() return "broken" end,
            on = { error = { to = "recovered", action = recovered.fn } },
          },
          recovered = { query = function() return "recovered" end, on = { go = "idle" } },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("recovered", c.state)
      assert.equal(1, recovered.n)
      assert_error_failure("enter failed", recovered.args[1][2])
      assert_error_logged(lines, "enter_raises", c, "enter failed")
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("recovered", v)
      c:fire("go")
      assert.equal("idle", c.state)
    end)

    it("in the initial state's enter does not stop new()", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "initial_enter_raises", initial = "idle", methods = { "query" },
        states = {
          idle = { enter = function() error("first enter failed") end,
                   query = function() return "idle" end, on = { go = "idle" } },
        },
      }
      local c = M:new()
      assert.equal("idle", c.state)
      assert_error_logged(lines, "initial_enter_raises", c, "first enter failed")
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("idle", v)
    end)

    it("in exit does not abort the transition; 'error' is processed in the new state", function()
      local lines = capture_log()
      local entered = counter()
      local M = modal.machine {
        name = "exit_raises", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { exit = function() error("exit failed") end, on = { go = "b", error = "wrong" } },
          b = { enter = entered.fn, on = { error = "handled" } },
          handled = {}, wrong = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal(1, entered.n)
      assert.equal("handled", c.state)
      assert_error_logged(lines, "exit_raises", c, "exit failed")
    end)

    it("is only logged when the state then current neither takes nor ignores 'error'", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "error_untaken", initial = "a", methods = { "query" },
        states = {
          a = { exit = function() error("exit failed quietly") end, query = function() return "a" end,
                on = { go = "b" } },
          b = { query = function() return "b" end, on = { go = "a" } },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("b", c.state)
      assert_error_logged(lines, "error_untaken", c, "exit failed quietly")
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("b", v)
      c:fire("go")
      assert.equal("a", c.state)
    end)

    it("is dropped as an input when the state then current ignores 'error'", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "error_ignored", initial = "a", methods = {},
        states = {
          a = { exit = function() error("exit failed, ignored") end, on = { go = "b" } },
          b = { ignore = { "error" }, on = { go = "a" } },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("b", c.state)
      for _, line in ipairs(logged(lines, "warn", "error_ignored")) do
        assert.is_not.equal("error", line.fields.input)
      end
    end)

    it("in an action does not abort the transition; 'error' goes to the new state", function()
      local lines = capture_log()
      local entered = counter()
      local got = counter()
      local M = modal.machine {
        name = "action_raises", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { on = { go = { to = "b", action = function() error("action failed") end } } },
          b = { enter = entered.fn, on = { error = { to = "handled", action = got.fn } } },
          handled = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal(1, entered.n)
      assert.equal("handled", c.state)
      assert_error_failure("action failed", got.args[1][2])
      assert_error_logged(lines, "action_raises", c, "action failed")
    end)

    it("in the action of an internal transition queues 'error' for the same state", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "internal_action_raises", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { on = { poke = { action = function() error("poke failed") end }, error = "handled" } },
          handled = {},
        },
      }
      local c = M:new()
      c:fire("poke")
      assert.equal("handled", c.state)
      assert_error_logged(lines, "internal_action_raises", c, "poke failed")
    end)

    it("in the initial state's enter is taken by that state once new() returns", function()
      capture_log()
      local M = modal.machine {
        name = "initial_error_taken", initial = "a", methods = {}, inputs = { "error" },
        states = { a = { enter = function() error("no start") end, on = { error = "broken" } }, broken = {} },
      }
      assert.equal("broken", M:new().state)
    end)

    it("queues 'error' behind the inputs queued before it", function()
      capture_log()
      local M = modal.machine {
        name = "error_behind", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { on = { go = { to = "b", action = function(m) m:fire("x"); error("late") end } } },
          b = { on = { x = "c", error = "wrong" } },
          c = { on = { error = "d" } },
          d = {}, wrong = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("d", c.state)
    end)

    it("in a guard counts as false and is logged; 'error' is queued", function()
      local lines = capture_log()
      local got = counter()
      local M = modal.machine {
        name = "guard_raises", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { on = { go = { to = "b", guard = function() error("guard failed") end },
                       error = { action = got.fn } } },
          b = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("a", c.state)
      assert.equal(1, got.n)
      assert_error_failure("guard failed", got.args[1][2])
      assert_error_logged(lines, "guard_raises", c, "guard failed")
    end)

    it("in a guard of a list lets the next entry win", function()
      capture_log()
      local M = modal.machine {
        name = "guard_list_raises", initial = "a", methods = {},
        states = {
          a = { on = { go = { { to = "b", guard = function() error("guard failed") end }, { to = "c" } } } },
          b = {}, c = { ignore = { "error" } },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("c", c.state)
    end)

    it("in a timeout function arms no timeout and queues 'error'", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "timeout_fn_raises", initial = "a", methods = {}, inputs = { "error" },
        states = {
          a = { on = { go = "b" } },
          b = { timeout = function() error("timeout failed") end,
                on = { timeout = "late", error = "handled" } },
          handled = {}, late = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("handled", c.state)
      assert_error_logged(lines, "timeout_fn_raises", c, "timeout failed")
      assert.is_true(run_loop(1))
      assert.equal("handled", c.state)
    end)

    it("in a timeout function still lets the state stay put when 'error' is ignored", function()
      capture_log()
      local M = modal.machine {
        name = "timeout_fn_ignored", initial = "b", methods = {},
        states = {
          b = { timeout = function() error("timeout failed") end, ignore = { "error" },
                on = { timeout = "late" } },
          late = {},
        },
      }
      local c = M:new()
      assert.is_true(run_loop(1))                    -- nothing armed: the loop ends by itself
      assert.equal("b", c.state)
    end)

    it("in run fires 'error' once with the failure", function()
      local lines = capture_log()
      local failed = counter()
      local M = modal.machine {
        name = "run_raises", initial = "a", methods = {},
        states = {
          a = { on = { go = "b" } },
          b = { run = function() error("run failed") end,
                on = { done = "ok", error = { to = "failed", action = failed.fn } } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("failed", c.state)
      assert.equal(1, failed.n)
      assert_error_failure("run failed", failed.args[1][2])
      assert_error_logged(lines, "run_raises", c, "run failed")
    end)

    it("never leaves the instance unusable", function()
      capture_log()
      local boom = function() error("boom") end
      local M = modal.machine {
        name = "all_raise", initial = "a", methods = { "query" }, ignore = { "error" },
        states = {
          a = { enter = boom, exit = boom, query = function(m) return m.state end,
                on = { go = { to = "b", guard = boom }, force = { to = "b", action = boom } } },
          b = { enter = boom, exit = boom, timeout = boom, query = function(m) return m.state end,
                on = { back = "a", timeout = "a" } },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("a", c.state)
      c:fire("force")
      assert.equal("b", c.state)
      c:fire("back")
      assert.equal("a", c.state)
      c:fire("force")
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("b", v)
      assert.is_true(run_loop(1))
      assert.equal("b", c.state)
    end)
  end)

  describe("enter and exit", function()
    it("enter(m, nil, nil) runs for the initial state when the instance is made", function()
      local enter = counter()
      local M = modal.machine {
        name = "initial_enter", initial = "a", methods = {},
        states = { a = { enter = enter.fn } },
      }
      local c = M:new()
      assert.equal(1, enter.n)
      assert.is_true(rawequal(c, enter.args[1][1]))
      assert.is_nil(enter.args[1][2])
      assert.is_nil(enter.args[1][3])
    end)

    it("get enter(m, from, input, ...) and exit(m, to, input, ...)", function()
      local enter, exit = counter(), counter()
      local M = modal.machine {
        name = "hook_args", initial = "a", methods = {},
        states = { a = { exit = exit.fn, on = { go = "b" } }, b = { enter = enter.fn } },
      }
      local c = M:new()
      c:fire("go", "x", 2)
      assert.same({ n = 5, c, "b", "go", "x", 2 }, exit.args[1])
      assert.same({ n = 5, c, "a", "go", "x", 2 }, enter.args[1])
    end)

    it("queue an input fired in exit for the new state", function()
      local M = modal.machine {
        name = "exit_fires", initial = "a", methods = {},
        states = {
          a = { exit = function(m) m:fire("next") end, on = { go = "b", next = "wrong" } },
          b = { on = { next = "c" } },
          c = {}, wrong = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("c", c.state)
    end)

    it("run in the order exit, action, state change, enter, timeout, run, observers, retry", function()
      quiet_unhandled()
      local trace = {}
      local function note(what) return function(m) trace[#trace + 1] = what .. ":" .. m.state end end
      local M = modal.machine {
        name = "ordering", initial = "a", methods = { "query" },
        states = {
          a = { exit = note("exit"), query = "postpone",
                on = { go = { to = "b", action = note("action") } } },
          b = {
            enter = note("enter"),
            timeout = function(m) note("timeout")(m); return nil end,
            run = function(m) note("run")(m); return modal.deferred() end,
            query = function(m) note("retry")(m); return "b" end,
            on = { timeout = "a", done = "a", error = "a", back = "a" },
          },
        },
      }
      local c = M:new()
      c:on_transition(function(_, from, to) trace[#trace + 1] = "observer:" .. from .. "->" .. to end)
      local d = c:query()
      c:fire("go")
      assert.same({ "exit:a", "action:a", "enter:b", "timeout:b", "run:b", "observer:a->b", "retry:b" },
                  trace)
      local state, v = outcome(d)
      assert.equal("succeeded", state)
      assert.equal("b", v)
      c:fire("back")                                  -- cancels the job
    end)
  end)

  -- Timer semantics run on the testing clock (doc/testing.md); "of 0 seconds" says how the
  -- real loop runs them, and keeps real time.
  describe("state timeouts", function()
    it("are cancelled on exit", function()
      local clock = support.clock()
      local fired = counter()
      local M = modal.machine {
        name = "timeout_cancelled", initial = "a", methods = {},
        states = {
          a = { timeout = 0.02, on = { timeout = { to = "late", action = fired.fn }, go = "b" } },
          b = {}, late = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.same({}, clock:pending())               -- nothing is left armed
      clock:advance(1)
      assert.equal(0, fired.n)
      assert.equal("b", c.state)
    end)

    it("re-armed 10,000 times leave no timer behind once the state is left", function()
      local M = modal.machine {
        name = "timeout_rearmed", initial = "a", methods = {},
        states = { a = { timeout = 10, on = { again = "a", timeout = "b", leave = "b" } }, b = {} },
      }
      local c = M:new()
      for _ = 1, 10000 do c:fire("again") end
      c:fire("leave")
      assert.is_true(run_loop(1))                    -- ends at once: nothing armed
      assert.equal("b", c.state)
    end)

    it("of 1,000 instances all fire", function()
      local fired = 0
      local M = modal.machine {
        name = "timeout_many", initial = "a", methods = {},
        states = {
          a = { timeout = 0.01, on = { timeout = "b" } },
          b = { enter = function() fired = fired + 1 end },
        },
      }
      local clock = support.clock()
      local all = {}
      for i = 1, 1000 do all[i] = M:new() end
      clock:advance(0.01)
      assert.equal(1000, fired)
      assert.equal("b", all[1000].state)
    end)

    it("from a function returning nil arm nothing", function()
      local armed = counter(function() return nil end)
      local M = modal.machine {
        name = "timeout_nil", initial = "a", methods = {},
        states = { a = { timeout = armed.fn, on = { timeout = "late" } }, late = {} },
      }
      local c = M:new()
      assert.equal(1, armed.n)
      assert.is_true(run_loop(1))
      assert.equal("a", c.state)
    end)

    it("of 0 seconds fire on the next loop iteration, not during entry", function()
      local M = modal.machine {
        name = "timeout_zero", initial = "a", methods = {},
        states = { a = { timeout = 0, on = { timeout = "late" } }, late = {} },
      }
      local c = M:new()
      assert.equal("a", c.state)
      assert.is_true(run_loop(1))
      assert.equal("late", c.state)
    end)

    it("given in seconds fire the input 'timeout' after that long", function()
      local clock = support.clock(5)
      local at
      local M = modal.machine {
        name = "timeout_seconds", initial = "a", methods = {},
        states = {
          a = { timeout = 0.03,
                on = { timeout = { to = "late", action = function() at = modal.now() end } } },
          late = {},
        },
      }
      local c = M:new()
      clock:advance(0.029)
      assert.equal("a", c.state)
      clock:advance(0.001)
      assert.equal("late", c.state)
      assert.equal(5.03, at)
    end)

    it("from function(m) use the seconds it returns", function()
      local armed = counter(function(m) return m.data.wait end)
      local M = modal.machine {
        name = "timeout_fn", initial = "a", methods = {},
        states = { a = { timeout = armed.fn, on = { timeout = "late" } }, late = {} },
      }
      local clock = support.clock()
      local c = M:new { wait = 7 }
      assert.equal(1, armed.n)
      assert.is_true(rawequal(c, armed.args[1][1]))
      assert.same({ 7 }, clock:pending())
      clock:advance(7)
      assert.equal("late", c.state)
    end)
  end)

  describe("run jobs", function()
    it("left first are cancelled and their outcome ignored", function()
      quiet_unhandled()
      local job
      local done = counter()
      local M = modal.machine {
        name = "job_left", initial = "a", methods = {}, inputs = { "done", "error" },
        states = {
          a = { run = function() job = modal.deferred(); return job end,
                on = { done = "ok", error = "failed", leave = "b" } },
          b = { on = { done = { to = "ok", action = done.fn },
                       error = { to = "failed", action = done.fn } } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      c:fire("leave")
      assert.equal("b", c.state)
      local state, f = outcome(job)
      assert.equal("failed", state)
      assert.equal("cancelled", f.kind)
      assert.equal(0, done.n)
      assert.equal("b", c.state)
    end)

    it("left first ignore an outcome their canceller gives", function()
      quiet_unhandled()
      local job
      local done = counter()
      local M = modal.machine {
        name = "job_canceller", initial = "a", methods = {}, inputs = { "done", "error" },
        states = {
          a = { run = function() job = modal.deferred(function(d) d:callback("too late") end); return job end,
                on = { done = "ok", error = "failed", leave = "b" } },
          b = { on = { done = { to = "ok", action = done.fn },
                       error = { to = "failed", action = done.fn } } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      c:fire("leave")
      assert.equal("succeeded", job:state())
      assert.equal(0, done.n)
      assert.equal("b", c.state)
    end)

    it("of an entry left by a self transition are ignored; the new entry's job counts", function()
      quiet_unhandled()
      local jobs = {}
      local done = counter()
      local M = modal.machine {
        name = "job_reentry", initial = "a", methods = {},
        states = {
          a = { run = function() jobs[#jobs + 1] = modal.deferred(function() end); return jobs[#jobs] end,
                on = { again = "a", done = { to = "ok", action = done.fn }, error = "failed" } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      c:fire("again")
      assert.equal(2, #jobs)
      assert.equal("a", c.state)
      jobs[1]:callback("old")                         -- a late result after the cancel: ignored
      assert.equal("a", c.state)
      jobs[2]:callback("new")
      assert.equal("ok", c.state)
      assert.equal(1, done.n)
      assert.equal("new", done.args[1][2])
    end)

    it("that fail fire the input 'error' with the failure", function()
      local job
      local failed = counter()
      local M = modal.machine {
        name = "job_fails", initial = "a", methods = {},
        states = {
          a = { run = function() job = modal.deferred(); return job end,
                on = { done = "ok", error = { to = "failed", action = failed.fn } } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      local refused = modal.failure("refused", "connection refused")
      job:errback(refused)
      assert.equal("failed", c.state)
      assert.equal(1, failed.n)
      assert.is_true(rawequal(refused, failed.args[1][2]))
    end)

    it("that succeed fire the input 'done' with the result", function()
      local job
      local done = counter()
      local M = modal.machine {
        name = "job_succeeds", initial = "a", methods = {},
        states = {
          a = { run = function(m) job = modal.deferred(); m.data.started = true; return job end,
                on = { done = { to = "ok", action = done.fn }, error = "failed" } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      assert.is_true(c.data.started)
      assert.equal("a", c.state)
      job:callback("conn")
      assert.equal("ok", c.state)
      assert.equal(1, done.n)
      assert.is_true(rawequal(c, done.args[1][1]))
      assert.equal("conn", done.args[1][2])
    end)

    it("that succeed later, on the loop, fire 'done'", function()
      local M = modal.machine {
        name = "job_sleeps", initial = "a", methods = {},
        states = {
          a = { run = function() return modal.sleep(0.01):add_callback(function() return "slept" end) end,
                on = { done = { to = "ok", action = function(m, v) m.data.got = v end }, error = "failed" } },
          ok = {}, failed = {},
        },
      }
      local clock = support.clock()
      local c = M:new()
      assert.equal("a", c.state)
      clock:advance(0.01)
      assert.equal("ok", c.state)
      assert.equal("slept", c.data.got)
    end)

    it("returning an already fired Deferred fire 'done' or 'error' with its outcome", function()
      local done, failed = counter(), counter()
      local M = modal.machine {
        name = "job_fired", initial = "idle", methods = {},
        states = {
          idle = { on = { good = "good", bad = "bad" } },
          good = { run = function() return modal.succeed("now") end,
                   on = { done = { to = "ok", action = done.fn }, error = "failed" } },
          bad = { run = function() return modal.fail("refused", "no") end,
                  on = { done = "ok", error = { to = "failed", action = failed.fn } } },
          ok = {}, failed = {},
        },
      }
      local c1, c2 = M:new(), M:new()
      c1:fire("good")
      c2:fire("bad")
      assert.equal("ok", c1.state)
      assert.equal("now", done.args[1][2])
      assert.equal("failed", c2.state)
      assert.equal("refused", failed.args[1][2].kind)
    end)

    it("that succeed while a handler runs fire 'done' after the handler returns", function()
      local job
      local M = modal.machine {
        name = "job_in_handler", initial = "a", methods = { "query" },
        states = {
          a = { run = function() job = modal.deferred(); return job end,
                query = function(m) job:callback("v"); return m.state end,
                on = { done = "b", error = "b" } },
          b = { query = function() return "b" end },
        },
      }
      local c = M:new()
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("a", v)
      assert.equal("b", c.state)
    end)

    it("cancelled from outside while current fire 'error' with kind 'cancelled'", function()
      quiet_unhandled()
      local job
      local failed = counter()
      local M = modal.machine {
        name = "job_cancelled_outside", initial = "a", methods = {},
        states = {
          a = { run = function() job = modal.deferred(); return job end,
                on = { done = "ok", error = { to = "failed", action = failed.fn } } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      job:cancel()
      assert.equal("failed", c.state)
      assert.equal("cancelled", failed.args[1][2].kind)
    end)

    it("bounded by add_timeout fire 'error' with kind 'timeout'", function()
      quiet_unhandled()
      local failed = counter()
      local M = modal.machine {
        name = "job_timed_out", initial = "a", methods = {},
        states = {
          a = { run = function() return modal.deferred():add_timeout(0.01) end,
                on = { done = "ok", error = { to = "failed", action = failed.fn } } },
          ok = {}, failed = {},
        },
      }
      local clock = support.clock()
      local c = M:new()
      clock:advance(0.01)
      assert.equal("failed", c.state)
      assert.equal("timeout", failed.args[1][2].kind)
    end)

    it("returning a plain value are done at once with it", function()
      local done = counter()
      local M = modal.machine {
        name = "job_plain", initial = "idle", methods = {},
        states = {
          idle = { on = { go = "a" } },
          a = { run = function() return 42 end,
                on = { done = { to = "ok", action = done.fn }, error = "failed" } },
          ok = {}, failed = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("ok", c.state)
      assert.equal(1, done.n)
      assert.equal(42, done.args[1][2])
    end)
  end)

  describe("final states", function()
    it("with `on` make modal.machine() raise with the state's path", function()
      local ok, err = pcall(modal.machine, {
        name = "final_on", initial = "a", methods = {},
        states = { a = { on = { go = "closed" } }, closed = { final = true, on = { go = "a" } } },
      })
      assert.is_false(ok)
      assert.matches("states.closed", tostring(err), 1, true)
    end)

    it("with a \"postpone\" handler make modal.machine() raise", function()
      local ok, err = pcall(modal.machine, {
        name = "final_postpones", initial = "a", methods = { "query" },
        states = { a = { query = function() return 1 end, on = { go = "closed" } },
                   closed = { final = true, query = "postpone" } },
      })
      assert.is_false(ok)
      assert.matches("states.closed", tostring(err), 1, true)
    end)

    it("raise on any input not ignored, and still answer their methods", function()
      local entered = counter()
      local M = modal.machine {
        name = "final_answers", initial = "a", methods = { "query" },
        states = {
          a = { query = function() return "a" end, on = { close = "closed" } },
          closed = { final = true, enter = entered.fn,
                     query = function() return modal.fail("stopped", "closed") end },
        },
      }
      local c = M:new()
      c:fire("close")
      assert.equal(1, entered.n)
      assert.equal("closed", c.state)
      assert.has_error(function() c:fire("close") end)
      local state, f = outcome(c:query())
      assert.equal("failed", state)
      assert.equal("stopped", f.kind)
      assert.is_true(run_loop(1))
    end)
  end)
end)
