--- lua/modal/service.lua — modal.service: a reconnecting client facade, generated as a machine
-- definition and driven by the core (doc/policies.md, "Service").
--
--   local Echo = modal.service {
--     name = "echo",
--     connect = function(m) return open(m.data.host, m.data.port, m) end,  -- Deferred(conn)
--     disconnect = function(m, conn) conn:close() end,
--     methods = { echo = function(m, conn, line) return conn:request(line) end },
--   }
--   local c = Echo:new { host = "127.0.0.1", port = 7000 }
--   c:echo("hi")          -- a Deferred, in every state
--
-- States: idle (initial) -> connecting -> ready; backoff between attempts; failed (final, a
-- fatal connect failure); closing -> closed (final). The generated definition is a plain
-- machine: modal check, modal graph, --trace, ctl status and hot reload work on it.
--
-- Where things live. Everything an instance must keep across a hot reload — its attempt count,
-- the last failure, its backoff, the live connection and the calls in flight on it — is in a
-- record per instance (`records`, weak keys), never in the definition's closures, so a reload
-- of a file returning modal.service{...} (new closures, new options) keeps it. The closures
-- of a definition use their own options; code that runs later from a timer or a callback
-- (keepalive, idle and stable timers, the drain, a late connection) reads the options of the
-- definition the instance has now (`policy_of`: M.definition -> options).
--
-- connect_now() acts once: its first run acts, then hands over to an inner call
-- c:connect_now(WAIT) (a private marker) that waits like any postponed call. A waiting call
-- is retried after every change of state, and a retry must not act again.
--
-- @module modal.service

local modal = require "modal"
local backoff_lib = require "modal.backoff"
local check = require "modal.check"
local policy = require "modal.policy"
local secs = policy.secs
local fields = policy.fields
local describe = policy.describe
local finite = policy.finite

local type, next, ipairs, pcall, tostring = type, next, ipairs, pcall, tostring
local getmetatable, setmetatable, rawequal = getmetatable, setmetatable, rawequal
local format, concat, sort = string.format, table.concat, table.sort
local floor = math.floor

local now, call_later, failure, is_failure = modal.now, modal.call_later, modal.failure, modal.is_failure
local deferred, fail = modal.deferred, modal.fail

local service = {}

--- The options modal.service takes, in documentation order.
service.OPTIONS = { "name", "version", "connect", "disconnect", "methods", "classify", "backoff",
  "connect_timeout", "close_timeout", "wait_for_ready", "fail_after", "idle_timeout", "stable_after",
  "keepalive", "max_postponed", "extend" }

--- Defaults (seconds).
service.DEFAULTS = { connect_timeout = 20, wait_for_ready = true, stable_after = 0,
  keepalive = { interval = 30, timeout = 10 } }

--- The methods every service adds to its own.
service.BUILTIN_METHODS = { "close", "connect_now" }

--- The inputs a service's states take (besides timeout, done and error).
service.INPUTS = { "connect", "close", "lost", "connect_now", "idle", "failed_waiting" }

local records = setmetatable({}, { __mode = "k" })   -- instance -> record
local policies = setmetatable({}, { __mode = "k" })  -- definition table -> options
local own_short = setmetatable({}, { __mode = "k" }) -- failure the service made -> short text

local WAIT = setmetatable({}, { __name = "modal.service wait marker",
  __tostring = function() return "(connect_now waiting)" end })

local DMT = getmetatable(deferred())
local function is_deferred(x)
  if type(x) ~= "userdata" then return false end
  local mt = getmetatable(x)
  return mt == DMT or (type(mt) == "table" and mt.__name == "modal.deferred")
end

-- Formatting ------------------------------------------------------------------------------


local function who(m) return policy.who(m, "service") end


-- The text "(last: ...)" shows for a failure: the short form of one the service made.
local function last_text(f)
  if f == nil then return nil end
  local short = own_short[f]
  if short then return short end
  if is_failure(f) then return f.message end
  return tostring(f)
end

