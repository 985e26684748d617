--- fuzz/deferred.lua — the Deferred harness (doc/fuzzing.md): the input is a sequence of
-- Deferred operations — new (with a canceller), succeed, fail, sleep, all, settled, race,
-- add_callback/errback/both/callbacks (links that return, raise, return a failure, return
-- another Deferred, or first fire or cancel another one), callback, errback, cancel,
-- add_timeout, and steps of the testing clock — applied both to modal's Deferreds and to the
-- reference model (fuzz/deferred_model.lua). After every step the links called (which, with
-- what), whether the operation raised, and every Deferred's state() must agree; at the end
-- the failures reported unhandled once everything is collected must be the model's.
-- A mismatch raises, and the runner aborts.
--
-- @module deferred

local modal = require "modal"
local testing = require "modal.testing"
local bytes = require "bytes"
local model_of = require "deferred_model"

local V, F = model_of.V, model_of.F
local is_failure = modal.is_failure
local pack, unpack = table.pack, table.unpack
local format = string.format

local MAX_SLOTS = 16
local DELAYS = { 0, 0.5, 1, 1.5, 2, 4 }
local STEPS = { 0, 0.25, 0.5, 1, 2, 5 }

-- {============ values

-- The values an input works with: numbers, strings, tables, nil and failures of four kinds
-- (cancelled and timeout too, which a timeout's chain treats apart).
local function value_pool()
  return {
    n = 12,
    1, 2, "s", "t", {}, {}, nil,
    modal.failure("error", "e1"), modal.failure("cancelled", "c1"),
    modal.failure("timeout", "t1"), modal.failure("app", "a1", { "v" }), 3,
  }
end

-- A short description of a value, real or model, for a mismatch report.
local function show(x)
  if is_failure(x) then return format("failure(%s: %s)", tostring(x.kind), tostring(x.message)) end
  if type(x) == "table" and x.tag then
    if x.tag == "val" then return "=" .. show(x.v) end
    if x.tag == "fail" then return format("modal failure(%s)", x.kind) end
    return x.tag
  end
  return type(x) == "string" and format("%q", x) or tostring(x)
end

-- }============ values

local H = {}
H.__index = H

-- Does the real value match the model's?
function H:match(mv, x)
  local tag = mv.tag
  if tag == "val" then return rawequal(mv.v, x) end
  if tag == "fail" then
    return is_failure(x) and x.kind == mv.kind and (mv.any or rawequal(x.value, mv.value))
  end
  if tag == "deferred" then return rawequal(x, self.real[mv.d.slot]) end
  if type(x) ~= "table" or is_failure(x) then return false end
  for k in pairs(x) do
    if math.type(k) ~= "integer" or k < 1 or k > mv.n then return false end
  end
  for i = 1, mv.n do
    local item = mv.items[i]
    if tag == "list" then
      if not self:match(item or V(nil), x[i]) then return false end
    else
      local got = x[i]
      if type(got) ~= "table" or got.ok ~= item.ok then return false end
      local x_i = got.failure
      if item.ok then x_i = got.value end
      if not self:match(item.mv, x_i) then return false end
    end
  end
  return true
end

function H:fail(fmt, ...)
  error(format("deferred model mismatch at step %d (%s): ", self.step, self.what) ..
        format(fmt, ...) .. "\n" .. table.concat(self.trace, "\n"), 0)
end

-- {============ the two sides of an operation

-- The real function of a link spec: it logs its call, runs its nested operation, returns or
-- raises.
function H:real_fn(spec, which)
  local real = self.real
  return function(...)
    local events = self.events
    events[#events + 1] = { id = spec.id, which = which, args = pack(...) }
    local p = spec.pre
    if p then
      local d = real[p.slot]
      if p.op == "cancel" then d:cancel()
      elseif p.op == "timeout" then d:add_timeout(p.seconds)
      elseif p.op == "callback" then d:callback(p.v)
      else d:errback(p.v) end
    end
    local r = spec.ret
    if r == "same" then return (...) end
    if r == "nil" then return end
    if r == "val" then return spec.v end
    if r == "d" then return real[spec.slot] end
    error(spec.v, 0)
  end
end

function H:real_canceller(spec)
  return function(d)
    local events = self.events
    events[#events + 1] = { id = spec.id, which = "canceller", args = pack(d) }
    local act = spec.act
    if act == "cb" or act == "cb_raise" then d:callback(spec.v) end
    if act == "eb" then d:errback(spec.v) end
    if act == "raise" or act == "cb_raise" then error(spec.v, 0) end
  end
end

-- }============ the two sides of an operation

-- {============ reading operations

function H:value()
  local i = self.r:int(self.values.n) + 1
  return self.values[i]
end

function H:slot()
  return self.r:int(#self.real) + 1
end

function H:link_spec()
  local r = self.r
  self.ids = self.ids + 1
  local spec = { id = self.ids }
  local k = r:int(6)
  if k == 0 then spec.ret = "same"
  elseif k == 1 then spec.ret = "nil"
  elseif k == 2 then spec.ret, spec.v = "val", self:value()
  elseif k == 3 then spec.ret, spec.v = "raise", self:value()
  else spec.ret, spec.slot = "d", self:slot() end
  if r:int(4) == 0 then
    local op = r:pick { "callback", "errback", "cancel", "timeout" }
    spec.pre = { op = op, slot = self:slot(), v = self:value(), seconds = r:pick(DELAYS) }
  end
  return spec
end

function H:args()
  local n = self.r:int(3)
  local a = { n = n }
  for i = 1, n do a[i] = self:value() end
  return a
end

-- }============ reading operations

-- {============ checks

function H:check_events()
  local got, want = self.events, self.model.events
  for i = 1, math.max(#got, #want) do
    local g, w = got[i], want[i]
    if not g or not w then
      self:fail("link calls: modal made %d, the model %d (call %d: %s #%s in %s)", #got, #want, i,
                g and "modal called" or "the model called", (g or w).id, (g or w).which)
    end
    if g.id ~= w.id or g.which ~= w.which then
      self:fail("call %d: modal called link %d (%s), the model link %d (%s)", i, g.id, g.which,
                w.id, w.which)
    end
    if not self:match(w.arg, g.args[1]) then
      self:fail("call %d (link %d %s): got %s, the model says %s", i, g.id, g.which,
                show(g.args[1]), show(w.arg))
    end
    local n = (w.args and w.args.n or 0) + 1
    if g.args.n ~= n then self:fail("call %d: %d arguments, the model says %d", i, g.args.n, n) end
    for j = 2, n do
      if not rawequal(g.args[j], w.args[j - 1]) then
        self:fail("call %d: argument %d is %s, the model says %s", i, j, show(g.args[j]),
                  show(w.args[j - 1]))
      end
    end
  end
  self.events, self.model.events = {}, {}
end

function H:check_states()
  for i, d in ipairs(self.real) do
    local got, want = d:state(), model_of.state(self.mslots[i])
    if got ~= want then self:fail("slot %d: state() is %s, the model says %s", i, got, want) end
  end
end

-- }============ checks

function H:add(d, md)
  local i = #self.real + 1
  self.real[i], self.mslots[i], md.slot = d, md, i
end

function H:canceller_spec()
  local k = self.r:int(6)
  if k == 0 then return nil end
  self.ids = self.ids + 1
  return { id = self.ids, act = ({ "noop", "cb", "eb", "raise", "cb_raise" })[k], v = self:value() }
end

-- One operation on both sides; returns whether modal raised and what the model predicted.
function H:op()
  local r, m, real = self.r, self.model, self.real
  if #real == 0 then
    local d = modal.deferred()
    self:add(d, m:deferred(nil))
    self.what = "deferred()"
    return false, false
  end
  local k = r:int(20)
  if k <= 4 and #real >= MAX_SLOTS then k = k + 5 end
  if k == 0 then
    local spec = self:canceller_spec()
    self.what = "deferred(" .. (spec and spec.act or "") .. ")"
    self:add(modal.deferred(spec and self:real_canceller(spec)), m:deferred(spec))
  elseif k == 1 then
    local v = self:value()
    self.what = "succeed(" .. show(v) .. ")"
    local d = modal.succeed(v)
    local md = m:deferred(nil)
    m:fire(md, V(v), false)
    self:add(d, md)
  elseif k == 2 then
    local md = m:deferred(nil)
    local d
    if r:bool() then
      local v = self:value()
      self.what = "fail(" .. show(v) .. ")"
      d = modal.fail(v)
      m:fire(md, V(v), true)
    else
      local kind = r:pick { "error", "cancelled", "timeout", "app" }
      self.what = "fail(" .. kind .. ", m)"
      d = modal.fail(kind, "m")
      m:fire(md, F(kind, nil, true), true)
    end
    self:add(d, md)
  elseif k == 3 then
    local s = r:pick(DELAYS)
    self.what = "sleep(" .. s .. ")"
    self:add(modal.sleep(s), m:sleep(s))
  elseif k == 4 then
    local mode = r:pick { "all", "settled", "race" }
    local n = r:int(4)
    local list, items = {}, {}
    for i = 1, n do
      if r:int(5) == 0 then
        local v = self:value()
        if v == nil then v = false end     -- a list has no holes: its length would be a border
        list[i], items[i] = v, { mv = V(v) }
      else
        local j = self:slot()
        list[i], items[i] = real[j], { d = self.mslots[j] }
      end
    end
    self.what = format("%s(%d inputs)", mode, n)
    local ok, d = pcall(modal[mode], list)
    local md = m:combine(mode, items)
    if not ok or not md then return not ok, not md end
    self:add(d, md)
  elseif k <= 12 then
    local i = self:slot()
    local d, md = real[i], self.mslots[i]
    local how = r:int(4)
    local args = self:args()
    local e = { args = args }
    if how == 0 then
      local s = self:link_spec()
      e.kind, e.cb = "cb", s
      self.what = format("slot %d: add_callback(#%d %s)", i, s.id, s.ret)
      d:add_callback(self:real_fn(s, "cb"), unpack(args, 1, args.n))
    elseif how == 1 then
      local s = self:link_spec()
      e.kind, e.eb = "eb", s
      self.what = format("slot %d: add_errback(#%d %s)", i, s.id, s.ret)
      d:add_errback(self:real_fn(s, "eb"), unpack(args, 1, args.n))
    elseif how == 2 then
      local s = self:link_spec()
      e.kind, e.fn = "both", s
      self.what = format("slot %d: add_both(#%d %s)", i, s.id, s.ret)
      d:add_both(self:real_fn(s, "both"), unpack(args, 1, args.n))
    else
      local which = r:int(4)
      local cb = which % 2 == 1 and self:link_spec() or nil
      local eb = which >= 2 and self:link_spec() or nil
      if cb and eb then
        e.kind, e.cb, e.eb = "pair", cb, eb
        eb.id = cb.id                      -- one link: its two functions log the same id
        self.ids = self.ids - 1
      elseif cb then e.kind, e.cb = "cb", cb
      elseif eb then e.kind, e.eb = "eb", eb
      else e.kind = "none" end
      self.what = format("slot %d: add_callbacks(%s, %s)", i, cb and cb.ret or "nil",
                         eb and eb.ret or "nil")
      d:add_callbacks(cb and self:real_fn(cb, "cb"), eb and self:real_fn(eb, "eb"),
                      unpack(args, 1, args.n))
    end
    m:add_link(md, e)
  elseif k <= 15 then
    local i = self:slot()
    local v = self:value()
    local failed = r:bool()
    self.what = format("slot %d: %s(%s)", i, failed and "errback" or "callback", show(v))
    local ok = pcall(real[i][failed and "errback" or "callback"], real[i], v)
    return not ok, m:fire(self.mslots[i], V(v), failed) == "raise"
  elseif k <= 17 then
    local i = self:slot()
    self.what = format("slot %d: cancel()", i)
    real[i]:cancel()
    m:cancel(self.mslots[i])
  elseif k == 18 then
    local i = self:slot()
    local s = r:pick(DELAYS)
    self.what = format("slot %d: add_timeout(%s)", i, s)
    real[i]:add_timeout(s)
    m:add_timeout(self.mslots[i], s)
  else
    if r:bool() then
      local s = r:pick(STEPS)
      self.what = format("advance(%s)", s)
      self.clock:advance(s)
      m:advance(s)
    else
      self.what = "next()"
      local got = self.clock:next()
      local want = m:next()
      if (got ~= nil) ~= want then
        self:fail("clock:next() says %s, the model %s", tostring(got), tostring(want))
      end
    end
  end
  return false, false
end

return function(input)
  local r = bytes.reader(input)
  local flags = r:byte()
  local reports = {}
  local previous_log = modal.on_log(function() end)
  local previous = modal.on_unhandled(function(f) reports[#reports + 1] = f end)
  local clock = testing.clock()
  local h = setmetatable({ r = r, real = {}, mslots = {}, events = {}, ids = 0, step = 0,
                           trace = {}, values = value_pool(), clock = clock }, H)
  local m = model_of.new(is_failure)
  m.slots = h.mslots
  h.model = m
  while not r:done() and h.step < 400 do
    h.step = h.step + 1
    local raised, predicted = h:op()
    h.trace[#h.trace + 1] = format("  %d: %s", h.step, h.what)
    if raised ~= predicted then
      h:fail("modal %s, the model says it %s", raised and "raised" or "did not raise",
             predicted and "raises" or "does not")
    end
    h:check_events()
    h:check_states()
  end
  if flags % 2 == 1 then                  -- observe every final result with one more link
    h.what = "final observers"
    for i, d in ipairs(h.real) do
      h.ids = h.ids + 1
      local s = { id = h.ids, ret = "same" }
      d:add_both(h:real_fn(s, "both"))
      m:add_link(h.mslots[i], { kind = "both", fn = s, args = { n = 0 } })
    end
    h:check_events()
    h:check_states()
  end
  -- Everything collected: the failures reported unhandled must be the model's.
  h.what = "unhandled failures"
  local want = m:expected_reports(h.mslots)
  clock:drop()
  clock:close()
  for i = #h.real, 1, -1 do h.real[i] = nil end
  collectgarbage()
  collectgarbage()
  modal.on_unhandled(previous)
  modal.on_log(previous_log)
  local used = {}
  local function pass_of(w)                -- exact values first, then by kind and value, then
    return w.tag == "val" and 1 or w.any and 3 or 2    -- by kind alone
  end
  for pass = 1, 3 do
    for wi, w in ipairs(want) do
      if not w.matched and pass_of(w) == pass then
        for gi, g in ipairs(reports) do
          if not used[gi] and h:match(w, g) then
            used[gi], w.matched = true, true
            break
          end
        end
        if not w.matched then
          local list = {}
          for _, x in ipairs(want) do list[#list + 1] = show(x) end
          for _, x in ipairs(reports) do list[#list + 1] = "got " .. show(x) end
          h:fail("failure %d of %d the model expects reported unhandled (%s) was not (%s)", wi,
                 #want, show(w), table.concat(list, ", "))
        end
      end
    end
  end
  for gi, g in ipairs(reports) do
    if not used[gi] then h:fail("reported unhandled, not by the model: %s", show(g)) end
  end
end
