--- fuzz/deferred_model.lua — the reference model the Deferred harness (fuzz/deferred.lua)
-- checks modal's native Deferreds against, step by step: plain Lua tables that do what
-- doc/deferreds.md says — firing, the chain of links, pausing on a returned Deferred and the
-- hand-over, cancel (inward, round cycles), add_timeout on virtual time, sleep, all, settled,
-- race, and which failures end unhandled.
--
-- Where the contract is silent the model follows Twisted, as modal does: when an inner
-- Deferred hands its outcome over, the outer chain runs before the inner one's remaining
-- links; a cancel that goes round a cycle lands on the last Deferred before the walk comes
-- back round.
--
-- Model values (what a Deferred holds, what a link receives):
--   { tag = "val", v = x }                   exactly the harness's value x (its failures too)
--   { tag = "fail", kind = k, value = x, any = bool }   a failure modal makes
--   { tag = "list", n = n, items = { mv, ... } }          all()'s results
--   { tag = "settled", n = n, items = { { ok =, mv = }, ... } }
--   { tag = "deferred", d = md }             a Deferred (a canceller's argument)
--
-- A link function or canceller is data (a spec) that both sides interpret: the harness makes
-- a Lua function of it, the model runs it here (Model:call, Model:run_canceller).
--
-- @module deferred_model

local M = {}

local function V(x) return { tag = "val", v = x } end
local function F(kind, value, any) return { tag = "fail", kind = kind, value = value, any = any } end
M.V, M.F = V, F

local Model = {}
Model.__index = Model

--- A new world: `is_failure` tells the harness's failure objects (modal.is_failure).
function M.new(is_failure)
  return setmetatable({ is_failure = is_failure, timers = {}, seq = 0, now = 0,
                        events = {}, reports = {} }, Model)
end

function Model:is_fail(mv)
  if mv.tag == "fail" then return true end
  return mv.tag == "val" and self.is_failure(mv.v)
end

local function kind_of(self, mv)
  if mv.tag == "fail" then return mv.kind end
  if mv.tag == "val" and self.is_failure(mv.v) then return mv.v.kind end
  return nil
end

--- A new pending Deferred with an optional canceller spec.
function Model.deferred(_, canceller)
  return { fired = false, paused_on = nil, running = false, result = V(nil), failed = false,
           handled = false, links = {}, head = 1, canceller = canceller, cancelled = false,
           timers = {}, tfail = nil }
end

local function final(d)
  return d.fired and not d.paused_on and not d.running
end

--- What d:state() says.
function M.state(d)
  if not d.fired or d.paused_on then return "pending" end
  return d.failed and "failed" or "succeeded"
end

-- {============ the chain

-- The chain has run out (not paused): its timeouts stop, its links and timeout failure go.
function Model.finish(_, d)
  for rec in pairs(d.timers) do rec.dead = true end
  d.timers, d.tfail = {}, nil
  d.links, d.head = {}, 1
end

-- A paused Deferred gets the outcome it waited for; a cancel failure becomes its own timeout
-- failure when it timed out.
function Model:unpause(o, mv)
  o.paused_on = nil
  if o.tfail and kind_of(self, mv) == "cancelled" then mv = o.tfail end
  o.result, o.failed, o.handled = mv, self:is_fail(mv), false
end

local function pick(e, failed)
  local k = e.kind
  if k == "cb" then return not failed and e.cb or nil, "cb" end
  if k == "eb" then return failed and e.eb or nil, "eb" end
  if k == "both" then return e.fn, "both" end
  if k == "pair" then
    if failed then return e.eb, "eb" end
    return e.cb, "cb"
  end
  return nil
end

-- Runs d's links until they run out or d pauses; a hand-over runs the outer chain first.
function Model:run(d)
  d.running = true
  while true do
    local e = d.links[d.head]
    if not e then break end
    d.head = d.head + 1
    if e.cont then
      local o = e.cont
      if o.paused_on == d then            -- else stale: o's wait was broken by a cycle's cancel
        local mv = d.result
        d.result, d.failed = V(nil), false
        self:unpause(o, mv)
        if d.head > #d.links then         -- nothing left of d: it ends before o runs
          d.running = false
          self:finish(d)
          return self:run(o)
        end
        self:run(o)
      end
    else
      local fn, which = pick(e, d.failed)
      if fn then
        d.handled = false
        local ok, res
        if fn.collect then
          ok, res = true, self:collect(fn, d.result)
        else
          ok, res = self:call(fn, which, d.result, e.args)
        end
        if not ok then
          d.result, d.failed, d.handled = res, true, false
        elseif res.tag == "deferred" then
          local r = res.d
          if r == d then
            d.result, d.failed = F("error", nil, true), true
          elseif final(r) then
            local mv = r.result
            r.result, r.failed = V(nil), false
            d.result, d.failed = mv, self:is_fail(mv)
          else
            r.links[#r.links + 1] = { cont = d }
            d.paused_on, d.failed, d.result = r, false, res
            d.running = false
            return
          end
        else
          d.result, d.failed = res, self:is_fail(res)
        end
      end
    end
  end
  d.running = false
  self:finish(d)
end

--- d:add_callback/errback/both/callbacks: `e` is { kind = "cb"|"eb"|"both"|"pair"|"none",
-- cb =, eb =, fn =, args = { n =, ... } }.
function Model:add_link(d, e)
  d.links[#d.links + 1] = e
  if final(d) then self:run(d) end
end

--- d:callback(v) / d:errback(v): "ok", "ignored" (the late fire after a cancel) or "raise".
function Model:fire(d, mv, failed)
  if failed and not self:is_fail(mv) then
    mv = F("error", mv.tag == "val" and mv.v or nil, mv.tag ~= "val")
  end
  if d.fired then
    if d.cancelled then
      d.cancelled = false
      return "ignored"
    end
    return "raise"
  end
  d.fired, d.canceller = true, nil
  d.result, d.failed, d.handled = mv, self:is_fail(mv), false
  self:run(d)
  return "ok"
end

-- }============ the chain

-- {============ cancel and timeouts

-- Where a cancel of d ends: following the waits inward; on a cycle, the last Deferred before
-- the walk comes back round (and true).
local function innermost(d)
  local seen, last = {}, nil
  local x = d
  while true do
    if seen[x] then return last, true end
    seen[x] = true
    if not x.paused_on then return x, false end
    last, x = x, x.paused_on
  end
end

function Model:cancel_pending(e)
  e.cancelled = true
  if e.canceller then
    local ok, f = self:run_canceller(e.canceller, e)
    if not ok then self.reports[#self.reports + 1] = f end   -- reported; the cancel goes on
  end
  if not e.fired then self:fire(e, e.tfail or F("cancelled"), true) end
end

--- d:cancel()
function Model:cancel(d)
  local e, cycle = innermost(d)
  if cycle then
    if e.paused_on then
      self:unpause(e, e.tfail or F("cancelled"))
      self:run(e)
    end
  elseif not e.fired and not e.cancelled then
    self:cancel_pending(e)
  end
end

local function ns(seconds) return math.floor(seconds * 1e9 + 0.5) end

function Model:arm(rec, seconds)
  self.seq = self.seq + 1
  rec.due, rec.seq = self.now + ns(seconds), self.seq
  self.timers[#self.timers + 1] = rec
  return rec
end

--- d:add_timeout(seconds)
function Model:add_timeout(d, seconds)
  if d.fired and not d.paused_on then return end
  d.timers[self:arm({ d = d }, seconds)] = true
end

function Model:expire(rec)
  local d = rec.d
  if d.fired and not d.paused_on then return end
  for r in pairs(d.timers) do r.dead = true end
  d.timers, d.tfail = {}, F("timeout")
  self:cancel(d)
end

--- modal.sleep(seconds)
function Model:sleep(seconds)
  local rec = {}
  local d = self:deferred({ sleep = rec })
  rec.d, rec.sleep = d, true
  self:arm(rec, seconds)
  return d
end

--- clock:advance(seconds): the due timers in deadline order, ties in arming order.
function Model:advance(seconds)
  self:advance_to(self.now + ns(seconds))
end

--- clock:next(): to the earliest deadline; false when no timer is armed.
function Model:next()
  local first
  for _, rec in ipairs(self.timers) do
    if not rec.dead and (not first or rec.due < first) then first = rec.due end
  end
  if not first then return false end
  self:advance_to(math.max(first, self.now))
  return true
end

function Model:advance_to(target)
  while true do
    local best
    for _, rec in ipairs(self.timers) do
      if not rec.dead and rec.due <= target and
         (not best or rec.due < best.due or (rec.due == best.due and rec.seq < best.seq)) then
        best = rec
      end
    end
    if not best then break end
    best.dead = true
    if best.due > self.now then self.now = best.due end
    if best.sleep then self:fire(best.d, V(nil), false) else self:expire(best) end
  end
  self.now = target
  local live = {}
  for _, rec in ipairs(self.timers) do
    if not rec.dead then live[#live + 1] = rec end
  end
  self.timers = live
end

-- }============ cancel and timeouts

-- {============ all, settled, race

--- modal.all/settled/race(items): items are { d = md } or { mv = V(x) }; nil for race({}).
function Model:combine(mode, items)
  if mode == "race" and #items == 0 then return nil end
  local st = { mode = mode, linking = true, done = false, failed = false, remaining = #items,
               winner = 0, results = {}, items = items }
  local out = self:deferred({ combine = st })
  st.out = out
  for i, it in ipairs(items) do
    if it.d then
      self:add_link(it.d, { kind = "both", fn = { collect = st, i = i }, args = { n = 0 } })
    else
      self:collect_at(st, i, it.mv)
    end
  end
  st.linking = false
  if #items == 0 then
    self:decide(st, { tag = mode == "all" and "list" or "settled", n = 0, items = {} }, false)
  elseif st.done then
    self:settle(st)
  end
  return out
end

function Model:settle(st)
  local mv = st.outcome
  st.outcome = nil
  self:fire(st.out, mv, st.failed)
  if st.mode == "race" then self:cancel_inputs(st, st.winner) end
end

function Model:decide(st, mv, failed)
  st.done, st.failed, st.outcome = true, failed, mv
  if not st.linking then self:settle(st) end
end

function Model:cancel_inputs(st, except)
  for i, it in ipairs(st.items) do
    if i ~= except and it.d then self:cancel(it.d) end
  end
end

-- Input i's outcome; true when the output took it (the input is left holding nil).
function Model:collect_at(st, i, mv)
  local failed = self:is_fail(mv)
  if failed and st.items[i].d then st.items[i].d.handled = true end
  if st.done then return false end
  st.remaining = st.remaining - 1
  local n = #st.items
  if st.mode == "all" then
    if failed then
      self:decide(st, mv, true)
      return true
    end
    st.results[i] = mv
    if st.remaining == 0 then self:decide(st, { tag = "list", n = n, items = st.results }, false) end
    return false
  elseif st.mode == "settled" then
    st.results[i] = { ok = not failed, mv = mv }
    if st.remaining == 0 then
      self:decide(st, { tag = "settled", n = n, items = st.results }, false)
    end
    return false
  end
  st.winner = i
  self:decide(st, mv, failed)
  return true
end

-- The link all/settled/race put on an input.
function Model:collect(fn, mv)
  if self:collect_at(fn.collect, fn.i, mv) then return V(nil) end
  return mv
end

-- }============ all, settled, race

-- {============ the harness's functions, as data

--- Set by the harness: its model slots, to resolve a spec's slot numbers.
Model.slots = nil

-- A nested operation a link runs first: true, or false and the error it raises.
function Model:pre(p)
  local d = self.slots[p.slot]
  if p.op == "cancel" then
    self:cancel(d)
  elseif p.op == "timeout" then
    self:add_timeout(d, p.seconds)
  else
    if self:fire(d, V(p.v), p.op == "errback") == "raise" then
      return false, F("error", nil, true)
    end
  end
  return true
end

-- What a link's function does: true and its result, or false and the failure it raises.
function Model:call(fn, which, mv, args)
  self.events[#self.events + 1] = { id = fn.id, which = which, arg = mv, args = args }
  if fn.pre then
    local ok, f = self:pre(fn.pre)
    if not ok then return false, f end
  end
  local r = fn.ret
  if r == "same" then return true, mv end
  if r == "nil" then return true, V(nil) end
  if r == "val" then return true, V(fn.v) end
  if r == "d" then return true, { tag = "deferred", d = self.slots[fn.slot] } end
  if self.is_failure(fn.v) then return false, V(fn.v) end    -- "raise"
  return false, F("error", fn.v)
end

-- A canceller: true, or false and the failure it raised.
function Model:run_canceller(c, d)
  if c.combine then
    self:cancel_inputs(c.combine, 0)
    return true
  end
  if c.sleep then
    c.sleep.dead = true
    return true
  end
  self.events[#self.events + 1] = { id = c.id, which = "canceller",
                                    arg = { tag = "deferred", d = d }, args = { n = 0 } }
  local act = c.act
  if act == "cb" or act == "cb_raise" then self:fire(d, V(c.v), false) end
  if act == "eb" then self:fire(d, V(c.v), true) end
  if act == "raise" or act == "cb_raise" then
    if self.is_failure(c.v) then return false, V(c.v) end
    return false, F("error", c.v)
  end
  return true
end

-- }============ the harness's functions, as data

--- The failures that must be reported unhandled once every Deferred is collected: those
-- reported already (a canceller that raised) and every Deferred left fired on
-- a failure nothing handled.
function Model:expected_reports(all)
  local out = {}
  for _, f in ipairs(self.reports) do out[#out + 1] = f end
  for _, d in ipairs(all) do
    if d.fired and not d.paused_on and d.failed and not d.handled then out[#out + 1] = d.result end
  end
  return out
end

return M
