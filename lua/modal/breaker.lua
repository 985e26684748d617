--- lua/modal/breaker.lua — modal.breaker: a circuit breaker in front of an instance, generated
-- as a machine definition and driven by the core (doc/policies.md, "Breaker").
--
--   local b = modal.breaker { target = c, methods = { "get", "set" }, failure_rate = 0.5 }
--   b:get("k")            -- c:get("k") while closed; fails at once (unavailable) while open
--   b:force("open")       -- an operator holds it open, until b:force(nil)
--
-- States: closed (initial: calls go through, their outcomes fill a window) -> open (calls fail
-- at once, for the open_wait backoff's next delay) -> half_open (at most `trials` calls go
-- through) -> closed once that many succeeded, or open again after one failed. The generated
-- definition is a plain machine: modal check, modal graph, --trace, ctl status and hot reload
-- work on it (modal.breaker.machine{...} returns it; M:new{ target = c } makes a breaker).
--
-- Where things live. What a breaker knows — its window, the open wait's schedule, the trials of
-- the current half-open period, what opened it — is in a record per instance (`records`, weak
-- keys), never in the definition's closures, so a reload keeps it. Each period (an entry into
-- a state) has a number, `gen`: an outcome that arrives after its period ended (a call made
-- while closed that answers once open, a trial of an earlier half-open period) is not counted.
--
-- @module modal.breaker

local modal = require "modal"
local backoff_lib = require "modal.backoff"
local check = require "modal.check"
local policy = require "modal.policy"
local secs = policy.secs
local describe = policy.describe
local finite = policy.finite
local whole = policy.whole

local type, next, ipairs, pcall, xpcall, tostring = type, next, ipairs, pcall, xpcall, tostring
local traceback = debug.traceback
local getmetatable, setmetatable, select = getmetatable, setmetatable, select
local format, concat, sort = string.format, table.concat, table.sort

local now, failure, is_failure = modal.now, modal.failure, modal.is_failure
local succeed, fail = modal.succeed, modal.fail

local breaker = {}

--- The options modal.breaker takes, in documentation order.
breaker.OPTIONS = { "target", "methods", "name", "version", "window", "window_time", "min_calls",
  "failure_rate", "slow_call", "slow_rate", "open_wait", "trials", "trial_timeout", "counts" }

--- Defaults (seconds, calls, rates).
breaker.DEFAULTS = { window = 20, min_calls = 20, failure_rate = 0.5, slow_rate = 1.0,
  open_wait = { initial = 5, multiplier = 2, max = 60, jitter = 0.2 }, trials = 3, trial_timeout = 30 }

--- The method every breaker adds to the target's.
breaker.BUILTIN_METHODS = { "force" }

--- The inputs a breaker's states take (besides timeout).
breaker.INPUTS = { "trip", "recovered", "force_open", "force_closed", "release" }

local records = setmetatable({}, { __mode = "k" })   -- instance -> record
local policies = setmetatable({}, { __mode = "k" })  -- definition table -> options

local DMT = getmetatable(modal.deferred())
local FMT = getmetatable(failure("error", "probe"))
local add_both, add_timeout = DMT.__index.add_both, DMT.__index.add_timeout

-- Formatting ------------------------------------------------------------------------------


local function percent(x) return format("%.0f %%", x * 100) end

local function who(m) return policy.who(m, "breaker") end


local function short(f)
  if f == nil then return nil end
  if is_failure(f) then return tostring(f) end
  return tostring(f)
end

-- Records ---------------------------------------------------------------------------------
--
-- A record per instance: r.m, r.P (the options it works with), r.target and r.fns (the target
-- and its bound methods), r.backoff (the open wait), r.forced, r.opened (what opened it),
-- r.last (the last counted failure), r.delay and r.retry_at (the open wait under way), and
-- r.period: the table of the current period. A closed period holds the window (w.n, w.nfail,
-- w.nslow and a ring of outcome codes — 1 failed, 2 slow, 3 both, 0 neither — or a queue of
-- per-instant tallies for a time window); a half-open one the trials (w.used, w.ok, w.slow).
-- w.live is false once the period is over (or while forced closed: nothing is recorded), so
-- an outcome that comes later is not counted. A call's link carries its period alone: one
-- argument keeps the link inline in the Deferred (W8).

