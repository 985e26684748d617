--- fuzz/definition.lua — the definition harness (doc/fuzzing.md): the input becomes a machine
-- definition — mostly well-formed (states, methods, `on` targets, guards, hooks, jobs,
-- timeouts, finals, ignores), with any field swapped for a random value (nested tables,
-- strings, numbers, booleans, functions from a small pool, now and then a metatable) — and
-- then, when valid, instances of it driven by a sequence of method calls, inputs, cancels,
-- when() waiters and steps of the testing clock.
--
-- What must hold, or the input is a finding:
--   * modal.check never raises, answers `ok, errors, warnings` with `ok == (#errors == 0)`,
--     every problem a "path: message" string, the same answers twice, and never its own
--     failure ("cannot be checked");
--   * modal.machine accepts the definition exactly when check found no error;
--   * an instance is always in one of the definition's states, never leaves a final state,
--     and its observers' last `to` is its state after every step from outside;
--   * every method call from outside returns a Deferred (never raises) that fires at most
--     once; c:postponed() stays within 0..max_postponed; when() raises exactly for unknown
--     state names;
--   * modal never logs an internal error.
--
-- The pool's functions stop firing inputs, calling methods and raising once the input has
-- run POOL_BUDGET of them, and jobs then stay pending, so that no definition loops for ever.
--
-- @module definition

local modal = require "modal"
local testing = require "modal.testing"
local bytes = require "bytes"

local format, concat = string.format, table.concat
local pack, unpack = table.pack, table.unpack

local POOL_BUDGET = 300
local MAX_INSTANCES = 4
local MAX_STEPS = 120

local STATE_NAMES = { "a", "b", "c", "d", "e" }
local METHOD_NAMES = { "query", "close", "ping", "get" }
local INPUT_NAMES = { "go", "stop", "timeout", "done", "error", "tick" }
-- Names that collide with something (instance fields, built-in methods, keys, non-names).
local ODD_NAMES = { "state", "data", "fire", "new", "on", "enter", "", "1x", "a b", "_", "reload", "a\0b",
                    "redy", "on_enter", "postpone", "when" }
local NUMBERS = { 0, 1, -1, 0.5, 2, 3, 1 / 0, -1 / 0, 0 / 0, 2 ^ 53, math.maxinteger, 1e-9, 65536 }
local TIMEOUTS = { 0.5, 1, 2, 3.25, 10 }
local STEPS = { 0, 0.25, 0.5, 1, 2, 5, 11 }

local H = {}
H.__index = H

function H:fail(fmt, ...)
  error(format("definition fuzz: step %d (%s): ", self.step, self.what) .. format(fmt, ...) ..
        "\nthe definition: " .. self:dump(self.def) .. "\nthe steps:\n" .. concat(self.trace, "\n"), 0)
end

