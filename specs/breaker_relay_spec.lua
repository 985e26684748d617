-- specs/breaker_relay_spec.lua — a closed breaker's calls take a path in C when they can
-- (doc/policies.md, "Breaker", Cost): these check that it counts exactly what the Lua rules
-- say. A property: random calls answered at once or later, in any order, against a small model
-- of the count window (the outcomes of the last `window` answered calls); then a reload with
-- calls in flight, a plain-object target, and target code that reaches the breaker, reloads,
-- cancels or collects while the breaker passes its call on.
local modal = require "modal"
local support = require "support"
local bs = require "breaker_support"

local SEED = 20261130
local SEQUENCES = 300

local random = math.random
local status = modal.breaker.status

-- The model: the outcomes (true = failed) of the calls answered in this closed period, oldest
-- first; the window is the last `size` of them; it opens once n >= min_calls and the failure
-- rate reaches failure_rate.
local function model_new(size, min_calls, rate)
  return { size = size, min_calls = min_calls, rate = rate, outcomes = {}, open = false }
end

local function model_window(m)
  local n, nfail = 0, 0
  for i = math.max(1, #m.outcomes - m.size + 1), #m.outcomes do
    n = n + 1
    if m.outcomes[i] then nfail = nfail + 1 end
  end
  return n, nfail
end

local function model_answer(m, failed)
  if m.open then return end
  m.outcomes[#m.outcomes + 1] = failed
  local n, nfail = model_window(m)
  if n >= m.min_calls and nfail / n >= m.rate then m.open = true end
end

-- A folder for definition files, removed when the test ends.
local function scratch_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. support.quote(dir)))
  support.defer(function() os.execute("rm -rf " .. support.quote(dir)) end)
  return dir
end