local function policy_of(m)
  local M = m.machine
  return M and policies[M.definition]
end

-- The record's slots the C path reads (src/relay.c), kept in step with the named fields:
-- [R_P] = r.P, [R_FNS] = r.fns for an instance target (false for a plain object: the C path
-- leaves those to Lua), [R_TARGET] = r.target, and [R_LINK] what a call's outcome link
-- carries: the current period's tally (a count window), else the period.
local R_P, R_FNS, R_TARGET, R_LINK = 1, 2, 3, 4

local relay_tally, relay_clean, relay_take = modal._relay_tally, modal._relay_clean, modal._relay_take

-- w.clean, and the tally's copy of it: while clean, the C link counts successes in the tally.
local function set_clean(w, clean)
  w.clean = clean
  local t = w.tally
  if t then relay_clean(t, clean) end
end

-- Adds the successes the C link counted in w's tally to w.n (up to the window's size): done
-- before anything reads or changes the window.
local function take(w)
  local t = w.tally
  if t == nil then return end
  local k = relay_take(t)
  if k > 0 then
    local n = w.n + k
    if n > w.size then n = w.size end
    w.n = n
  end
end

local function new_period(r, live)
  local old = r.period
  if old then
    take(old)
    old.live = false
    set_clean(old, false)
  end
  local w = { r = r, live = live, clean = false, tripped = false, n = 0, nfail = 0, nslow = 0 }
  r.period = w
  r[R_LINK] = w
  return w
end

-- A closed period: a fresh window for r.P.
local function new_window(r, live)
  local w = new_period(r, live)
  local P = r.P
  if P.window_time then
    w.span = P.window_time
    w.wt, w.wn, w.wf, w.ws, w.head, w.tail = {}, {}, {}, {}, 1, 0
  else
    w.size, w.ring, w.pos = P.window, {}, 1
    w.clean = live
    w.tally = relay_tally(w, live)
    r[R_LINK] = w.tally
  end
  return w
end

-- The options an instance works with: those of the definition whose handler runs. A reload
-- that changed the window's kind or size starts a fresh window; the open wait keeps its step.
local function adopt(r, P)
  local old = r.P
  r.P = P
  r[R_P] = P
  local w = r.period
  if w and w.ring and (P.window_time or P.window ~= w.size) or w and w.wt and P.window_time ~= w.span then
    new_window(r, w.live)
  end
  if r.backoff == nil then
    r.backoff = backoff_lib.new(P.open_wait)
  elseif old and old.open_wait ~= P.open_wait then
    r.backoff = r.backoff:_rebased(P.open_wait)
  end
end

local function record(m, P)
  local r = records[m]
  if r == nil then
    r = { m = m, P = nil, target = nil, fns = {}, plain = false, forced = nil, opened = nil,
          pending_open = nil,
          last = nil, delay = nil, retry_at = nil, period = nil }
    records[m] = r
  end
  P = P or policy_of(m)
  if P and r.P ~= P then adopt(r, P) end
  return r
end

-- Binds the target's methods once (a method fetched from an instance stays bound to its name).
local function bind(m, r, P)
  local data = m.data
  local target = data and data.target
  if target == nil then return nil end
  if r.target ~= target then
    local fns = {}
    for _, name in ipairs(P.method_names) do
      local ok, fn = pcall(function() return target[name] end)
      if ok and fn ~= nil then fns[name] = fn end
    end
    local mt = type(target) == "userdata" and getmetatable(target)
    -- an instance answers with a Deferred, always; any other object may answer with anything
    r.plain = not (type(mt) == "table" and mt.__name == "modal.instance")
    r.target, r.fns = target, fns
    r[R_FNS], r[R_TARGET] = not r.plain and fns, target
  end
  return target
end

-- The window ------------------------------------------------------------------------------

-- Drops the time window's tallies older than its span.
local function prune(w, t)
  local cut = t - w.span
  local wt, head, tail = w.wt, w.head, w.tail
  while head <= tail and wt[head] <= cut do
    w.n = w.n - w.wn[head]
    w.nfail = w.nfail - w.wf[head]
    w.nslow = w.nslow - w.ws[head]
    wt[head], w.wn[head], w.wf[head], w.ws[head] = nil, nil, nil, nil
    head = head + 1
  end
  if head > tail then head, tail = 1, 0 end
  w.head, w.tail = head, tail
