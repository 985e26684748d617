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

-- Workloads ---------------------------------------------------------------------------------
--
-- Each entry:
--   id, name     printed first
--   kind         "time" (the runner times run(n); figures in ns/op) or "bytes" (run(n)
--                measures and returns bytes per op itself; figures in B/op)
--   n            operations per run (before --scale)
--   expect(n)    the value every run must return (as its second result for "bytes")
--   run_modal    function(n) for modal, or nil (W0 has none); skipped when modal is absent
--   modal_target optional: an absolute bound on modal's figure
--   floors       list of { name, run = function(n), target = optional bound on the ratio
--                modal/floor }

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
}

-- Runner ------------------------------------------------------------------------------------

-- One run: the figure (ns/op or B/op), or nil and why it failed.
local function measure(w, run, n)
  collectgarbage("collect")
  local ok, figure, got
  if w.kind == "time" then
    local t0 = clock()
    ok, got = pcall(run, n)
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
  local unit = w.kind == "time" and "ns/op" or "B/op"
  local n = math.max(1, math.floor(w.n * SCALE + 0.5))
  -- the runs: modal first (when there is one and it loaded), then the floors
  local runs = {}
  if w.run_modal and modal then runs[#runs + 1] = { name = "modal", run = w.run_modal } end
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
  if w.run_modal and not modal then table.insert(parts, 1, "modal -") end
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
