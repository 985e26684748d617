-- run.lua — the benchmark runner behind `make bench` (DESIGN.md section 9).
--
--   lua5.4 bench/run.lua [--reps=N] [--scale=F] [ID ...]
--
-- from the repo root, with LUA_PATH holding ./bench/?.lua and ./lua/?.lua and LUA_CPATH
-- ./build/?.so (the Makefile sets both). IDs (W0, W5, W5-mem, ...) pick workloads; the default
-- is all of them. --scale multiplies every operation count (0.1 for a quick look).
--
-- Method: the machine may be shared and noisy, so every measurement is taken REPS times
-- (default 5) and the median printed. modal and its floors alternate inside each repetition
-- (the order reversed every other repetition), after one warm-up run of each at a tenth of
-- the size. Times are CPU time (os.clock), after a full collection, and include the garbage
-- collection the workload causes. Every run's result is checked, so a benchmark that stops
-- measuring what it claims to fails loudly.
--
-- Output: one line per workload — modal's figure, then each floor's figure and the ratio
-- modal/floor, with the target where there is one. A missed target is marked MISS; the exit
-- status stays 0 for that (the bench reports, it doesn't judge). A run that raises or whose
-- result is wrong prints FAILED and makes the exit status 1.
--
-- Workloads that need a part of modal not built yet (W1–W4 need modal.machine) print
-- "modal.machine not built — floors only" in modal's place and still run their floors.
--
-- Adding a workload: append an entry to WORKLOADS (see the fields described there).

local clock = os.clock

local REPS, SCALE = 5, 1
local only = {}
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^%-%-(%w+)=(.+)$")
  if k == "reps" then REPS = assert(math.tointeger(tonumber(v)), "--reps wants an integer")
  elseif k == "scale" then SCALE = assert(tonumber(v), "--scale wants a number")
  elseif k then error("unknown option " .. a)
  else only[a:upper()] = true end
end

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

local floor_deferred = require "floor_deferred"
local twisted, bare = floor_deferred.twisted, floor_deferred.bare
local floor_fsm = require "floor_fsm"

-- Workloads ---------------------------------------------------------------------------------
--
-- Each entry:
--   id, name     printed first
--   kind         "time" (the runner times run(n); figures in ns/op) or "bytes" (run(n)
--                measures and returns bytes per op itself; figures in B/op)
--   n            operations per run (before --scale)
--   expect(n)    the value every run must return (as its second result for "bytes")
--   run_modal    function(n) for modal, or nil (W0 has none); skipped when modal is absent
--   needs        optional: the field of the modal module run_modal needs ("machine"); while
--                it is missing the row prints "modal.machine not built — floors only"
--   setup(n)     optional, "time" only: called before the clock starts; its result is run's
--                second argument (a preallocated table, say)
--   modal_target optional: an absolute bound on modal's figure
--   floors       list of { name, run = function(n), target = optional bound on the ratio
--                modal/floor }
--   note         optional: figures of other systems, printed at the end for scale

-- W5: create a Deferred, add three callbacks, fire it. The closures are made once.
local function inc1(v) return v + 1 end
local function inc2(v) return v + 1 end
local function inc3(v) return v + 1 end

-- The value a fired Deferred's chain ended with (a link added to a fired Deferred runs at once).
local function final_value(d)
  local got
  d:add_callback(function(v) got = v; return v end)
  return got
end

-- W5-mem: bytes held by pending Deferreds with one callback each, from collectgarbage("count")
-- (memory obtained through Lua's allocator: tables, closures, userdata).
local fired = 0
local function count_fire(v) fired = fired + 1; return v end

local function bytes_per_pending(new, n)
  local keep = {}
  for i = 1, n do keep[i] = false end -- preallocated: the slots are not part of the figure
  collectgarbage("collect"); collectgarbage("collect")
  local before = collectgarbage("count")
  for i = 1, n do
    local d = new()
    d:add_callback(count_fire)
    keep[i] = d
  end
  collectgarbage("collect"); collectgarbage("collect")
  local after = collectgarbage("count")
  -- check that each one held its callback: fire them all
  fired = 0
  for i = 1, n do keep[i]:callback(i) end
  return (after - before) * 1024 / n, fired
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
    return { name = "dispatch", initial = "connecting", methods = { "query" }, max_postponed = 200000,
      states = {
        connecting = { query = "postpone", on = { ready = "ready" } },
        ready = { query = function(_, x) return succeed(x) end },
      } }
  end,
  -- W4: shaped like the connection machine of DESIGN.md section 5 (idle postpones query until
  -- an outside `connect`); its instances stay idle
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
local function modal_machine(key)
  local M = modal_machines[key]
  if not M then M = modal.machine(DEFS[key](modal)); modal_machines[key] = M end
  return M
end
local function floor_machine(key)
  local M = floor_machines[key]
  if not M then M = floor_fsm.machine(DEFS[key](floor_lib)); floor_machines[key] = M end
  return M
end

-- W2: the caller's callback, made once; it keeps the last value.
local last_seen
local function see(v) last_seen = v; return v end

-- W3: the callback each queued call gets, made once; it counts and checks the order.
local drained, drain_last, drain_order_ok = 0, 0, true
local function count_drained(v)
  drained = drained + 1
  if v ~= drain_last + 1 then drain_order_ok = false end
  drain_last = v
  return v
end

-- Queues n calls on a new instance c of a "dispatch" machine (in connecting); returns c.
local function queue_calls(c, n)
  drained, drain_last, drain_order_ok = 0, 0, true
  for i = 1, n do c:query(i):add_callback(count_drained) end
  return c
end

-- After c:fire("ready"): how many fired, or an error when one is missing or out of order.
local function drained_count(n)
  if drained ~= n or drain_last ~= n or not drain_order_ok then
    error(string.format("%d of %d fired, last %s%s", drained, n, tostring(drain_last),
      drain_order_ok and "" or ", out of order"), 0)
  end
  return drained
end

local function bytes_per_postponed(new, n)
  collectgarbage("collect"); collectgarbage("collect")
  local before = collectgarbage("count")
  local c = queue_calls(new(), n)
  collectgarbage("collect"); collectgarbage("collect")
  local after = collectgarbage("count")
  c:fire("ready")
  return (after - before) * 1024 / n, drained_count(n)
end

-- W4: n idle instances, in a preallocated table.
local function prealloc(n)
  local keep = {}
  for i = 1, n do keep[i] = false end
  return keep
end

local function idle_count(keep, n)
  local idle = 0
  for i = 1, n do if keep[i].state == "idle" then idle = idle + 1 end end
  return idle
end

-- The cheap check inside a timed run (W4 checks every instance): the first and last are idle.
local function ends_idle(keep, n)
  if keep[1].state == "idle" and keep[n].state == "idle" then return n end
  return "not idle: " .. tostring(keep[1].state) .. ", " .. tostring(keep[n].state)
end

local function bytes_per_instance(new, n)
  local keep = prealloc(n)
  collectgarbage("collect"); collectgarbage("collect")
  local before = collectgarbage("count")
  for i = 1, n do keep[i] = new() end
  collectgarbage("collect"); collectgarbage("collect")
  local after = collectgarbage("count")
  return (after - before) * 1024 / n, idle_count(keep, n)
end

local WORKLOADS = {
  {
    id = "W0", name = "o:m(x)", kind = "time", n = 10000000,
    expect = function(n) return n end,
    floors = {
      { name = "lua", run = function(n)
        local C = {}
        C.__index = C
        function C:m(x) return x + 1 end -- luacheck: ignore 212/self
        local o = setmetatable({}, C)
        local x = 0
        for _ = 1, n do x = o:m(x) end
        return x
      end },
    },
  },
  {
    id = "W5", name = "deferred+3cb+fire", kind = "time", n = 1000000,
    expect = function() return 4 end,
    run_modal = function(n)
      local deferred = modal.deferred
      local d
      for _ = 1, n do
        d = deferred(); d:add_callback(inc1); d:add_callback(inc2); d:add_callback(inc3); d:callback(1)
      end
      return final_value(d)
    end,
    floors = {
      { name = "twisted-like", target = 0.30, run = function(n)
        local deferred = twisted.new
        local d
        for _ = 1, n do
          d = deferred(); d:add_callback(inc1); d:add_callback(inc2); d:add_callback(inc3); d:callback(1)
        end
        return final_value(d)
      end },
      { name = "bare", target = 0.60, run = function(n)
        local deferred = bare.new
        local d
        for _ = 1, n do
          d = deferred(); d:add_callback(inc1); d:add_callback(inc2); d:add_callback(inc3); d:callback(1)
        end
        return final_value(d)
      end },
    },
  },
  {
    id = "W5-mem", name = "pending deferred+1cb", kind = "bytes", n = 100000,
    expect = function(n) return n end,
    run_modal = function(n) return bytes_per_pending(modal.deferred, n) end,
    modal_target = 128,
    floors = {
      { name = "twisted-like", run = function(n) return bytes_per_pending(twisted.new, n) end },
      { name = "bare", run = function(n) return bytes_per_pending(bare.new, n) end },
    },
  },
  {
    id = "W1", name = "toggle fire(flip)", kind = "time", n = 1000000, needs = "machine",
    expect = function(n) return n % 2 == 0 and "a" or "b" end,
    run_modal = function(n)
      local c = modal_machine("toggle"):new()
      for _ = 1, n do c:fire("flip") end
      return c.state
    end,
    floors = {
      { name = "fsm", target = 0.7, run = function(n)
        local c = floor_machine("toggle").new()
        for _ = 1, n do c:fire("flip") end
        return c.state
      end },
      { name = "fsm c:flip()", run = function(n)
        local c = floor_machine("toggle").new()
        for _ = 1, n do c:flip() end
        return c.state
      end },
    },
  },
  {
    id = "W2", name = "dispatch query+cb", kind = "time", n = 1000000, needs = "machine",
    expect = function(n) return n end,
    run_modal = function(n)
      local c = modal_machine("dispatch"):new()
      c:fire("ready")
      last_seen = nil
      for i = 1, n do c:query(i):add_callback(see) end
      return last_seen
    end,
    floors = {
      { name = "fsm+twisted-like", target = 0.45, run = function(n)
        local c = floor_machine("dispatch").new()
        c:fire("ready")
        last_seen = nil
        for i = 1, n do c:query(i):add_callback(see) end
        return last_seen
      end },
    },
  },
  {
    id = "W3", name = "postpone-drain", kind = "time", n = 100000, needs = "machine",
    expect = function(n) return n end,
    run_modal = function(n)
      queue_calls(modal_machine("dispatch"):new(), n):fire("ready")
      return drained_count(n)
    end,
    floors = {
      { name = "fsm+twisted-like", target = 1.0, run = function(n)
        queue_calls(floor_machine("dispatch").new(), n):fire("ready")
        return drained_count(n)
      end },
    },
  },
  {
    id = "W3-mem", name = "postponed call+1cb", kind = "bytes", n = 100000, needs = "machine",
    expect = function(n) return n end,
    run_modal = function(n)
      local M = modal_machine("dispatch")
      return bytes_per_postponed(function() return M:new() end, n)
    end,
    modal_target = 160,
    floors = {
      { name = "fsm+twisted-like", run = function(n)
        return bytes_per_postponed(floor_machine("dispatch").new, n)
      end },
    },
    note = "gen_statem 278 B",
  },
  {
    id = "W4", name = "idle instance", kind = "bytes", n = 100000, needs = "machine",
    expect = function(n) return n end,
    run_modal = function(n)
      -- a new machine each run, so its table of live instances grows inside the measure
      local M = modal.machine(DEFS.connection(modal))
      return bytes_per_instance(function() return M:new() end, n)
    end,
    modal_target = 160,
    floors = {
      { name = "fsm", run = function(n) return bytes_per_instance(floor_machine("connection").new, n) end },
    },
    note = "Automat 240 B, gen_statem 2.7 KB, XState 3.6 KB",
  },
  {
    id = "W4-new", name = "new instance", kind = "time", n = 100000, needs = "machine",
    expect = function(n) return n end,
    setup = prealloc,
    run_modal = function(n, keep)
      local M = modal_machine("connection")
      for i = 1, n do keep[i] = M:new() end
      return ends_idle(keep, n)
    end,
    floors = {
      { name = "fsm", run = function(n, keep)
        local new = floor_machine("connection").new
        for i = 1, n do keep[i] = new() end
        return ends_idle(keep, n)
      end },
    },
  },
  -- W7: hot reload with 100,000 live instances and 10,000 postponed calls; the figure is the
  -- time modal.reload blocks the loop (plan, switch every instance, retry the queued calls).
  {
    id = "W7", name = "reload 100k live", kind = "ms", n = 100000, needs = "reload",
    expect = function(n) return n end,
    modal_target = 50,
    run_modal = function(n)
      local path = os.tmpname()                   -- a new file (and name) for every run
      local name = "w7" .. path:gsub("%W", "_")
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
      write(1)
      local M = modal.load(path)
      local keep, postponed = {}, math.max(1, n // 10)
      for i = 1, n do
        local c = M:new()
        keep[i] = c
        if i <= postponed then c:query(i) end        -- idle -> connecting, the call waits
        if i > postponed and i % 3 == 0 then c:fire("close") end
      end
      write(2)
      collectgarbage("collect")
      local t0 = clock()
      local ok, err = modal.reload(path)
      local ms = (clock() - t0) * 1000
      os.remove(path)
      if not ok then error(err) end
      local waiting = keep[1]:postponed()
      for i = 1, postponed do keep[i]:fire("close") end    -- answers every queued call
      if M.version ~= 2 or waiting ~= 1 then return ms, -1 end
      return ms, n
    end,
    floors = {},
  },
}

-- Runner ------------------------------------------------------------------------------------

-- One run: the figure (ns/op or B/op), or nil and why it failed.
local function measure(w, run, n)
  local ctx
  if w.setup then ctx = w.setup(n) end
  collectgarbage("collect")
  local ok, figure, got
  if w.kind == "time" then
    local t0 = clock()
    ok, got = pcall(run, n, ctx)
    figure = (clock() - t0) * 1e9 / n
  else
    ok, figure, got = pcall(run, n)
    if not ok then got = figure end
  end
  if not ok then return nil, "raised: " .. tostring(got) end
  local want = w.expect(n)
  if got ~= want then
    return nil, string.format("wrong result %s (want %s)", tostring(got), tostring(want))
  end
  return figure
end

local function median(xs)
  table.sort(xs)
  local k = #xs
  if k % 2 == 1 then return xs[(k + 1) // 2] end
  return (xs[k // 2] + xs[k // 2 + 1]) / 2
end

local function fmt(x, unit)
  if x < 100 then return string.format("%.1f %s", x, unit) end
  return string.format("%.0f %s", x, unit)
end

local failed = false

local function bench(w)
  local unit = w.kind == "time" and "ns/op" or w.kind == "ms" and "ms" or "B/op"
  local n = math.max(1, math.floor(w.n * SCALE + 0.5))
  -- the runs: modal first (when there is one and it loaded), then the floors
  local runs = {}
  local missing = w.needs and modal and modal[w.needs] == nil
  if w.run_modal and modal and not missing then runs[#runs + 1] = { name = "modal", run = w.run_modal } end
  for _, f in ipairs(w.floors) do runs[#runs + 1] = f end

  local samples, errors = {}, {}
  for i = 1, #runs do samples[i] = {} end
  for i, r in ipairs(runs) do -- warm-up
    local _, err = measure(w, r.run, math.max(1, n // 10))
    errors[i] = err
  end
  for rep = 1, REPS do
    for k = 1, #runs do
      local i = rep % 2 == 1 and k or #runs + 1 - k
      if not errors[i] then
        local figure, err = measure(w, runs[i].run, n)
        if figure then table.insert(samples[i], figure) else errors[i] = err end
      end
    end
  end

  local parts = {}
  local subject -- modal's median, for the ratios
  for i, r in ipairs(runs) do
    local part
    if errors[i] then
      failed = true
      part = r.name .. " FAILED: " .. errors[i]
    else
      local m = median(samples[i])
      part = r.name .. " " .. fmt(m, unit)
      if r.name == "modal" then
        subject = m
        if w.modal_target then
          part = part .. string.format(" (target <= %g)", w.modal_target)
          if m > w.modal_target then part = part .. " MISS" end
        end
      elseif subject then
        local ratio = subject / m
        part = part .. string.format(" ratio %.2f", ratio)
        if r.target then
          part = part .. string.format(" (target <= %.2f)", r.target)
          if ratio > r.target then part = part .. " MISS" end
        end
      end
    end
    if i == 1 and not w.run_modal then part = part .. " (the unit)" end
    parts[#parts + 1] = part
  end
  if w.run_modal and not modal then table.insert(parts, 1, "modal -")
  elseif missing then table.insert(parts, 1, "modal." .. w.needs .. " not built — floors only") end
  if w.note then parts[#parts] = parts[#parts] .. " [for scale: " .. w.note .. "]" end
  print(string.format("%-7s %-21s %s", w.id, w.name, table.concat(parts, " | ")))
  io.stdout:flush()
end

print(string.format("modal bench — %s, CPU time (os.clock), median of %d run%s%s",
  _VERSION, REPS, REPS == 1 and "" or "s", SCALE ~= 1 and string.format(", scale %g", SCALE) or ""))
if modal_note then print(modal_note .. " — floors only") end
for _, w in ipairs(WORKLOADS) do
  if next(only) == nil or only[w.id:upper()] then bench(w) end
end
if failed then os.exit(1) end