end

-- Counts one outcome in the window; returns true when the window says open.
local function count(w, failed, slow)
  local ring = w.ring
  if ring then
    local pos = w.pos
    if w.n == w.size then
      local old = ring[pos]             -- nil: an entry of the clean stretch, 0
      if old and old ~= 0 then
        if old ~= 2 then w.nfail = w.nfail - 1 end
        if old >= 2 then w.nslow = w.nslow - 1 end
      end
    else
      w.n = w.n + 1
    end
    local code = 0
    if failed then code = 1; w.nfail = w.nfail + 1 end
    if slow then code = code + 2; w.nslow = w.nslow + 1 end
    ring[pos] = code
    if pos == w.size then w.pos = 1 else w.pos = pos + 1 end
  else
    local t = now()
    prune(w, t)
    local tail = w.tail
    if tail == 0 or w.wt[tail] ~= t then
      tail = tail + 1
      w.tail = tail
      w.wt[tail], w.wn[tail], w.wf[tail], w.ws[tail] = t, 0, 0, 0
    end
    w.wn[tail] = w.wn[tail] + 1
    w.n = w.n + 1
    if failed then w.wf[tail] = w.wf[tail] + 1; w.nfail = w.nfail + 1 end
    if slow then w.ws[tail] = w.ws[tail] + 1; w.nslow = w.nslow + 1 end
  end
  local n = w.n
  local P = w.r.P
  if n < P.min_calls then return false end
  if w.nfail / n >= P.failure_rate then return true end
  return P.slow_call ~= nil and w.nslow / n >= P.slow_rate
end

-- Where the breaker stands ----------------------------------------------------------------

local function window_rates(w)
  if w == nil or w.ring == nil and w.wt == nil then return 0, 0 end
  take(w)
  if w.wt then prune(w, now()) end
  if w.n == 0 then return 0, 0 end
  return w.nfail / w.n, w.nslow / w.n
end

-- What opened it, in words: "12 of 20 calls failed (60 %; last: ...)".
local function opened_text(r)
  local o = r.opened
  if o == nil then return nil end
  if o.cause == "forced" then return "forced open by an operator" end
  if o.cause == "failures" then
    return format("%d of %d calls failed (%s%s)", o.nfail, o.n, percent(o.failure_rate),
      o.last and "; last: " .. short(o.last) or "")
  end
  if o.cause == "slow" then
    return format("%d of %d calls took more than %s s (%s)", o.nslow, o.n, secs(o.slow_call),
      percent(o.slow_rate))
  end
  if o.cause == "trial_timeout" then
    return format("a trial call timed out after %s s", secs(o.trial_timeout))
  end
  if o.cause == "trial" then
    return "a trial call failed" .. (o.last and " (" .. short(o.last) .. ")" or "")
  end
  if o.cause == "trial_slow" then
    return format("%d of %d trial calls took more than %s s (%s)", o.nslow, o.n, secs(o.slow_call),
      percent(o.slow_rate))
  end
  return o.cause
end

-- The message and f.value of every failure the breaker makes.
local function standing(m, r)
  local state = m.state
  local o = r.opened
  local fr, sr = window_rates(r.period)
  local value = { state = state, retry_in = nil, failure_rate = fr, slow_rate = sr,
                  forced = r.forced, last = r.last, reason = nil }
  local text
  if state == "open" or state == "half_open" then
    if o then
      value.failure_rate, value.slow_rate, value.last = o.failure_rate or 0, o.slow_rate or 0, o.last
    end
    local why = opened_text(r)
    value.reason = why
    if state == "open" then
      text = format("%s is open", who(m))
      if why then text = text .. ": " .. why end
      if not r.forced and r.retry_at then
        local left = r.retry_at - now()
        if left < 0 then left = 0 end
        value.retry_in = left
        text = text .. "; next trial in " .. secs(left) .. " s"
      end
    else
      local k = r.P and r.P.trials or 1
      text = format("%s is half_open: %s taken", who(m),
        k == 1 and "its trial call is" or format("all %d trial calls are", k))
      if why then text = text .. " (opened: " .. why .. ")" end
    end
  else
    text = format("%s is %s", who(m), tostring(state))
  end
  return text, value
