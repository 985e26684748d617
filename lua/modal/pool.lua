--- lua/modal/pool.lua — modal.pool: worker processes started on demand, one call at a time
-- each, generated as a machine definition and driven by the core (doc/policies.md, "Pool").
--
--   local p = modal.pool { cmd = { "lua5.4", "worker.lua" }, size = 4 }
--   p:call("line")        -- a Deferred: the worker's answer line, in every state
--   p:close()             -- a Deferred fired once every worker is killed and reaped
--
-- States: idle (initial: no worker runs) -> running (workers start on demand, at most `size`;
-- calls wait for a free one) -> failed (more than max_restarts crashes within restart_window:
-- calls fail at once until p:reset()) ; closing -> closed (final). The generated definition
-- is a plain machine: modal check, modal graph, --trace, ctl status and hot reload work on it
-- (modal.pool.machine{...} returns it; M:new() makes a pool).
--
-- Where things live. The workers, the calls waiting for one, the restart history and the
-- backoff are in a record per instance (`records`, weak keys), never in the definition's
-- closures, so a reload keeps them; work that runs later from a callback reads the options of
-- the definition the instance has now (r.P, updated by every handler and hook).
--
-- The loop. A free worker's handles are unref'd: idle workers never keep a program running. A
-- worker holding a call, or being stopped, is ref'd until it answers or is reaped. Processes
-- are real, so the timers about them (SIGKILL after kill_timeout, the wait for a dead worker's
-- pipes) are luv's; the policy's own timers (restart backoff, idle_timeout, the backoff's
-- reset) are modal's, and so run on a testing clock.
--
-- @module modal.pool

local modal = require "modal"
local uv = require "luv"
local backoff_lib = require "modal.backoff"
local check = require "modal.check"
local policy = require "modal.policy"
local secs = policy.secs
local fields = policy.fields
local describe = policy.describe
local finite = policy.finite
local whole = policy.whole

local type, next, ipairs, pcall, tostring = type, next, ipairs, pcall, tostring
local getmetatable, setmetatable = getmetatable, setmetatable
local format, concat, sort, find, sub = string.format, table.concat, table.sort, string.find, string.sub
local floor, remove = math.floor, table.remove

local now, call_later, failure = modal.now, modal.call_later, modal.failure
local deferred = modal.deferred

local pool = {}

--- The options modal.pool takes, in documentation order.
pool.OPTIONS = { "cmd", "name", "version", "size", "encode", "decode", "idle_timeout", "backoff",
  "max_restarts", "restart_window", "max_queued", "kill_timeout", "stderr_lines", "cwd", "env" }

--- Defaults (seconds, workers, calls).
pool.DEFAULTS = { size = 4, backoff = { initial = 0.5, multiplier = 2, max = 30, jitter = 0 },
  max_restarts = 5, restart_window = 30, max_queued = 10000, kill_timeout = 2, stderr_lines = 5 }

--- The methods of every pool.
pool.METHODS = { "call", "close", "reset" }

local records = setmetatable({}, { __mode = "k" })   -- instance -> record
local policies = setmetatable({}, { __mode = "k" })  -- definition table -> options
local live = setmetatable({}, { __mode = "k" })      -- record -> true: pools with workers

local DMT = getmetatable(deferred())
local FMT = getmetatable(failure("error", "probe"))
local callback, errback = DMT.__index.callback, DMT.__index.errback

local SIGNALS = {}
for k, v in next, uv.constants or {} do
  if type(k) == "string" and k:match("^SIG%u+$") and k ~= "SIGIOT" and k ~= "SIGPOLL" then SIGNALS[v] = k end
end

-- Formatting ------------------------------------------------------------------------------


local function who(m) return policy.who(m, "pool") end



-- "exited with status 3", "killed by SIGKILL (signal 9)".
local function how_it_ended(w)
  if w.spawn_error then return "could not start: " .. w.spawn_error end
  if w.signal and w.signal ~= 0 then
    return format("killed by %s (signal %d)", SIGNALS[w.signal] or "a signal", w.signal)
  end
  if w.code == nil then return "ended" end
  return format("exited with status %d", w.code)
end

local function stderr_tail(w)
  local lines = w.errlines
  if lines == nil or #lines == 0 then return nil end
  local q = {}
  for i, l in ipairs(lines) do q[i] = l:gsub("%c", " "):match("^%s*(.-)%s*$") end
  return concat(q, " | ")
end

-- Records ---------------------------------------------------------------------------------

local canceller_of    -- (r) -> the canceller of r's calls (Calls, below)
local folder_problem -- (path) -> what is wrong with it as a cwd, or nil (Options, below)

local function policy_of(m)
  local M = m.machine
  return M and policies[M.definition]
end

