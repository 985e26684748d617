-- specs/machine_inputs_spec.lua — machine inputs (doc/machines.md, driving rules 3-4):
-- transitions by name, guards and actions, internal and self transitions, ignore lists, untaken
-- and dropped inputs, and run to completion.
local modal = require "modal"
local support = require "support"
local run_undo = support.run_undo
local quiet_unhandled = support.quiet_unhandled
local capture_log = support.capture_log

local outcome, counter, run_loop = support.outcome, support.counter, support.run_loop




-- The captured lines at `level` for machine `name` (and input `input`, when given).
local function logged(lines, level, name, input)
  local found = {}
  for _, line in ipairs(lines) do
    if line.level == level and line.fields.machine == name
        and (input == nil or line.fields.input == input) then
      found[#found + 1] = line
    end
  end
  return found
end

-- Calls fn, which must raise; returns the error as a string.
local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- A door: shut <-> open by `open`/`shut`; `knock` is taken nowhere.
local function door(name, extra)
  local def = {
    name = name, initial = "shut", methods = { "query" },
    states = {
      shut = { query = function(m, input) if input then m:fire(input) end return "shut" end,
               on = { open = "wide" } },
      wide = { query = function() return "wide" end, on = { shut = "shut" } },
    },
  }
  for k, v in pairs(extra or {}) do def[k] = v end
  return modal.machine(def)
end

describe("machine inputs", function()
  after_each(run_undo)

  describe("an input the state does not take", function()
    it("raises to an outside caller of fire(), naming the input and the state", function()
      local c = door("strict_door"):new()
      local err = error_of(function() c:fire("knock") end)
      assert.matches("knock", err, 1, true)
      assert.matches("shut", err, 1, true)
    end)

    it("raises with the machine's name in the message", function()
      local c = door("named_door"):new()
      assert.matches("named_door", error_of(function() c:fire("knock") end), 1, true)
    end)

    it("leaves the instance in its state and usable", function()
      local c = door("usable_door"):new()
      pcall(function() c:fire("knock") end)
      assert.equal("shut", c.state)
      c:fire("open")
      assert.equal("wide", c.state)
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("wide", v)
    end)

    it("is logged at warn with machine, id, state and input when it came from the queue", function()
      local lines = capture_log()
      local c = door("queued_shut"):new()
      local state, v = outcome(c:query("shut"))    -- the handler fires it: not raised here
      assert.equal("succeeded", state)
      assert.equal("shut", v)
      local warns = logged(lines, "warn", "queued_shut", "shut")
      assert.equal(1, #warns)
      assert.equal(c.id, warns[1].fields.id)
      assert.equal("shut", warns[1].fields.state)
      assert.equal("shut", c.state)
    end)

    it("from the queue does not stop the inputs queued after it, nor raise to fire()", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "stray_then_go", initial = "a", methods = {},
        states = {
          a = { on = { start = { action = function(m) m:fire("back"); m:fire("go") end }, go = "b" } },
          b = { on = { back = "a" } },
        },
      }
      local c = M:new()
      c:fire("start")
      assert.equal("b", c.state)
      assert.equal(1, #logged(lines, "warn", "stray_then_go", "back"))
    end)

    it("that no state takes, fired from a handler, is queued and logged like any other", function()
      local lines = capture_log()
      local c = door("queued_knock"):new()
      local state, v = outcome(c:query("knock"))
      assert.equal("succeeded", state)
      assert.equal("shut", v)
      assert.equal(1, #logged(lines, "warn", "queued_knock", "knock"))
    end)
  end)

  describe("ignore lists", function()
    it("drop an input listed in the state's ignore, at debug, without raising", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "state_ignore", initial = "shut", methods = {},
        states = {
          shut = { ignore = { "knock" }, on = { open = "wide" } },
          wide = { on = { shut = "shut" } },
        },
      }
      local c = M:new()
      c:fire("knock")
      assert.equal("shut", c.state)
      local debug = logged(lines, "debug", "state_ignore", "knock")
      assert.equal(1, #debug)
      assert.equal(c.id, debug[1].fields.id)
      assert.equal("shut", debug[1].fields.state)
      c:fire("open")
      assert.has_error(function() c:fire("knock") end)   -- wide does not ignore it
    end)

    it("drop an input listed in the machine's ignore, in every state", function()
      local lines = capture_log()
      local c = door("machine_ignore", { ignore = { "knock" } }):new()
      c:fire("knock")
      c:fire("open")
      c:fire("knock")
      assert.equal("wide", c.state)
      assert.equal(2, #logged(lines, "debug", "machine_ignore", "knock"))
      assert.equal(0, #logged(lines, "warn", "machine_ignore", "knock"))
    end)

    it("do not stop a state that takes the input", function()
      local M = modal.machine {
        name = "ignore_loses", initial = "shut", methods = {}, ignore = { "open" },
        states = {
          shut = { on = { open = "wide" } },
          wide = { on = { shut = "shut" } },
        },
      }
      local c = M:new()
      c:fire("open")
      assert.equal("wide", c.state)
      c:fire("open")
      assert.equal("wide", c.state)
    end)
  end)

  describe("guards", function()
    it("that fail drop the input at debug, without raising", function()
      local lines = capture_log()
      local M = modal.machine {
        name = "guard_fails", initial = "shut", methods = {},
        states = {
          shut = { on = { open = { to = "wide", guard = function(_, key) return key == "key" end } } },
          wide = {},
        },
      }
      local c = M:new()
      c:fire("open", "pin")
      assert.equal("shut", c.state)
      local debug = logged(lines, "debug", "guard_fails", "open")
      assert.equal(1, #debug)
      assert.equal(c.id, debug[1].fields.id)
      c:fire("open", "key")
      assert.equal("wide", c.state)
    end)

    it("in a list where none passes drop the input at debug", function()
      local lines = capture_log()
      local no = function() return false end
      local M = modal.machine {
        name = "guards_none", initial = "shut", methods = {},
        states = {
          shut = { on = { open = { { to = "wide", guard = no }, { to = "ajar", guard = no } } } },
          wide = {}, ajar = {},
        },
      }
      local c = M:new()
      c:fire("open")
      assert.equal("shut", c.state)
      assert.equal(1, #logged(lines, "debug", "guards_none", "open"))
      assert.equal(0, #logged(lines, "warn", "guards_none", "open"))
    end)

    it("get (m, ...) with the input's arguments", function()
      local guard = counter(function() return true end)
      local M = modal.machine {
        name = "guard_args", initial = "shut", methods = {},
        states = { shut = { on = { open = { to = "wide", guard = guard.fn } } }, wide = {} },
      }
      local c = M:new()
      c:fire("open", 1, nil, "x")
      assert.equal(1, guard.n)
      assert.is_true(rawequal(c, guard.args[1][1]))
      assert.equal(4, guard.args[1].n)
      assert.equal(1, guard.args[1][2])
      assert.is_nil(guard.args[1][3])
      assert.equal("x", guard.args[1][4])
    end)

    it("in a list: the first that passes wins and the later ones are not asked", function()
      local first = counter(function() return false end)
      local second = counter(function() return true end)
      local third = counter(function() return true end)
      local M = modal.machine {
        name = "guard_list", initial = "shut", methods = {},
        states = {
          shut = { on = { open = { { to = "wide", guard = first.fn }, { to = "ajar", guard = second.fn },
                                   { to = "wide", guard = third.fn } } } },
          wide = {}, ajar = {},
        },
      }
      local c = M:new()
      c:fire("open", "arg")
      assert.equal("ajar", c.state)
      assert.equal(1, first.n)
      assert.equal(1, second.n)
      assert.equal("arg", second.args[1][2])
      assert.equal(0, third.n)
    end)

    it("pass on any true value and fail on nil or false", function()
      local M = modal.machine {
        name = "guard_truth", initial = "shut", methods = {},
        states = {
          shut = { on = { open = { to = "wide", guard = function(_, v) return v end } } },
          wide = {},
        },
      }
      local c = M:new()
      c:fire("open", nil)
      c:fire("open", false)
      assert.equal("shut", c.state)
      c:fire("open", 0)
      assert.equal("wide", c.state)
    end)

    it("in a list ending with an unguarded entry fall back to it", function()
      local no = function() return false end
      local M = modal.machine {
        name = "guard_fallback", initial = "shut", methods = {},
        states = {
          shut = { on = { open = { { to = "wide", guard = no }, { to = "ajar" } } } },
          wide = {}, ajar = {},
        },
      }
      local c = M:new()
      c:fire("open")
      assert.equal("ajar", c.state)
    end)
  end)

  describe("transitions", function()
    it("by a state name move the instance to that state", function()
      local c = door("by_name"):new()
      assert.equal("shut", c.state)
      c:fire("open")
      assert.equal("wide", c.state)
      c:fire("shut")
      assert.equal("shut", c.state)
    end)

    it("run their action as action(m, ...) with the input's arguments", function()
      local action = counter()
      local M = modal.machine {
        name = "action_args", initial = "shut", methods = {},
        states = { shut = { on = { open = { to = "wide", action = action.fn } } }, wide = {} },
      }
      local c = M:new()
      c:fire("open", "a", nil, 3)
      assert.equal("wide", c.state)
      assert.equal(1, action.n)
      assert.is_true(rawequal(c, action.args[1][1]))
      assert.equal(4, action.args[1].n)
      assert.equal("a", action.args[1][2])
      assert.is_nil(action.args[1][3])
      assert.equal(3, action.args[1][4])
    end)

    it("without `to` are internal: the action runs, no exit, enter, timeout or job restart", function()
      local enter, exit, armed, jobs = counter(), counter(), counter(function() return 10 end), counter()
      local action = counter()
      local M = modal.machine {
        name = "internal", initial = "busy", methods = {},
        states = {
          busy = {
            enter = enter.fn, exit = exit.fn, timeout = armed.fn,
            run = function() jobs.fn(); return modal.deferred() end,
            on = { poke = { action = action.fn }, timeout = "idle", done = "idle", error = "idle",
                   stop = "idle" },
          },
          idle = {},
        },
      }
      local c = M:new()
      c:fire("poke", 7)
      assert.equal("busy", c.state)
      assert.equal(1, action.n)
      assert.equal(7, action.args[1][2])
      assert.equal(1, enter.n)
      assert.equal(0, exit.n)
      assert.equal(1, armed.n)
      assert.equal(1, jobs.n)
      quiet_unhandled()
      c:fire("stop")                                  -- ends the timeout and the job
    end)

    it("without `to` do not retry postponed calls", function()
      local tries = counter(function(m) return m:postpone() end)
      local M = modal.machine {
        name = "internal_no_retry", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = tries.fn, on = { poke = { action = function() end }, go = "ready" } },
          ready = { query = function() return "ready" end },
        },
      }
      local c = M:new()
      local d = c:query()
      c:fire("poke")
      assert.equal(1, tries.n)
      assert.equal(1, c:postponed())
      c:fire("go")
      local state, v = outcome(d)
      assert.equal("succeeded", state)
      assert.equal("ready", v)
    end)

    it("to the current state run exit and enter again", function()
      local trace = {}
      local M = modal.machine {
        name = "self_hooks", initial = "loop", methods = {},
        states = {
          loop = {
            enter = function(_, from, input)
              trace[#trace + 1] = "enter:" .. tostring(from) .. ":" .. tostring(input)
            end,
            exit = function(_, to, input) trace[#trace + 1] = "exit:" .. to .. ":" .. input end,
            on = { again = "loop" },
          },
        },
      }
      local c = M:new()
      c:fire("again")
      assert.equal("loop", c.state)
      assert.same({ "enter:nil:nil", "exit:loop:again", "enter:loop:again" }, trace)
    end)

    it("to the current state re-arm the timeout, cancelling the old one", function()
      local armed = counter(function() return 0.02 end)
      local timed_out = counter()
      local M = modal.machine {
        name = "self_timeout", initial = "loop", methods = {},
        states = {
          loop = { timeout = armed.fn, on = { again = "loop", timeout = { action = timed_out.fn } } },
        },
      }
      local c = M:new()
      assert.equal(1, armed.n)
      c:fire("again")
      assert.equal(2, armed.n)
      assert.is_true(run_loop(2))
      assert.equal(1, timed_out.n)
      assert.equal("loop", c.state)
    end)

    it("to the current state cancel the old job and start a new one", function()
      quiet_unhandled()
      local jobs = {}
      local finished = counter()
      local M = modal.machine {
        name = "self_job", initial = "working", methods = {},
        states = {
          working = {
            run = function() local d = modal.deferred(); jobs[#jobs + 1] = d; return d end,
            on = { again = "working", done = { to = "finished", action = finished.fn }, error = "finished" },
          },
          finished = {},
        },
      }
      local c = M:new()
      assert.equal(1, #jobs)
      c:fire("again")
      assert.equal(2, #jobs)
      local state, f = outcome(jobs[1])
      assert.equal("failed", state)
      assert.equal("cancelled", f.kind)
      assert.equal("working", c.state)
      jobs[2]:callback("second")
      assert.equal("finished", c.state)
      assert.equal(1, finished.n)
      assert.equal("second", finished.args[1][2])
    end)

    it("to the current state do not retry postponed calls", function()
      local tries = counter(function(m) return m:postpone() end)
      local M = modal.machine {
        name = "self_no_retry", initial = "waiting", methods = { "query" },
        states = {
          waiting = { query = tries.fn, on = { again = "waiting", go = "ready" } },
          ready = { query = function() return "ready" end },
        },
      }
      local c = M:new()
      c:query()
      c:fire("again")
      assert.equal(1, tries.n)
      assert.equal(1, c:postponed())
    end)
  end)

  describe("run to completion", function()
    it("queues an input fired in an enter hook until the hook and transition are done", function()
      local trace = {}
      local M = modal.machine {
        name = "rtc_enter", initial = "a", methods = {},
        states = {
          a = { on = { go = "b" } },
          b = {
            enter = function(m)
              trace[#trace + 1] = "enter b begins"
              m:fire("next")
              trace[#trace + 1] = "enter b ends in " .. m.state
            end,
            exit = function() trace[#trace + 1] = "exit b" end,
            on = { next = "c" },
          },
          c = { enter = function() trace[#trace + 1] = "enter c" end },
        },
      }
      local c = M:new()
      c:fire("go")
      assert.same({ "enter b begins", "enter b ends in b", "exit b", "enter c" }, trace)
      assert.equal("c", c.state)
    end)

    it("processes inputs queued by an action in the order they were fired", function()
      local trace = {}
      local note = function(what) return function() trace[#trace + 1] = what end end
      local M = modal.machine {
        name = "rtc_order", initial = "a", methods = {},
        states = {
          a = { on = { go = { to = "b", action = function(m)
                  m:fire("x", 1); m:fire("y", 2); trace[#trace + 1] = "action done" end } } },
          b = { on = { x = { to = "c", action = function(_, n) trace[#trace + 1] = "x" .. n end } } },
          c = { on = { y = { to = "d", action = function(_, n) trace[#trace + 1] = "y" .. n end } },
                enter = note("enter c") },
          d = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.same({ "action done", "x1", "enter c", "y2" }, trace)
      assert.equal("d", c.state)
    end)

    it("queues an input fired in a handler; method calls there still run at once", function()
      local seen = {}
      local M = modal.machine {
        name = "rtc_handler", initial = "a", methods = { "query", "peek" },
        states = {
          a = {
            query = function(m)
              m:fire("go")
              seen[#seen + 1] = m.state
              local _, v = outcome(m:peek())
              seen[#seen + 1] = v
              return "from a"
            end,
            peek = function() return "peek a" end,
            on = { go = "b" },
          },
          b = { query = function() return "from b" end, peek = function() return "peek b" end },
        },
      }
      local c = M:new()
      local state, v = outcome(c:query())
      assert.equal("succeeded", state)
      assert.equal("from a", v)
      assert.same({ "a", "peek a" }, seen)
      assert.equal("b", c.state)
    end)

    it("handles every input queued by an outside fire() before it returns", function()
      local M = modal.machine {
        name = "rtc_chain", initial = "a", methods = {},
        states = {
          a = { on = { go = "b" } },
          b = { enter = function(m) m:fire("go") end, on = { go = "c" } },
          c = { enter = function(m) m:fire("go") end, on = { go = "d" } },
          d = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("d", c.state)
    end)

    it("processes a queued input after the observers and the retry of the transition", function()
      local trace = {}
      local M = modal.machine {
        name = "rtc_after_retry", initial = "a", methods = { "query" },
        states = {
          a = { query = "postpone", on = { go = "b" } },
          b = {
            enter = function(m) m:fire("next") end,
            query = function(m) trace[#trace + 1] = "retry in " .. m.state; return m.state end,
            on = { next = "c" },
          },
          c = { query = function() return "c" end },
        },
      }
      local c = M:new()
      c:on_transition(function(_, from, to) trace[#trace + 1] = from .. "->" .. to end)
      local d = c:query()
      c:fire("go")
      assert.same({ "a->b", "retry in b", "b->c" }, trace)
      local state, v = outcome(d)
      assert.equal("succeeded", state)
      assert.equal("b", v)
      assert.equal("c", c.state)
    end)

    it("handles inputs queued by an outside method call before it returns", function()
      local M = modal.machine {
        name = "rtc_call", initial = "a", methods = { "query" },
        states = {
          a = { query = function(m) m:fire("go"); return "a" end, on = { go = "b" } },
          b = { query = function() return "b" end, enter = function(m) m:fire("go") end, on = { go = "c" } },
          c = { query = function() return "c" end },
        },
      }
      local c = M:new()
      c:query()
      assert.equal("c", c.state)
    end)

    it("keeps a queued input's arguments, nils included", function()
      local action = counter()
      local M = modal.machine {
        name = "queued_args", initial = "a", methods = {},
        states = {
          a = { on = { go = "b" } },
          b = { enter = function(m) m:fire("x", 1, nil, 3, nil) end,
                on = { x = { to = "c", action = action.fn } } },
          c = {},
        },
      }
      local c = M:new()
      c:fire("go")
      assert.equal("c", c.state)
      assert.same({ n = 5, c, 1, nil, 3, nil }, action.args[1])
    end)

    it("passes many arguments through", function()
      local action = counter()
      local M = modal.machine {
        name = "many_args", initial = "a", methods = {},
        states = { a = { on = { go = { to = "b", action = action.fn } } }, b = {} },
      }
      local args = {}
      for i = 1, 40 do args[i] = i end
      M:new():fire("go", table.unpack(args))
      assert.equal(41, action.args[1].n)
      assert.equal(40, action.args[1][41])
    end)

    it("runs 100,000 transitions queued by hooks without nesting", function()
      local n, depth, deepest = 0, 0, 0
      local function bounce(m)
        depth = depth + 1
        deepest = math.max(deepest, depth)
        n = n + 1
        if n < 100000 then m:fire("go") end
        depth = depth - 1
      end
      local M = modal.machine {
        name = "ping_pong", initial = "a", methods = {},
        states = { a = { enter = bounce, on = { go = "b" } }, b = { enter = bounce, on = { go = "a" } } },
      }
      local c = M:new()
      assert.equal(100000, n)
      assert.equal(1, deepest)
      assert.equal("b", c.state)
    end)

    it("passes an input's arguments to exit, the action and enter, nils included", function()
      local exit, action, enter = counter(), counter(), counter()
      local M = modal.machine {
        name = "input_args", initial = "a", methods = {},
        states = {
          a = { exit = exit.fn, on = { go = { to = "b", action = action.fn } } },
          b = { enter = enter.fn },
        },
      }
      local c = M:new()
      c:fire("go", 1, nil, 3)
      assert.same({ n = 6, c, "b", "go", 1, nil, 3 }, exit.args[1])
      assert.same({ n = 4, c, 1, nil, 3 }, action.args[1])
      assert.same({ n = 6, c, "a", "go", 1, nil, 3 }, enter.args[1])
    end)
  end)
end)