end

local function unavailable(m, r)
  local text, value = standing(m, r)
  return failure("unavailable", text, value)
end

-- Outcomes --------------------------------------------------------------------------------

-- Opens the breaker once per period; `o` says why (its cause, the window's figures).
local function trip(w, cause, extra)
  if w.tripped then return end
  w.tripped = true
  local r = w.r
  local P = r.P
  local o = { cause = cause, n = w.n, nfail = w.nfail, nslow = w.nslow,
              failure_rate = w.n > 0 and w.nfail / w.n or 0, slow_rate = w.n > 0 and w.nslow / w.n or 0,
              last = r.last, slow_call = P.slow_call, trial_timeout = P.trial_timeout }
  if extra then for k, v in next, extra do o[k] = v end end
  r.pending_open = o
  r.m:fire("trip", w)
end

-- The guard of `trip` and `recovered`: the period that fired it is still the current one. An
-- input fired by an outcome while the breaker was busy is handled after what was queued before
-- it; if that ended the period (a force from the target's own code), the input is stale and
-- dropped. Fired without a period (modal test's walks), it is taken.
local function current(m, w)
  if w == nil then return true end
  local r = records[m]
  return r ~= nil and r.period == w
end

-- Whether a failure counts: never a cancelled call; else counts(f), or every failure.
local function counted(r, f)
  if f.kind == "cancelled" then return false end
  local counts = r.P.counts
  if counts == nil then return true end
  local ok, yes = pcall(counts, f)
  if not ok then
    modal.log("error", who(r.m) .. ": counts raised: " .. tostring(yes) .. " (the failure counts)")
    return true
  end
  return yes and true or false
end

-- Counts v in w (`again`: v was counted already; only look at the rates).
local function closed_count(v, w, t0)
  local r = w.r
  record(r.m)                           -- reloaded since the call? judge by the options now
  if not w.live then return v end       -- (a new window size or kind started a fresh window)
  take(w)
  local failed = false
  if getmetatable(v) == FMT then
    if not counted(r, v) then return v end
    failed = true
    r.last = v
  end
  local P = r.P
  local slow = t0 ~= nil and now() - t0 > P.slow_call
  if count(w, failed, slow) then
    trip(w, w.nfail / w.n >= P.failure_rate and "failures" or "slow")
  end
  set_clean(w, w.live and w.ring ~= nil and w.nfail == 0 and w.nslow == 0)
  return v
end

-- The outcome of a call made while closed, in period w; t0 (with slow_call) is when the call was
-- made. A success in a count window without a failure or slow call in it — a healthy target —
-- only adds to the count (the ring's entries are all 0 then: w.clean); the C link
-- (relay_outcome) counts those in the window's tally and calls this for every other outcome.
local function closed_outcome(v, w, t0)
  if not w.live then return v end
  return closed_count(v, w, t0)
end

-- A call's outcome link while closed: its one argument is r[R_LINK] when the call was made.
local relay_outcome = modal._relay_outcome(closed_outcome)
local relay_closed = modal._relay_closed

-- The outcome of a trial (half_open): a success counts towards closing, a counted failure
-- reopens, a cancelled or excluded one frees its slot. A timeout at trial_timeout always counts.
local function trial_outcome(v, w, t0)
  if not w.live then return v end
  local r = w.r
  record(r.m)                           -- reloaded since the call? judge by the options now
  local P = r.P
  local elapsed = now() - t0
  if getmetatable(v) == FMT then
    if v.kind == "timeout" and elapsed >= P.trial_timeout then
      r.last = v
      trip(w, "trial_timeout")
    elseif counted(r, v) then
      r.last = v
      trip(w, "trial")
    else
      w.used = w.used - 1
    end
    return v
  end
  w.ok = w.ok + 1
  if P.slow_call and elapsed > P.slow_call then w.slow = w.slow + 1 end
  if w.ok >= P.trials and not w.tripped then
    if P.slow_call and w.slow / w.ok >= P.slow_rate then
      trip(w, "trial_slow", { n = w.ok, nslow = w.slow, slow_rate = w.slow / w.ok })
    else
      w.tripped = true
      r.m:fire("recovered", w)
    end
  end
  return v
end

-- A target's answer as a Deferred (an instance always answers with one; any object may be a
-- target, so a plain value or a failure is taken as an answer too).
local function as_deferred(d)
  local mt = getmetatable(d)
  -- a failed Deferred nobody has handled yet has a metatable of its own, named alike
  if mt == DMT or type(d) == "userdata" and type(mt) == "table" and mt.__name == "modal.deferred" then
    return d
  end
  if is_failure(d) then return fail(d) end
  return succeed(d)
end

-- A raise from the target's method is that call's failed outcome: kind error, the raised
-- value's text as message, the value and where it was raised kept (a raised failure as is).
local function raised(e)
  if is_failure(e) then return e end
  local f = failure("error", tostring(e), e)
  f.traceback = traceback(nil, 2)
  return f
end

local function answer_of(ok, d)
  if ok then return as_deferred(d) end
  return fail(d)
end

-- Calls the target's method protected: always a Deferred, never a raise. An instance's method
-- never raises (the core fails its Deferred instead), so the closed state calls an instance
-- bare (W8) and only a plain object through here; a trial always comes through here, so its
-- slot is given back whatever the target does.
local function protected(fn, target, ...)
  return answer_of(xpcall(fn, raised, target, ...))
end

local function no_target(m, name)
  return failure("error", format("%s has no target with a method '%s' (make it with " ..
    "M:new{ target = instance })", who(m), name))
end

-- Handlers --------------------------------------------------------------------------------

local function closed_handler(name, P)
  if P.slow_call then
    return function(m, ...)
      local r = records[m]
      if r == nil or r.P ~= P then r = record(m, P) end
      local fn = r.fns[name]
      if fn == nil then
        bind(m, r, P)
        fn = r.fns[name]
        if fn == nil then return no_target(m, name) end
      end
      local t0 = now()
      local w = r.period                 -- the call belongs to the period it was made in
      local d
      if r.plain then d = protected(fn, r.target, ...) else d = fn(r.target, ...) end
      add_both(d, closed_outcome, w, t0)
      return d
    end
  end
  local handler = function(m, ...)
    local r = records[m]
    if r == nil or r.P ~= P then r = record(m, P) end
    local fn = r.fns[name]
    if fn == nil then
      bind(m, r, P)
      fn = r.fns[name]
      if fn == nil then return no_target(m, name) end
    end
    local link = r[R_LINK]             -- the call belongs to the period it was made in
    local d
    if r.plain then d = protected(fn, r.target, ...) else d = fn(r.target, ...) end
    add_both(d, relay_outcome, link)
    return d
  end
  -- The same in C for its common case (an instance as target, its record made, a clean count
  -- window), handing every other case to the function above (src/relay.c; W8).
  return relay_closed(records, P, name, handler, relay_outcome)
end

local function open_handler(m)
  return unavailable(m, record(m))
end

local function half_open_handler(name, P)
  return function(m, ...)
    local r = record(m, P)
    local w = r.period
    if w.used >= P.trials then return unavailable(m, r) end
    local fn = r.fns[name]
    if fn == nil then
      bind(m, r, P)
      fn = r.fns[name]
      if fn == nil then return no_target(m, name) end
    end
    w.used = w.used + 1
    local t0 = now()
    local d = protected(fn, r.target, ...)
    if d:state() == "pending" then add_timeout(d, P.trial_timeout) end
    add_both(d, trial_outcome, w, t0)
    return d
  end
end

local FORCE_INPUT = { open = "force_open", closed = "force_closed" }

local function force_handler(m, ...)
  local what = ...
  local r = record(m)
  if what == nil then
    if r.forced then
      r.forced = nil
      m:fire("release")
    end
    return nil
  end
  local input = FORCE_INPUT[what]
  if input == nil then
    error(format("force: expected \"open\", \"closed\" or nil, got %s", describe(what)), 0)
  end
  r.forced = what
  m:fire(input)
  return nil
end

-- Options ---------------------------------------------------------------------------------


local MAX_CALLS = 10000000   -- window and min_calls: a ring of that many entries at the most

local RESERVED = {}
for _, k in ipairs(check.KEYS.state) do RESERVED[k] = "a state key" end
for _, k in ipairs(check.INSTANCE_FIELDS) do RESERVED[k] = "an instance field" end
for _, k in ipairs(check.INSTANCE_METHODS) do RESERVED[k] = "an instance method" end
for _, k in ipairs(breaker.BUILTIN_METHODS) do RESERVED[k] = "a method every breaker has" end

-- Every problem with the options at once, as "option: message"; the normalized options.
-- `want_target`: modal.breaker{} needs a target, modal.breaker.machine{} refuses one.
local function normalize(opts, want_target)
  local errs = {}
  local function bad(fmt, ...) errs[#errs + 1] = format(fmt, ...) end
  if type(opts) ~= "table" then
    return nil, { "expected a table of options, got " .. type(opts) }
  end
  local unknown = {}
  local known = {}
  for _, k in ipairs(breaker.OPTIONS) do known[k] = true end
  for k in next, opts do
    if not known[k] then unknown[#unknown + 1] = tostring(k) end
  end
  sort(unknown)
  for _, k in ipairs(unknown) do
    local near = check.nearest(k, breaker.OPTIONS)
    bad("%s: unknown option%s", k, near and format(" (did you mean '%s'?)", near) or "")
  end

  local P = {}
  local target = opts.target
  if want_target then
    if target == nil then
      bad("target: expected the instance to guard (any object with the methods), got nil")
    elseif type(target) ~= "table" and type(target) ~= "userdata" then
      bad("target: expected the instance to guard, got %s", describe(target))
    end
  elseif target ~= nil then
    bad("target: give it to M:new{ target = instance }, not to modal.breaker.machine")
  end

  if opts.name == nil then
    local M = (type(target) == "userdata" or type(target) == "table") and
      select(2, pcall(function() return target.machine end)) or nil
    local base = (type(M) == "userdata" or type(M) == "table") and select(2, pcall(function()
      return M.name end)) or nil
    P.name = type(base) == "string" and check.is_identifier(base .. "_breaker") and base .. "_breaker"
      or "breaker"
  elseif type(opts.name) ~= "string" or not check.is_identifier(opts.name) then
    bad("name: expected a Lua identifier (the machine's name), got %s", describe(opts.name))
  else
    P.name = opts.name
  end
  if opts.version ~= nil and not finite(opts.version) then
    bad("version: expected a number, got %s", describe(opts.version))
  end
  P.version = opts.version

  P.method_names = {}
  local methods = opts.methods
  if type(methods) ~= "table" or methods[1] == nil then
    bad("methods: expected a list of the target's method names, { \"get\", ... }, got %s",
      type(methods) == "table" and "an empty table" or describe(methods))
  else
    local seen = {}
    for k, name in next, methods do
      if not (math.type(k) == "integer" and k >= 1 and k <= #methods) then
        bad("methods: %s: expected a list of names, { \"get\", ... }", describe(k))
      elseif type(name) ~= "string" or not check.is_identifier(name) then
        bad("methods[%d]: a method name must be a Lua identifier, got %s", k, describe(name))
      elseif RESERVED[name] then
        bad("methods[%d]: '%s' is %s; choose another name", k, name, RESERVED[name])
      elseif seen[name] then
        bad("methods[%d]: '%s' is listed twice", k, name)
      else
        seen[name] = true
        P.method_names[#P.method_names + 1] = name
        if want_target and (type(target) == "table" or type(target) == "userdata") then
          local ok, fn = pcall(function() return target[name] end)
          if not ok or fn == nil then
            bad("methods[%d]: the target has no method '%s'", k, name)
          end
        end
      end
    end
  end

  local function number(k, default, ok, want)
    local v = opts[k]
    if v == nil then P[k] = default return end
    if not ok(v) then bad("%s: expected %s, got %s", k, want, describe(v)) end
    P[k] = v
  end
  local function calls(v) return whole(v) and v >= 1 and v <= MAX_CALLS end
  local function rate(v) return finite(v) and v > 0 and v <= 1 end
  local function positive(v) return finite(v) and v > 0 end

  if opts.window ~= nil and opts.window_time ~= nil then
    bad("window_time: give window (calls) or window_time (seconds), not both")
  end
  number("window_time", nil, positive, "a number of seconds > 0")
  number("window", not opts.window_time and breaker.DEFAULTS.window or nil, calls,
    "a whole number of calls from 1 to 10000000")
  number("min_calls", nil, calls, "a whole number of calls from 1 to 10000000")
  P.window = P.window and math.tointeger(P.window) or P.window
  P.min_calls = P.min_calls and math.tointeger(P.min_calls) or P.min_calls
  if P.min_calls == nil then
    P.min_calls = breaker.DEFAULTS.min_calls
    if P.window and whole(P.window) and P.window < P.min_calls then P.min_calls = P.window end
  elseif P.window and whole(P.window) and whole(P.min_calls) and P.min_calls > P.window then
    bad("min_calls: %d is more than the window's %d calls: the breaker could never open", P.min_calls,
      P.window)
  end
  number("failure_rate", breaker.DEFAULTS.failure_rate, rate, "a rate > 0 and <= 1")
  number("slow_call", nil, positive, "a number of seconds > 0")
  number("slow_rate", breaker.DEFAULTS.slow_rate, rate, "a rate > 0 and <= 1")
  if opts.slow_rate ~= nil and opts.slow_call == nil then
    bad("slow_rate: needs slow_call (the seconds a call must take more than to be slow)")
  end
  number("trials", breaker.DEFAULTS.trials, calls, "a whole number of calls >= 1")
  number("trial_timeout", breaker.DEFAULTS.trial_timeout, positive, "a number of seconds > 0")
  if opts.counts ~= nil and type(opts.counts) ~= "function" then
    bad("counts: expected function(failure) -> boolean, got %s", describe(opts.counts))
  end
  P.counts = opts.counts

  local w = opts.open_wait
  if w == nil then w = {} end
  for _, p in ipairs(backoff_lib._problems(w, "open_wait.")) do errs[#errs + 1] = p end
  if type(w) == "table" then
    local copy = {}
    for k, v in next, breaker.DEFAULTS.open_wait do copy[k] = v end
    for k, v in next, w do copy[k] = v end
    P.open_wait = copy
  end
  if #errs > 0 then return nil, errs end
  return P
end

-- The definition --------------------------------------------------------------------------

-- What M:new{...} was given, checked when a breaker is made: a target, and nothing else (the
-- options are the machine's). Logged at error, as the breaker is made all the same (its calls
-- then fail saying what is missing).
local function check_new(m, r, P)
  local data = m.data
  local problems = {}
  if type(data) == "table" then
    local unknown = {}
    for k in next, data do
      if k ~= "target" then unknown[#unknown + 1] = tostring(k) end
    end
    sort(unknown)
    local option = {}
    for _, k in ipairs(breaker.OPTIONS) do option[k] = true end
    for _, k in ipairs(unknown) do
      if option[k] then
        problems[#problems + 1] = format("'%s' is an option of modal.breaker.machine{...}, not of "
          .. "M:new (ignored)", k)
      else
        local near = check.nearest(k, { "target" })
        problems[#problems + 1] = format("unknown field '%s'%s", k,
          near and format(" (did you mean '%s'?)", near) or "")
      end
    end
  end
  if r.target == nil then
    problems[#problems + 1] = "no target (make it with M:new{ target = instance })"
  else
    local missing = {}
    for _, name in ipairs(P.method_names) do
      if r.fns[name] == nil then missing[#missing + 1] = "'" .. name .. "'" end
    end
    if #missing > 0 then
      problems[#problems + 1] = "its target has no method " .. concat(missing, ", ")
    end
  end
  if #problems > 0 then
    modal.log("error", who(m) .. ": M:new: " .. concat(problems, "; "))
  end
end

local function build(P)
  local methods = {}
  for i, n in ipairs(P.method_names) do methods[i] = n end
  methods[#methods + 1] = "force"

  local closed, open, half_open = { force = force_handler }, { force = force_handler },
    { force = force_handler }
  for _, n in ipairs(P.method_names) do
    closed[n] = closed_handler(n, P)
    open[n] = open_handler
    half_open[n] = half_open_handler(n, P)
  end

  closed.enter = function(m, from)
    local r = record(m, P)
    bind(m, r, P)
    if from == nil then check_new(m, r, P) end
    new_window(r, not r.forced)
    r.last = nil
    if from ~= nil then
      r.backoff:reset()             -- closing resets the open wait
      r.opened = nil
    end
  end
  closed.on = {
    trip = { to = "open", guard = current },
    force_open = "open",
    force_closed = "closed",
    release = { action = function(m) new_window(record(m, P), true) end },
  }

  open.enter = function(m)
    local r = record(m, P)
    new_period(r, false)
    if r.forced then
      r.opened = { cause = "forced" }
      r.delay, r.retry_at = nil, nil
    else
      if r.pending_open then r.opened = r.pending_open end
      r.delay = r.backoff:next()
      r.retry_at = now() + r.delay
    end
    r.pending_open = nil
  end
  open.exit = function(m) record(m, P).retry_at = nil end
  open.timeout = function(m)
    local r = record(m, P)
    if r.forced then return nil end
    return r.delay
  end
  open.on = {
    timeout = "half_open",
    force_open = "open",
    force_closed = "closed",
    release = "half_open",
  }

  half_open.enter = function(m)
    local w = new_period(record(m, P), true)
    w.used, w.ok, w.slow = 0, 0, 0
  end
  half_open.on = {
    trip = { to = "open", guard = current },
    recovered = { to = "closed", guard = current },
    force_open = "open",
    force_closed = "closed",
  }

  return {
    name = P.name, version = P.version, initial = "closed",
    methods = methods,
    inputs = { "trip", "recovered", "force_open", "force_closed", "release" },
    ignore = { "trip", "recovered", "force_open", "force_closed", "release" },
    states = { closed = closed, open = open, half_open = half_open },
  }
end

--- Makes a breaker's machine: a definition generated from `opts`, compiled by modal.machine;
-- `M:new{ target = instance }` makes breakers. A file returning it loads with modal.load and
-- reloads in place.
-- @tparam table opts the options of modal.breaker (doc/policies.md, "Breaker"), without
--   `target`; `name` defaults to "breaker".
-- @return the machine `M`.
-- @raise "modal.breaker: option: message" for every invalid option at once.
function breaker.machine(opts)
  local P, errs = normalize(opts, false)
  if not P then
    error("modal.breaker: " .. concat(errs, "\n  "), 2)
  end
  local def = build(P)
  policies[def] = P
  return modal.machine(def)          -- read at call time: `modal check` captures it
end

--- Makes a breaker in front of `opts.target`: an instance with the target's `methods` (each a
-- Deferred in every state) and `force`.
-- @tparam table opts `target` (the instance to guard), `methods` (the names to guard, a list),
--   and optionally `name` (default: the target machine's name .. "_breaker"), `version`,
--   `window` (calls, 20) or `window_time` (seconds), `min_calls` (20, at most `window`),
--   `failure_rate` (0.5), `slow_call` (seconds), `slow_rate` (1.0), `open_wait` (modal.backoff
--   options, `{ initial = 5, multiplier = 2, max = 60, jitter = 0.2 }`), `trials` (3),
--   `trial_timeout` (seconds, 30), `counts` (`function(failure) -> boolean`; default: every
--   failure but kind `cancelled`).
-- @return the breaker, an instance of a machine with states closed, open and half_open.
-- @raise "modal.breaker: option: message" for every invalid option at once.
function breaker.new(opts)
  local P, errs = normalize(opts, true)
  if not P then
    error("modal.breaker: " .. concat(errs, "\n  "), 2)
  end
  if opts.name == nil then policy.take_default_name(P) end   -- redis_breaker, redis_breaker_2
  local def = build(P)
  policies[def] = P
  local M = modal.machine(def)
  if type(M) == "table" then return M end   -- `modal check` captured the definition
  return M:new { target = opts.target }
end

--- Where a breaker stands: `{ state =, retry_in =, failure_rate =, slow_rate =, forced =, last =,
-- reason =, calls = (outcomes in the window), trials = { taken =, succeeded = } }`; what the
-- breaker's failures carry as `f.value` (with the window's rates while closed).
function breaker.status(b)
  policy.check_instance(b, policies, "status", "modal.breaker")
  local r = record(b)
  local _, value = standing(b, r)
  local w = r.period
  if w then take(w) end
  value.calls = w and (w.ring or w.wt) and w.n or 0
  if b.state == "half_open" and w then value.trials = { taken = w.used, succeeded = w.ok } end
  return value
end

return setmetatable(breaker, { __call = function(_, opts) return breaker.new(opts) end })