local function record(m, P)
  local r = records[m]
  if r == nil then
    r = { m = m, P = nil, workers = {}, nworkers = 0, free = {}, qd = {}, qb = {}, head = 1, tail = 0,
          nqueued = 0, cancelled = {}, ncancelled = 0, running = false, backoff = nil, restart_at = nil,
          restart_timer = nil, crashes = {}, restarts = 0, diagnosis = nil, last = nil, close_job = nil }
    r.cancel = canceller_of(r)
    records[m] = r
  end
  P = P or policy_of(m)
  if P and r.P ~= P then
    local old = r.P
    r.P = P
    if r.backoff == nil then
      r.backoff = backoff_lib.new(P.backoff)
    elseif old and old.backoff ~= P.backoff then
      r.backoff = r.backoff:_rebased(P.backoff)
    end
  end
  return r
end

-- Workers ---------------------------------------------------------------------------------
--
-- A worker: w.r (its pool's record), w.pid, w.handle and its pipes, w.state ("up", "stopping"
-- or "gone"), w.call (the Deferred of the call it holds), w.buf (stdout not yet decoded),
-- w.errlines (the last lines of its stderr), w.exited, w.code, w.signal, w.open (pipes not at
-- EOF yet), w.started (modal.now() at spawn), w.reason (why we stopped it).

local pump, finalize, stop_worker

local function close_handle(h)
  if h and not h:is_closing() then h:close() end
end

local function stop_timer(t)
  if t then
    if not t:is_closing() then t:stop(); t:close() end
  end
  return nil
end

local function cancel_later(h)
  if h then h:cancel() end
  return nil
end

local function hold(w)                   -- a worker with work keeps the loop alive
  if w.handle and not w.handle:is_closing() then w.handle:ref() end
end

local function let_go(w)
  if w.handle and not w.handle:is_closing() then w.handle:unref() end
end

-- The signal that ended w, or nil (luv reports 0 for a normal exit).
local function killed_by(w)
  local signal = w.signal
  if signal and signal ~= 0 then return signal end
  return nil
end

-- The failure a dead worker's held call fails with (kind worker).
local function worker_failure(m, r, w, text)
  local tail = stderr_tail(w)
  local msg = format("%s worker pid %s %s%s%s", who(m), tostring(w.pid or "-"), how_it_ended(w),
    text or "", tail and "; last stderr: " .. tail or "")
  local signal = killed_by(w)
  return failure("worker", msg, { pid = w.pid, status = w.code, signal = signal,
    signal_name = signal and SIGNALS[signal] or nil, restarts = r.restarts_in_window or 0,
    stderr = w.errlines, state = m.state })
end

