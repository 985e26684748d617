-- run.lua — the benchmark runner behind `make bench`.
--
--   lua5.4 bench/run.lua [--reps=N] [--scale=F] [ID ...]
--
-- from the repo root, with LUA_PATH holding ./bench/?.lua and ./lua/?.lua and LUA_CPATH
-- ./build/?.so (the Makefile sets both, and MODAL_BUILD, the folder scratch definition files
-- go to). IDs (W1, W5-mem, W7-churn, ...) pick lines; the default is all of them. --scale
-- multiplies modal's and the project floors' operation counts (0.1 for a quick look; the
-- judged floor always runs at its own counts).
--
-- The judged floor is floor_plain.lua, the team's reference program: a target is met or missed
-- against its figures. It runs as its own process (`lua5.4 bench/floor_plain.lua W2`, exactly
-- as it is run on its own), once per repetition of each workload, and the judged variant's line
-- is read from its output: W1 and W4 against lua-min-mt, W2 and W3 against lua-min-mt-dtw, W5
-- against lua-dtw and lua-dmin. modal's side of each workload does what that variant does —
-- the same operation, the same counts, the same measuring (a full collection, then CPU time
-- around the loop; bytes from collectgarbage("count") around the same allocations) — so the
-- two figures divide. The project's own floors (floor_fsm.lua, floor_deferred.lua) run in this
-- process beside them as extra columns, with no bar.
--
-- Method: the machine may be shared and noisy, so every figure is the median of REPS runs
-- (default 5), and every ratio the median of the REPS ratios taken within one repetition.
-- modal, the judged floor and the project floors alternate inside each repetition
-- (the order reversed every other one), after one warm-up run of modal and the project floors
-- at a tenth of the size. Times are CPU time (os.clock) and include the garbage collection the
-- workload causes, as the judged floor's do; W7 and W7-churn time how long a call blocks the
-- loop, and W9 waits on worker processes, so they take wall time (uv.hrtime). W7-churn runs in
-- a process of its own each time (a fresh process where only its machine exists, so nothing
-- else is counted). Every run checks
-- its result, so a workload that stops measuring what it claims fails loudly.
--
-- Output: one line per bar — modal's figure, the judged floor's figure and the ratio
-- modal/floor, then the project floors' figures. Each bar reads `(target <= X) ok` or
-- `(target <= X) MISS`; ratios have three significant digits. Lines with no bar (W0, the unit;
-- W4-new) come after, under "for reference". The last line names every MISS. The exit status
-- is 0 even with a MISS (the bench reports) unless BENCH_STRICT=1 is set; a run that raises
-- or whose result is wrong prints FAILED and makes it 1.
--
-- Adding a workload: append an entry to LINES (see the fields described there).

local clock = os.clock

local REPS, SCALE, CHILD = 5, 1, nil
local only = {}
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^%-%-([%w-]+)=(.+)$")
  if k == "reps" then REPS = assert(math.tointeger(tonumber(v)), "--reps wants an integer")
  elseif k == "scale" then SCALE = assert(tonumber(v), "--scale wants a number")
  elseif k == "child" then CHILD = v -- internal: W7-churn's own process
  elseif k then error("unknown option " .. a)
  else only[a:upper()] = true end
end
local STRICT = (os.getenv("BENCH_STRICT") or "") ~= "" and os.getenv("BENCH_STRICT") ~= "0"

-- The interpreter running this file (the lowest arg index), and this file's folder: the
-- judged floor and W7-churn's process are started with the same interpreter.
local LUA, HERE
do
  local i = 0
  while arg and arg[i - 1] do i = i - 1 end
  LUA = arg and i < 0 and arg[i] or "lua5.4"
  HERE = (arg and arg[0] or ""):match("^(.*[/\\])") or "./"
end
-- Where scratch definition files go (W7): the build folder, inside the repository.
local SCRATCH = os.getenv("MODAL_BUILD") or (HERE .. "../build")

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- modal itself, when it is built; the floors run either way.
local modal, modal_note
do
  local ok, m = pcall(require, "modal")
  if ok then
    modal = m
  elseif tostring(m):find("module 'modal' not found", 1, true) then
    modal_note = "modal not built"
  else
    modal_note = "modal failed to load: " .. tostring(m):match("^[^\n]*")
  end
end

-- Wall time in ms, for the time a call blocks the loop.
local wall_ms
do
  local ok, uv = pcall(require, "luv")
  if ok then
    local hrtime = uv.hrtime
    wall_ms = function() return hrtime() / 1e6 end
  else
    wall_ms = function() return clock() * 1e3 end -- no luv: CPU time, the nearest there is
  end
end

local floor_deferred = require "floor_deferred"
local twisted, bare = floor_deferred.twisted, floor_deferred.bare
local floor_fsm = require "floor_fsm"