describe("modal.breaker's C path in closed", function()
  local clock
  before_each(function() clock = support.clock() end)
  after_each(support.run_undo)

  it("counts the window as the model does: calls answered at once or later, in any order", function()
    math.randomseed(SEED)
    local steps = 0
    for seq = 1, SEQUENCES do
      local size = random(1, 6)
      local min_calls = random(1, size)
      local rate = ({ 0.25, 0.5, 0.75, 1 })[random(4)]
      local t = bs.target()
      local b = bs.breaker(t, { window = size, min_calls = min_calls, failure_rate = rate })
      local m = model_new(size, min_calls, rate)
      local pending = {}                 -- { d = the target's Deferred, got = watch(...) }
      local trace = {}
      for step = 1, 40 do
        steps = steps + 1
        local r = random()
        local what
        if r < 0.3 or #pending == 0 and r >= 0.6 then
          what = random() < 0.7 and "ok" or "fail"
          local got = bs.watch(b:call(what))
          model_answer(m, what == "fail")
          assert.is_true(got.fired)
          assert.equal(what == "ok", got.ok)
        elseif r < 0.6 then
          what = "hang"
          local got = bs.watch(b:call("hang"))
          pending[#pending + 1] = { d = t.pending[#t.pending], got = got }
        else
          local i = random(#pending)
          local p = table.remove(pending, i)
          local fail = random() < 0.4
          what = (fail and "answer fail #" or "answer ok #") .. i
          if fail then p.d:errback(modal.failure("remote", "late")) else p.d:callback("late") end
          model_answer(m, fail)
          assert.is_true(p.got.fired)
          assert.equal(not fail, p.got.ok)
        end
        trace[#trace + 1] = what
        local where = string.format("sequence %d (window %d, min_calls %d, rate %.2f), step %d: %s",
          seq, size, min_calls, rate, step, table.concat(trace, ", "))
        if m.open then
          assert.equal("open", b.state, where)
          break
        end
        assert.equal("closed", b.state, where)
        local n, nfail = model_window(m)
        local s = status(b)
        assert.equal(n, s.calls, where)
        assert.equal(n == 0 and 0 or nfail / n, s.failure_rate, where)
      end
      for _, p in ipairs(pending) do p.d:callback("after") end   -- answered once opened
      assert.is_true(b.state ~= "closed" or not m.open)
    end
    assert.is_true(steps > SEQUENCES * 5)
  end)

  it("keeps the window across a reload with calls in flight, and counts their answers", function()
    local dir = scratch_dir()
    local path = dir .. "/guard.lua"
    local function write(rate, window)
      local f = assert(io.open(path, "w"))
      f:write(string.format([[
return require("modal").breaker.machine { name = "relay_guard", methods = { "call" },
  window = %d, min_calls = 4, failure_rate = %s, open_wait = { jitter = 0 } }
]], window, rate))
      f:close()
    end
    write("0.5", 8)
    local M = modal.load(path)
    local t = bs.target()
    local b = M:new { target = t.c }
    bs.calls(b, { "ok", "ok", "ok" })
    local late = {}
    for i = 1, 3 do
      late[i] = bs.watch(b:call("hang"))
    end
    local held = { t.pending[1], t.pending[2], t.pending[3] }
    assert.equal(3, status(b).calls)
    write("0.75", 8)                      -- same window: kept
    assert.equal(M, modal.reload("relay_guard"))
    assert.equal(3, status(b).calls)
    held[1]:callback("x")                 -- answered after the reload: counted
    assert.equal(4, status(b).calls)
    held[2]:errback(modal.failure("remote", "late"))
    held[3]:errback(modal.failure("remote", "late"))
    assert.equal(6, status(b).calls)
    assert.equal(2 / 6, status(b).failure_rate)
    assert.equal("closed", b.state)       -- 2 of 6 failed
    bs.calls(b, { "fail", "fail" })       -- 4 of 8 failed: 0.5 < 0.75
    assert.equal("closed", b.state)
    assert.equal(8, status(b).calls)
    write("0.75", 4)                      -- a new size: a fresh window
    modal.reload("relay_guard")
    assert.equal(0, status(b).calls)
    bs.calls(b, { "ok", "fail", "fail", "fail" })
    assert.equal("open", b.state)
    for i = 1, 3 do assert.is_true(late[i].fired) end
  end)

  it("judges an answer that comes after a reload by the reloaded options", function()
    local dir = scratch_dir()
    local path = dir .. "/judged.lua"
    local function write(rate)
      local f = assert(io.open(path, "w"))
      f:write(string.format([[
return require("modal").breaker.machine { name = "relay_judged", methods = { "call" },
  window = 4, min_calls = 4, failure_rate = %s, open_wait = { jitter = 0 } }
]], rate))
      f:close()
    end
    for _, case in ipairs {
      { from = "0.5", to = "1", last = "fail", state = "closed" },   -- F S S F: 0.5 < 1
      { from = "1", to = "0.5", last = "ok", state = "open" },       -- F F S S: 0.5 >= 0.5
    } do
      write(case.from)
      local M = modal.load(path)
      local t = bs.target()
      local b = M:new { target = t.c }
      bs.calls(b, { "hang", "hang", "hang", "hang" })
      local held = t.pending
      held[1]:errback(modal.failure("remote", "1"))
      if case.from == "0.5" then
        held[2]:callback(2)
        held[3]:callback(3)
      else
        held[2]:errback(modal.failure("remote", "2"))
        held[3]:callback(3)
      end
      write(case.to)
      modal.reload("relay_judged")
      if case.last == "fail" then held[4]:errback(modal.failure("remote", "4")) else held[4]:callback(4) end
      assert.equal(case.state, b.state, case.from .. " -> " .. case.to)
    end
  end)

  it("counts nowhere the outcome of a call whose target started a new period while it ran",
     function()
    -- a plain object (the Lua path), an instance with slow_call (the Lua path too), and an
    -- instance (the C path): the target forces a fresh closed window, then fails at once
    local b
    local function fresh_window_then_fail()
      b:force("closed")
      b:force(nil)
      return modal.fail("remote", "made in the old period")
    end
    local M = modal.machine { name = bs.name("forcer"), initial = "up", methods = { "call" },
      states = { up = { call = fresh_window_then_fail } } }
    for _, case in ipairs {
      { "a plain object", { call = function() return fresh_window_then_fail() end }, {} },
      { "an instance with slow_call", M:new(), { slow_call = 10 } },
      { "an instance", M:new(), {} },
    } do
      local opts = { target = case[2], methods = { "call" }, window = 2, min_calls = 1,
                     failure_rate = 1 }
      for k, v in pairs(case[3]) do opts[k] = v end
      b = modal.breaker(opts)
      local got = bs.watch(b:call())
      assert.is_true(got.fired, case[1])
      assert.equal("made in the old period", got.value.message, case[1])
      assert.equal("closed", b.state, case[1])
      assert.equal(0, status(b).calls, case[1])
    end
  end)

  it("does not let a trial whose target reopened the breaker decide the new half-open period",
     function()
    local b
    local mode = "fail"
    local t = { call = function(_, how)
      if how == "reenter" then
        b:force("open")
        b:force(nil)                      -- a new half-open period
        if mode == "fail" then return modal.fail("remote", "old trial") end
        return "old trial ok"
      end
      if how == "fail" then return modal.fail("remote", "boom") end
      return "ok"
    end }
    for _, m in ipairs { "fail", "ok" } do
      mode = m
      b = modal.breaker { target = t, methods = { "call" }, window = 1, min_calls = 1, trials = 1,
                          open_wait = { initial = 1, jitter = 0 } }
      bs.calls(b, { "fail" })
      assert.equal("open", b.state)
      clock:advance(1)
      assert.equal("half_open", b.state)
      bs.calls(b, { "reenter" })
      assert.equal("half_open", b.state, m)      -- neither reopened nor closed by the old trial
    end
  end)

  it("takes the first call after a reload, and a method the reload added, through the Lua rules",
     function()
    local dir = scratch_dir()
    local path = dir .. "/grown.lua"
    local function write(methods)
      local f = assert(io.open(path, "w"))
      f:write(([[
return require("modal").breaker.machine { name = "relay_grown", methods = { %s },
  window = 4, min_calls = 4 }
]]):format(methods))
      f:close()
    end
    write('"call"')
    local M = modal.load(path)
    local t = bs.target()
    local b = M:new { target = t.c }
    bs.calls(b, { "ok", "ok" })
    write('"call", "zzz"')
    modal.reload("relay_grown")
    local got = bs.calls(b, { "ok", "fail" })  -- the first finds options its record lacks
    assert.equal("ok", got[1].value)
    assert.equal(4, status(b).calls)
    assert.equal(1 / 4, status(b).failure_rate)
    local zzz = bs.watch(b:zzz())
    assert.is_true(zzz.fired)
    assert.equal("error", zzz.value.kind)
    assert.matches("has no target with a method 'zzz'", zzz.value.message, 1, true)
  end)

  it("answers as b:call does when the definition's handler is called as a function", function()
    local t = bs.target()
    local b = bs.breaker(t, { window = 4, min_calls = 4 })
    bs.calls(b, { "ok" })
    local handler = b.machine.definition.states.closed.call
    local got = bs.watch(handler(b, "ok"))
    assert.is_true(got.fired)
    assert.equal("ok", got.value)
    assert.equal(2, status(b).calls)
  end)

  it("passes calls to a plain object through the Lua rules, counting each", function()
    local answers = {}
    local obj = { call = function(_, how)
      answers[#answers + 1] = how
      if how == "fail" then return modal.fail("remote", "no") end
      return "plain " .. how
    end }
    local b = modal.breaker { target = obj, methods = { "call" }, window = 4, min_calls = 4 }
    local got = bs.calls(b, { "a", "b", "fail" })
    assert.equal("plain a", got[1].value)
    assert.equal(3, status(b).calls)
    assert.equal(1 / 3, status(b).failure_rate)
    bs.calls(b, { "fail" })
    assert.equal("open", b.state)
  end)

  it("answers a call whose target forces the breaker open while it runs, and counts it nowhere",
     function()
    local b
    local M = modal.machine { name = bs.name("reacher"), initial = "up", methods = { "call" },
      states = { up = { call = function(_, how)
        if how == "force" then b:force("open") end
        return modal.succeed(how)
      end } } }
    local c = M:new()
    b = modal.breaker { target = c, methods = { "call" }, window = 4, min_calls = 1 }
    bs.calls(b, { "ok", "ok" })
    assert.equal(2, status(b).calls)
    local got = bs.watch(b:call("force"))
    assert.is_true(got.fired)
    assert.equal("force", got.value)
    assert.equal("open", b.state)
    b:force("closed")
    assert.equal(0, status(b).calls)      -- a forced-closed window counts nothing
    b:force(nil)
    assert.equal("closed", b.state)
    bs.calls(b, { "ok" })
    assert.equal(1, status(b).calls)
  end)

  it("lets target code reload, cancel, call the breaker again and collect while it is called",
     function()
    local b, inner, cancelled
    local M = modal.machine { name = bs.name("busy_target"), initial = "up", methods = { "call" },
      states = { up = { call = function(_, how)
        if how == "reload" then
          local ok, err = pcall(modal.reload, "no_such_machine_here")
          assert(not ok and err)
        elseif how == "nested" then
          inner = bs.watch(b:call("plain"))        -- the breaker again, from its target
        elseif how == "collect" then
          collectgarbage()
          collectgarbage()
        elseif how == "cancel" then
          local d = modal.deferred(function() cancelled = true end)
          d:cancel()
          return d
        end
        return modal.succeed(how)
      end } } }
    local c = M:new()
    b = modal.breaker { target = c, methods = { "call" }, window = 8, min_calls = 8 }
    local got = bs.calls(b, { "reload", "nested", "collect", "cancel" })
    assert.equal("reload", got[1].value)
    assert.equal("nested", got[2].value)
    assert.is_true(inner.fired)
    assert.equal("plain", inner.value)
    assert.equal("collect", got[3].value)
    assert.is_true(cancelled)
    assert.equal("cancelled", got[4].value.kind)
    assert.equal(4, status(b).calls)      -- the cancelled call is not counted; the nested one is
    assert.equal(0, status(b).failure_rate)
  end)
end)