-- An answer w wrote while it held no call — free, or the call it held was answered by an
-- earlier line that came with it: logged and dropped, never handed to a later call.
local function stray(w, v)
  if w.state ~= "up" then return end
  local shown = type(v) == "string" and format("%q", #v > 200 and sub(v, 1, 200) .. "..." or v)
    or describe(v)
  modal.log("warn", format("worker pid %d wrote an answer while it held no call (dropped): %s",
    w.pid, shown), fields(w.r.m))
end

-- An answer from w (decoded): the call it held succeeds (or fails, when decode made a failure),
-- and w takes the next waiting call or becomes free.
local function answer(w, v)
  local d = w.call
  if d == nil then return stray(w, v) end
  w.call = nil
  local r = w.r
  if w.retire then
    stop_worker(w, "failed")
  elseif r.nqueued > 0 and r.ncancelled == 0 then
    local head = r.head                -- the next waiting call, inline (W9): no entry is skipped
    local qd, qb = r.qd, r.qb
    local nd, bytes = qd[head], qb[head]
    qd[head], qb[head] = nil, nil
    if head == r.tail then r.head, r.tail = 1, 0 else r.head = head + 1 end
    r.nqueued = r.nqueued - 1
    w.call = nd
    w.calls = w.calls + 1
    w.stdin:write(bytes)
  else
    pump(r, w)
  end
  if getmetatable(v) == FMT then errback(d, v) else callback(d, v) end
end

-- Answers are matched as they arrive: an answer belongs to the call w held when its first byte
-- came (`owner`: w.call on arrival; w.buf_owner for bytes kept from an earlier read). Only
-- that call, if w still holds it, takes it; any other answer — written while w held no call, or
-- after the answer to the call it held, in the same read — is a stray. A call handed to w while
-- a read is being matched (the next waiting call, or one made by a callback) never takes a line
-- of that read.

-- The default decoding: one answer per line, without its "\n".
local function on_lines(w, data)
  local owner = w.call
  local mine = owner
  local buf = w.buf
  if buf ~= "" then data, mine = buf .. data, w.buf_owner end
  local at = 1
  while true do
    local i = find(data, "\n", at, true)
    if i == nil then break end
    local line = sub(data, at, i - 1)
    at = i + 1
    if w.state ~= "up" then break end
    if mine ~= nil and mine == w.call then answer(w, line) else stray(w, line) end
    mine = owner
  end
  if at > #data then w.buf = "" else w.buf, w.buf_owner = sub(data, at), mine end
end

-- decode broke the protocol (it raised, or answered without taking from the buffer): the call
-- the worker held fails with kind error saying why, which is logged, and the worker is stopped.
local function decode_failed(w, why)
  local d = w.call
  local m = w.r.m
  w.call = nil
  stop_worker(w, "protocol")
  local f = failure("error", format("%s worker pid %d: %s", who(m), w.pid, why))
  modal.log("error", f.message:sub(#who(m) + 2), fields(m))
  if d then errback(d, f) end
end

local function on_decoded(w, data, decode)
  local owner = w.call
  local mine = owner
  local buf = w.buf
  if buf ~= "" then mine = w.buf_owner end
  buf = buf .. data
  while w.state == "up" do
    local ok, v, rest = pcall(decode, buf)
    if not ok then return decode_failed(w, "decode raised: " .. tostring(v)) end
    if type(rest) ~= "string" then
      if v == nil then break end          -- nothing: the answer is incomplete
      rest = ""                           -- a value alone took the whole buffer
    elseif rest == buf then
      if v == nil then break end          -- nil and the buffer as it was: incomplete
      return decode_failed(w, "decode returned an answer but took nothing from the buffer (the "
        .. "rest it returned is the buffer it was given)")   -- it would come again for ever
    end
    buf = rest
    if mine ~= nil and mine == w.call then answer(w, v) else stray(w, v) end
    mine = owner
  end
  w.buf, w.buf_owner = buf, mine
end

local function on_stderr(w, data)
  local buf = w.errbuf .. data
  local m = w.r.m
  local keep = w.r.P.stderr_lines
  local lines = w.errlines
  for line in buf:gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line
    if #lines > keep then remove(lines, 1) end
    modal.log("debug", format("worker pid %d: %s", w.pid, line), fields(m))
  end
  w.errbuf = buf:match("([^\n]*)$") or ""
end

local function maybe_finalize(w)
  if not w.exited or w.state == "gone" then return end
  if w.open == 0 then return finalize(w) end
  if w.grace == nil then            -- a grandchild may hold the pipes open: do not wait long
    w.grace = uv.new_timer()
    w.grace:start(200, 0, function() finalize(w) end)
  end
end

local function pipe_done(w, pipe)
  if pipe:is_active() then pipe:read_stop() end
  w.open = w.open - 1
  maybe_finalize(w)
end

-- Starts a worker for r. Returns it (already "up": it can take a call at once), or nil when
-- the spawn failed (that counts as a crash).
local function spawn(r)
  local P, m = r.P, r.m
  local stdin, stdout, stderr = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  local w = { r = r, pid = nil, state = "up", call = nil, buf = "", buf_owner = nil, errbuf = "",
              errlines = {},
              exited = false, open = 2, started = now(), calls = 0, stdin = stdin, stdout = stdout,
              stderr = stderr }
  local handle, pid = uv.spawn(P.cmd[1], { args = P.args, stdio = { stdin, stdout, stderr },
    cwd = P.cwd, env = P.env }, function(code, signal)
      w.exited, w.code, w.signal = true, code, signal
      w.kill_timer = stop_timer(w.kill_timer)
      maybe_finalize(w)
    end)
  if not handle then
    close_handle(stdin); close_handle(stdout); close_handle(stderr)
    local why = P.cwd and folder_problem(P.cwd)
    w.spawn_error = format("spawn %s: %s%s", P.cmd[1], tostring(pid),
      why and "; cwd: " .. why or P.cwd and " (in cwd " .. P.cwd .. ")" or "")
    w.state, w.exited, w.open = "up", true, 0
    r.workers[w] = true
    r.nworkers = r.nworkers + 1
    finalize(w)
    return nil
  end
  w.handle, w.pid = handle, pid
  r.workers[w] = true
  r.nworkers = r.nworkers + 1
  live[r] = true
  local decode = P.decode
  stdout:read_start(function(err, data)
    if err or data == nil then return pipe_done(w, stdout) end
    if decode then on_decoded(w, data, decode) else on_lines(w, data) end
  end)
  stderr:read_start(function(err, data)
    if err or data == nil then
      if w.errbuf ~= "" then on_stderr(w, "\n") end
      return pipe_done(w, stderr)
    end
    on_stderr(w, data)
  end)
  stdout:unref()
  stderr:unref()
  if r.backoff.count > 0 and P.restart_window then
    -- the backoff starts again once a worker has stayed up restart_window seconds
    w.stable_timer = call_later(P.restart_window, function()
      w.stable_timer = nil
      if w.state == "up" then r.backoff:reset() end
    end)
  end
  if m.state ~= "closing" and m.state ~= "closed" then
    modal.log("debug", format("started worker pid %d", pid), fields(m))
  end
  return w
end

local function send(w, d, bytes)
  w.call = d
  w.calls = w.calls + 1
  w.stdin:write(bytes)
end

-- Takes the next call still waiting (one cancelled meanwhile is in r.cancelled: skipped).
local function dequeue(r)
  local qd, qb = r.qd, r.qb
  local head, tail = r.head, r.tail
  while head <= tail do
    local d, bytes = qd[head], qb[head]
    qd[head], qb[head] = nil, nil
    head = head + 1
    if r.ncancelled > 0 and r.cancelled[d] then
      r.cancelled[d] = nil
      r.ncancelled = r.ncancelled - 1
    else
      r.head = head
      r.nqueued = r.nqueued - 1
      if head > tail then r.head, r.tail = 1, 0 end
      return d, bytes
    end
  end
  r.head, r.tail = 1, 0
  return nil
end

local function idle_tick(w)
  w.idle_timer = nil
  local P = w.r.P
  if w.state ~= "up" or w.call ~= nil or not P.idle_timeout then return end
  local left = w.free_at + P.idle_timeout - now()
  if left <= 0 then return stop_worker(w, "idle") end
  w.idle_timer = call_later(left, idle_tick, w)
end

local function make_free(r, w)
  local free = r.free
  free[#free + 1] = w
  let_go(w)
  local t = r.P.idle_timeout
  if t then
    w.free_at = now()
    if w.idle_timer == nil then w.idle_timer = call_later(t, idle_tick, w) end
  end
end

local function restart_tick(r)
  r.restart_timer = nil                -- the wait is over (what the clock says exactly or not)
  pump(r)
end

-- Gives waiting calls to workers: `w` (a worker just free, or nil), then the free ones, then
-- new ones while there is room and no restart is being waited for.
pump = function(r, w)
  if w then
    local d, bytes = dequeue(r)
    if d then return send(w, d, bytes) end   -- none was free, since a call waited
    make_free(r, w)
  end
  if not r.running or r.halted then return end
  local free = r.free
  while r.nqueued > 0 and free[1] ~= nil do
    local fw = free[#free]
    free[#free] = nil
    hold(fw)
    local d, bytes = dequeue(r)
    if d then send(fw, d, bytes) else make_free(r, fw) end
  end
  local P = r.P
  while r.nqueued > 0 and r.nworkers < P.size do
    if r.restart_timer then return end  -- a restart waits for its backoff
    local nw = spawn(r)
    if nw == nil or not r.running then return end
    local d, bytes = dequeue(r)
    if d then send(nw, d, bytes) else make_free(r, nw) end
  end
end

-- Stops a worker we no longer want (reason: "idle", "cancel", "close", "failed", "protocol",
-- "exit"): its stdin closes (a well-behaved worker exits on EOF), SIGTERM, and SIGKILL after
-- kill_timeout. It is reaped by finalize.
stop_worker = function(w, reason)
  if w.state ~= "up" then return end
  w.state = "stopping"
  w.reason = reason
  local r = w.r
  local free = r.free
  for i = #free, 1, -1 do
    if free[i] == w then remove(free, i) break end
  end
  w.idle_timer = cancel_later(w.idle_timer)
  w.stable_timer = cancel_later(w.stable_timer)
  close_handle(w.stdin)
  if not w.exited and w.handle then
    hold(w)
    w.handle:kill("sigterm")
    local ms = floor(r.P.kill_timeout * 1000)
    w.kill_timer = uv.new_timer()
    w.kill_timer:start(ms, 0, function()
      w.kill_timer = stop_timer(w.kill_timer)
      if not w.exited and w.handle and not w.handle:is_closing() then w.handle:kill("sigkill") end
    end)
  end
end

-- Crashes and the intensity limit --------------------------------------------------------

-- The pool's diagnosis once failed: "pool#1 failed: 6 worker restarts within 30 s ...".
local function failed_text(m, r, P)
  local n = #r.crashes
  return format("%s failed: %d worker %s within %s s (more than max_restarts = %d); last: %s; " ..
    "p:reset() starts again", who(m), n, n == 1 and "restart" or "restarts", secs(P.restart_window),
    P.max_restarts, r.last_text or "?")
end

-- A worker we did not stop has ended: the restart is counted, the backoff moves on, and the
-- pool is halted once the restarts within restart_window are more than max_restarts (the
-- caller fires fail, after the crashed call's own failure: true as second result).
local function crashed(r, w)
  local m, P = r.m, r.P
  if r.halted then                       -- failed already: nothing is restarted, nor counted
    local f = worker_failure(m, r, w, "; the pool has failed: no restart")
    modal.log("warn", f.message:sub(#who(m) + 2), fields(m))
    return f, false
  end
  local t = now()
  local crashes = r.crashes
  crashes[#crashes + 1] = t
  local cut = t - P.restart_window
  while crashes[1] and crashes[1] <= cut do remove(crashes, 1) end
  r.restarts = r.restarts + 1
  r.restarts_in_window = #crashes
  local n = #crashes
  local over = n > P.max_restarts
  local text
  if over then
    text = format("; restart %d is more than max_restarts = %d within %s s: the pool failed", n,
      P.max_restarts, secs(P.restart_window))
  else
    local delay = r.backoff:next()
    r.restart_at = t + delay
    r.restart_timer = cancel_later(r.restart_timer)
    r.restart_timer = call_later(delay, restart_tick, r)
    text = format("; restart %d (at most %d within %s s) in %s s", n, P.max_restarts,
      secs(P.restart_window), secs(delay))
  end
  local f = worker_failure(m, r, w, text)
  r.last = f
  r.last_text = worker_failure(m, r, w, nil).message:sub(#who(m) + 2)
  modal.log("warn", f.message:sub(#who(m) + 2), fields(m))
  if over then
    r.halted = true                    -- no more starts
    r.diagnosis = failed_text(m, r, P)
  end
  return f, over
end

-- A worker's process and pipes are done: it is reaped, its call (if any) answered, and the
-- pool moves on (a restart, the next call, idle, closed).
finalize = function(w)
  if w.state == "gone" then return end
  local was = w.state
  w.state = "gone"
  w.grace = stop_timer(w.grace)
  w.kill_timer = stop_timer(w.kill_timer)
  w.idle_timer = cancel_later(w.idle_timer)
  w.stable_timer = cancel_later(w.stable_timer)
  close_handle(w.stdin); close_handle(w.stdout); close_handle(w.stderr); close_handle(w.handle)
  local r = w.r
  local m = r.m
  if r.workers[w] then
    r.workers[w] = nil
    r.nworkers = r.nworkers - 1
  end
  local free = r.free
  for i = #free, 1, -1 do
    if free[i] == w then remove(free, i) break end
  end
  local d = w.call
  w.call = nil
  local f, over
  if was == "up" then
    f, over = crashed(r, w)
  elseif d then
    local text = w.reason == "close" and "the pool was closed while it held the call" or
      ("it was stopped (" .. tostring(w.reason) .. ")")
    f = failure(w.reason == "close" and "stopped" or "worker",
      format("%s worker pid %s %s: %s", who(m), tostring(w.pid), how_it_ended(w), text),
      { pid = w.pid, status = w.code, signal = killed_by(w), state = m.state })
  end
  if d then errback(d, f) end          -- the crashed call first, then those failed waits
  if over then m:fire("fail") end      -- (input fail, queued when a handler runs)
  if r.nworkers == 0 then live[r] = nil end
  local state = m.state
  if state == "running" then
    if r.nworkers == 0 and r.nqueued == 0 then
      m:fire("idle")
    else
      pump(r)
    end
  elseif state == "closing" and r.nworkers == 0 and r.close_job then
    local job = r.close_job
    r.close_job = nil
    callback(job, nil)
  end
end

-- Calls -----------------------------------------------------------------------------------

-- The canceller of a pool's calls (one closure per pool): a call in flight stops its worker
-- (the answer it is working on can no longer reach anyone; a fresh worker replaces it, which
-- is not a crash); a waiting call leaves the queue. Only a pending call is cancelled, and a
-- pending call is in flight or waiting.
canceller_of = function(r)
  return function(d)
    for w in next, r.workers do
      if w.call == d then
        w.call = nil
        stop_worker(w, "cancel")
        return
      end
    end
    r.cancelled[d] = true
    r.ncancelled = r.ncancelled + 1
    r.nqueued = r.nqueued - 1
  end
end

-- One line: the first argument, a string (or a number); the others are not sent.
local function default_encode(line)
  local t = type(line)
  if t ~= "string" then
    if t ~= "number" then
      error(format("call: expected a line (a string), got %s (give the pool an encode to send " ..
        "other values)", t), 0)
    end
    line = tostring(line)
  end
  if find(line, "\n", 1, true) then
    error("call: a line may not hold a newline (give the pool an encode for another framing)", 0)
  end
  return line .. "\n"
end

local function unavailable(m, r)
  return failure("unavailable", r.diagnosis or format("%s failed", who(m)),
    { state = m.state, restarts = #r.crashes, last = r.last })
end

local function stopped(m, r)
  return failure("stopped", format("%s is %s%s", who(m), m.state, r.restarts > 0 and
    format(" after %d worker restart%s", r.restarts, r.restarts == 1 and "" or "s") or ""),
    { state = m.state, restarts = r.restarts, last = r.last })
end

local function fail_queue(r, f)
  while true do
    local d = dequeue(r)
    if d == nil then break end
    errback(d, f)
  end
end

-- Options ---------------------------------------------------------------------------------


-- What is wrong with `path` as the workers' folder, or nil.
folder_problem = function(path)
  local st, err = uv.fs_stat(path)
  if not st then
    local code = tostring(err):match("^(%u+)") or tostring(err)
    if code == "ENOENT" or code == "ENOTDIR" then return format("no such folder: %s", path) end
    return format("cannot use %s as the workers' folder: %s", path, tostring(err))
  end
  if st.type ~= "directory" then return format("%s is a %s, not a folder", path, st.type) end
  if not uv.fs_access(path, "X") then return format("%s: permission denied (cannot enter it)", path) end
  return nil
end

-- Every problem with the options at once, as "option: message"; the normalized options.
local function normalize(opts)
  local errs = {}
  local function bad(fmt, ...) errs[#errs + 1] = format(fmt, ...) end
  if type(opts) ~= "table" then
    return nil, { "expected a table of options, got " .. type(opts) }
  end
  local known, unknown = {}, {}
  for _, k in ipairs(pool.OPTIONS) do known[k] = true end
  for k in next, opts do
    if not known[k] then unknown[#unknown + 1] = tostring(k) end
  end
  sort(unknown)
  for _, k in ipairs(unknown) do
    local near = check.nearest(k, pool.OPTIONS)
    bad("%s: unknown option%s", k, near and format(" (did you mean '%s'?)", near) or "")
  end
  local P = {}
  local cmd = opts.cmd
  if type(cmd) ~= "table" or type(cmd[1]) ~= "string" or cmd[1] == "" then
    bad("cmd: expected an argv list { \"program\", \"arg\", ... } (the program is found on PATH), got %s",
      type(cmd) == "table" and "a table without a program first" or describe(cmd))
  else
    P.cmd, P.args = {}, {}
    for k in next, cmd do
      if not (math.type(k) == "integer" and k >= 1 and k <= #cmd) then
        bad("cmd: %s: expected an argv list of strings, { \"program\", \"arg\", ... }", describe(k))
      end
    end
    for i, a in ipairs(cmd) do
      if type(a) ~= "string" then
        bad("cmd[%d]: expected a string (an argument is passed as it is), got %s", i, describe(a))
      elseif find(a, "\0", 1, true) then
        bad("cmd[%d]: an argument may not hold a NUL byte", i)
      end
      P.cmd[i] = tostring(a)
      if i > 1 then P.args[i - 1] = tostring(a) end
    end
  end
  if opts.name == nil then
    P.name = "pool"
  elseif type(opts.name) ~= "string" or not check.is_identifier(opts.name) then
    bad("name: expected a Lua identifier (the machine's name), got %s", describe(opts.name))
  else
    P.name = opts.name
  end
  if opts.version ~= nil and not finite(opts.version) then
    bad("version: expected a number, got %s", describe(opts.version))
  end
  P.version = opts.version

  local function number(k, default, ok, want)
    local v = opts[k]
    if v == nil then P[k] = default return end
    if not ok(v) then bad("%s: expected %s, got %s", k, want, describe(v)) end
    P[k] = v
  end
  local function count1(v) return whole(v) and v >= 1 end
  local function count0(v) return whole(v) and v >= 0 end
  local function positive(v) return finite(v) and v > 0 end
  local D = pool.DEFAULTS
  number("size", D.size, count1, "a whole number of workers >= 1")
  number("idle_timeout", nil, positive, "a number of seconds > 0")
  number("max_restarts", D.max_restarts, count0, "a whole number >= 0")
  number("restart_window", D.restart_window, positive, "a number of seconds > 0")
  number("max_queued", D.max_queued, count1, "a whole number of calls >= 1 (a call waits in " ..
    "the queue while its worker starts: 0 would refuse every call)")
  number("kill_timeout", D.kill_timeout, positive, "a number of seconds > 0")
  number("stderr_lines", D.stderr_lines, count0, "a whole number of lines >= 0")
  for _, k in ipairs { "encode", "decode" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      bad("%s: expected a function, got %s", k, describe(opts[k]))
    end
  end
  P.encode = opts.encode or default_encode
  P.decode = opts.decode
  if opts.cwd ~= nil then
    if type(opts.cwd) ~= "string" or opts.cwd == "" then
      bad("cwd: expected a folder (a non-empty string), got %s", describe(opts.cwd))
    elseif find(opts.cwd, "\0", 1, true) then
      bad("cwd: may not hold a NUL byte")
    else
      local problem = folder_problem(opts.cwd)
      if problem then bad("cwd: %s", problem) end
    end
  end
  P.cwd = opts.cwd
  local env = opts.env
  if env ~= nil then
    if type(env) ~= "table" then
      bad("env: expected { NAME = \"value\" } or { \"NAME=value\", ... }, got %s", describe(env))
    else
      local list = {}
      local names = {}
      for k in next, env do names[#names + 1] = k end
      sort(names, function(a, b)
        if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
        return type(a) < type(b)
      end)
      for _, k in ipairs(names) do
        local v = env[k]
        if math.type(k) == "integer" then
          if type(v) ~= "string" or not find(v, "^[^=]+=") then
            bad("env[%d]: expected \"NAME=value\" (a string with a name before '='), got %s", k,
              describe(v))
          elseif find(v, "\0", 1, true) then
            bad("env[%d]: may not hold a NUL byte", k)
          else
            list[#list + 1] = v
          end
        elseif type(k) ~= "string" or k == "" or find(k, "[=%z]") then
          bad("env: %s: expected a variable's name (a string without '='), got a key %s",
            describe(k), type(k) == "string" and "with '=' or NUL in it, or empty" or "of type " .. type(k))
        elseif type(v) ~= "string" then
          bad("env.%s: expected a string value, got %s (write it as a string: \"%s\")", k,
            describe(v), type(v) == "number" and tostring(v) or "...")
        elseif find(v, "\0", 1, true) then
          bad("env.%s: a value may not hold a NUL byte", k)
        else
          list[#list + 1] = k .. "=" .. v
        end
      end
      sort(list)
      P.env = list
    end
  end
  local b = opts.backoff
  if b == nil then b = {} end
  for _, p in ipairs(backoff_lib._problems(b, "backoff.")) do errs[#errs + 1] = p end
  if type(b) == "table" then
    local copy = {}
    for k, v in next, D.backoff do copy[k] = v end
    for k, v in next, b do copy[k] = v end
    P.backoff = copy
  end
  if #errs > 0 then return nil, errs end
  return P
end

-- The definition --------------------------------------------------------------------------

local function build(P)
  local encode = P.encode
  local function nothing() return nil end
  local function wait_closed(m) return m:when("closed"):add_callback(nothing) end
  local function close_and_wait(m) m:fire("close"); return wait_closed(m) end
  local function stopped_call(m) return stopped(m, record(m, P)) end

  local function start_and_wait(m) m:fire("start"); return m:postpone() end

  local lines = encode == default_encode
  local function call(m, line, ...)
    local r = records[m]
    if r == nil or r.P ~= P then r = record(m, P) end
    local bytes
    local t = lines and type(line)
    if t == "number" then
      bytes = tostring(line) .. "\n"
    elseif t == "string" and not find(line, "\n", 1, true) then
      bytes = line .. "\n"
    else
      bytes = encode(line, ...)
      if type(bytes) ~= "string" then
        error(format("call: encode returned %s, not a string", describe(bytes)), 0)
      end
    end
    local free = r.free
    local k = #free
    if k > 0 then
      local w = free[k]
      free[k] = nil
      hold(w)
      local d = deferred(r.cancel)
      send(w, d, bytes)
      return d
    end
    if r.nqueued >= P.max_queued then
      return failure("overloaded", format("%s: %d calls are waiting for a worker (max_queued)", who(m),
        r.nqueued), { state = m.state, queued = r.nqueued })
    end
    local d = deferred(r.cancel)
    local tail = r.tail + 1
    r.tail = tail
    r.qd[tail], r.qb[tail] = d, bytes
    r.nqueued = r.nqueued + 1
    if r.nworkers < P.size then pump(r) end
    return d
  end

  local idle, running, failed, closing, closed = {}, {}, {}, {}, {}

  idle.call = start_and_wait
  idle.reset = nothing
  idle.close = close_and_wait
  idle.enter = function(m) record(m, P) end
  idle.on = { start = "running", close = "closing" }

  running.call = call
  running.reset = nothing
  running.close = close_and_wait
  running.enter = function(m)
    local r = record(m, P)
    r.running = true
    pump(r)
  end
  running.exit = function(m) record(m, P).running = false end
  running.on = { idle = "idle", fail = "failed", close = "closing" }

  failed.call = function(m) return unavailable(m, record(m, P)) end
  failed.reset = function(m) m:fire("reset") end
  failed.close = close_and_wait
  failed.enter = function(m)
    local r = record(m, P)
    r.restart_timer = cancel_later(r.restart_timer)
    fail_queue(r, unavailable(m, r))
    for w in next, r.workers do        -- a supervisor's limit: every worker goes; one holding a
      if w.call then w.retire = true   -- call answers it first
      else stop_worker(w, "failed") end
    end
  end
  failed.on = {
    reset = { to = "idle", action = function(m)
      local r = record(m, P)
      r.crashes, r.restarts_in_window, r.diagnosis, r.halted = {}, 0, nil, nil
      r.restart_at = nil
      r.restart_timer = cancel_later(r.restart_timer)
      r.backoff:reset()
      for w in next, r.workers do w.retire = nil end
    end },
    close = "closing",
  }

  closing.call = stopped_call
  closing.reset = stopped_call
  closing.close = wait_closed
  closing.run = function(m)
    local r = record(m, P)
    r.restart_timer = cancel_later(r.restart_timer)
    fail_queue(r, stopped(m, r))
    for w in next, r.workers do stop_worker(w, "close") end
    if r.nworkers == 0 then return true end
    r.close_job = deferred()
    return r.close_job
  end
  closing.on = { done = "closed", error = "closed" }

  closed.final = true
  closed.call = stopped_call
  closed.reset = stopped_call
  closed.close = nothing

  return {
    name = P.name, version = P.version, initial = "idle",
    methods = { "call", "close", "reset" },
    inputs = { "start", "idle", "fail", "reset" },
    ignore = { "start", "idle", "fail", "reset" },
    states = { idle = idle, running = running, failed = failed, closing = closing, closed = closed },
  }
end

-- Leaving: no worker outlives the host ----------------------------------------------------

local stop_registered = false

-- SIGINT/SIGTERM (modal.on_stop): every pool closes, so the loop can drain.
local function on_stop()
  stop_registered = false
  for r in next, live do
    local m = r.m
    if m.state ~= "closing" and m.state ~= "closed" then m:close() end
  end
end

-- SIGTERM to a worker still running, once. uv.kill needs no loop (the end of the Lua state
-- runs this too); a worker not yet reaped keeps its pid, so none is a stranger.
local function sigterm_once(w)
  if w.pid and not w.exited and not w.termed then
    w.termed = true
    uv.kill(w.pid, "sigterm")
  end
end

-- The end of the host (the loop will not run again): every worker is told to go now — its
-- stdin closes and it gets SIGTERM; what waits fails with kind stopped.
modal._on_run_end(function(exiting)
  if not exiting then return end
  for r in next, live do
    fail_queue(r, failure("stopped", who(r.m) .. ": host exiting"))
    for w in next, r.workers do
      if w.state == "up" or w.state == "stopping" then
        close_handle(w.stdin)
        sigterm_once(w)
      end
    end
  end
end)

-- The end of the Lua state — a lua5.4 program's end, which no run-end hook marks as the host's:
-- every worker still running gets SIGTERM, as at the host's end (its stdin closes with the
-- process).
local function term_all()
  for r in next, live do
    for w in next, r.workers do sigterm_once(w) end
  end
end
pool._at_close = setmetatable({}, { __gc = function() pcall(term_all) end })

local function new_pool(M)
  if type(M) == "table" then return M end   -- `modal check` captured the definition
  local p = M:new()
  if not stop_registered then
    stop_registered = true
    modal.on_stop(on_stop)
  end
  return p
end

--- Makes a pool's machine: a definition generated from `opts`, compiled by modal.machine;
-- `M:new()` makes pools. A file returning it loads with modal.load and reloads in place.
-- @tparam table opts the options of modal.pool (doc/policies.md, "Pool").
-- @return the machine `M`.
-- @raise "modal.pool: option: message" for every invalid option at once.
function pool.machine(opts)
  local P, errs = normalize(opts)
  if not P then
    error("modal.pool: " .. concat(errs, "\n  "), 2)
  end
  local def = build(P)
  policies[def] = P
  return modal.machine(def)          -- read at call time: `modal check` captures it
end

--- Makes a pool of worker processes.
-- @tparam table opts `cmd` (an argv list; the program is found on PATH), and optionally
--   `name` ("pool"), `version`, `size` (workers, 4), `encode` (`function(...) -> bytes`;
--   default: one line), `decode` (`function(buffer) -> value, rest`, or nothing while an
--   answer is incomplete; default: one line), `idle_timeout` (seconds), `backoff` (modal.backoff
--   options, `{ initial = 0.5, multiplier = 2, max = 30 }`), `max_restarts` (5),
--   `restart_window` (seconds, 30), `max_queued` (10,000), `kill_timeout` (seconds, 2),
--   `stderr_lines` (5), `cwd`, `env` (`{ NAME = "value" }`).
-- @return the pool `p`: `p:call(...)`, `p:close()`, `p:reset()` (Deferreds), `p.state`.
-- @raise "modal.pool: option: message" for every invalid option at once.
function pool.new(opts)
  local P, errs = normalize(opts)
  if not P then
    error("modal.pool: " .. concat(errs, "\n  "), 2)
  end
  if opts.name == nil then policy.take_default_name(P) end   -- pool, pool_2, ...
  local def = build(P)
  policies[def] = P
  return new_pool(modal.machine(def))
end

--- What a pool holds: `{ state =, size =, queued =, restarts = (within restart_window),
-- restarts_total =, retry_in = (seconds before the next start, or nil), diagnosis = (once
-- failed), workers = { { pid =, busy =, stopping =, calls =, up = (seconds) }, ... } }`.
function pool.status(p)
  policy.check_instance(p, policies, "status", "modal.pool")
  local r = record(p)
  local t = now()
  local workers = {}
  for w in next, r.workers do
    if w.pid then
      workers[#workers + 1] = { pid = w.pid, busy = w.call ~= nil, stopping = w.state ~= "up",
        calls = w.calls, up = t - w.started }
    end
  end
  sort(workers, function(a, b) return a.pid < b.pid end)
  local P = r.P
  local window = P and P.restart_window or 0
  local n = 0
  for _, c in ipairs(r.crashes) do if c > t - window then n = n + 1 end end
  local retry_in = r.restart_timer and r.restart_at and r.restart_at - t or nil
  if retry_in and retry_in < 0 then retry_in = 0 end
  return { state = p.state, size = P and P.size, queued = r.nqueued, restarts = n,
           restarts_total = r.restarts, retry_in = retry_in, diagnosis = r.diagnosis, workers = workers }
end

--- The pids of a pool's workers (running or being stopped), in order.
function pool.pids(p)
  policy.check_instance(p, policies, "pids", "modal.pool")
  local out = {}
  for _, w in ipairs(pool.status(p).workers) do out[#out + 1] = w.pid end
  return out
end

return setmetatable(pool, { __call = function(_, opts) return pool.new(opts) end })