-- Where the service stands: the message tail and f.value of every failure it makes.
local function standing(m, r, state)
  state = state or m.state
  local retry_in
  if state == "backoff" and r.retry_at then
    retry_in = r.retry_at - now()
    if retry_in < 0 then retry_in = 0 end
  end
  local value = { state = state, attempts = r.attempts, last = r.last, retry_in = retry_in }
  local parts = { who(m) }
  if state == "closed" or state == "closing" then
    parts[2] = " is " .. state
  else
    parts[2] = " in " .. state
  end
  if r.attempts > 0 then
    parts[#parts + 1] = format(" after %d failed attempt%s", r.attempts, r.attempts == 1 and "" or "s")
  end
  local lt = last_text(r.last)
  if lt then parts[#parts + 1] = " (last: " .. lt .. ")" end
  if retry_in then parts[#parts + 1] = "; next attempt in " .. secs(retry_in) .. " s" end
  return concat(parts), value
end

local function unavailable(m, r)
  local message, value = standing(m, r)
  return failure("unavailable", message, value)
end

local function stopped(m, r)
  local message, value = standing(m, r)
  return failure("stopped", message, value)
end

-- Records ---------------------------------------------------------------------------------

local function record(m)
  local r = records[m]
  if r == nil then
    r = { attempts = 0, last = nil, backoff = nil, backoff_src = nil, delay = nil, retry_at = nil,
          session = nil, attempt = nil, fatal = nil, failing = nil,
          gone = setmetatable({}, { __mode = "k" }) }
    records[m] = r
  end
  return r
end

local function policy_of(m)
  local M = m.machine
  return M and policies[M.definition]
end

local function backoff_of(r, P)
  local b = r.backoff
  if b == nil then
    b = backoff_lib.new(P.backoff)
  elseif r.backoff_src ~= P.backoff then
    b = b:_rebased(P.backoff)          -- a reloaded policy: its options, the same step
  end
  r.backoff, r.backoff_src = b, P.backoff
  return b
end

local function cancel_timer(h)
  if h then h:cancel() end
  return nil
end

-- Disconnecting ---------------------------------------------------------------------------

-- Hands conn to the policy's disconnect, once per connection; returns what it returned when
-- that is a Deferred (its failure is logged, never left unhandled).
local function hand_off(m, r, P, conn)
  if conn == nil then return nil end
  local gone = r.gone
  if type(conn) == "table" or type(conn) == "userdata" then
    if gone[conn] then return nil end
    gone[conn] = true
  end
  local data = m.data
  if data and rawequal(data.conn, conn) then data.conn = nil end
  local disconnect = P and P.disconnect
  if not disconnect then return nil end
  local ok, d = pcall(disconnect, m, conn)
  if not ok then
    modal.log("error", who(m) .. ": disconnect raised: " .. last_text(d), fields(m))
    return nil
  end
  if is_deferred(d) then
    d:add_errback(function(f)
      modal.log("warn", who(m) .. ": disconnect failed: " .. tostring(f), fields(m))
    end)
    return d
  end
  return nil
end

-- Connect attempts ------------------------------------------------------------------------

-- An attempt the service leaves without taking its connection: the job is cancelled (by the
-- core, or by the canceller below on a reload); a connection it delivered, or delivers later,
-- goes to disconnect once and is never used.
local function abandon(m, r)
  local a = r.attempt
  if a == nil then return end
  r.attempt = nil
  if a.claimed or a.abandoned then return end
  a.abandoned = true
  if a.conn ~= nil then hand_off(m, r, policy_of(m), a.conn) end
end

local function attempt_ok(conn, a, job)
  if a.abandoned then
    local m = a.m
    hand_off(m, records[m] or record(m), policy_of(m), conn)   -- late: never used
    return nil
  end
  a.conn = conn
  job:callback(conn)
  return nil
end

local function attempt_failed(f, a, job)
  if not a.abandoned then job:errback(f) end
  return nil
end

local function start_attempt(m, P)
  local r = record(m)
  abandon(m, r)
  local a = { m = m, conn = nil, claimed = false, abandoned = false }
  r.attempt = a
  local d = P.connect(m)                 -- raises: rule 9 makes it input error
  if is_failure(d) then return fail(d) end
  if not is_deferred(d) then
    if d == nil then
      return fail("error",
        "connect returned nothing: it returns a Deferred of the connection, or the connection")
    end
    a.conn = d
    return d                             -- connected at once
  end
  local job = deferred(function()
    if not a.claimed then a.abandoned = true end
    d:cancel()
  end)
  d:add_callbacks(attempt_ok, attempt_failed, a, job)
  return job
end

-- Calls in flight -------------------------------------------------------------------------

local function settled(v, sess)
  local n = sess.inflight - 1
  sess.inflight = n
  local t = now()
  sess.last_active = t
  if not is_failure(v) or (v.kind ~= "cancelled" and v.kind ~= "timeout") then
    sess.last_reply = t
  end
  if n == 0 and sess.on_drained then
    call_later(0, sess.on_drained)        -- after this answer has reached its caller
  end
  return v
end

-- Two ways to know the calls in flight. With idle_timeout or keepalive, every call's Deferred
-- gets a link (settled) that counts it and times the last answer. Without them only close()
-- needs to know, so the hot path just lists what the bodies returned, and closing links what
-- is still pending then. The list is pruned when it has doubled: the answered calls at its
-- head go (answers mostly come in call order); when its middle has been answered too (a call
-- stuck at the head), it is compacted. Amortized O(1) per call, a couple of state() reads.
local state_of = DMT.__index and DMT.__index.state or function(d) return d:state() end

local function pending(d)
  if getmetatable(d) == DMT then return state_of(d) == "pending" end   -- the usual case
  return is_deferred(d) and state_of(d) == "pending"
end

local function prune(sess)
  local calls, head, n = sess.calls, sess.head, sess.ncalls
  while head <= n and not pending(calls[head]) do
    calls[head] = nil
    head = head + 1
  end
  local live = n - head + 1
  if live > 1 and not pending(calls[head + live // 2]) then
    local k = 0
    for i = head, n do
      local d = calls[i]
      calls[i] = nil
      if pending(d) then
        k = k + 1
        calls[k] = d
      end
    end
    head, n, live = 1, k, k
  elseif head > n then
    head, n = 1, 0
  end
  sess.head, sess.ncalls = head, n
  sess.prune_at = n + (live < 64 and 64 or live)
end

local function make_body_handler(body, watched)
  if watched then
    return function(m, ...)
      local sess = records[m].session
      sess.last_active = now()
      local d = body(m, sess.conn, ...)
      if is_deferred(d) then
        sess.inflight = sess.inflight + 1
        d:add_both(settled, sess)
      end
      return d
    end
  end
  -- A body with a fixed parameter list gets a wrapper without varargs (the same arguments
  -- reach it: a body without `...` drops the extra ones either way).
  local info = debug.getinfo(body, "u")
  local nargs = (not info.isvararg and info.nparams >= 2) and info.nparams - 2 or nil
  local function listed(sess, d)
    if d ~= nil then
      local k = sess.ncalls + 1
      sess.calls[k] = d
      sess.ncalls = k
      if k >= sess.prune_at then prune(sess) end
    end
    return d
  end
  if nargs == 0 then
    return function(m)
      local sess = records[m].session
      return listed(sess, body(m, sess.conn))
    end
  elseif nargs == 1 then
    return function(m, a)
      local sess = records[m].session
      local d = body(m, sess.conn, a)
      if d ~= nil then
        local k = sess.ncalls + 1
        sess.calls[k] = d
        sess.ncalls = k
        if k >= sess.prune_at then prune(sess) end
      end
      return d
    end
  elseif nargs == 2 then
    return function(m, a, b)
      local sess = records[m].session
      return listed(sess, body(m, sess.conn, a, b))
    end
  end
  return function(m, ...)
    local sess = records[m].session
    return listed(sess, body(m, sess.conn, ...))
  end
end

-- From the listed calls to linked ones (closing counts what is in flight).
local function watch_calls(sess)
  local calls = sess.calls
  if calls == nil then return end
  sess.calls = nil
  for i = sess.head, sess.ncalls do
    local d = calls[i]
    if pending(d) then
      sess.inflight = sess.inflight + 1
      d:add_both(settled, sess)
    end
  end
  sess.ncalls = 0
end

-- Timers in ready -------------------------------------------------------------------------

local idle_tick, keepalive_tick

idle_tick = function(m, sess)
  local P = policy_of(m)
  if not sess.current or not P or not P.idle_timeout then return end
  local left = P.idle_timeout
  if sess.inflight == 0 then
    left = sess.last_active + P.idle_timeout - now()
    if left <= 0 then
      sess.idle_timer = nil
      m:fire("idle")
      return
    end
  end
  sess.idle_timer = call_later(left, idle_tick, m, sess)
end

local function keepalive_lost(m, sess, f, timeout)
  if not sess.current then return end
  local r = records[m]
  local text
  if f and f.kind == "timeout" then
    text = format("keepalive: no answer to a ping within %s s", secs(timeout))
  else
    text = "keepalive: ping failed: " .. (last_text(f) or "?")
  end
  local lost = failure(f and f.kind == "timeout" and "timeout" or "unavailable", who(m) .. " " .. text,
    { state = "ready", attempts = r and r.attempts or 0, last = f, retry_in = nil })
  own_short[lost] = text
  m:fire("lost", lost, sess.conn)
end

local function ping_answered(v, m, sess, timeout)
  sess.pinging = nil
  if not sess.current then return nil end
  if is_failure(v) then
    keepalive_lost(m, sess, v, timeout)
    return nil
  end
  sess.last_reply = now()
  keepalive_tick(m, sess)
  return nil
end

keepalive_tick = function(m, sess)
  sess.ka_timer = nil
  local P = policy_of(m)
  if not sess.current or not P or not P.keepalive or sess.pinging then return end
  local ka = P.keepalive
  local left = sess.last_reply + ka.interval - now()
  if left > 0 then
    sess.ka_timer = call_later(left, keepalive_tick, m, sess)
    return
  end
  local ok, d = pcall(ka.ping, m, sess.conn)
  if not ok then
    keepalive_lost(m, sess, failure("error", "ping raised: " .. last_text(d)), ka.timeout)
    return
  end
  if not is_deferred(d) then
    if is_failure(d) then keepalive_lost(m, sess, d, ka.timeout) return end
    d = modal.succeed(d)
  end
  sess.pinging = d
  d:add_timeout(ka.timeout)
  d:add_both(ping_answered, m, sess, ka.timeout)
end

local function stable_tick(m, sess)
  sess.stable_timer = nil
  local r = records[m]
  local P = policy_of(m)
  if not sess.current or not r or not P then return end
  r.attempts, r.last = 0, nil        -- the failures before this connection explain nothing now
  backoff_of(r, P):reset()
end

local function stop_session_timers(sess)
  sess.idle_timer = cancel_timer(sess.idle_timer)
  sess.ka_timer = cancel_timer(sess.ka_timer)
  sess.stable_timer = cancel_timer(sess.stable_timer)
  if sess.pinging then
    local d = sess.pinging
    sess.pinging = nil
    d:cancel()
  end
end

-- Closing ---------------------------------------------------------------------------------

local function closing_job(m, P)
  local r = record(m)
  local sess = r.session
  if sess == nil then return true end
  watch_calls(sess)
  local job = deferred()
  local done = false
  local function finish()
    if job:state() == "pending" then job:callback(nil) end
  end
  local function disconnect_now()
    if done then return end
    done = true
    sess.on_drained = nil
    sess.drain_timer = cancel_timer(sess.drain_timer)
    local d = hand_off(m, r, P, sess.conn)
    r.session = nil
    if d then
      d:add_timeout(P.connect_timeout)
      d:add_both(finish)
    else
      finish()
    end
  end
  if sess.inflight > 0 then
    sess.on_drained = disconnect_now
    sess.drain_timer = call_later(P.close_timeout, disconnect_now)
  else
    disconnect_now()
  end
  return job
end

-- Options ---------------------------------------------------------------------------------



local RESERVED = {}
for _, k in ipairs(check.KEYS.state) do RESERVED[k] = "a state key" end
for _, k in ipairs(check.INSTANCE_FIELDS) do RESERVED[k] = "an instance field" end
for _, k in ipairs(check.INSTANCE_METHODS) do RESERVED[k] = "an instance method" end
for _, k in ipairs(service.BUILTIN_METHODS) do RESERVED[k] = "a method every service has" end

-- Every problem with the options at once, as "option: message"; the normalized options.
local function normalize(opts)
  local errs = {}
  local function bad(fmt, ...) errs[#errs + 1] = format(fmt, ...) end
  if type(opts) ~= "table" then
    return nil, { "expected a table of options, got " .. type(opts) }
  end
  local known = {}
  for _, k in ipairs(service.OPTIONS) do known[k] = true end
  local unknown = {}
  for k in next, opts do
    if not known[k] then unknown[#unknown + 1] = tostring(k) end
  end
  sort(unknown)
  for _, k in ipairs(unknown) do
    local near = check.nearest(k, service.OPTIONS)
    bad("%s: unknown option%s", k, near and format(" (did you mean '%s'?)", near) or "")
  end

  local P = {}
  if type(opts.name) ~= "string" or not check.is_identifier(opts.name) then
    bad("name: expected a Lua identifier (the machine's name), got %s", describe(opts.name))
  end
  P.name = opts.name
  if opts.version ~= nil and not finite(opts.version) then
    bad("version: expected a number, got %s", describe(opts.version))
  end
  P.version = opts.version
  if type(opts.connect) ~= "function" then
    bad("connect: expected function(m) -> Deferred(connection), got %s", describe(opts.connect))
  end
  P.connect = opts.connect
  for _, k in ipairs { "disconnect", "classify", "extend" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      bad("%s: expected a function, got %s", k, describe(opts[k]))
    end
    P[k] = opts[k]
  end

  P.method_names, P.methods = {}, {}
  if type(opts.methods) ~= "table" then
    bad("methods: expected a table { name = function(m, conn, ...) }, got %s", describe(opts.methods))
  else
    for k, v in next, opts.methods do
      if type(k) ~= "string" or not check.is_identifier(k) then
        bad("methods: %s: a method name must be a Lua identifier", describe(k))
      elseif RESERVED[k] then
        bad("methods.%s: '%s' is %s; choose another name", k, k, RESERVED[k])
      elseif type(v) ~= "function" then
        bad("methods.%s: expected function(m, conn, ...), got %s", k, describe(v))
      else
        P.method_names[#P.method_names + 1] = k
        P.methods[k] = v
      end
    end
    sort(P.method_names)
  end

  local function seconds(k, default, min_exclusive)
    local v = opts[k]
    if v == nil then P[k] = default return end
    if not finite(v) or v < 0 or (min_exclusive and v == 0) then
      bad("%s: expected a number of seconds %s, got %s", k, min_exclusive and "> 0" or ">= 0", describe(v))
    end
    P[k] = v
  end
  seconds("connect_timeout", service.DEFAULTS.connect_timeout, true)
  seconds("close_timeout", nil, false)
  if P.close_timeout == nil then P.close_timeout = P.connect_timeout end
  seconds("idle_timeout", nil, true)
  seconds("stable_after", service.DEFAULTS.stable_after, false)

  if opts.wait_for_ready == nil then
    P.wait_for_ready = service.DEFAULTS.wait_for_ready
  elseif type(opts.wait_for_ready) ~= "boolean" then
    bad("wait_for_ready: expected a boolean, got %s", describe(opts.wait_for_ready))
  else
    P.wait_for_ready = opts.wait_for_ready
  end

  if opts.fail_after ~= nil and (math.type(opts.fail_after) ~= "integer" and
      not (finite(opts.fail_after) and opts.fail_after == floor(opts.fail_after)) or
      not finite(opts.fail_after) or opts.fail_after < 1) then
    bad("fail_after: expected a whole number of attempts >= 1, got %s", describe(opts.fail_after))
  end
  P.fail_after = opts.fail_after

  if opts.max_postponed ~= nil and (math.type(opts.max_postponed) ~= "integer" or opts.max_postponed < 0) then
    bad("max_postponed: expected a whole number >= 0, got %s", describe(opts.max_postponed))
  end
  P.max_postponed = opts.max_postponed

  local b = opts.backoff
  if b == nil then b = {} end
  for _, p in ipairs(backoff_lib._problems(b, "backoff.")) do errs[#errs + 1] = p end
  if type(b) == "table" then
    local copy = {}
    for k, v in next, b do copy[k] = v end
    P.backoff = copy
  end

  local ka = opts.keepalive
  if ka ~= nil then
    if type(ka) ~= "table" then
      bad("keepalive: expected a table { ping = function(m, conn), interval =, timeout = }, got %s",
        describe(ka))
    else
      for k in next, ka do
        if k ~= "ping" and k ~= "interval" and k ~= "timeout" then
          local near = check.nearest(tostring(k), { "ping", "interval", "timeout" })
          bad("keepalive.%s: unknown option%s", tostring(k), near and format(" (did you mean '%s'?)",
            near) or "")
        end
      end
      if type(ka.ping) ~= "function" then
        bad("keepalive.ping: expected function(m, conn) -> Deferred, got %s", describe(ka.ping))
      end
      local k2 = { ping = ka.ping, interval = service.DEFAULTS.keepalive.interval,
                   timeout = service.DEFAULTS.keepalive.timeout }
      for _, k in ipairs { "interval", "timeout" } do
        if ka[k] ~= nil then
          if not finite(ka[k]) or ka[k] <= 0 then
            bad("keepalive.%s: expected a number of seconds > 0, got %s", k, describe(ka[k]))
          end
          k2[k] = ka[k]
        end
      end
      P.keepalive = k2
    end
  end
  if #errs > 0 then return nil, errs end
  return P
end

-- The definition --------------------------------------------------------------------------

local function guard_current_conn(m, _, conn)
  if conn == nil then return true end
  local r = records[m]
  return not (r and r.gone[conn])
end

local function build(P)
  local names = P.method_names
  local methods = {}
  for i, n in ipairs(names) do methods[i] = n end
  methods[#methods + 1] = "close"
  methods[#methods + 1] = "connect_now"

  -- Handlers shared by every user method, per state.
  local function start_and_wait(m) m:fire("connect"); return m:postpone() end
  -- close() waits through when("closed"), not the postponed queue: a full queue must not
  -- make it fail with overloaded.
  local function nothing() return nil end
  local function wait_closed(m) return m:when("closed"):add_callback(nothing) end
  local function close_and_wait(m) m:fire("close"); return wait_closed(m) end
  local function fatal(m) return record(m).fatal end
  local function closed_call(m) return stopped(m, record(m)) end
  local function closed_fine() return nil end
  local function backoff_call(m)
    local r = record(m)
    if r.failing then return r.failing(m, r) end
    if not P.wait_for_ready then return unavailable(m, r) end
    return m:postpone()
  end

  local idle, connecting, ready, backoff, failed, closing, closed = {}, {}, {}, {}, {}, {}, {}
  local watched = (P.idle_timeout or P.keepalive) and true or false
  for _, n in ipairs(names) do
    idle[n] = start_and_wait
    connecting[n] = "postpone"
    ready[n] = make_body_handler(P.methods[n], watched)
    backoff[n] = backoff_call
    failed[n] = fatal
    closing[n] = closed_call
    closed[n] = closed_call
  end

  -- close()
  idle.close, connecting.close, ready.close, backoff.close = close_and_wait, close_and_wait, close_and_wait,
    close_and_wait
  closing.close = wait_closed
  failed.close, closed.close = closed_fine, closed_fine

  -- connect_now(): acts once, then waits as c:connect_now(WAIT)
  idle.connect_now = function(m, w)
    if w ~= WAIT then m:fire("connect") end
    return m:postpone()
  end
  connecting.connect_now = function(m, w)
    if w == WAIT then return m:postpone() end
    return m:connect_now(WAIT)
  end
  ready.connect_now = function(m) return m end
  backoff.connect_now = function(m, w)
    if w == WAIT then return backoff_call(m) end
    m:fire("connect_now")
    return m:postpone()
  end
  failed.connect_now = fatal
  closing.connect_now = closed_call
  closed.connect_now = closed_call

  -- idle
  idle.enter = function(m) abandon(m, record(m)) end
  idle.on = { connect = "connecting", close = "closing" }

  -- connecting
  connecting.run = function(m) return start_attempt(m, P) end
  connecting.timeout = P.connect_timeout
  connecting.exit = function(m, _, input)
    if input ~= "done" then abandon(m, record(m)) end
  end
  local function attempt_failed_action(m, f)
    local r = record(m)
    r.attempts = r.attempts + 1
    r.last = f
    r.after_attempt = true
  end
  local function is_fatal(m, f)
    if not P.classify then return false end
    local ok, verdict = pcall(P.classify, f)
    if not ok then
      modal.log("error", who(m) .. ": classify raised: " .. last_text(verdict) .. " (counted as retry)",
        fields(m))
      return false
    end
    if verdict ~= "fatal" and verdict ~= "retry" and verdict ~= nil then
      modal.log("warn", who(m) .. ": classify returned " .. describe(verdict) ..
        " (expected \"fatal\" or \"retry\"; counted as retry)", fields(m))
    end
    return verdict == "fatal"
  end
  connecting.on = {
    done = { to = "ready", action = function(m, conn)
      local r = record(m)
      local a = r.attempt
      if a then a.claimed = true; a.conn = conn end
      r.attempt = nil
      r.connected = conn
    end },
    -- Without classify no failure is fatal: no branch to failed (nor the state itself), so
    -- the definition shows, and a path search finds, only what the service can do.
    error = P.classify and {
      { to = "failed", guard = is_fatal, action = function(m, f)
        local r = record(m)
        r.attempts = r.attempts + 1
        r.last = f
        r.fatal = f
      end },
      { to = "backoff", action = attempt_failed_action },
    } or { to = "backoff", action = attempt_failed_action },
    timeout = { to = "backoff", action = function(m)
      local r = record(m)
      local n = r.attempts + 1
      local f = failure("timeout", format("%s connect attempt %d timed out after %s s", who(m), n,
        secs(P.connect_timeout)), { state = "connecting", attempts = n, last = r.last, retry_in = nil })
      own_short[f] = format("connect timed out after %s s", secs(P.connect_timeout))
      attempt_failed_action(m, f)
    end },
    lost = { to = "backoff", guard = guard_current_conn, action = function(m, f, conn)
      if not is_failure(f) then f = failure("unavailable", "connection lost during its handshake") end
      attempt_failed_action(m, f)
      if conn ~= nil then hand_off(m, record(m), P, conn) end    -- the handshake's connection
    end },
    close = "closing",
  }

  -- ready
  ready.enter = function(m, _, input, conn)
    local r = record(m)
    if input ~= "done" then conn = r.connected end
    r.connected = nil
    local t = now()
    local sess = { conn = conn, inflight = 0, last_active = t, last_reply = t, current = true,
                   calls = not watched and {} or nil, head = 1, ncalls = 0, prune_at = 64 }
    r.session = sess
    m.data.conn = conn
    if P.stable_after > 0 then
      sess.stable_timer = call_later(P.stable_after, stable_tick, m, sess)
    else
      r.attempts, r.last = 0, nil      -- as stable_tick: a connection clears the failures
      backoff_of(r, P):reset()
    end
    if P.idle_timeout then sess.idle_timer = call_later(P.idle_timeout, idle_tick, m, sess) end
    if P.keepalive then sess.ka_timer = call_later(P.keepalive.interval, keepalive_tick, m, sess) end
  end
  ready.exit = function(m, to)
    local r = record(m)
    local sess = r.session
    if sess == nil then return end
    sess.current = false
    stop_session_timers(sess)
    if to ~= "closing" then
      r.session = nil
      hand_off(m, r, P, sess.conn)
    end
  end
  ready.on = {
    lost = { to = "backoff", guard = function(m, _, conn)
      local r = records[m]
      return conn == nil or (r and r.session and rawequal(r.session.conn, conn)) or false
    end, action = function(m, f)
      local r = record(m)
      if not is_failure(f) then f = failure("unavailable", "connection lost") end
      r.last = f
      r.after_attempt = false
    end },
    idle = "idle",
    close = "closing",
  }

  -- backoff
  backoff.enter = function(m)
    local r = record(m)
    abandon(m, r)
    local b = backoff_of(r, P)
    r.delay = b:next()
    r.retry_at = now() + r.delay
    r.failing = nil
    if P.wait_for_ready and P.fail_after and r.after_attempt and r.attempts >= P.fail_after then
      local last = r.last
      r.failing = function(mm, rr)
        local _, value = standing(mm, rr)
        return failure(is_failure(last) and last.kind or "unavailable",
          is_failure(last) and last.message or tostring(last), value)
      end
      m:fire("failed_waiting")
    end
    r.after_attempt = false
  end
  backoff.timeout = function(m) return record(m).delay end
  backoff.on = {
    timeout = "connecting",
    connect_now = { to = "connecting", action = function(m) backoff_of(record(m), P):reset() end },
    failed_waiting = { action = function(m) record(m).failing = nil end },
    close = "closing",
  }
  backoff.exit = function(m) local r = record(m); r.failing = nil; r.retry_at = nil end

  -- failed
  failed.final = true
  failed.enter = function(m) abandon(m, record(m)) end

  -- closing
  closing.enter = function(m) abandon(m, record(m)) end
  closing.run = function(m) return closing_job(m, P) end
  closing.on = { done = "closed", error = "closed" }
  -- A second close() may fire its input before the first one's is handled (both called
  -- while the instance is busy): once closing, or closed or failed, it is already done.
  closing.ignore, closed.ignore, failed.ignore = { "close" }, { "close" }, { "close" }

  -- closed
  closed.final = true
  closed.enter = function(m)
    local r = record(m)
    abandon(m, r)
    local sess = r.session
    if sess then
      stop_session_timers(sess)
      if sess.drain_timer then sess.drain_timer = cancel_timer(sess.drain_timer) end
      sess.current = false
      r.session = nil
      hand_off(m, r, P, sess.conn)
    end
  end

  return {
    name = P.name, version = P.version, initial = "idle",
    methods = methods,
    inputs = { "connect", "lost", "connect_now", "idle", "failed_waiting" },
    ignore = { "connect", "lost", "connect_now", "idle", "failed_waiting" },
    max_postponed = P.max_postponed,
    -- a reload that drops classify (and so failed) finds a failed instance a final home
    migrate = not P.classify and function(_, old) if old == "failed" then return "closed" end end or nil,
    states = { idle = idle, connecting = connecting, ready = ready, backoff = backoff,
               failed = P.classify and failed or nil, closing = closing, closed = closed },
  }
end

--- Makes a service: a machine definition generated from `opts`, compiled by modal.machine.
-- After Twisted's ClientService and gRPC's channel connectivity (backoff, wait-for-ready or
-- fail-fast); doc/policies.md has the states and every option.
-- @tparam table opts
--   `name` (identifier), `connect` (`function(m) -> Deferred(conn)`; it receives the instance
--   to wire `m:fire("lost", failure[, conn])`), `methods` (`{ name = function(m, conn, ...) }`),
--   and optionally `version`, `disconnect` (`function(m, conn)`, may return a Deferred),
--   `classify` (`function(failure) -> "fatal" | "retry"`), `backoff` (modal.backoff options),
--   `connect_timeout` (seconds, 20), `close_timeout` (seconds, connect_timeout),
--   `wait_for_ready` (true), `fail_after` (attempts), `idle_timeout` (seconds),
--   `stable_after` (seconds, 0), `keepalive` (`{ ping = function(m, conn) -> Deferred,
--   interval = 30, timeout = 10 }`), `max_postponed`, `extend` (`function(def) -> def`).
-- @return the machine `M` (as modal.machine returns it); `M:new(data)` makes instances.
-- @raise "modal.service: option: message" for every invalid option at once; modal.machine's
--   errors when `extend` made the definition invalid.
function service.new(opts)
  local P, errs = normalize(opts)
  if not P then
    error("modal.service: " .. concat(errs, "\n  "), 2)
  end
  local def = build(P)
  if P.extend then
    local got = P.extend(def)
    if got ~= nil then
      if type(got) ~= "table" then
        error("modal.service: extend: expected it to return the definition table (or nothing), got " ..
          type(got), 2)
      end
      def = got
    end
  end
  policies[def] = P
  return modal.machine(def)          -- read at call time: `modal check` captures it
end

--- Where an instance of a service stands: `{ state =, attempts =, last =, retry_in = }`, what
-- the failures the service makes carry as `f.value`.
-- @param c an instance of a service
-- @treturn table `state` (a name), `attempts` (failed in a row), `last` (the last failure, or
--   nil), `retry_in` (seconds to the next attempt, or nil)
function service.status(c)
  policy.check_instance(c, policies, "status", "modal.service")
  local r = records[c]
  if r == nil then return { state = c.state, attempts = 0 } end
  local _, value = standing(c, r)
  return value
end

service._WAIT = WAIT

return setmetatable(service, { __call = function(_, opts) return service.new(opts) end })