-- {============ the function pool

local function show(v)
  if type(v) == "string" then return format("%q", v) end
  if modal.is_failure(v) then return "failure(" .. tostring(v.kind) .. ")" end
  if type(v) == "table" then return "{}" end
  return tostring(v)
end

-- Names a pool function for the report (what it does, from its kind k).
function H:named(what, k, role, fn)
  self.fn_names[fn] = format("%s#%d: %s", role, self.nfn, what[k + 1])
  self.nfn = self.nfn + 1
  return fn
end

-- The definition as Lua-like text, functions named by what they do, for the report.
function H:dump(v, indent, seen)
  indent, seen = indent or "  ", seen or {}
  if type(v) == "function" then return "<" .. (self.fn_names[v] or "function") .. ">" end
  if type(v) ~= "table" then return show(v) end
  if seen[v] then return "<the same table again>" end
  seen[v] = true
  local keys = {}
  for k in next, v do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) < type(b) end
    return a < b
  end)
  local lines = {}
  for _, k in ipairs(keys) do
    local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]"
    lines[#lines + 1] = indent .. "  " .. key .. " = " .. self:dump(rawget(v, k), indent .. "  ", seen) .. ","
  end
  local mt = getmetatable(v) and " --[[with a metatable]]" or ""
  if #lines == 0 then return "{}" .. mt end
  return "{" .. mt .. "\n" .. concat(lines, "\n") .. "\n" .. indent .. "}"
end

-- Counts a pool function's run; false once the budget is spent.
function H:spend()
  self.spent = self.spent + 1
  return self.spent <= POOL_BUDGET
end

function H:any_value()
  local r = self.r
  local k = r:int(6)
  if k == 0 then return nil end
  if k == 1 then return r:pick(NUMBERS) end
  if k == 2 then return r:pick(STATE_NAMES) end
  if k == 3 then return modal.failure("app", "v") end
  if k == 4 then return {} end
  return r:bool()
end

-- A handler (methods, defaults): answers, postpones, fires, calls, fails or raises.
function H:handler_fn()
  local r, h = self.r, self
  local k = r:int(11)
  local input, method, v = r:pick(INPUT_NAMES), r:pick(METHOD_NAMES), self:any_value()
  local delay = r:pick(TIMEOUTS)
  return self:named({ "return " .. show(v), "postpone", "fire " .. input .. " and return the args",
    "return succeed(" .. show(v) .. ")", "return fail('app')", "raise", "return sleep(" .. delay .. ")",
    "return m:" .. method .. "(" .. show(v) .. ")", "return a pending Deferred",
    "fire " .. input .. " and postpone", "return a cancelled sleep(" .. delay .. ")" }, k, "handler",
    function(m, ...)
    if not h:spend() then return end
    if k == 0 then return v end
    if k == 1 then return m:postpone() end
    if k == 2 then m:fire(input, ...) return ... end
    if k == 3 then return modal.succeed(v) end
    if k == 4 then return modal.fail("app", "refused") end
    if k == 5 then error("handler raised", 0) end
    if k == 6 then return modal.sleep(delay) end
    if k == 7 then
      local f = m[method]
      if type(f) == "function" then return f(m, v) end
      return
    end
    if k == 8 then return modal.deferred() end
    if k == 9 then m:fire(input) return m:postpone() end
    local d = modal.sleep(delay)
    d:cancel()
    return d
  end)
end

-- A hook or action: fires, counts in m.data, calls a method, raises.
function H:hook_fn()
  local r, h = self.r, self
  local k = r:int(6)
  local input, method = r:pick(INPUT_NAMES), r:pick(METHOD_NAMES)
  return self:named({ "nothing", "fire " .. input .. " with the args", "count in m.data.n",
    "call m:" .. method .. "()", "raise a table", "fire " .. input .. " twice" }, k, "hook",
    function(m, ...)
    if not h:spend() then return end
    if k == 0 then return end
    if k == 1 then m:fire(input, ...) return end
    if k == 2 then
      local data = m.data
      if type(data) == "table" then data.n = (rawget(data, "n") or 0) + 1 end
      return
    end
    if k == 3 then
      local f = m[method]
      if type(f) == "function" then f(m) end
      return
    end
    if k == 4 then error({ "a table raised" }) end
    m:fire(input)
    m:fire(input)
  end)
end

-- A guard: true, false, by argument, by a counter; or raises.
function H:guard_fn()
  local k = self.r:int(5)
  local h = self
  return self:named({ "true", "false", "the first arg ~= nil", "m.data.n is even", "raise" }, k,
    "guard", function(m, x)
    if not h:spend() then return false end
    if k == 0 then return true end
    if k == 1 then return false end
    if k == 2 then return x ~= nil end
    if k == 3 then
      local data = m.data
      return type(data) == "table" and (rawget(data, "n") or 0) % 2 == 0
    end
    error("guard raised", 0)
  end)
end

-- A job: done at once, later, pending, failing, raising, cancelled.
function H:run_fn()
  local r, h = self.r, self
  local k = r:int(8)
  local delay, v = r:pick(TIMEOUTS), self:any_value()
  return self:named({ "return " .. show(v), "return sleep(" .. delay .. ")",
    "return a pending Deferred", "return fail('app')", "raise",
    "return a Deferred called back after " .. delay .. " s", "fire go, return sleep(" .. delay .. ")",
    "return a cancelled sleep(" .. delay .. ")" }, k, "run", function(m)
    if not h:spend() then return modal.deferred() end
    if k == 0 then return v end
    if k == 1 then return modal.sleep(delay) end
    if k == 2 then return modal.deferred() end
    if k == 3 then return modal.fail("app", "job failed") end
    if k == 4 then error("run raised", 0) end
    if k == 5 then
      local d = modal.deferred()
      modal.call_later(delay, function() d:callback(v) end)
      return d
    end
    if k == 6 then
      m:fire("go")
      return modal.sleep(delay)
    end
    local d = modal.sleep(delay)
    d:cancel()
    return d
  end)
end

-- A timeout function: seconds, nil, or a value that is not a delay.
function H:timeout_fn()
  local r, h = self.r, self
  local v = r:pick { 0.5, 1, 2, false, "soon", -1, 0 / 0, 1 / 0, "error" }
  return self:named({ v == "error" and "raise" or "return " .. show(v) }, 0, "timeout",
    function()
    if not h:spend() then return nil end
    if v == "error" then error("timeout raised", 0) end
    if v == false then return nil end
    return v
  end)
end

function H:any_fn()
  local k = self.r:int(4)
  if k == 0 then return self:handler_fn() end
  if k == 1 then return self:hook_fn() end
  if k == 2 then return self:guard_fn() end
  return self:run_fn()
end

-- }============ the function pool