-- Measuring, as the judged floor does it -------------------------------------------------

local function fullgc() collectgarbage("collect"); collectgarbage("collect") end
local function kb() return collectgarbage("count") end

local function check(cond, fmt, ...)
  if not cond then error(string.format(fmt, ...), 0) end
end

-- The judged floor's timeit: a full collection, then the CPU time of body(n); ns per op.
local function cpu_ns(body, n)
  fullgc()
  local t0 = clock()
  body(n)
  return (clock() - t0) * 1e9 / n
end

-- The callback W2 and W3 add to every call, as the judged floor's `cb`: sums what it gets.
local sum = 0
local function add_to_sum(x) sum = sum + x; return x end
local function check_sum(n)
  check(sum == n * (n + 1) // 2, "the callbacks summed %s, want %d", tostring(sum), n * (n + 1) // 2)
end

-- W3-mem's callback: counts and checks the order (the figure is bytes, not time).
local drained, drain_last, drain_order_ok = 0, 0, true
local function count_drained(v)
  drained = drained + 1
  if v ~= drain_last + 1 then drain_order_ok = false end
  drain_last = v
  return v
end

-- The judged floor, run as its own process ------------------------------------------------

-- Runs floor_plain.lua for workload w; returns { [variant] = { ns =, bytes = } }.
local function run_plain(w)
  local p = assert(io.popen(quote(LUA) .. " " .. quote(HERE .. "floor_plain.lua") .. " " .. w .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  check(ok, "floor_plain.lua %s failed: %s", w, out:match("[^\n]*"))
  local got = {}
  for line in out:gmatch("[^\n]+") do
    local variant, ns, bytes = line:match("^" .. w .. " (%S+) ns_per_op=(%S+) bytes_per_item=(%S+)")
    if variant then got[variant] = { ns = tonumber(ns), bytes = tonumber(bytes) } end
  end
  return got
end

-- Results shared by lines, one per repetition: the judged floor's process (W3 and W3-mem read
-- the same run), a pass measuring two figures (W4 and W4-new), W7-churn's process.
local memo = {}
local function once(key, rep, fn)
  local k = key .. "#" .. rep
  local v = memo[k]
  if v == nil then v = fn(); memo[k] = v end
  return v
end

local function plain_figure(w, variant, field)
  return function(_, rep)
    local v = once("plain " .. w, rep, function() return run_plain(w) end)[variant]
    check(v and v[field], "floor_plain.lua %s printed no %s for %s", w, field, variant)
    return v[field]
  end
end

-- Machines (W1–W4) -------------------------------------------------------------------------
--
-- One definition per workload, given to modal.machine and to floor_fsm.machine alike (the floor
-- ignores the keys it has no use for: name, max_postponed, timeout, run, final). `lib` supplies
-- the Deferreds the handlers return: modal's own, or the Twisted-like floor's.

local floor_lib = {
  succeed = twisted.succeed,
  fail = function(kind, message) return twisted.fail(twisted.failure(kind, message)) end,
  deferred = twisted.new,
}

local DEFS = {
  -- W1: two states, input flip
  toggle = function()
    return { name = "toggle", initial = "a", methods = {},
      states = { a = { on = { flip = "b" } }, b = { on = { flip = "a" } } } }
  end,
  -- W2, W3: query postponed while connecting, answered with an already fired Deferred in ready
  dispatch = function(lib)
    local succeed = lib.succeed
    return { name = "dispatch", initial = "connecting", methods = { "query" },
      max_postponed = 100000000, -- the judged floor has no bound
      states = {
        connecting = { query = "postpone", on = { ready = "ready" } },
        ready = { query = function(_, x) return succeed(x) end },
      } }
  end,
  -- W4: a 5-state connection machine (idle postpones query until an outside `connect`); its
  -- instances stay idle
  connection = function(lib)
    local succeed, fail, deferred = lib.succeed, lib.fail, lib.deferred
    return { name = "connection", initial = "idle", methods = { "query", "close" },
      defaults = { close = function(m) m:fire("close") end },
      states = {
        idle = { query = "postpone", on = { connect = "connecting", close = "closed" } },
        connecting = {
          run = function() return deferred() end,
          timeout = 10,
          query = "postpone",
          on = { done = "ready", error = "backoff", timeout = "backoff", close = "closed" },
        },
        ready = { query = function(_, x) return succeed(x) end, on = { lost = "backoff", close = "closed" } },
        backoff = { timeout = 1, query = "postpone", on = { timeout = "connecting", close = "closed" } },
        closed = { final = true, query = function() return fail("stopped", "connection closed") end,
          close = function() end },
      } }
  end,
}

-- Each machine is built once per process, outside the timed runs.
local modal_machines, floor_machines = {}, {}
local function modal_new(key)
  local M = modal_machines[key]
  if not M then M = modal.machine(DEFS[key](modal)); modal_machines[key] = M end
  return function() return M:new() end
end
local function floor_new(key)
  local M = floor_machines[key]
  if not M then M = floor_fsm.machine(DEFS[key](floor_lib)); floor_machines[key] = M end
  return M.new
end

-- W1: n transitions, c:fire("flip") (modal, the project floor) or c:flip() (the project floor's
-- input as a method — what the judged floor's m:flip() is).
local function w1_fire(new, n)
  local c = new()
  local ns = cpu_ns(function(k) for _ = 1, k do c:fire("flip") end end, n)
  check(c.state == (n % 2 == 0 and "a" or "b"), "ended in state %s", tostring(c.state))
  return ns
end
local function w1_method(new, n)
  local c = new()
  local ns = cpu_ns(function(k) for _ = 1, k do c:flip() end end, n)
  check(c.state == (n % 2 == 0 and "a" or "b"), "ended in state %s", tostring(c.state))
  return ns
end

-- W2: an instance in ready; n × c:query(i):add_callback(cb).
local function w2(new, n)
  local c = new()
  c:fire("ready")
  sum = 0
  local ns = cpu_ns(function(k) for i = 1, k do c:query(i):add_callback(add_to_sum) end end, n)
  check_sum(n)
  return ns
end

-- W3: an instance in connecting, then (timed) n × c:query(i):add_callback(cb) queued and
-- c:fire("ready"), which drains them all; ns per queued call.
local function w3(new, n)
  local c = new()
  sum = 0
  fullgc()
  local t0 = clock()
  for i = 1, n do c:query(i):add_callback(add_to_sum) end
  c:fire("ready")
  local ns = (clock() - t0) * 1e9 / n
  check_sum(n)
  return ns
end

-- W3-mem: bytes retained per queued call — the instance, its queue, each call's Deferred and
-- callback link — after queueing n; then the drain is checked (every call, in order).
local function w3_mem(new, n)
  fullgc()
  local before = kb()
  local c = new()
  drained, drain_last, drain_order_ok = 0, 0, true
  for i = 1, n do c:query(i):add_callback(count_drained) end
  fullgc()
  local bytes = (kb() - before) * 1024 / n
  c:fire("ready")
  check(drained == n and drain_last == n and drain_order_ok, "%d of %d fired, last %s%s", drained, n,
    tostring(drain_last), drain_order_ok and "" or ", out of order")
  return bytes
end

-- W4: n live idle instances in a preallocated table, made in one pass that is both timed (the
-- loop, CPU time) and weighed (bytes per instance, after a full collection): { bytes =, ns = }.
local function w4_pass(new, n)
  local keep = {}
  for i = 1, n do keep[i] = false end -- preallocated: the slots are not part of the figure
  fullgc()
  local before = kb()
  local t0 = clock()
  for i = 1, n do keep[i] = new() end
  local t1 = clock()
  fullgc()
  local bytes = (kb() - before) * 1024 / n
  for i = 1, n do check(keep[i].state == "idle", "instance %d is in %s", i, tostring(keep[i].state)) end
  return { bytes = bytes, ns = (t1 - t0) * 1e9 / n }
end

-- modal's W4 pass: a new machine each run, so its registry of live instances grows inside the
-- measure (the judged floor has no registry; modal's is part of what an instance costs).
local function modal_w4(n, rep)
  return once("modal W4 " .. n, rep, function()
    local M = modal.machine(DEFS.connection(modal))
    return w4_pass(function() return M:new() end, n)
  end)
end
local function fsm_w4(n, rep)
  return once("fsm W4 " .. n, rep, function() return w4_pass(floor_new("connection"), n) end)
end

-- Deferreds (W5) ---------------------------------------------------------------------------

local function inc(v) return v + 1 end

-- The value a fired Deferred's chain ended with (a link added to a fired Deferred runs at once).
local function final_value(d)
  local got
  d:add_callback(function(v) got = v; return v end)
  return got
end

-- W5: n × (new Deferred, three `inc` callbacks, callback(i)); the last one ends at n + 3.
local function w5(new, n)
  local last
  local ns = cpu_ns(function(k)
    for i = 1, k do
      local d = new()
      d:add_callback(inc); d:add_callback(inc); d:add_callback(inc)
      d:callback(i)
      last = d
    end
  end, n)
  local v = final_value(last)
  check(v == n + 3, "the last Deferred ended at %s, want %d", tostring(v), n + 3)
  return ns
end

-- W5-mem: bytes held by pending Deferreds with one callback each (every one is fired after, to
-- check it held its callback).
local fired = 0
local function count_fire(v) fired = fired + 1; return v end

local function w5_mem(new, n)
  local keep = {}
  for i = 1, n do keep[i] = false end -- preallocated: the slots are not part of the figure
  fullgc()
  local before = kb()
  for i = 1, n do
    local d = new()
    d:add_callback(count_fire)
    keep[i] = d
  end
  fullgc()
  local bytes = (kb() - before) * 1024 / n
  fired = 0
  for i = 1, n do keep[i]:callback(i) end
  check(fired == n, "%d of %d callbacks ran", fired, n)
  return bytes
end

-- Hot reload (W7, W7-churn) ----------------------------------------------------------------
--
-- A connection-like machine from a file (modal.reload re-runs a file), written to the build
-- folder; a new file and name for every run (a loaded path or name stays registered).

local scratch_seq = 0
local function scratch_def()
  scratch_seq = scratch_seq + 1
  local token = string.format("%d_%d", os.time() % 100000, math.random(1e6))
  local name = string.format("bench_w7_%s_%d", token, scratch_seq)
  local path = string.format("%s/%s.lua", SCRATCH, name)
  local function write(version)
    local f = assert(io.open(path, "w"))
    f:write(string.format([[
return { name = %q, version = %d, initial = "idle", methods = { "query", "close" },
  defaults = { close = function(m) m:fire("close") end },
  states = {
    idle = { query = function(m) m:fire("connect"); return m:postpone() end,
             on = { connect = "connecting", close = "closed" } },
    connecting = { query = "postpone", timeout = 60,
                   on = { ready = "ready", timeout = "backoff", close = "closed" } },
    ready = { query = function(_, x) return %d + x end, on = { lost = "backoff", close = "closed" } },
    backoff = { query = "postpone", timeout = 60, on = { timeout = "connecting", close = "closed" } },
    closed = { final = true, query = function() return false end, close = function() end },
  } }
]], name, version, version))
    f:close()
  end
  return path, name, write
end

-- The live instances of a reload: the k-th of `live` gets a call that waits (idle ->
-- connecting, postponed) when k <= live / 10; of the others, every third is closed.
local function populate(c, k, live)
  if k <= math.max(1, live // 10) then c:query(k)
  elseif k % 3 == 0 then c:fire("close") end
end

-- After the reload: the waiting calls are still queued (retried once, postponed again); then
-- each is answered (closing its instance) so none is left behind.
local function check_after_reload(M, keep, live, version)
  check(M.version == version, "M.version is %s after the reload, want %d", tostring(M.version), version)
  check(keep[1]:postponed() == 1, "instance 1 holds %d postponed calls, want 1", keep[1]:postponed())
  for k = 1, math.max(1, live // 10) do keep[k]:fire("close") end
end

-- W7: n live instances (a tenth with a waiting call, a third of the rest closed); the wall time
-- modal.reload of a changed definition blocks the loop (plan, switch, retry the waiting calls).
local function w7(n)
  local path, _, write = scratch_def()
  write(1)
  local M = modal.load(path)
  local keep = {}
  for k = 1, n do
    local c = M:new()
    keep[k] = c
    populate(c, k, n)
  end
  write(2)
  fullgc()
  local t0 = wall_ms()
  local ok, err = modal.reload(path)
  local ms = wall_ms() - t0
  os.remove(path)
  check(ok, "modal.reload: %s", tostring(err))
  check_after_reload(M, keep, n, 2)
  return ms
end

-- W7-churn, in a process of its own (run.lua --child=churn): `churned` instances of the machine
-- made and collected, `live` kept alive among them (every few-hundredth one made, so their ids
-- are spread over the whole range); then the wall time of modal.reload of a changed definition,
-- and of modal.stats(). Prints "reload_ms=... stats_ms=...".
local function churn_child(churned, live)
  local path, name, write = scratch_def()
  write(1)
  local M = modal.load(path)
  local keep, every = {}, churned // live + 1
  for i = 1, every * live do
    local c = M:new()
    if i % every == 0 then
      local k = #keep + 1
      keep[k] = c
      populate(c, k, live)
    end
  end
  write(2)
  fullgc() -- every instance not kept is collected
  local t0 = wall_ms()
  local ok, err = modal.reload(path)
  local t1 = wall_ms()
  local stats = modal.stats()
  local t2 = wall_ms()
  os.remove(path)
  check(ok, "modal.reload: %s", tostring(err))
  check_after_reload(M, keep, live, 2)
  local s = stats.machines[name]
  check(s and s.instances == live, "modal.stats() counts %s live instances, want %d",
    tostring(s and s.instances), live)
  check(s.postponed == math.max(1, live // 10), "modal.stats() counts %s postponed calls, want %d",
    tostring(s.postponed), math.max(1, live // 10))
  check(keep[live].id > churned, "the live instances' ids do not span the churn")
  io.write(string.format("reload_ms=%.6f stats_ms=%.6f\n", t1 - t0, t2 - t1))
end

local function run_churn_child(churned, rep)
  return once("churn " .. churned, rep, function()
    local p = assert(io.popen(string.format("%s %s --child=churn --scale=%.17g 2>&1", quote(LUA),
      quote(HERE .. "run.lua"), SCALE)))
    local out = p:read("a")
    local ok = p:close()
    local r, s = out:match("reload_ms=(%S+) stats_ms=(%S+)")
    check(ok and r, "W7-churn's process failed: %s", out:match("[^\n]*"))
    return { reload = tonumber(r), stats = tonumber(s) }
  end)
end

local CHURNED, LIVE = 1000000, 1000

-- Service over TCP (W6) ----------------------------------------------------------------------
--
-- 100,000 calls, pipelined on one connection to the local echo server (the testing kit's fault
-- server in echo mode, in a process of its own, started once): through a modal.service facade,
-- and by a raw luv client making the same calls (w6_echo.lua). CPU time of this process: the
-- server's work is not counted, and a pipelined client is bound by its own CPU.

local w6_server, w6
local function w6_port()
  if not w6_server then
    w6 = require "w6_echo"
    w6_server = w6.start_server(LUA)
  end
  return w6_server.port
end

local function w6_cpu(client)
  return function(n)
    return (client(w6_port(), n))
  end
end

-- Policies II (W8, W9) ---------------------------------------------------------------------
--
-- W8: calls through a modal.breaker in closed on a ready modal.service (in memory, so what the
-- breaker adds is its own: w8_breaker.lua), against the same service called bare; the bar is
-- on the difference. W9: modal.pool with 4 workers against the same calls made by hand on luv
-- spawn + pipes (w9_pool.lua), wall time per call.

local w8, w9
local function w8_run(fn)
  return function(n)
    w8 = w8 or require "w8_breaker"
    return w8[fn](n)
  end
end
local function w9_run(fn)
  return function(n)
    w9 = w9 or require "w9_pool"
    return w9[fn](n)
  end
end

-- The testing clock (T1, T2) ----------------------------------------------------------------

-- T1's machine: `connecting` runs a job that fails at once, `backoff` waits the next delay of
-- m.data.delays (gRPC's defaults with jitter 0: 1 s, times 1.6, at most 120 s).
local backoff_machine
local function t1_machine()
  backoff_machine = backoff_machine or modal.machine {
    name = "bench_backoff", initial = "idle", methods = {},
    states = {
      idle = { on = { go = "connecting" } },
      connecting = { run = function() return modal.fail("refused", "no server") end, timeout = 20,
                     on = { done = "idle", error = "backoff", timeout = "backoff" } },
      backoff = { timeout = function(m)
                    m.data.i = m.data.i + 1
                    return m.data.delays[m.data.i]
                  end,
                  on = { timeout = "connecting" } },
    },
  }
  return backoff_machine
end

-- T1: wall ms of a backoff schedule of n delays on the testing clock, from the first attempt
-- to the last (n delays, 181 s of virtual time for 10).
local function t1(n)
  local C = modal._clock
  local delays = {}
  for i = 1, n do delays[i] = math.min(1.6 ^ (i - 1), 120) end
  local M = t1_machine()
  C.install(0)
  local mark = C.mark()
  local t0 = wall_ms()
  local c = M:new { i = 0, delays = delays }
  c:fire("go")
  while c.data.i < n do C.next() end
  C.next()                               -- the last delay: the last attempt
  local ms = wall_ms() - t0
  local now = C.now()
  C.drop(mark)
  C.close()
  local want = 0
  for i = 1, n do want = want + delays[i] end
  check(math.abs(now - want) < 1e-6, "the schedule ended at %s s of virtual time, want %s", now, want)
  return ms
end

-- T2: wall ms of one clock:advance over n armed call_later timers (deadlines spread over 100 s,
-- O(n log n) in the heap).
local function t2(n)
  local C = modal._clock
  local ran = 0
  local function f() ran = ran + 1 end
  C.install(0)
  for i = 1, n do modal.call_later((i * 7919 % n) / n * 100, f) end
  fullgc()
  local t0 = wall_ms()
  C.advance(100)
  local ms = wall_ms() - t0
  C.close()
  check(ran == n, "%d timers ran, want %d", ran, n)
  return ms
end

-- Lines ------------------------------------------------------------------------------------
--
-- Each entry is one printed line:
--   id, name   printed first
--   unit       of every figure on the line ("ns/op", "B/call", "ms", ...)
--   n          operations per run (before --scale)
--   modal      function(n, rep) -> modal's figure (raises when its result is wrong); nil: none
--   needs      optional: the field of the modal module the run needs ("machine")
--   bound      optional: the bar on modal's figure itself (absolute, in the line's unit)
--   judged     list of { w = workload, variant = name, field = "ns" | "bytes", target = the bar
--              on modal / that figure, or nil: beside, no bar }, read from floor_plain.lua
--   floors     the project's floors: list of { name, run = function(n, rep) -> figure }, no bar;
--              or a bar against that floor: target = X (modal / floor <= X; throughput = true
--              prints it as throughput >= 1/X) or added = X (modal - floor <= X, in the unit)
--   warmup     false: no warm-up run (a run that starts a process)
--   info       true: no bar; printed under "for reference"
--   note       optional: figures of other systems, for scale

local LINES = {
  {
    id = "W1", name = "toggle, 1M flips", unit = "ns/op", n = 1000000, needs = "machine",
    modal = function(n) return w1_fire(modal_new("toggle"), n) end,
    judged = { { w = "W1", variant = "lua-min-mt", field = "ns", target = 0.70 } },
    floors = {
      { name = "fsm fire", run = function(n) return w1_fire(floor_new("toggle"), n) end },
      { name = "fsm c:flip()", run = function(n) return w1_method(floor_new("toggle"), n) end },
    },
  },
  {
    id = "W2", name = "dispatch query+cb", unit = "ns/op", n = 1000000, needs = "machine",
    modal = function(n) return w2(modal_new("dispatch"), n) end,
    judged = { { w = "W2", variant = "lua-min-mt-dtw", field = "ns", target = 0.45 } },
    floors = { { name = "fsm+twisted-like", run = function(n) return w2(floor_new("dispatch"), n) end } },
  },
  {
    id = "W3", name = "postpone-drain", unit = "ns/call", n = 100000, needs = "machine",
    modal = function(n) return w3(modal_new("dispatch"), n) end,
    judged = { { w = "W3", variant = "lua-min-mt-dtw", field = "ns", target = 1.0 } },
    floors = { { name = "fsm+twisted-like", run = function(n) return w3(floor_new("dispatch"), n) end } },
  },
  {
    id = "W3-mem", name = "postponed call+1cb", unit = "B/call", n = 100000, needs = "machine",
    modal = function(n) return w3_mem(modal_new("dispatch"), n) end,
    bound = 160,
    judged = { { w = "W3", variant = "lua-min-mt-dtw", field = "bytes" } },
    floors = { { name = "fsm+twisted-like", run = function(n) return w3_mem(floor_new("dispatch"), n) end } },
    note = "gen_statem 278 B",
  },
  {
    id = "W4", name = "idle instance", unit = "B/instance", n = 100000, needs = "machine",
    modal = function(n, rep) return modal_w4(n, rep).bytes end,
    bound = 160,
    judged = { { w = "W4", variant = "lua-min-mt", field = "bytes" } },
    floors = { { name = "fsm", run = function(n, rep) return fsm_w4(n, rep).bytes end } },
    note = "Automat 240 B, gen_statem 2.7 KB, XState 3.6 KB",
  },
  {
    id = "W5", name = "deferred+3cb+fire", unit = "ns/op", n = 1000000,
    modal = function(n) return w5(modal and modal.deferred, n) end,
    judged = {
      { w = "W5", variant = "lua-dtw", field = "ns", target = 0.30 },
      { w = "W5", variant = "lua-dmin", field = "ns", target = 0.60 },
    },
    floors = {
      { name = "twisted-like", run = function(n) return w5(twisted.new, n) end },
      { name = "bare", run = function(n) return w5(bare.new, n) end },
    },
  },
  {
    id = "W5-mem", name = "pending deferred+1cb", unit = "B/deferred", n = 100000,
    modal = function(n) return w5_mem(modal and modal.deferred, n) end,
    bound = 128,
    floors = {
      { name = "twisted-like", run = function(n) return w5_mem(twisted.new, n) end },
      { name = "bare", run = function(n) return w5_mem(bare.new, n) end },
    },
  },
  {
    id = "W6", name = "service echo, TCP", unit = "ns/call", n = 100000, needs = "service",
    modal = w6_cpu(function(port, n) return w6.service(port, n) end),
    floors = {
      { name = "raw luv", run = w6_cpu(function(port, n) return w6.raw(port, n) end),
        target = 1.25, throughput = true },
      { name = "modal.machine", run = w6_cpu(function(port, n) return w6.machine(port, n) end) },
    },
    note = "pipelined on one connection; the echo server in its own process",
  },
  {
    id = "W8", name = "breaker, closed", unit = "ns/call", n = 200000, needs = "breaker",
    modal = w8_run("guarded"),
    floors = { { name = "bare service call", run = w8_run("bare"), added = 500 } },
    note = "modal's figure: calls through the breaker; the bar: what it adds to each",
  },
  {
    id = "W9", name = "pool, 4 workers", unit = "us/call", n = 20000, needs = "pool",
    modal = w9_run("pool"),
    floors = {
      { name = "luv spawn+pipes", run = w9_run("raw"), target = 1 / 0.7, throughput = true },
    },
    note = "20,000 trivial calls, cat as the worker; wall time",
  },
  {
    id = "W7", name = "reload, 100k live", unit = "ms", n = 100000, needs = "reload",
    modal = w7, bound = 50,
  },
  {
    id = "W7-churn", name = "reload, 1k live/1M", unit = "ms", n = CHURNED, needs = "reload",
    modal = function(n, rep) return run_churn_child(n, rep).reload end,
    bound = 2, warmup = false,
  },
  {
    id = "W7-stats", name = "stats(), 1k live/1M", unit = "ms", n = CHURNED, needs = "stats",
    modal = function(n, rep) return run_churn_child(n, rep).stats end,
    bound = 1, warmup = false,
  },
  {
    id = "T1", name = "clock: 10 backoffs", unit = "ms", n = 10, needs = "_clock",
    modal = t1, bound = 10, note = "181 s of virtual time",
  },
  {
    id = "W0", name = "o:m(x)", unit = "ns/op", n = 10000000, info = true,
    floors = {
      { name = "lua", run = function(n)
        local C = {}
        C.__index = C
        function C:m(x) return x + 1 end -- luacheck: ignore 212/self
        local o = setmetatable({}, C)
        local x = 0
        local ns = cpu_ns(function(k) for _ = 1, k do x = o:m(x) end end, n)
        check(x == n, "ended at %d", x)
        return ns
      end },
    },
    note = "the unit",
  },
  {
    id = "W4-new", name = "M:new()", unit = "ns/op", n = 100000, needs = "machine", info = true,
    modal = function(n, rep) return modal_w4(n, rep).ns end,
    judged = { { w = "W4", variant = "lua-min-mt", field = "ns" } },
    floors = { { name = "fsm", run = function(n, rep) return fsm_w4(n, rep).ns end } },
    note = "timed in W4's pass",
  },
  {
    id = "T2", name = "clock: advance 100k", unit = "ms", n = 100000, needs = "_clock", info = true,
    modal = t2, note = "one clock:advance over 100,000 armed timers, O(n log n)",
  },
}

-- Runner ------------------------------------------------------------------------------------

local function median(xs)
  table.sort(xs)
  local k = #xs
  if k % 2 == 1 then return xs[(k + 1) // 2] end
  return (xs[k // 2] + xs[k // 2 + 1]) / 2
end

-- Three significant digits (0.304, 2.66, 88.1); whole numbers from 100 up.
local function sig3(x)
  if x == 0 or x ~= x or x == math.huge then return tostring(x) end
  local d = 2 - math.floor(math.log(math.abs(x), 10))
  if d < 0 then d = 0 end
  return string.format("%." .. d .. "f", x)
end

local failed, misses = false, {}

-- " (target <= X) ok" or "... MISS" (then noted for the summary as `what`).
local function verdict(value, target, shown_target, what)
  if value <= target then return string.format(" (target <= %s) ok", shown_target) end
  misses[#misses + 1] = what
  return string.format(" (target <= %s) MISS", shown_target)
end

local function bench(w)
  local n = math.max(1, math.floor(w.n * SCALE + 0.5))
  local missing = w.needs and modal and modal[w.needs] == nil
  local runs = {}
  if w.modal and modal and not missing then runs[#runs + 1] = { name = "modal", run = w.modal } end
  for _, j in ipairs(w.judged or {}) do
    runs[#runs + 1] = { name = j.variant, run = plain_figure(j.w, j.variant, j.field), judged = j }
  end
  for _, f in ipairs(w.floors or {}) do
    runs[#runs + 1] = { name = f.name, run = f.run, target = f.target, throughput = f.throughput,
                        added = f.added }
  end

  local samples, errors = {}, {}
  for i = 1, #runs do samples[i] = {} end
  local function take(i, size, rep)
    local ok, figure = pcall(runs[i].run, size, rep)
    if not ok then errors[i] = tostring(figure)
    elseif type(figure) ~= "number" then errors[i] = "no figure (" .. tostring(figure) .. ")"
    elseif rep > 0 then samples[i][rep] = figure end
  end
  if w.warmup ~= false then
    for i, r in ipairs(runs) do
      if not r.judged then take(i, math.max(1, n // 10), 0) end
    end
  end
  for rep = 1, REPS do
    for k = 1, #runs do
      local i = rep % 2 == 1 and k or #runs + 1 - k
      if not errors[i] then take(i, n, rep) end
    end
  end

  -- The figures of the repetitions that ran (a list), and the ratio modal/floor: the median of
  -- the ratios within each repetition, where both ran back to back (load that drifts over the
  -- run changes both figures of a pair alike, not their ratio).
  local function figures(i)
    local xs = {}
    for rep = 1, REPS do if samples[i][rep] then xs[#xs + 1] = samples[i][rep] end end
    return xs
  end
  local function paired_ratio(si, i)
    local rs = {}
    for rep = 1, REPS do
      local a, b = samples[si][rep], samples[i][rep]
      if a and b and b > 0 then rs[#rs + 1] = a / b end
    end
    if #rs == 0 then return median(figures(si)) / median(figures(i)) end
    return median(rs)
  end
  -- The same for what modal adds to the floor: the median of the differences within each run.
  local function paired_difference(si, i)
    local ds = {}
    for rep = 1, REPS do
      local a, b = samples[si][rep], samples[i][rep]
      if a and b then ds[#ds + 1] = a - b end
    end
    if #ds == 0 then return median(figures(si)) - median(figures(i)) end
    return median(ds)
  end

  local unit, bunit = w.unit, w.unit:match("^(%S-)/") or w.unit
  local parts, own = {}, {}
  local subject -- modal's run index, for the ratios
  for i, r in ipairs(runs) do
    local part
    if errors[i] then
      failed = true
      part = r.name .. " FAILED: " .. errors[i]
    else
      local m = median(figures(i))
      part = r.name .. " " .. sig3(m) .. " " .. unit
      if r.name == "modal" then
        subject = i
        if w.bound then
          part = part .. verdict(m, w.bound, w.bound .. " " .. bunit,
            string.format("%s %s %s (target <= %g)", w.id, sig3(m), bunit, w.bound))
        end
      elseif subject then
        local ratio = paired_ratio(subject, i)
        part = part .. ", ratio " .. sig3(ratio)
        local target = r.judged and r.judged.target or r.target
        if r.added then                    -- a bar on what modal adds to the floor, per operation
          local d = paired_difference(subject, i)
          part = part .. string.format(", modal adds %s %s", sig3(d), bunit) .. verdict(d, r.added,
            r.added .. " " .. bunit, string.format("%s adds %s %s to %s (target <= %g)", w.id, sig3(d),
              bunit, r.name, r.added))
        elseif target and r.throughput then    -- a bar on throughput: at least 1/target of the floor's
          part = part .. string.format(", throughput %sx", sig3(1 / ratio)) .. verdict(ratio, target,
            string.format("%.2f: throughput >= %.2fx", target, 1 / target),
            string.format("%s throughput %sx vs %s (target >= %.2fx)", w.id, sig3(1 / ratio), r.name,
              1 / target))
        elseif target then
          part = part .. verdict(ratio, target, string.format("%.2f", target),
            string.format("%s ratio %s vs %s (target <= %.2f)", w.id, sig3(ratio), r.name, target))
        end
      elseif r.judged and r.judged.target then
        part = part .. string.format(" (target <= %.2f: no modal figure)", r.judged.target)
      end
    end
    if r.name == "modal" or r.judged or r.target or r.added then
      parts[#parts + 1] = part
    else
      own[#own + 1] = part
    end
  end
  if w.modal and not modal then table.insert(parts, 1, "modal -")
  elseif missing then table.insert(parts, 1, "modal." .. w.needs .. " not built") end
  local line = table.concat(parts, " | ")
  if #own > 0 then
    line = line .. (line ~= "" and " || " or "") .. "project floors: " .. table.concat(own, " | ")
  end
  if w.note then line = line .. " [" .. w.note .. "]" end
  print(string.format("%-8s %-20s %s", w.id, w.name, line))
  io.stdout:flush()
end

if CHILD == "churn" then
  assert(modal, modal_note)
  churn_child(math.max(1, math.floor(CHURNED * SCALE + 0.5)), math.max(1, math.floor(LIVE * SCALE + 0.5)))
  os.exit(0)
elseif CHILD then
  error("unknown --child=" .. CHILD)
end

print(string.format("modal bench — %s, median of %d run%s%s; CPU time (os.clock), W7*, W9 and T* wall time",
  _VERSION, REPS, REPS == 1 and "" or "s",
  SCALE ~= 1 and string.format(", scale %g (the judged floor runs at its own counts)", SCALE) or ""))
print("judged floor: bench/floor_plain.lua (its own process); ratio = modal / floor, lower is better")
if modal_note then print(modal_note .. " — floors only") end
local heading = false
for _, w in ipairs(LINES) do
  if next(only) == nil or only[w.id:upper()] or (w.id == "W7-stats" and only["W7-CHURN"]) then
    if w.info and not heading then print("for reference, no bar:"); heading = true end
    bench(w)
  end
end
if w6_server then w6_server.stop() end
if failed then print("FAILED: a run raised or measured a wrong result (see FAILED above)") end
if #misses == 0 then
  print("all bars met")
else
  print(string.format("%d MISS: %s", #misses, table.concat(misses, "; ")))
end
if failed or (STRICT and #misses > 0) then os.exit(1) end
