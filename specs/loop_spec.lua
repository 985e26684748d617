-- specs/loop_spec.lua — the event loop (doc/loop.md): call_later handles, sleep, now,
-- run and stop, errors raised in callbacks, and the one loop modal shares with luv.
--
-- Callbacks never assert: an error in a modal callback would only be reported, and one in a
-- luv callback exits the process. They record what they saw; the test asserts afterwards.
local modal = require "modal"
local uv = require "luv"
local support = require "support"

local run_loop = support.run_loop

-- Seconds elapsed since `t0` (a uv.hrtime() reading).
local function since(t0)
  return (uv.hrtime() - t0) / 1e9
end

-- Sets a capturing on_unhandled reporter for the current test; returns the list it fills.
local function capture_unhandled()
  local got = {}
  local previous = modal.on_unhandled(function(f) got[#got + 1] = f end)
  finally(function() modal.on_unhandled(previous) end)
  return got
end

-- Lets reports made "from the collector or on the next loop turn" arrive.
local function settle()
  collectgarbage()
  collectgarbage()
  run_loop(0.2)
end

local function noop() end

describe("modal loop", function()
  after_each(support.run_undo)            -- closes the testing clock of timer tests
  describe("call_later()", function()
    it("raises on a negative delay", function()
      assert.has_error(function() modal.call_later(-1, noop) end)
      assert.has_error(function() modal.call_later(-0.001, noop) end)
    end)

    it("raises on a delay that is not a number", function()
      assert.has_error(function() modal.call_later("soon", noop) end)
      assert.has_error(function() modal.call_later({}, noop) end)
      assert.has_error(function() modal.call_later(nil, noop) end)
      assert.has_error(function() modal.call_later(true, noop) end)
    end)

    it("raises when the callback is not a function", function()
      assert.has_error(function() modal.call_later(0, nil) end)
      assert.has_error(function() modal.call_later(0, "print") end)
    end)

    it("does not run the callback before the loop runs, even with delay 0", function()
      local c = support.counter()
      local h = modal.call_later(0, c.fn)
      assert.equal(0, c.n)
      assert.is_true(h:active())
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
    end)

    it("passes the extra arguments, nils included", function()
      local c = support.counter()
      modal.call_later(0, c.fn, 1, nil, "x")
      modal.call_later(0, c.fn)
      assert.is_true(run_loop(1))
      assert.equal(2, c.n)
      assert.same({ n = 3, 1, nil, "x" }, c.args[1])
      assert.same({ n = 0 }, c.args[2])
    end)

    it("runs callbacks in the order they fall due", function()
      local clock = support.clock()           -- timer semantics: on the testing clock
      local order = {}
      local function note(name) return function() order[#order + 1] = name .. modal.now() end end
      modal.call_later(0.03, note("c"))
      modal.call_later(0.01, note("a"))
      modal.call_later(0.02, note("b"))
      clock:advance(0.03)
      assert.same({ "a0.01", "b0.02", "c0.03" }, order)
    end)

    it("runs callbacks due at the same time in the order they were scheduled", function()
      local order = {}
      for i = 1, 5 do
        modal.call_later(0, function() order[#order + 1] = i end)
      end
      assert.is_true(run_loop(1))
      assert.same({ 1, 2, 3, 4, 5 }, order)
    end)

    it("runs a delay-0 callback scheduled from a callback on a later loop iteration", function()
      local iterations = 0
      local check = uv.new_check()
      check:start(function() iterations = iterations + 1 end)
      check:unref()
      local seen = {}
      local function step()
        seen[#seen + 1] = iterations
        if #seen < 5 then modal.call_later(0, step) end
      end
      modal.call_later(0, step)
      local ok = run_loop(1)
      check:stop()
      check:close()
      uv.run("nowait")
      assert.is_true(ok)
      assert.equal(5, #seen)
      for i = 2, #seen do
        assert.is_true(seen[i] > seen[i - 1],
          "steps " .. (i - 1) .. " and " .. i .. " ran in the same iteration")
      end
    end)
  end)

  describe("handle:cancel()", function()
    it("keeps the callback from running and leaves no work behind", function()
      local c = support.counter()
      local h = modal.call_later(10, c.fn)
      h:cancel()
      assert.is_false(h:active())
      local t0 = uv.hrtime()
      assert.is_true(run_loop(2))
      assert.is_true(since(t0) < 0.5)
      assert.equal(0, c.n)
    end)

    it("is a no-op once the callback has run", function()
      local c = support.counter()
      local h = modal.call_later(0, c.fn)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
      assert.has_no_error(function() h:cancel() end)
      assert.is_false(h:active())
      assert.equal(1, c.n)
    end)

    it("is a no-op when called again", function()
      local h = modal.call_later(10, noop)
      h:cancel()
      assert.has_no_error(function() h:cancel() end)
      assert.is_false(h:active())
    end)

    it("works from inside another callback", function()
      local c = support.counter()
      local h = modal.call_later(0.05, c.fn)
      modal.call_later(0, function() h:cancel() end)
      local t0 = uv.hrtime()
      assert.is_true(run_loop(1))
      assert.equal(0, c.n)
      assert.is_true(since(t0) < 0.5)
    end)
  end)

  describe("handle:reset()", function()
    it("raises once the callback has run", function()
      local h = modal.call_later(0, noop)
      assert.is_true(run_loop(1))
      assert.has_error(function() h:reset(0.1) end)
      assert.is_false(h:active())
    end)

    it("raises once the handle is cancelled", function()
      local h = modal.call_later(10, noop)
      h:cancel()
      assert.has_error(function() h:reset(0.1) end)
      assert.is_false(h:active())
    end)

    it("raises on a negative or non-number delay", function()
      local h = modal.call_later(10, noop)
      finally(function() h:cancel() end)
      assert.has_error(function() h:reset(-1) end)
      assert.has_error(function() h:reset("later") end)
      assert.is_true(h:active())
    end)

    it("counts the new delay from now and runs the callback once", function()
      local clock = support.clock()
      local fired_at = {}
      local h = modal.call_later(0.05, function() fired_at[#fired_at + 1] = modal.now() end)
      modal.call_later(0.03, function() h:reset(0.05) end)
      clock:advance(1)
      assert.same({ 0.08 }, fired_at)
      assert.is_false(h:active())
    end)

    it("keeps the handle active while it is pending", function()
      local h = modal.call_later(10, noop)
      finally(function() h:cancel() end)
      h:reset(20)
      assert.is_true(h:active())
    end)
  end)

  describe("sleep()", function()
    it("returns a Deferred that succeeds with nil after the delay", function()
      local clock = support.clock(1)
      local d = modal.sleep(0.02)
      assert.equal("pending", d:state())
      local c = support.counter()
      local done_at
      d:add_callback(function(...)
        done_at = modal.now()
        c.fn(...)
      end)
      clock:advance(0.019)
      assert.equal("pending", d:state())
      clock:advance(0.001)
      assert.equal("succeeded", d:state())
      assert.equal(1, c.n)
      assert.is_nil(c.args[1][1])
      assert.equal(1.02, done_at)
    end)

    it("stops its timer when cancelled: the Deferred fails cancelled, run() returns at once", function()
      local d = modal.sleep(10)
      local kind
      d:add_errback(function(f) kind = f.kind end)
      d:cancel()
      local t0 = uv.hrtime()
      assert.is_true(run_loop(2))
      assert.is_true(since(t0) < 0.5)
      assert.equal("cancelled", kind)
    end)
  end)

  describe("now()", function()
    it("is the loop's time in seconds, on libuv's clock", function()
      uv.update_time()
      local t = modal.now()
      assert.is_number(t)
      assert.near(uv.now() / 1000, t, 0.002)
    end)

    it("never goes backwards", function()
      local last = modal.now()
      for _ = 1, 100 do
        uv.update_time()
        local t = modal.now()
        assert.is_true(t >= last)
        last = t
      end
    end)

    it("advances across a sleep", function()
      local before = modal.now()
      local after
      modal.sleep(0.05):add_callback(function() after = modal.now() end)
      assert.is_true(run_loop(1))
      assert.is_not_nil(after)
      assert.is_true(after - before >= 0.049, "advanced only " .. (after - before) .. " s")
    end)
  end)

  describe("run()", function()
    it("returns at once when there is no work", function()
      local t0 = uv.hrtime()
      assert.is_true(run_loop(2))
      assert.is_true(since(t0) < 0.5)
    end)

    it("returns once the last timer has run", function()
      local c = support.counter()
      modal.call_later(0.01, c.fn)
      modal.call_later(0.02, c.fn)
      local t0 = uv.hrtime()
      assert.is_true(run_loop(2))
      assert.equal(2, c.n)
      assert.is_true(since(t0) < 0.5)
    end)
  end)

  describe("stop()", function()
    it("does nothing outside run(): a later run() still runs everything", function()
      local c = support.counter()
      modal.stop()
      modal.call_later(0, c.fn)
      modal.call_later(0.01, c.fn)
      modal.call_later(0.02, c.fn)
      assert.is_true(run_loop(1))
      assert.equal(3, c.n)
    end)

    it("inside a callback makes run() return, leaving pending timers for a later run()", function()
      local later = support.counter()
      local after_stop = false
      modal.call_later(0, function()
        modal.stop()
        after_stop = true       -- the current callback finishes
      end)
      local h = modal.call_later(0.1, later.fn)
      local t0 = uv.hrtime()
      assert.is_true(run_loop(1))
      assert.is_true(since(t0) < 0.09, "run() did not return at stop()")
      assert.is_true(after_stop)
      assert.equal(0, later.n)
      assert.is_true(h:active())
      assert.is_true(run_loop(1))
      assert.equal(1, later.n)
      assert.is_false(h:active())
    end)
  end)

  describe("an error raised in a callback", function()
    it("is reported through on_unhandled as a failure of kind error", function()
      local got = capture_unhandled()
      modal.call_later(0, function() error("boom in a timer", 0) end)
      assert.is_true(run_loop(1))
      settle()
      assert.equal(1, #got)
      local f = got[1]
      assert.is_true(modal.is_failure(f))
      assert.equal("error", f.kind)
      assert.equal("boom in a timer", f.message)
      assert.equal("boom in a timer", f.value)
      assert.equal("error: boom in a timer", tostring(f))
      assert.is_string(f.traceback)
    end)

    it("keeps an error value that is not a string as the failure's value", function()
      local got = capture_unhandled()
      local value = setmetatable({}, { __tostring = function() return "a table error" end })
      modal.call_later(0, function() error(value) end)
      assert.is_true(run_loop(1))
      settle()
      assert.equal(1, #got)
      assert.equal("error", got[1].kind)
      assert.equal(value, got[1].value)
      assert.equal("a table error", got[1].message)
    end)

    it("does not stop the loop: later timers still run", function()
      local got = capture_unhandled()
      local c = support.counter()
      modal.call_later(0, function() error("first") end)
      modal.call_later(0.01, c.fn)
      modal.call_later(0.02, function() error("second") end)
      modal.call_later(0.03, c.fn)
      assert.is_true(run_loop(1))
      settle()
      assert.equal(2, c.n)
      assert.equal(2, #got)
    end)
  end)

  describe("a timer callback", function()
    it("that raises leaves its handle inactive and the loop going", function()
      capture_unhandled()
      local h
      local c = support.counter()
      h = modal.call_later(0, function() error("raised from a timer", 0) end)
      modal.call_later(0.01, c.fn)
      assert.is_true(run_loop(1))
      assert.is_false(h:active())
      assert.equal(1, c.n)
    end)

    it("sees its own handle as run: active() is false, cancel() does nothing, reset() raises", function()
      local seen = {}
      local h
      h = modal.call_later(0, function()
        seen.active = h:active()
        seen.cancel = pcall(h.cancel, h)
        seen.reset, seen.err = pcall(h.reset, h, 0)
      end)
      assert.is_true(run_loop(1))
      assert.is_false(seen.active)
      assert.is_true(seen.cancel)
      assert.is_false(seen.reset)
      assert.matches("already run or was cancelled", seen.err, 1, true)
      assert.is_false(h:active())
    end)

    it("that cancels a timer due in the same pass keeps it from running", function()
      local c = support.counter()
      local second
      modal.call_later(0, function() second:cancel() end)
      second = modal.call_later(0, c.fn)
      assert.is_true(run_loop(1))
      assert.equal(0, c.n)
      assert.is_false(second:active())
    end)

    it("that resets a timer due in the same pass moves it to its new time", function()
      local fired_at
      local second
      uv.update_time()
      local started = modal.now()
      modal.call_later(0, function() second:reset(0.05) end)
      second = modal.call_later(0, function() fired_at = modal.now() end)
      assert.is_true(run_loop(1))
      assert.is_not_nil(fired_at)
      assert.is_true(fired_at - started >= 0.049, "fired after " .. (fired_at - started) .. " s")
    end)

    it("that arms new timers: each runs once, in due order, after the pass that armed it", function()
      local order = {}
      modal.call_later(0.05, function() order[#order + 1] = "pending 50" end)
      modal.call_later(0, function()
        order[#order + 1] = "first"
        modal.call_later(0.02, function() order[#order + 1] = "armed 20" end)
        modal.call_later(0, function() order[#order + 1] = "armed 0" end)
        for i = 1, 100 do
          modal.call_later(0.01, function() order[#order + 1] = i end)
        end
      end)
      modal.call_later(0, function() order[#order + 1] = "second" end)
      assert.is_true(run_loop(1))
      assert.equal(105, #order)
      assert.same({ "first", "second", "armed 0", 1, 2 }, { table.unpack(order, 1, 5) })
      assert.same({ 100, "armed 20", "pending 50" }, { table.unpack(order, 103, 105) })
    end)

    it("that re-arms a timer from its own callback (a new call_later) repeats it", function()
      local n = 0
      local function tick()
        n = n + 1
        if n < 10 then modal.call_later(0, tick) end
      end
      modal.call_later(0, tick)
      assert.is_true(run_loop(1))
      assert.equal(10, n)
    end)
  end)

  describe("stop() from a callback", function()
    it("keeps a timer due in the same iteration for the next run()", function()
      local c = support.counter()
      modal.call_later(0, function() modal.stop() end)
      modal.call_later(0, c.fn)
      modal.run()                 -- not run_loop: its uv.run("nowait") would run the timer
      assert.equal(0, c.n)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
    end)

    it("from a luv callback makes modal.run() return; modal timers go on in the next run()", function()
      local c = support.counter()
      local t = uv.new_timer()
      t:start(5, 0, function()
        modal.stop()
        t:close()
      end)
      modal.call_later(0.1, c.fn)
      local t0 = uv.hrtime()
      assert.is_true(run_loop(1))
      assert.is_true(since(t0) < 0.09, "run() did not return at stop()")
      assert.equal(0, c.n)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
    end)

    it("from a callback of a sleep's Deferred makes run() return", function()
      local c = support.counter()
      modal.sleep(0):add_callback(function() modal.stop() end)
      modal.call_later(0.1, c.fn)
      local t0 = uv.hrtime()
      assert.is_true(run_loop(1))
      assert.is_true(since(t0) < 0.09, "run() did not return at stop()")
      assert.equal(0, c.n)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
    end)

    it("twice in one callback is the same as once", function()
      local c = support.counter()
      modal.call_later(0, function()
        modal.stop()
        modal.stop()
      end)
      modal.call_later(0.01, c.fn)
      assert.is_true(run_loop(1))
      assert.equal(0, c.n)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
    end)
  end)

  describe("_on_run_end()", function()
    local removers
    before_each(function() removers = {} end)
    after_each(function()
      for _, remove in ipairs(removers) do remove() end
    end)
    local function on_run_end(fn)
      local remove = modal._on_run_end(fn)
      removers[#removers + 1] = remove
      return remove
    end

    it("raises when the hook is not a function", function()
      assert.has_error(function() modal._on_run_end(nil) end)
      assert.has_error(function() modal._on_run_end("print") end)
    end)

    it("reports a hook that raises as unhandled; the other hooks still run", function()
      local got = capture_unhandled()
      local c = support.counter()
      on_run_end(c.fn)
      on_run_end(function() error("hook boom", 0) end)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
      assert.equal(1, #got)
      assert.equal("hook boom", got[1].message)
    end)

    it("calls each hook with exiting = false when run() returns, last registered first", function()
      local order = {}
      on_run_end(function(exiting) order[#order + 1] = { "first", exiting } end)
      on_run_end(function(exiting) order[#order + 1] = { "second", exiting } end)
      assert.is_true(run_loop(1))
      assert.same({ { "second", false }, { "first", false } }, order)
    end)

    it("calls the hooks when stop() ended the run, with work left", function()
      local c = support.counter()
      on_run_end(c.fn)
      modal.call_later(0, modal.stop)
      local h = modal.call_later(0.05, function() end)
      assert.is_true(run_loop(1))
      assert.equal(1, c.n)
      assert.is_true(h:active())
      assert.is_true(run_loop(1))
      assert.equal(2, c.n)
    end)

    it("returns a function that takes the hook out; calling it again does nothing", function()
      local c = support.counter()
      local remove = on_run_end(c.fn)
      remove()
      remove()
      assert.is_true(run_loop(1))
      assert.equal(0, c.n)
    end)

    it("lets a hook remove itself or add another (which waits for the next end)", function()
      local order = {}
      local remove
      remove = on_run_end(function()
        order[#order + 1] = "self-removing"
        remove()
        on_run_end(function() order[#order + 1] = "added" end)
      end)
      assert.is_true(run_loop(1))
      assert.same({ "self-removing" }, order)
      assert.is_true(run_loop(1))
      assert.same({ "self-removing", "added" }, order)
    end)

    it("does not call the hooks again for a run() made from a hook", function()
      local n, inner = 0, nil
      on_run_end(function()
        n = n + 1
        if n == 1 then
          local ran = false
          modal.call_later(0, function() ran = true end)
          modal.run()
          inner = ran
        end
      end)
      assert.is_true(run_loop(1))
      assert.equal(1, n)
      assert.is_true(inner)
    end)
  end)

  describe("uv.walk()", function()
    it("visits modal's handles as luv handles while modal is loaded", function()
      modal.call_later(0, noop)
      local kinds = {}
      uv.walk(function(h)
        kinds[#kinds + 1] = tostring(h):match("^(uv_%w+_t)")
        assert(type(h:is_closing()) == "boolean")
      end)
      assert.is_true(run_loop(1))
      local seen = {}
      for _, k in ipairs(kinds) do seen[k] = true end
      assert.is_true(seen.uv_timer_t)
      assert.is_true(seen.uv_idle_t)
      assert.is_true(seen.uv_check_t)
    end)
  end)

  describe("one loop with luv", function()
    it("luv's run() fires modal timers", function()
      local c = support.counter()
      modal.call_later(0.01, c.fn, "via luv")
      local net = uv.new_timer()
      net:start(1000, 0, function() uv.stop() end)
      net:unref()
      uv.run()
      net:close()
      uv.run("nowait")
      assert.equal(1, c.n)
      assert.equal("via luv", c.args[1][1])
    end)

    it("modal.run() fires luv timers", function()
      local fired = 0
      local t = uv.new_timer()
      t:start(10, 0, function()
        fired = fired + 1
        t:close()
      end)
      assert.is_true(run_loop(1))
      assert.equal(1, fired)
    end)

    it("luv and modal timers interleave in due order", function()
      local order = {}
      local function luv_timer(ms, name)
        local t = uv.new_timer()
        t:start(ms, 0, function()
          order[#order + 1] = name
          t:close()
        end)
      end
      uv.update_time()
      modal.call_later(0.03, function() order[#order + 1] = "modal 30" end)
      luv_timer(40, "luv 40")
      modal.call_later(0.01, function() order[#order + 1] = "modal 10" end)
      luv_timer(20, "luv 20")
      assert.is_true(run_loop(1))
      assert.same({ "modal 10", "luv 20", "modal 30", "luv 40" }, order)
    end)

    it("a call_later(0) chain does not starve luv timers or idle handles", function()
      local t0 = uv.hrtime()
      local timer_ran, idle_ran, ended_by = false, false, nil
      local timer = uv.new_timer()
      timer:start(5, 0, function()
        timer_ran = true
        timer:close()
      end)
      local idle = uv.new_idle()
      idle:start(function()
        idle_ran = true
        idle:stop()
        idle:close()
      end)
      local function step()
        if timer_ran and idle_ran then
          ended_by = "luv ran"
        elseif since(t0) > 0.5 then
          ended_by = "time limit"
        else
          modal.call_later(0, step)
        end
      end
      modal.call_later(0, step)
      run_loop(2)
      assert.equal("luv ran", ended_by)
    end)
  end)
end)