-- {============ definitions

-- A random value: nested tables, strings, numbers, booleans, functions; no function when
-- `no_fn` (a timeout function is generated by its own pool).
function H:random(depth, no_fn)
  local r = self.r
  local k = r:int(no_fn and 7 or 8)
  if k == 0 then return nil end
  if k == 1 then return r:pick(NUMBERS) end
  if k == 2 then return r:pick(STATE_NAMES) end
  if k == 3 then return r:pick(ODD_NAMES) end
  if k == 4 then return r:bool() end
  if k == 5 then return "postpone" end
  if k == 6 and depth < 3 then
    local t = {}
    for _ = 1, r:int(5) do
      local key
      local kk = r:int(4)
      if kk == 0 then key = r:int(4) + 1
      elseif kk == 1 then key = r:pick(ODD_NAMES)
      elseif kk == 2 then key = r:pick(INPUT_NAMES)
      else key = r:pick(STATE_NAMES) end
      if key ~= "" or r:bool() then t[key] = self:random(depth + 1, no_fn) end
    end
    if r:int(16) == 0 then setmetatable(t, {}) end
    return t
  end
  if k == 7 then return self:any_fn() end
  return r:pick(METHOD_NAMES)
end

-- Now and then (1 in 12) a random value instead of the well-formed one.
function H:maybe(v, no_fn)
  if self.r:int(12) == 0 then return self:random(0, no_fn) end
  return v
end

function H:names(pool, max)
  local list = {}
  for i = 1, self.r:int(max + 1) do
    list[i] = self.r:int(10) == 0 and self.r:pick(ODD_NAMES) or self.r:pick(pool)
  end
  return self:maybe(list)
end

function H:target(states)
  local r = self.r
  local k = r:int(5)
  if k <= 1 then return self:maybe(r:pick(states)) end
  local function one(guarded)
    local t = {}
    if r:int(4) ~= 0 then t.to = r:pick(states) end
    if guarded then t.guard = self:guard_fn() end
    if r:bool() then t.action = self:hook_fn() end
    return self:maybe(t)
  end
  if k == 2 then return one(r:bool()) end
  local list = {}
  for i = 1, r:int(3) + 1 do list[i] = one(r:int(3) ~= 0) end
  if r:bool() then list[#list + 1] = one(false) end
  return self:maybe(list)
end

function H:state(states, methods)
  local r = self.r
  local s = {}
  if r:int(6) == 0 then
    s.final = self:maybe(true)
    for _, m in ipairs(methods) do
      if r:int(3) ~= 0 then s[m] = self:handler_fn() end
    end
    if r:int(6) == 0 then s.enter = self:hook_fn() end
    return s
  end
  local on = {}
  for _ = 1, r:int(4) do on[r:pick(INPUT_NAMES)] = self:target(states) end
  if next(on) or r:int(4) == 0 then s.on = self:maybe(on) end
  if r:int(3) == 0 then s.run = self:maybe(self:run_fn()) end
  local t = r:int(6)
  if t == 0 then s.timeout = self:maybe(r:pick(TIMEOUTS), true)
  elseif t == 1 then s.timeout = self:timeout_fn() end
  if r:int(3) == 0 then s.enter = self:maybe(self:hook_fn()) end
  if r:int(4) == 0 then s.exit = self:maybe(self:hook_fn()) end
  if r:int(5) == 0 then s.ignore = self:names(INPUT_NAMES, 2) end
  for _, m in ipairs(methods) do
    local k = r:int(4)
    if k == 0 then s[m] = "postpone"
    elseif k >= 2 then s[m] = self:maybe(self:handler_fn()) end
  end
  if r:int(16) == 0 then s[r:pick(ODD_NAMES)] = self:random(0) end
  return s
end

-- The definition and the list of its state names (well-formed or not).
function H:definition()
  local r = self.r
  local nstates = r:int(#STATE_NAMES) + 1
  local states = {}
  for i = 1, nstates do states[i] = STATE_NAMES[i] end
  local methods = {}
  for i = 1, r:int(#METHOD_NAMES + 1) do methods[i] = METHOD_NAMES[i] end
  local def = {
    name = self:maybe("fuzzed"),
    initial = self:maybe(r:pick(states)),
    methods = self:maybe(methods),
    states = {},
  }
  if r:int(4) == 0 then def.version = self:maybe(r:int(5)) end
  if r:int(3) == 0 then def.inputs = self:names(INPUT_NAMES, 3) end
  if r:int(3) == 0 then def.ignore = self:names(INPUT_NAMES, 2) end
  if r:int(3) == 0 then
    local defaults = {}
    for _, m in ipairs(methods) do
      if r:bool() then defaults[m] = r:int(4) == 0 and "postpone" or self:handler_fn() end
    end
    def.defaults = self:maybe(defaults)
  end
  if r:int(4) == 0 then def.max_postponed = self:maybe(r:pick { 1, 2, 5, 0, -1, 1.5 }) end
  if r:int(8) == 0 then def.migrate = self:hook_fn() end
  for _, name in ipairs(states) do def.states[name] = self:state(states, methods) end
  if r:int(12) == 0 then def.states = self:random(0) end
  if r:int(16) == 0 then def[r:pick(ODD_NAMES)] = self:random(0) end
  if r:int(32) == 0 then def = self:random(0) end
  self:bound(def)
  return def, states, methods
end

-- Whatever function ended up as a state's `run` or `timeout` (its own pool's, or another's
-- put there by a random value) behaves, once the budget is spent, as one that can start no
-- loop: a job that stays pending, a timeout function that answers nil. Otherwise a job done at
-- once whose `done` re-enters its state loops for ever (modal warns and keeps going, as
-- doc/machines.md says), and the input never ends.
--
-- A state timeout that is a number is no function to bound; a tiny one (1e-9 s) whose
-- `on.timeout` re-enters its state fires a billion times per virtual second, as documented,
-- so the steps of the clock are cut to a hundred of the smallest such timeout
-- (self.max_step).
function H:bound(def)
  if type(def) ~= "table" or type(rawget(def, "states")) ~= "table" then return end
  local h = self
  for _, st in next, rawget(def, "states") do
    local t = type(st) == "table" and rawget(st, "timeout")
    if type(t) == "number" and t > 0 and t < math.huge then
      -- 100.0, a float: 100 times math.maxinteger, an integer, wraps to a negative step
      self.max_step = math.min(self.max_step or math.huge, t * 100.0)
    end
    if type(st) == "table" then
      for key, spent in pairs { run = modal.deferred, timeout = function() return nil end } do
        local fn = rawget(st, key)
        if type(fn) == "function" then
          local bounded = function(...)
            if h.spent >= POOL_BUDGET then return spent() end
            return fn(...)
          end
          self.fn_names[bounded] = self.fn_names[fn]
          rawset(st, key, bounded)
        end
      end
    end
  end
end

-- }============ definitions

-- {============ checks

local function is_deferred(x)
  if type(x) ~= "userdata" then return false end
  local ok, f = pcall(function() return x.add_both end)
  return ok and type(f) == "function"
end

-- modal.check's contract, twice over; returns ok.
function H:check_definition(def)
  local ok, errors, warnings = modal.check(def)
  if type(ok) ~= "boolean" or type(errors) ~= "table" or type(warnings) ~= "table" then
    self:fail("modal.check answered %s, %s, %s", type(ok), type(errors), type(warnings))
  end
  if ok ~= (#errors == 0) then
    self:fail("modal.check says ok=%s with %d errors", tostring(ok), #errors)
  end
  for _, list in ipairs { errors, warnings } do
    for i, e in ipairs(list) do
      if type(e) ~= "string" or not e:find(": ", 1, true) then
        self:fail("problem %d is not 'path: message': %s", i, tostring(e))
      end
      if e:find("cannot be checked", 1, true) then self:fail("the validator failed: %s", e) end
    end
  end
  local ok2, errors2, warnings2 = modal.check(def)
  if ok2 ~= ok or concat(errors2, "\n") ~= concat(errors, "\n") or
     concat(warnings2, "\n") ~= concat(warnings, "\n") then
    self:fail("modal.check answered differently the second time:\n%s\n--\n%s",
              concat(errors, "\n"), concat(errors2, "\n"))
  end
  local made, machine = pcall(modal.machine, def)
  if made ~= ok then
    self:fail("modal.check says ok=%s (%s) but modal.machine %s: %s", tostring(ok),
              concat(errors, "; "), made and "accepted it" or "raised", tostring(machine))
  end
  if not made and type(machine) ~= "string" then
    self:fail("modal.machine raised a %s, not a message", type(machine))
  end
  return ok and machine or nil, errors
end

function H:check_instances()
  for i, rec in ipairs(self.instances) do
    local c = rec.c
    local state = c.state
    if not self.state_set[state] then self:fail("instance %d is in unknown state %s", i, tostring(state)) end
    if rec.final_state and state ~= rec.final_state then
      self:fail("instance %d left final state %s for %s", i, rec.final_state, tostring(state))
    end
    if self.finals[state] then rec.final_state = state end
    if rec.last_to ~= state then
      self:fail("instance %d is in %s but its observer last saw %s", i, tostring(state),
                tostring(rec.last_to))
    end
    local n = c:postponed()
    if math.type(n) ~= "integer" or n < 0 or n > self.max_postponed then
      self:fail("instance %d: postponed() is %s (max_postponed %d)", i, tostring(n),
                self.max_postponed)
    end
  end
  for i, call in ipairs(self.calls) do
    if call.answers > 1 then self:fail("call %d (%s) was answered %d times", i, call.what, call.answers) end
  end
end

-- }============ checks

-- {============ driving

function H:new_instance()
  local c = self.machine:new { n = 0 }
  local rec = { c = c, last_to = c.state }
  rec.observer = c:on_transition(function(_, _, to) rec.last_to = to end)
  self.instances[#self.instances + 1] = rec
  return rec
end

-- The clock raises, as documented (doc/testing.md), when timers re-arm with delay 0 for ever
-- (a state timeout of 0 whose `on.timeout` re-enters it), and when the next deadline or the
-- step is past its range (~146 years: next() after next() over the longest timeouts): the
-- definition's or the driving's doing, which ends the driving. Anything else it raises is a
-- finding.
function H:clock_raised(method, err)
  if type(err) == "string" and (err:find("never lets time pass", 1, true) or
                                err:find("past the clock's range", 1, true)) then
    self.stuck = true
    return
  end
  self:fail("clock:%s raised: %s", method, tostring(err))
end

function H:drive_step()
  local r = self.r
  local k = r:int(12)
  if #self.instances == 0 or (k == 0 and #self.instances < MAX_INSTANCES) then
    self.what = "new()"
    self:new_instance()
    return
  end
  local ii = r:int(#self.instances) + 1
  local c = self.instances[ii].c
  if k <= 4 then
    local name = #self.methods > 0 and r:pick(self.methods) or "none"
    local args = pack(self:any_value(), self:any_value())
    args.n = r:int(3)
    self.what = format("instance %d: %s(%d args) in %s", ii, name, args.n, c.state)
    local f = c[name]
    if type(f) ~= "function" then return end
    local ok, d = pcall(f, c, unpack(args, 1, args.n))
    if not ok then self:fail("a method call from outside raised: %s", tostring(d)) end
    if not is_deferred(d) then self:fail("a method call returned %s, not a Deferred", type(d)) end
    local call = { d = d, answers = 0, what = self.what }
    d:add_both(function(v) call.answers = call.answers + 1 return v end)
    self.calls[#self.calls + 1] = call
  elseif k <= 6 then
    local input = r:pick(INPUT_NAMES)
    self.what = format("instance %d: fire(%s) in %s", ii, input, c.state)
    local ok, err = pcall(c.fire, c, input, self:any_value())
    if not ok and type(err) ~= "string" then self:fail("fire raised a %s", type(err)) end
  elseif k <= 8 then
    if r:bool() then
      local s = math.min(r:pick(STEPS), self.max_step or math.huge)
      self.what = format("advance(%s)", s)
      local ok, err = pcall(self.clock.advance, self.clock, s)
      if not ok then self:clock_raised("advance", err) end
    else
      self.what = "next()"
      local ok, err = pcall(self.clock.next, self.clock)
      if not ok then self:clock_raised("next", err) end
    end
  elseif k == 9 then
    if #self.calls == 0 then return end
    local ci = r:int(#self.calls) + 1
    local call = self.calls[ci]
    if r:bool() then
      self.what = format("cancel call %d", ci)
      call.d:cancel()
    else
      local s = r:pick(TIMEOUTS)
      self.what = format("call %d: add_timeout(%s)", ci, s)
      call.d:add_timeout(s)
    end
  elseif k == 10 then
    local known = r:int(4) ~= 0
    local name = known and r:pick(self.states) or r:pick(ODD_NAMES)
    known = self.state_set[name] == true
    self.what = format("instance %d: when(%q)", ii, name)
    local ok, d = pcall(c.when, c, name)
    if ok ~= known then
      self:fail("when(%q) %s for a%s state", name, ok and "returned" or "raised: " .. tostring(d),
                known and " known" or "n unknown")
    end
    if ok and not is_deferred(d) then self:fail("when() returned %s", type(d)) end
    if ok then d:add_both(function() end) end
  else
    self.what = "collectgarbage()"
    collectgarbage()
  end
end

-- }============ driving

return function(input)
  local r = bytes.reader(input)
  local h = setmetatable({ r = r, spent = 0, step = 0, what = "definition", trace = {},
                           instances = {}, calls = {}, fn_names = setmetatable({}, { __mode = "k" }),
                           nfn = 1 }, H)
  local internal = {}
  local previous_log = modal.on_log(function(level, message)
    if type(message) == "string" and message:find("internal error", 1, true) then
      internal[#internal + 1] = level .. ": " .. message
    end
  end)
  local previous_unhandled = modal.on_unhandled(function() end)
  local clock = testing.clock()
  h.clock = clock
  local def, states = h:definition()
  h.def = def
  local machine = h:check_definition(def)
  if machine then
    h.machine, h.states = machine, states
    h.methods = {}
    for _, m in ipairs(def.methods) do h.methods[#h.methods + 1] = m end
    h.state_set, h.finals = {}, {}
    for name, s in pairs(def.states) do
      h.state_set[name] = true
      if s.final then h.finals[name] = true end
    end
    h.max_postponed = def.max_postponed or 10000
    while not r:done() and h.step < MAX_STEPS and not h.stuck do
      h.step = h.step + 1
      h:drive_step()
      h.trace[#h.trace + 1] = format("  %d: %s", h.step, h.what)
      h:check_instances()
    end
  end
  clock:drop()
  clock:close()
  h.instances, h.calls, h.machine = {}, {}, nil
  collectgarbage()
  modal.on_unhandled(previous_unhandled)
  modal.on_log(previous_log)
  if #internal > 0 then
    h.what = "log"
    h:fail("modal logged an internal error: %s", internal[1])
  end
end
