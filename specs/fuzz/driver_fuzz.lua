-- specs/fuzz/driver_fuzz.lua — a seeded re-entry fuzzer for the machine driver (`make
-- fuzz-driver`; doc/machines.md, rules 1-13, and doc/reload.md).
--
-- Each iteration makes a random small machine (2-5 states plus a final `dead`; methods,
-- inputs, guarded lists, internal transitions, timeouts as numbers and functions, run jobs,
-- final states, ignore lists, max_postponed), a few instances, and drives them with random
-- operations from outside. All user code of the definition — handlers, enter/exit hooks,
-- guards, actions, run, timeout functions, migrate — and every other place rule 12 lists
-- (on_transition observers, when() callbacks, cancellers and callbacks of the Deferreds it
-- hands out, the unhandled reporter, the log sink, __tostring/__index/__gc of the values it
-- raises and passes) runs random operations in turn: method calls and c:fire on this and
-- other instances (random arguments, nils and trailing nils included), d:cancel(), firing
-- Deferreds, modal.reload, M:new, collectgarbage, raising, returning odd values.
--
-- Invariants, checked as it goes and after every outside step:
--   * every call's Deferred is answered at most once, and exactly once after the cleanup
--     (every instance is driven to `dead`, every pending Deferred cancelled);
--   * c:postponed() equals the calls the model knows to be waiting, and never exceeds
--     max_postponed (the largest any version had); a handler runs only for a call that is
--     being made or is waiting, with its own arguments (count and identity);
--   * inputs fired at an instance are handled in the order fired, never nested, with their
--     own arguments (nil and trailing nils included), by that instance, and before the
--     outside operation that led to them returns (a c:fire that a finalizer interrupted has
--     no order against the inputs that finalizer fired);
--   * a state's user code runs only in that state; a job's done/error and a state timeout are
--     taken only by the entry that started them (definitions with enter hooks everywhere);
--   * an outside c:fire raises exactly when the state neither takes nor ignores the input;
--     nothing else the contract says never raises does; no instance is left busy (an unknown
--     input fired from outside raises at once);
--   * modal.reload raises inside a drive and while migrate runs; from outside it succeeds or
--     fails exactly as the definitions say, and a failed reload changes nothing;
--   * no ASan/UBSan report (run under the ASan build: `make fuzz-driver`).
--
-- Environment: FUZZ_SEED (default 1), FUZZ_ITERATIONS (default 2000), FUZZ_START (the first
-- iteration, default 1), FUZZ_VERBOSE=N (the trace of every iteration from the N-th on),
-- FUZZ_KEEP_GOING=1 (count findings instead of stopping at the first), FUZZ_GC=manual (see
-- below), FUZZ_DIR (where definition files go; default $MODAL_BUILD/fuzz).
--
-- Each iteration reseeds from (seed, iteration). The collector runs as usual by default, so
-- finalizers run at any allocation — modal's own included, which is where several findings
-- are — but where depends on table layouts that vary from run to run (addresses, the string
-- hash seed): a seed replays nearly, not exactly. With FUZZ_GC=manual the collector runs only
-- when an operation calls collectgarbage, and a seed replays exactly. Every finding prints the
-- last events of its iteration ("| " per level of nested chaos, "[gc]" in a finalizer).
local modal = require "modal"

local getenv, format, concat = os.getenv, string.format, table.concat
local random, unpack = math.random, table.unpack
local rawequal, rawget, select, type, pcall, tostring = rawequal, rawget, select, type, pcall, tostring

local function env_int(name, default)
  return math.tointeger(tonumber(getenv(name) or "")) or default
end

local SEED = env_int("FUZZ_SEED", 1)
local ITERATIONS = env_int("FUZZ_ITERATIONS", 2000)
local START = env_int("FUZZ_START", 1)
local VERBOSE_FROM = env_int("FUZZ_VERBOSE", 0)   -- 1: every iteration; N: from iteration N
local VERBOSE = false
local KEEP_GOING = getenv("FUZZ_KEEP_GOING") == "1"
local GC_MANUAL = getenv("FUZZ_GC") == "manual"   -- the collector runs only when told to
local DIR = getenv("FUZZ_DIR") or ((getenv("MODAL_BUILD") or "build") .. "/fuzz")

local INPUTS = { "a", "b", "c" }          -- fired by hand; "done" and "error" are declared too
local DECLARED = { "a", "b", "c", "done", "error" }
local MAX_DEPTH = 3                       -- nested chaos
local OPS_BUDGET = 160                    -- chaos operations per iteration
local EAGER_BUDGET = 40                   -- immediate job outcomes and raises per iteration

local stats = { iterations = 0, steps = 0, ops = 0, calls = 0, fires = 0, reloads = 0,
  reloads_ok = 0, gc_runs = 0, bombs = 0, user_code = 0, turns = 0, findings = 0 }
local findings, finding_order = {}, {}

local W                                   -- the current iteration's world

-- ======================================================================== helpers

local function chance(p) return random() < p end
local function pick(list) return list[random(#list)] end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function contains(list, x)
  if not list then return false end
  for i = 1, #list do
    if list[i] == x then return true end
  end
  return false
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

-- Tokens: plain tables that say what they stand for under a private key.
local MARK = {}
local function token(kind, t)
  t[MARK] = kind
  return t
end
local function kind_of(v)
  return type(v) == "table" and rawget(v, MARK) or nil
end

local function note(fmt, ...)
  if not W then return end
  local ring = W.trace
  local line = format(fmt, ...)          -- first: a finalizer may note meanwhile
  if W.depth > 0 or W.in_bomb > 0 then   -- how deep in chaos, and whether in a finalizer
    line = format("%s%s%s", ("| "):rep(W.depth), W.in_bomb > 0 and "[gc] " or "", line)
  end
  ring.n = ring.n + 1
  ring[ring.n % 120] = line
  if VERBOSE then io.stdout:write("  ", line, "\n") end
end

local function dump_trace()
  local ring = W.trace
  io.stdout:write("last events of the iteration:\n")
  for i = math.max(1, ring.n - 119), ring.n do
    io.stdout:write("  ", ring[i % 120] or "?", "\n")
  end
end

local function show(v)
  local k = kind_of(v)
  if k == "fire" then return format("<fire #%d %s>", v.seq, v.input) end
  if k == "call" then return format("<call #%d>", v.rec.id) end
  if k == "job" then return format("<job entry %d>", v.entry) end
  if k then return "<" .. k .. ">" end
  if type(v) == "table" and getmetatable(v) then return "<table>" end
  local ok, s = pcall(tostring, v)
  return ok and s or "<?>"
end

-- The calls the model knows for an instance, for a finding's report.
local function describe_calls(c)
  local parts = {}
  for _, rec in ipairs(W.calls) do
    if rawequal(rec.inst, c) then
      parts[#parts + 1] = format("#%d %s %s%s%s", rec.id, rec.method, rec.d and rec.d:state() or "-",
        rec.waiting and " waiting" or "", rec.outcome and (" " .. rec.outcome) or "")
    end
  end
  return concat(parts, ", ")
end

local function violation(what, detail)
  stats.findings = stats.findings + 1
  local where = format("seed %d, iteration %d, step %s", SEED, W and W.iter or 0,
    tostring(W and W.step))
  if not findings[what] then
    findings[what] = { count = 0, first = where, detail = detail }
    finding_order[#finding_order + 1] = what
    io.stdout:write(format("FINDING (%s): %s%s\n", where, what,
      detail and (" — " .. tostring(detail)) or ""))
    if W then dump_trace() end
    io.stdout:flush()
  end
  findings[what].count = findings[what].count + 1
  if not KEEP_GOING then
    io.stdout:write(format("replay: make fuzz-driver FUZZ_SEED=%d FUZZ_START=%d FUZZ_ITERATIONS=%d"
      .. " FUZZ_VERBOSE=%d%s (%s)\n", SEED, START, (W and W.iter or START) - START + 1,
      W and W.iter or 0, GC_MANUAL and " FUZZ_GC=manual" or "",
      GC_MANUAL and "exactly" or "nearly: the collector's timing varies from run to run"))
    io.stdout:flush()
    os.exit(1, false)
  end
end

local function check(cond, what, detail)
  if not cond then violation(what, detail) end
end

local function is_failure(v) return modal.is_failure(v) end

-- ======================================================================== the shape
-- A definition as plain data (what the model reads), built into a real definition with
-- wrappers around the chaos (build_def). Transitions: { form = "name" | "table" | "list",
-- entries = { { to = name or nil, guard = bool, action = bool }, ... } }.

local function gen_transitions(targets)
  local r = random()
  if r < 0.4 then
    return { form = "name", entries = { { to = pick(targets) } } }
  elseif r < 0.7 then
    local e = { to = chance(0.75) and pick(targets) or nil, guard = chance(0.4),
      action = chance(0.5) }
    return { form = "table", entries = { e } }
  end
  local entries = {}
  for i = 1, random(2, 3) do
    entries[i] = { to = chance(0.8) and pick(targets) or nil, guard = true, action = chance(0.4) }
  end
  if chance(0.5) then entries[#entries].guard = false end
  return { form = "list", entries = entries }
end

-- Makes a shape valid: the rules doc/machines.md lists under "Validation".
local function fix_shape(shape)
  local names, set = {}, {}
  for _, n in ipairs(sorted_keys(shape.states)) do
    names[#names + 1] = n
    set[n] = true
  end
  shape.order = names
  if not set[shape.initial] or shape.states[shape.initial].final then
    for _, n in ipairs(names) do
      if not shape.states[n].final then shape.initial = n break end
    end
  end
  for _, n in ipairs(names) do
    local st = shape.states[n]
    if st.final then
      st.on, st.run, st.timeout = {}, nil, nil
    else
      for _, input in ipairs(sorted_keys(st.on)) do
        local tr = st.on[input]
        for i, e in ipairs(tr.entries) do
          if e.to and not set[e.to] then e.to = pick(names) end
          if tr.form == "list" and i < #tr.entries then e.guard = true end
        end
        if tr.form == "name" and (not tr.entries[1].to) then tr.entries[1].to = pick(names) end
      end
      if st.timeout ~= nil and not st.on.timeout then st.on.timeout = gen_transitions(names) end
      if st.run and not st.on.done then st.on.done = gen_transitions(names) end
      if st.run and not st.on.error then st.on.error = gen_transitions(names) end
      st.on.halt = { form = "name", entries = { { to = "dead" } } }
    end
    for _, m in ipairs(shape.methods) do
      local h = st.handlers[m]
      if h == nil or (st.final and h == "postpone") then
        st.handlers[m] = "fn"
      end
    end
    if shape.tracked then st.enter = true end
  end
  return shape
end

local function gen_state(shape, final, targets)
  local st = { final = final, enter = chance(0.4), exit = chance(0.4), handlers = {}, on = {} }
  if chance(0.2) then st.ignore = { pick(INPUTS) } end
  for _, m in ipairs(shape.methods) do
    local r = random()
    st.handlers[m] = (not final and r < 0.3) and "postpone" or (r < 0.4 and "default") or "fn"
  end
  if not final then
    if chance(0.35) then
      st.timeout = pick { 0, 0, 3600, "fn", "fn" }
    end
    st.run = chance(0.35)
    for _, input in ipairs(INPUTS) do
      if chance(0.55) then st.on[input] = gen_transitions(targets) end
    end
    if not st.run and chance(0.2) then st.on.error = gen_transitions(targets) end
    if not st.run and chance(0.1) then st.on.done = gen_transitions(targets) end
  end
  return st
end

local name_seq = 0
local function gen_shape()
  name_seq = name_seq + 1
  local shape = { name = format("fz%d", name_seq), version = 1, methods = {}, states = {},
    tracked = chance(0.5), migrate = pick { "valid", "dead", "raise", "bad", "none" } }
  for i = 1, random(0, 3) do shape.methods[i] = "m" .. i end
  if chance(0.35) then shape.max_postponed = random(1, 4) end
  if chance(0.25) then shape.ignore = { pick(INPUTS) } end
  local n = random(2, 5)
  local targets = {}
  for i = 1, n do targets[i] = "s" .. i end
  targets[#targets + 1] = "dead"
  for i = 1, n do
    shape.states["s" .. i] = gen_state(shape, i > 1 and chance(0.15), targets)
  end
  shape.states.dead = gen_state(shape, true, targets)
  shape.initial = "s1"
  return fix_shape(shape)
end

-- A new version of the shape for a reload: states and methods added, removed, reordered;
-- handlers, timeouts, runs, transitions and max_postponed changed.
local function mutate(shape)
  local new = copy(shape)
  new.version = shape.version + 1
  new.migrate = pick { "valid", "valid", "dead", "raise", "bad", "none" }
  local names = shape.order
  local targets = {}
  for i, n in ipairs(names) do targets[i] = n end
  if chance(0.35) then                     -- drop a state (never dead)
    local victim = pick(names)
    if victim ~= "dead" then new.states[victim] = nil end
  end
  if chance(0.3) then                      -- add one
    local n = "t" .. random(1, 3)
    targets[#targets + 1] = n
    new.states[n] = gen_state(new, chance(0.2), targets)
  end
  if chance(0.25) and #new.methods > 0 then
    table.remove(new.methods, random(#new.methods))
  end
  if chance(0.25) and not contains(new.methods, "m9") then
    table.insert(new.methods, random(#new.methods + 1), "m9")
  end
  if chance(0.2) and #new.methods > 1 then
    local i, j = random(#new.methods), random(#new.methods)
    new.methods[i], new.methods[j] = new.methods[j], new.methods[i]
  end
  for _, n in ipairs(sorted_keys(new.states)) do
    local st = new.states[n]
    if n ~= "dead" and chance(0.3) then
      local fresh = gen_state(new, n ~= new.initial and chance(0.15), targets)
      if chance(0.5) then st.handlers = fresh.handlers end
      if chance(0.5) then st.timeout, st.on.timeout = fresh.timeout, fresh.on.timeout end
      if chance(0.5) then st.run = fresh.run end
      if chance(0.3) then st.final, st.on = fresh.final, fresh.on end
    end
    for _, m in ipairs(new.methods) do
      if st.handlers[m] == nil then st.handlers[m] = chance(0.3) and "postpone" or "fn" end
    end
  end
  if chance(0.3) then new.max_postponed = chance(0.5) and random(1, 2) or nil end
  if not new.states[new.initial] then new.initial = "dead" end
  return fix_shape(new)
end

-- One line per state, for the trace.
local function describe_shape(shape)
  local lines = { format("%s v%d initial %s methods {%s} max_postponed %s ignore {%s} tracked %s "
    .. "migrate %s", shape.name, shape.version, shape.initial, concat(shape.methods, ","),
    tostring(shape.max_postponed), concat(shape.ignore or {}, ","), tostring(shape.tracked),
    shape.migrate) }
  for _, n in ipairs(shape.order) do
    local st = shape.states[n]
    local parts = { n .. (st.final and " final" or "") .. (st.enter and " enter" or "")
      .. (st.exit and " exit" or "") .. (st.run and " run" or "")
      .. (st.timeout ~= nil and (" timeout=" .. tostring(st.timeout)) or "")
      .. (st.ignore and (" ignore={" .. concat(st.ignore, ",") .. "}") or "") }
    for _, m in ipairs(shape.methods) do parts[#parts + 1] = m .. "=" .. st.handlers[m] end
    for _, input in ipairs(sorted_keys(st.on)) do
      local tr, es = st.on[input], {}
      for _, e in ipairs(tr.entries) do
        es[#es + 1] = (e.guard and "?" or "") .. (e.to or "internal") .. (e.action and "!" or "")
      end
      parts[#parts + 1] = input .. "->" .. tr.form .. ":" .. concat(es, "|")
    end
    lines[#lines + 1] = "  " .. concat(parts, " ")
  end
  return concat(lines, "\n")
end

local function takes(shape, sname, input)
  local st = shape.states[sname]
  return st ~= nil and not st.final and st.on[input] ~= nil
end

local function ignores(shape, sname, input)
  local st = shape.states[sname]
  return contains(shape.ignore, input) or (st ~= nil and contains(st.ignore, input))
end

local function is_final(shape, sname)
  local st = shape.states[sname]
  return st ~= nil and st.final
end

-- ======================================================================== the model

local function info_of(c)
  local info = W.info[c]
  if info then return info end
  local fresh = { fifo = {}, waiting = 0, serial = 0, uncertain = 0 }
  info = W.info[c]                       -- a finalizer run by the allocation may have made one
  if info then return info end
  W.info[c] = fresh
  return fresh
end

-- The definition user code sees: during a reload's switch (M.version is the new one),
-- already the new one; while the reload loads and validates, still the old one.
local function cur_shape()
  local new = W.reloading and W.next_shape
  if new and W.M.version == new.version then return new end
  return W.shape
end

local function set_waiting(rec, on)
  if rec.waiting == on then return end
  rec.waiting = on
  local info = info_of(rec.inst)
  info.waiting = info.waiting + (on and 1 or -1)
end

-- An instance's c:postponed() against the model (not while a direct call of it settles).
local function check_count(c, where)
  local info = info_of(c)
  if info.uncertain > 0 or W.in_bomb > 0 then return end
  local n = c:postponed()
  if n ~= info.waiting then              -- (formats only then: a passing check allocates nothing)
    violation("c:postponed() differs from the calls waiting", format("%s: c:postponed() = %d, "
      .. "waiting = %d (%s); calls: %s", where, n, info.waiting, tostring(c), describe_calls(c)))
  end
end

-- The fire token among the arguments of an input, checked: the instance, the arguments
-- (count and identity), the order (FIFO per instance, never nested), the input's name.
local function observe_fire(m, input, n, ...)
  local tok
  for i = 1, n do
    local v = select(i, ...)
    if kind_of(v) == "fire" then tok = v break end
  end
  if not tok then return end
  check(rawequal(tok.inst, m), "an input's arguments reached another instance",
    format("fire #%d of '%s' for %s seen by %s", tok.seq, tok.input, tostring(tok.inst), tostring(m)))
  check(n == tok.n, "an input's argument count changed",
    format("fire #%d '%s': fired with %d, seen with %d", tok.seq, tok.input, tok.n, n))
  for i = 1, tok.n do
    if not rawequal(select(i, ...), tok.args[i]) then
      violation("an input's arguments changed", format("fire #%d '%s': argument %d fired %s, seen %s",
        tok.seq, tok.input, i, show(tok.args[i]), show((select(i, ...)))))
    end
  end
  if input ~= nil then
    check(input == tok.input, "a hook saw another input's name with its arguments",
      format("fire #%d of '%s' seen as '%s'", tok.seq, tok.input, tostring(input)))
  end
  local info = info_of(m)
  if info.current == tok then return end
  local fifo, pos = info.fifo, nil
  for i = 1, #fifo do
    if fifo[i] == tok then pos = i break end
  end
  if not pos then
    if tok.overlapped then return end      -- a finalizer's inputs went first: see op_fire
    violation("an input was handled out of order, twice, nested or after its operation returned",
      format("fire #%d '%s' on %s (current: %s)", tok.seq, tok.input, tostring(m),
        info.current and ("#" .. info.current.seq) or "none"))
    return
  end
  table.move(fifo, pos + 1, #fifo + pos, 1)   -- the ones before it were handled silently
  info.current = tok
  note("  handles fire #%d '%s' on #%d", tok.seq, tok.input, m.id)
end

-- A job's done/error seen by the state's user code: the entry that started it must be the
-- current one (rule 7), on definitions whose states all count their entries.
local function observe_job(m, input, n, ...)
  if not W.shape.tracked or n < 1 then return end
  local v = ...
  local tok = kind_of(v) == "job" and v or (is_failure(v) and kind_of(rawget(v, "value")) == "job"
    and rawget(v, "value")) or nil
  if not tok then return end
  if input ~= nil and input ~= "done" and input ~= "error" then return end
  local info = info_of(m)
  check(rawequal(tok.inst, m), "a job's outcome reached another instance")
  check(tok.entry == info.serial, "a job's outcome was taken by an entry that did not start it",
    format("job of entry %d (state %s) taken in entry %d (state %s) of %s", tok.entry, tok.state,
      info.serial, tostring(m.state), tostring(m)))
end

local function check_state(m, sname, what)
  if sname == nil or W.in_bomb > 0 then return end
  local now = m.state
  check(now == sname, "user code of a state ran in another state",
    format("%s of state '%s' ran with %s in state '%s'", what, sname, tostring(m.id), tostring(now)))
end

-- ======================================================================== chaos values

local chaos                               -- forward: runs random operations

local function stale(gen) return W == nil or W.iter ~= gen or W.quiet end

-- The standard library's C functions: a finalizer whose collection step one of them (or Lua
-- code) triggered runs where user code may run; one that modal's own C code triggered runs in
-- the middle of a driver operation.
local SAFE_C = {}
for _, lib in ipairs { _G, string, table, math, io, os, coroutine, utf8, debug } do
  for _, f in pairs(lib) do
    if type(f) == "function" then SAFE_C[f] = true end
  end
end

-- The frame whose allocation ran the current finalizer: above the nearest __gc call.
local function allocating_frame()
  for level = 2, 40 do
    local info = debug.getinfo(level, "nSf")
    if not info then return nil end
    if info.name == "__gc" and info.namewhat == "metamethod" then
      local caller = debug.getinfo(level + 1, "nSf")
      return caller
    end
  end
  return nil
end

-- Finalizers (bombs' __gc, the unhandled reporter run by a Deferred's __gc) may run at any
-- allocation, modal's C code included: whatever they do there reaches the driver in the
-- middle of an operation. The trace says where.
local function note_finalizer()
  local frame = allocating_frame()
  if frame and frame.what == "C" and not SAFE_C[frame.func] then
    note("  a finalizer runs inside modal's %s", tostring(frame.name))
  end
end

-- A table whose __gc, __tostring and __index run chaos.
local function bomb(with_tostring)
  local gen = W.iter
  stats.bombs = stats.bombs + 1
  local mt = {
    __gc = function()
      if stale(gen) or W.checking then return end
      note_finalizer()
      W.finalized = W.finalized + 1
      W.in_bomb = W.in_bomb + 1
      chaos("__gc", nil)
      W.in_bomb = W.in_bomb - 1
    end,
  }
  if with_tostring then
    mt.__tostring = function()
      if stale(gen) or W.checking then return "bomb" end
      chaos("__tostring", nil)
      local r = random()
      if r < 0.05 then error("__tostring raised") end
      if r < 0.08 then return 42 end      -- not a string: luaL_tolstring raises
      return "bomb"
    end
    mt.__index = function(_, key)
      if stale(gen) or W.checking then return nil end
      chaos("__index", nil)
      return key == "kind" and "chaos" or nil
    end
  end
  return setmetatable({}, mt)
end

local function rand_value(plain)       -- plain: no Deferred (a link returning one chains on it)
  local r = random(1, 16)
  if plain and r == 14 then r = 16 end
  if r <= 4 then return nil
  elseif r == 5 then return false
  elseif r == 6 then return true
  elseif r == 7 then return random(-3, 1000)
  elseif r == 8 then return 0.25
  elseif r == 9 then return "v" .. random(1, 99)
  elseif r == 10 then return {}
  elseif r == 11 then return bomb(true)
  elseif r == 12 then return bomb(false)
  elseif r == 13 and #W.insts > 0 then return pick(W.insts)
  elseif r == 14 and #W.deferreds > 0 then return pick(W.deferreds).d
  elseif r == 15 then return modal.failure("chaos", "a failure value")
  end
  return ""
end

-- Arguments: up to 10 values, nils and trailing nils included, the token at a random place.
local function rand_args(tok, at_least)
  local n = random(at_least or 0, chance(0.2) and 10 or 4)
  local args = {}
  for i = 1, n do args[i] = rand_value() end
  if tok and n > 0 then args[random(1, n)] = tok end
  return args, n
end

local function rand_error()
  local r = random(1, 6)
  if r == 1 then return "chaos error" end
  if r == 2 then return { "a table" } end
  if r == 3 then return modal.failure("chaos", "a raised failure") end
  if r == 4 then return bomb(true) end
  if r == 5 then return nil end
  return random(1, 9)
end

-- ======================================================================== Deferreds

-- A link that runs chaos, then passes the result on, replaces it or raises.
local function chaos_link(place)
  local gen = W.iter
  return function(r, ...)
    if stale(gen) then return r end
    stats.user_code = stats.user_code + 1
    chaos(place, nil)
    local x = random()
    if x < 0.08 then error(rand_error(), 0) end
    if x < 0.15 then return rand_value(true) end
    return r, ...
  end
end

-- A pending Deferred the fuzzer keeps (to fire or cancel later): kind "job", "reply" (a
-- handler's) or "plain"; `value` is what it should succeed with.
local function new_pending(kind, value)
  local rec = { kind = kind, value = value }
  local canceller
  if chance(0.5) then
    local gen = W.iter
    canceller = function(d)
      if stale(gen) then return end
      stats.user_code = stats.user_code + 1
      note("  canceller of a %s Deferred", kind)
      chaos("canceller", nil)
      local r = random()
      if r < 0.15 then d:callback(rec.value)
      elseif r < 0.25 then d:errback(modal.failure("chaos", "the canceller failed it", rec.value))
      elseif r < 0.35 then error(rand_error(), 0)
      end
    end
  end
  local d = modal.deferred(canceller)
  rec.d = d
  if chance(0.3) then d:add_both(chaos_link("callback of a " .. kind)) end
  W.deferreds[#W.deferreds + 1] = rec
  W.pending[#W.pending + 1] = rec
  return d
end

-- ======================================================================== definitions

local function enter_wrapper()
  W.wrap = W.wrap + 1
  stats.user_code = stats.user_code + 1
end
local function leave_wrapper() W.wrap = W.wrap - 1 end

local function maybe_raise(p)
  if W.quiet or W.eager <= 0 or not chance(p) then return end
  W.eager = W.eager - 1
  leave_wrapper()
  error(rand_error(), 0)
end

local function handler_fn(sname, method)
  local gen = W.iter
  return function(m, ...)
    if stale(gen) then return "quiet" end
    enter_wrapper()
    local n = select("#", ...)
    local rec, retry
    for i = 1, n do
      local v = select(i, ...)
      if kind_of(v) == "call" then rec = v.rec break end
    end
    -- What the call looked like when the driver chose to run this handler, read before
    -- anything allocates (a finalizer run by an allocation may answer or cancel it).
    local answered, again, waited, count = false, false, false, m:postponed()
    if rec then
      answered = rec.answers > 0 and not rec.answered_by_gc
      again = rec.ran and not rec.waiting and not rec.unsure and not rec.answered_by_gc
      waited = rec.waiting
      retry = rec.waiting or rec.unsure
      rec.ran = true
      rec.runs = rec.runs + 1
    end
    local info = info_of(m)
    if count ~= info.waiting and info.uncertain == 0 and W.in_bomb == 0 then
      violation("c:postponed() differs from the calls waiting", format("a handler starts: "
        .. "c:postponed() = %d, waiting = %d (%s); calls: %s", count, info.waiting, tostring(m),
        describe_calls(m)))
    end
    check_state(m, sname, "handler " .. method)
    if rec then
      check(rawequal(rec.inst, m), "a call's handler ran on another instance")
      check(rec.method == method, "a call ran another method's handler",
        format("call #%d of %s ran handler %s", rec.id, rec.method, method))
      check(n == rec.n, "a call's argument count changed",
        format("call #%d: made with %d, handler got %d", rec.id, rec.n, n))
      for i = 1, rec.n do
        if not rawequal(select(i, ...), rec.args[i]) then
          violation("a call's arguments changed", format("call #%d argument %d", rec.id, i))
        end
      end
      if answered then
        violation("a handler ran for a call already answered", format("call #%d (%s), first "
          .. "outcome %s; %s", rec.id, method, tostring(rec.outcome), debug.traceback("", 2)))
      end
      check(not again, "a handler ran again for a call that was not waiting",
        format("call #%d (%s) of %s, first outcome %s, predicted count %s, c:postponed() = %d, "
          .. "model %d", rec.id, method, tostring(m), tostring(rec.outcome), tostring(rec.rejected),
          count, info.waiting))
      note("  handler %s/%s for call #%d (waiting %s)", tostring(sname), method, rec.id,
        tostring(waited))
    end
    if W.quiet then
      leave_wrapper()
      if rec then set_waiting(rec, false) end
      return rec and token("call", { rec = rec }) or nil
    end
    chaos("handler", m)
    local r, outcome, value = random(), "value"
    if r < 0.08 and W.eager > 0 then
      W.eager = W.eager - 1
      outcome, value = "raise", rand_error()
    elseif r < 0.35 then
      local ok, marker = pcall(m.postpone, m)
      if ok then
        W.marker = marker
        outcome, value = "postpone", marker
      else
        outcome, value = "raise", marker
      end
    elseif r < 0.37 and W.marker then   -- a marker of an earlier call, returned again
      outcome, value = "postpone", W.marker
    elseif r < 0.45 then
      value = nil
    elseif r < 0.55 then
      value = rec and token("call", { rec = rec }) or nil
    elseif r < 0.62 then
      value = modal.failure("chaos", "a handler's failure", rec and token("call", { rec = rec }))
    elseif r < 0.7 then
      value = modal.succeed(rec and token("call", { rec = rec }))
    elseif r < 0.75 then
      value = modal.fail(modal.failure("chaos", "a fired failure", rec and token("call", { rec = rec })))
    elseif r < 0.9 then
      value = new_pending("reply", rec and token("call", { rec = rec }))
    elseif r < 0.95 then
      value = modal.deferred()
      value:cancel()
    else
      value = rand_value()               -- may be another call's Deferred: the answer
      if rec and type(value) == "userdata" then rec.cross = true end
    end
    if rec then note("  handler for call #%d: %s %s", rec.id, outcome, show(value)) end
    -- From here to the return nothing allocates: the driver acts on the outcome right after.
    if rec and rec.answers > 0 then     -- answered while its handler ran: nothing to model
      rec.outcome = outcome
    elseif rec then
      if outcome == "postpone" then
        if not retry then                -- a direct call: the driver queues it next, but a
          local shape = cur_shape()      -- finalizer run by its allocations sees the count
          check_count(m, "a handler returns postpone")   -- before: op_call reconciles
          if info.uncertain == 0 then    -- else the count is unknown: no prediction
            rec.rejected = is_final(shape, m.state) or info.waiting >= (shape.max_postponed or 10000)
          end
          rec.unsure = true
          info.uncertain = info.uncertain + 1
        end
      elseif outcome ~= "raise" then
        if rec.unsure then
          rec.unsure = false
          info.uncertain = info.uncertain - 1
        end
        set_waiting(rec, false)
      elseif retry then                  -- answered once the error's __tostring ran: the
        rec.answering = true             -- count is unknown until its Deferred says so
        info.uncertain = info.uncertain + 1
      end
      rec.outcome = outcome
    end
    leave_wrapper()
    if outcome == "raise" then error(value, 0) end
    return value
  end
end

local function guard_fn(sname, input)
  local gen = W.iter
  return function(m, ...)
    if stale(gen) then return false end
    enter_wrapper()
    local n = select("#", ...)
    check_state(m, sname, "guard of " .. input)
    check_count(m, "user code starts")
    observe_fire(m, nil, n, ...)
    observe_job(m, nil, n, ...)
    chaos("guard", m)
    maybe_raise(0.08)
    leave_wrapper()
    if W.marker and chance(0.05) then return W.marker end   -- odd, but true
    return pick { true, false, nil, 1, "yes" }
  end
end

local function action_fn(sname, input)
  local gen = W.iter
  return function(m, ...)
    if stale(gen) then return end
    enter_wrapper()
    local n = select("#", ...)
    check_state(m, sname, "action of " .. input)
    check_count(m, "user code starts")
    observe_fire(m, nil, n, ...)
    observe_job(m, nil, n, ...)
    chaos("action", m)
    maybe_raise(0.1)
    leave_wrapper()
    return rand_value()
  end
end

-- A timeout input seen by exit or enter: the entry that armed it must be current.
local function observe_timeout(m, input)
  if input ~= "timeout" or not W.shape.tracked or W.hand_timeout then return end
  local info = info_of(m)
  if info.timeout_taken == info.serial then return end   -- exit saw it, now enter
  check(info.armed ~= nil and info.armed == info.serial,
    "a state timeout was taken by an entry that did not arm it",
    format("%s: armed for entry %s, current entry %d", tostring(m), tostring(info.armed), info.serial))
  info.timeout_taken = info.serial
end

local function exit_fn(sname)
  local gen = W.iter
  return function(m, to, input, ...)
    if stale(gen) then return end
    enter_wrapper()
    local n = select("#", ...)
    check_state(m, sname, "exit")
    check_count(m, "user code starts")
    check(type(to) == "string", "exit got no target state")
    observe_fire(m, input, n, ...)
    observe_job(m, input, n, ...)
    observe_timeout(m, input)
    chaos("exit", m)
    maybe_raise(0.1)
    leave_wrapper()
  end
end

local function enter_fn(sname)
  local gen = W.iter
  return function(m, from, input, ...)
    if stale(gen) then return end
    enter_wrapper()
    local n = select("#", ...)
    check_state(m, sname, "enter")
    check_count(m, "user code starts")
    local info = info_of(m)
    if from ~= nil then
      observe_timeout(m, input)
      observe_fire(m, input, n, ...)
      observe_job(m, input, n, ...)
    end
    info.serial = info.serial + 1
    info.entered_version = W.M.version
    local st = cur_shape().states[sname]
    info.armed = (st and type(st.timeout) == "number") and info.serial or nil
    note("  enter %s of #%d from %s on %s: entry %d, armed %s", sname, m.id, tostring(from),
      tostring(input), info.serial, tostring(info.armed))
    chaos("enter", m)
    maybe_raise(0.1)
    leave_wrapper()
  end
end

local function run_fn(sname)
  local gen = W.iter
  return function(m)
    if stale(gen) then return modal.deferred() end
    enter_wrapper()
    check_state(m, sname, "run")
    check_count(m, "user code starts")
    chaos("run", m)
    local info = info_of(m)
    local jt = token("job", { inst = m, entry = info.serial, state = sname })
    local r = random()
    local value
    if W.quiet or W.eager <= 0 then
      value = new_pending("job", jt)
    elseif r < 0.07 then
      W.eager = W.eager - 1
      leave_wrapper()
      error(rand_error(), 0)
    elseif r < 0.2 then
      W.eager = W.eager - 1
      value = jt
    elseif r < 0.25 then
      W.eager = W.eager - 1
      value = nil
    elseif r < 0.32 then
      W.eager = W.eager - 1
      value = modal.succeed(jt)
    elseif r < 0.38 then
      W.eager = W.eager - 1
      value = modal.fail(modal.failure("chaos", "the job failed", jt))
    elseif r < 0.42 then
      W.eager = W.eager - 1
      value = modal.deferred()
      value:cancel()
    elseif r < 0.44 and W.marker then      -- an odd value: the postpone marker, as a result
      W.eager = W.eager - 1
      value = W.marker
    else
      value = new_pending("job", jt)
    end
    leave_wrapper()
    return value
  end
end

local function timeout_fn(sname)
  local gen = W.iter
  return function(m)
    if stale(gen) then return nil end
    enter_wrapper()
    check_state(m, sname, "timeout function")
    chaos("timeout function", m)
    maybe_raise(0.06)
    local v = pick { nil, 0, 0, 3600, 3600, 0.5, -1, 0 / 0, math.huge, "1", {}, W.marker or 0 }
    local info = info_of(m)
    if type(v) == "number" and v >= 0 and v < math.huge then
      info.armed = info.serial
    else
      info.armed = nil
    end
    leave_wrapper()
    return v
  end
end

local function migrate_fn(kind, names)
  local gen = W.iter
  return function(m, old, version)
    if W == nil or W.installing or stale(gen) then return "dead" end
    stats.user_code = stats.user_code + 1
    W.in_migrate = W.in_migrate + 1
    -- migrate only reads: M:new, fire, method calls and reload raise
    local ok, err = pcall(m.fire, m, "a")
    check(not ok and tostring(err):find("migrate", 1, true), "c:fire from migrate did not raise", err)
    ok, err = pcall(W.M.new, W.M)
    check(not ok and tostring(err):find("migrate", 1, true), "M:new from migrate did not raise", err)
    if #W.shape.methods > 0 then
      ok, err = pcall(m[W.shape.methods[1]], m)
      check(not ok and tostring(err):find("migrate", 1, true), "a method call from migrate did not raise",
        err)
    end
    ok, err = pcall(modal.reload, W.path)
    check(not ok and tostring(err):find("another reload runs", 1, true),
      "modal.reload from migrate did not raise", err)
    check(type(old) == "string", "migrate got no old state")
    check(version == W.shape.version, "migrate got the wrong old version",
      format("%s, expected %s", tostring(version), tostring(W.shape.version)))
    chaos("migrate", nil)
    W.in_migrate = W.in_migrate - 1
    if kind == "raise" then error("migrate refuses", 0) end
    if kind == "bad" then return pick { 42, "nosuch", nil } end
    if kind == "dead" then return "dead" end
    local to = pick(names)
    W.migrated[m] = to
    return to
  end
end

local function build_transitions(tr, sname, input)
  local function entry(e)
    if tr.form ~= "table" and not e.guard and not e.action and e.to then return e.to end
    local t = { to = e.to }
    if e.guard then t.guard = guard_fn(sname, input) end
    if e.action then t.action = action_fn(sname, input) end
    return t
  end
  if tr.form == "name" then return tr.entries[1].to end
  if tr.form == "table" then return entry(tr.entries[1]) end
  local list = {}
  for i, e in ipairs(tr.entries) do list[i] = entry(e) end
  return list
end

local function build_def(shape)
  local def = { name = shape.name, version = shape.version, initial = shape.initial,
    methods = copy(shape.methods), inputs = copy(DECLARED), max_postponed = shape.max_postponed,
    ignore = copy(shape.ignore), states = {}, defaults = {} }
  if shape.migrate ~= "none" then def.migrate = migrate_fn(shape.migrate, shape.order) end
  for _, method in ipairs(shape.methods) do def.defaults[method] = handler_fn(nil, method) end
  for _, sname in ipairs(shape.order) do
    local st, s = shape.states[sname], {}
    if st.final then s.final = true end
    if st.enter then s.enter = enter_fn(sname) end
    if st.exit then s.exit = exit_fn(sname) end
    if st.run then s.run = run_fn(sname) end
    if st.timeout == "fn" then s.timeout = timeout_fn(sname) elseif st.timeout then s.timeout = st.timeout end
    if st.ignore then s.ignore = copy(st.ignore) end
    if not st.final then
      s.on = {}
      for _, input in ipairs(sorted_keys(st.on)) do
        s.on[input] = build_transitions(st.on[input], sname, input)
      end
    end
    for _, method in ipairs(shape.methods) do
      local h = st.handlers[method]
      if h == "postpone" then s[method] = "postpone"
      elseif h == "fn" then s[method] = handler_fn(sname, method)
      end
    end
    def.states[sname] = s
  end
  return def
end

-- The postponing kind of the method's handler in a state: "postpone", or "fn".
local function handler_kind(shape, sname, method)
  local st = shape.states[sname]
  if not st then return nil end
  return st.handlers[method] == "postpone" and "postpone" or "fn"
end

-- ======================================================================== operations

local function pick_instance(m)
  if m and chance(0.5) and W.info[m] then return m end
  if #W.insts == 0 then return nil end
  return pick(W.insts)
end

local call_seq, fire_seq = 0, 0

-- While a reload plans, M:new, fire and method calls raise "... from migrate": in migrate,
-- and in a finalizer run between its calls (the model cannot tell those apart).
local function planning_refusal(ok, err)
  return not ok and (W.in_migrate > 0 or W.in_reload > 0)
    and tostring(err):find("from migrate", 1, true) ~= nil
end

local function track_call(rec)
  return function(r)
    if rec.answering then
      rec.answering = false
      local info = info_of(rec.inst)
      info.uncertain = info.uncertain - 1
    end
    rec.answers = rec.answers + 1
    set_waiting(rec, false)              -- the model first: anything below may allocate
    -- A finalizer can answer a call at the very start of a handler the driver chose to run
    -- for it (calling a Lua function may run a collection step): the handler's checks allow it.
    if W.in_bomb > 0 then rec.answered_by_gc = true end
    if rec.answers ~= 1 then
      violation("a call was answered twice", format("call #%d (%s)", rec.id, rec.method))
    end
    local tok = kind_of(r) == "call" and r or (is_failure(r) and kind_of(rawget(r, "value")) == "call"
      and rawget(r, "value")) or nil
    if tok and not rec.cross then
      check(tok.rec == rec, "a call was answered with another call's result",
        format("call #%d got the result of call #%d (%s)", rec.id, tok.rec.id,
          is_failure(r) and tostring(rawget(r, "message")) or "a value"))
    end
    note("  call #%d answered (%s)", rec.id, is_failure(r) and tostring(rawget(r, "kind")) or "value")
    return r
  end
end

local function op_call(_, m)
  local c = pick_instance(m)
  local shape = cur_shape()
  if not c then return end
  local method, fn, foreign
  local r = random()
  if r < 0.1 and #W.bound > 0 then
    local b = pick(W.bound)
    method, fn = b.method, b.fn
  elseif r < 0.13 then
    local b = pick(W.bound_other)
    method, fn, foreign = b.method, b.fn, true
  else
    if #shape.methods == 0 then return end
    method = pick(shape.methods)
    fn = c[method]
    if fn == nil then
      violation("an instance lacks a method of its definition", method)
      return
    end
  end
  call_seq = call_seq + 1
  local id = call_seq                    -- (the constructor allocates before it reads fields)
  stats.calls = stats.calls + 1
  local rec = { id = id, inst = c, method = method, answers = 0, waiting = false, unsure = false,
    runs = 0 }
  local args, n = rand_args(token("call", { rec = rec }), 1)
  rec.args, rec.n = args, n
  note("call #%d %s:%s (%d args) in %s", rec.id, tostring(c), method, n, tostring(c.state))
  -- From here to the call nothing allocates: no finalizer can move the instance (or reload)
  -- meanwhile; what the model expects is read here.
  local info = info_of(c)
  shape = cur_shape()
  local state = c.state
  local kind = handler_kind(shape, state, method)
  local before, finalized, certain = info.waiting, W.finalized, info.uncertain == 0
  -- A call to a "postpone" handler is queued inside the call, and what the call drains after
  -- (inputs a finalizer fired meanwhile) already sees it: the count is unknown until it returns.
  local queues = kind == "postpone" and not foreign
  if queues then
    rec.unsure = true
    info.uncertain = info.uncertain + 1
  end
  local ok, d = pcall(fn, c, unpack(args, 1, n))
  -- The model first, before anything allocates: a finalizer run by an allocation could retry
  -- the call and must find it waiting. (d:state() returns an existing string: no allocation.)
  local settles = ok and not foreign and W.in_migrate == 0
  if rec.unsure then                     -- the handlers could not tell: the Deferred can
    rec.unsure = false
    info.uncertain = info.uncertain - 1
    if settles then
      set_waiting(rec, d:state() == "pending" and rec.answers == 0
        and (not rec.ran or rec.outcome == "postpone"))
    end
  elseif settles and not rec.ran then
    if d:state() == "pending" then set_waiting(rec, true) end
  end
  -- Whether the count was known and no finalizer ran in the call (one may answer calls or
  -- queue its own before this one is queued): then `before` is what the call was judged by.
  local clean = W.finalized == finalized and certain
  if foreign then
    check(not ok and tostring(d):find("another machine", 1, true),
      "a bound method called on another machine's instance did not raise", d)
    return
  end
  if W.in_migrate > 0 then
    check(not ok, "a method call from migrate did not raise")
    return
  end
  if planning_refusal(ok, d) then return end
  if not ok then
    violation("a method call raised", d)
    return
  end
  rec.d = d
  note("  call #%d returned %s (%s)", rec.id, tostring(d), d:state())
  if clean and rec.runs == 1 and rec.rejected ~= nil and rec.outcome == "postpone" then
    -- a handler's postpone, judged by the count it saw (nothing ran in between, no retry)
    local queued = d:state() == "pending"
    check(queued ~= rec.rejected, rec.rejected and "a call was queued past max_postponed or in "
      .. "a final state" or "a postponed call failed below max_postponed",
      format("call #%d %s in %s; c:postponed() = %d, max %s", rec.id, method, tostring(c.state),
        c:postponed(), tostring(cur_shape().max_postponed)))
  end
  if not rec.ran then
    local removed = not contains(shape.methods, method)
    if d:state() == "pending" then
      check(not clean or (kind == "postpone" and not removed), "a call is pending although no "
        .. "handler ran", format("call #%d %s in %s (handler kind %s)", rec.id, method,
        tostring(state), tostring(kind)))
      check(not clean or before < (shape.max_postponed or 10000),
        "a call was queued past max_postponed", format("%d waiting, max %s; now c:postponed() = %d, "
        .. "v%d, uncertain %d", before, tostring(shape.max_postponed), c:postponed(), shape.version,
        info.uncertain))
    elseif clean and not removed and kind == "postpone" and W.shape == shape then
      check(before >= (shape.max_postponed or 10000), "a postponed call failed below max_postponed",
        format("%d waiting, max %s, c:postponed() = %d; calls of %s: %s", before,
          tostring(shape.max_postponed), c:postponed(), tostring(c), describe_calls(c)))
    end
  end
  d:add_both(track_call(rec))
  W.calls[#W.calls + 1] = rec
  W.deferreds[#W.deferreds + 1] = { kind = "call", d = d, rec = rec }
  if chance(0.2) then d:add_both(chaos_link("callback of a call")) end
  if chance(0.03) then d:add_timeout(0) end
end

local function pick_input(shape)
  local r = random()
  if r < 0.75 then return pick(INPUTS) end
  if r < 0.8 then return "halt" end
  if r < 0.85 then return "done" end
  if r < 0.9 then return "error" end
  if r < 0.93 and not shape.tracked then return "timeout" end
  if r < 0.96 then return "zz_unknown" end
  return pick(INPUTS)
end

local function op_fire(_, m, outside)
  local c = pick_instance(m)
  if not c then return end
  local shape = cur_shape()
  local input = pick_input(shape)
  if input == "timeout" then W.hand_timeout = true end
  fire_seq = fire_seq + 1
  local seq = fire_seq
  stats.fires = stats.fires + 1
  local tok = token("fire", { seq = seq, inst = c, input = input, overlapped = false })
  local args, n = rand_args(tok)
  tok.args, tok.n = args, n
  note("fire #%d %s '%s' (%d args) in %s%s", seq, tostring(c), input, n, tostring(c.state),
    outside and " from outside" or "")
  local info = info_of(c)
  local has_token = false
  for i = 1, n do if args[i] == tok then has_token = true end end
  -- From here to the fire nothing allocates: no finalizer can move the instance meanwhile.
  shape = cur_shape()
  local state = c.state
  local predicted_raise = not takes(shape, state, input) and not ignores(shape, state, input)
  local fire = c.fire
  if chance(0.05) then fire = W.other_inst.fire end   -- a fire fetched from another machine
  if has_token then info.fifo[#info.fifo + 1] = tok end
  local finalized = W.finalized
  local ok, err = pcall(fire, c, input, unpack(args, 1, n))
  -- A finalizer run while modal queued the input (making the instance's queue) may have
  -- queued its own inputs first: their order against this one is not defined.
  if W.finalized ~= finalized then tok.overlapped = true end
  if not ok then
    if not planning_refusal(ok, err) then
      check(tostring(err):find("does not take input", 1, true), "c:fire raised", err)
      if outside then
        check(predicted_raise, "an outside c:fire raised although the state takes or ignores the input",
          format("%s '%s' in %s: %s", tostring(c), input, tostring(state), tostring(err)))
      end
    end
    if has_token then
      for i = #info.fifo, 1, -1 do
        if info.fifo[i] == tok then table.remove(info.fifo, i) break end
      end
    end
  elseif outside then
    check(not predicted_raise, "an outside c:fire of an input the state does not take returned "
      .. "(the instance was busy?)", format("%s '%s' in %s", tostring(c), input, tostring(state)))
  end
end

local function op_cancel()
  if #W.deferreds == 0 then return end
  local rec = pick(W.deferreds)
  note("cancel a %s Deferred (%s)", rec.kind, rec.d:state())
  local ok, err = pcall(rec.d.cancel, rec.d)
  check(ok, "d:cancel() raised", err)
end

local function op_settle()
  local list = W.pending
  if #list == 0 then return end
  local rec = pick(list)
  if rec.kind == "call" then return end
  local d = rec.d
  local r = random()
  note("settle a %s Deferred (%s)", rec.kind, d:state())
  if r < 0.6 then pcall(d.callback, d, rec.value)
  elseif r < 0.85 then pcall(d.errback, d, modal.failure("chaos", "settled as failed", rec.value))
  else pcall(d.callback, d, rand_value(true))
  end
end

-- The holder of a call fires its Deferred: a postponed call leaves the queue (rule 12).
local function op_settle_call()
  if #W.calls == 0 then return end
  local rec = pick(W.calls)
  if rec.d:state() ~= "pending" then return end
  note("the holder of call #%d fires it", rec.id)
  W.by_holder[rec.d] = true              -- a handler may have answered with a when() Deferred
  pcall(rec.d.errback, rec.d, "the holder gave up")
end

-- The model after a successful reload: an instance that stayed keeps its timer if its state
-- had a timeout and still has one, loses it if the state has none now, and gets one armed
-- from the switch if it gained a timeout (a function's own wrapper notes that one). Where it
-- was planned: where it was before the reload, or where user code run while the file loaded
-- moved it (an entry by the old definition); one the switch's user code moved after that was
-- entered by the new definition, whose enter hook noted what it armed.
local function after_reload(new, before, serials)
  local old = W.shape
  W.shape = new
  W.max_bound = math.max(W.max_bound, new.max_postponed or 10000)
  for i, c in ipairs(W.insts) do
    local info = info_of(c)
    local st = new.states[c.state]
    local prior = before[i] or c.state     -- an instance made during the reload: where it is
    if serials[i] and info.serial ~= serials[i] then
      prior = info.entered_version ~= new.version and c.state or nil
    end
    local was = old.states[prior]
    if st and st.timeout == nil then
      info.armed = nil
    elseif st and prior == c.state and was and was.timeout == nil
        and type(st.timeout) == "number" then
      info.armed = info.serial
    end
  end
end

local reload_now

-- A reload asked for while modal.reload runs (its file, its migrate, its switch) raises and
-- changes nothing (doc/reload.md).
local function nested_reload(place)
  note("reload from %s while a reload runs", place)
  local ok, err = pcall(modal.reload, W.path)
  check(not ok and tostring(err):find("modal.reload: called while", 1, true),
    "a reload asked for while another runs did not raise", err)
end

-- W.reloading stays set from before the new shape is made until the model has it: a finalizer
-- that reloads meanwhile would change the definition under the model's feet, so the model
-- reloads only once modal.reload runs (W.in_reload), and then expects a refusal.
local function op_reload(place, _, outside)
  if not W.path then return end
  if W.reloading then
    if W.in_reload > 0 then nested_reload(place) end
    return
  end
  W.reloading, W.next_shape = true, nil
  reload_now(place, outside)
  W.reloading, W.next_shape = false, nil
end

reload_now = function(place, outside)
  local new = mutate(W.shape)
  local before = {}
  local serials = {}
  for i, c in ipairs(W.insts) do
    before[i], serials[i] = c.state, info_of(c).serial
  end
  local version = W.M.version
  local ran = stats.user_code + stats.ops
  local live_states = {}
  if outside then
    W.checking = true                    -- no finalizer chaos while stats walks (gc_in_modal)
    local got, all = pcall(modal.stats)
    W.checking = false
    if not got then
      violation("modal.stats() raised", all)
      return
    end
    local entry = all.machines[W.shape.name]
    for _, sname in ipairs(W.shape.order) do
      if entry and entry.states[sname] and entry.states[sname] > 0 then
        live_states[#live_states + 1] = sname
      end
    end
  end
  W.next_shape = new
  W.migrated = {}
  stats.reloads = stats.reloads + 1
  note("reload %s to version %d (migrate %s)%s", W.shape.name, new.version, new.migrate,
    outside and " from outside" or (" from " .. place))
  local must_raise = W.wrap > 0 or W.in_migrate > 0
  W.in_reload = W.in_reload + 1
  local ok, r, err = pcall(modal.reload, W.path)
  W.in_reload = W.in_reload - 1
  if must_raise then
    check(not ok, "modal.reload ran inside a drive", place)
    if not ok then
      check(tostring(r):find("modal.call_later(0, modal.reload", 1, true), "modal.reload raised "
        .. "with another message", r)
    end
    if ok and r then after_reload(new, before, serials) end
    return
  end
  if not ok then
    if not outside and tostring(r):find("modal.reload: called while", 1, true) then return end
    violation("modal.reload raised", r)
    return
  end
  if outside then
    local needs = false
    for _, sname in ipairs(live_states) do
      if not new.states[sname] then needs = true end
    end
    local expect_ok = not needs or new.migrate == "valid" or new.migrate == "dead"
    check((r ~= nil) == expect_ok or stats.user_code + stats.ops ~= ran,
      r and "a reload succeeded that migrate should have refused" or "a reload failed", err)
  end
  if r then
    stats.reloads_ok = stats.reloads_ok + 1
    check(W.M.version == new.version, "M.version is not the new version after a reload")
    after_reload(new, before, serials)
    if VERBOSE then io.stdout:write(describe_shape(new), "\n") end
    if outside and stats.user_code + stats.ops == ran then   -- else hooks and jobs may have moved them
      for i = 1, #before do
        local c = W.insts[i]
        local expect = new.states[before[i]] and before[i] or W.migrated[c] or "dead"
        check(c.state == expect, "an instance is not where the reload put it",
          format("%s: expected %s, is %s", tostring(c), expect, tostring(c.state)))
      end
    end
  else
    check(W.M.version == version, "a failed reload changed M.version")
    if outside and stats.user_code + stats.ops == ran then
      for i = 1, #before do
        local c = W.insts[i]
        check(c.state == before[i], "a failed reload moved an instance",
          format("%s: was %s, is %s", tostring(c), before[i], tostring(c.state)))
      end
    end
  end
end

local function register(c)
  W.insts[#W.insts + 1] = c
  info_of(c)
  if chance(0.3) then
    for _, method in ipairs(cur_shape().methods) do
      W.bound[#W.bound + 1] = { method = method, fn = c[method] }
    end
  end
end

local function op_new(_, _, outside)
  if #W.insts >= 6 then return end
  local data = chance(0.8) and {} or nil
  local ok, c = pcall(W.M.new, W.M, data)
  if W.in_migrate > 0 then
    check(not ok, "M:new from migrate did not raise")
    return
  end
  if planning_refusal(ok, c) then return end
  if not ok then
    violation("M:new raised", c)
    return
  end
  note("new %s%s", tostring(c), outside and " from outside" or "")
  register(c)
end

local function op_gc()
  stats.gc_runs = stats.gc_runs + 1
  if chance(0.5) then collectgarbage("collect") else collectgarbage("step", random(0, 64)) end
end

local function op_when(_, m)
  local c = pick_instance(m)
  if not c then return end
  local names = cur_shape().order
  local target = chance(0.95) and pick(names) or "zz_nostate"
  note("when(%s) of %s", target, tostring(c))
  local rec = { kind = "when", inst = c, target = target, answers = 0 }
  local function link(r)                 -- made before the call: nothing allocates in between
    rec.answers = rec.answers + 1
    check(rec.answers == 1, "a when() Deferred was answered twice")
    if not is_failure(r) and not W.by_holder[rec.d] then
      check(rawequal(r, c), "when() succeeded with something else than the instance")
      check(c.state == target, "when() succeeded while the instance is elsewhere",
        format("%s waited for %s, in %s", tostring(c), target, tostring(c.state)))
    end
    return nil
  end
  local ok, d = pcall(c.when, c, target)
  if ok then d:add_both(link) end
  if not ok then
    check(target == "zz_nostate" or not cur_shape().states[target], "c:when() raised for a state "
      .. "of the definition", d)
    return
  end
  check(target ~= "zz_nostate", "c:when() of an unknown state did not raise")
  rec.d = d
  if chance(0.5) then d:add_both(chaos_link("when() callback")) end
  W.whens[#W.whens + 1] = rec
  W.deferreds[#W.deferreds + 1] = rec
end

local function observer(c, _, to)
  if W == nil or W.quiet then return end
  enter_wrapper()
  check(type(to) == "string" and c.state == to, "an observer saw a transition to a state the "
    .. "instance is not in", format("to %s, in %s", tostring(to), tostring(c.state)))
  chaos("observer", c)
  maybe_raise(0.1)
  leave_wrapper()
end

local function op_observe(_, m)
  local c = pick_instance(m)
  if not c then return end
  if chance(0.3) and #W.handles > 0 then
    local h = pick(W.handles)
    h:cancel()
    return
  end
  local gen = W.iter
  W.handles[#W.handles + 1] = c:on_transition(function(...)
    if stale(gen) then return end
    observer(...)
  end)
end

local function op_bomb()
  local _ = bomb(chance(0.5))
end

local function op_check(_, m)
  if W.in_bomb > 0 then return end
  local c = pick_instance(m)
  if c then check_count(c, "inside") end
end

local function op_later()
  local gen = W.iter
  modal.call_later(0, function()
    if stale(gen) then return end
    stats.user_code = stats.user_code + 1
    chaos("call_later callback", nil)
    if chance(0.1) then error(rand_error(), 0) end
  end)
end

local function op_log()
  if not modal.log then return end     -- doc/machines.md "Logging" has it; not every build does
  modal.log(pick { "error", "warn", "info", "debug" }, "a line from user code",
    { machine = W.shape.name, value = bomb(true) })
end

local function op_bind(_, m)
  local c = pick_instance(m)
  if not c or #cur_shape().methods == 0 then return end
  local method = pick(cur_shape().methods)
  W.bound[#W.bound + 1] = { method = method, fn = c[method] }
end

local INSIDE = {
  { op_call, 24 }, { op_fire, 26 }, { op_cancel, 8 }, { op_settle, 8 }, { op_settle_call, 1 },
  { op_reload, 3 }, { op_new, 3 }, { op_gc, 3 }, { op_when, 5 }, { op_observe, 3 },
  { op_bomb, 5 }, { op_check, 6 }, { op_later, 2 }, { op_log, 1 }, { op_bind, 1 },
}

local function weighted(list)
  local total = 0
  for _, e in ipairs(list) do total = total + e[2] end
  local r = random() * total
  for _, e in ipairs(list) do
    r = r - e[2]
    if r < 0 then return e[1] end
  end
  return list[#list][1]
end

chaos = function(place, m)
  if W == nil or W.quiet or W.depth >= MAX_DEPTH or W.checking then return end
  local first = true
  while chance(0.5) do
    if W.ops >= OPS_BUDGET then return end
    if first then
      first = false
      note("  chaos in %s%s", place, m and (" of #" .. tostring(m.id)) or "")
    end
    W.ops = W.ops + 1
    stats.ops = stats.ops + 1
    W.depth = W.depth + 1
    local op = weighted(INSIDE)
    local ok, err = pcall(op, place, m, false)
    W.depth = W.depth - 1
    if not ok then violation("an operation raised unexpectedly in " .. place, err) end
  end
end

-- ======================================================================== sinks

local function log_sink(level, message, fields)
  local _ = fields
  if W == nil or W.iter == nil then return end
  if message:find("internal error", 1, true) then
    violation("modal logged an internal error", message)
  end
  if message:find("log sink failed", 1, true) then
    violation("the log sink failed", message)
  end
  if W.quiet or W.checking then return end
  if level == "error" or level == "warn" or chance(0.3) then chaos("log sink", nil) end
end

local function reporter(f)
  local _ = f
  if W == nil or W.quiet or W.checking then return end
  W.finalized = W.finalized + 1          -- (run by a Deferred's __gc)
  chaos("unhandled reporter", nil)
  if chance(0.05) then error("the reporter raised", 0) end
end

-- ======================================================================== iterations

local function ensure_dir()
  os.execute("mkdir -p '" .. DIR .. "'")
end

local pool = {}                           -- definition files: reused, reloaded per iteration

-- A tag of this run for the files' names, so that runs side by side do not share them.
local RUN_TAG
do
  local name = os.tmpname()
  os.remove(name)
  RUN_TAG = name:match("([%w_]+)$") or "run"
end
local POOL_SIZE = 4

rawset(_G, "MODAL_FUZZ_DEFINITION", function()
  if W and W.next_shape then
    if W.nested_reload_armed then   -- a reload from the file being reloaded
      W.nested_reload_armed = false
      nested_reload("the definition file")
    end
    return build_def(W.next_shape)
  end
  error("MODAL_FUZZ_DEFINITION called without a shape")
end)

local function turn()
  stats.turns = stats.turns + 1
  modal.call_later(0, modal.stop)
  modal.run()
end

local function outside_op()
  local r = random()
  local m = nil
  if r < 0.3 then op_call(nil, m, true)
  elseif r < 0.58 then op_fire(nil, m, true)
  elseif r < 0.64 then op_cancel()
  elseif r < 0.72 then op_settle()
  elseif r < 0.73 then op_settle_call()
  elseif r < 0.78 then op_reload("outside", m, true)
  elseif r < 0.81 then op_new(nil, m, true)
  elseif r < 0.83 then op_gc()
  elseif r < 0.87 then op_when(nil, m)
  elseif r < 0.89 then op_observe(nil, m)
  elseif r < 0.97 then note("loop turn"); turn()
  elseif r < 0.98 then op_bomb()
  else op_bind(nil, m)
  end
end

local function step_checks()
  W.checking = true
  for _, c in ipairs(W.insts) do
    local info = info_of(c)
    local state = c.state
    check(W.shape.states[state] ~= nil, "an instance is in a state its definition does not have",
      format("%s in %s", tostring(c), tostring(state)))
    local ok, err = pcall(c.fire, c, "zz_probe")
    check(not ok and tostring(err):find("no state does", 1, true),
      "an instance was left busy (an unknown input fired from outside did not raise)",
      format("%s: %s", tostring(c), tostring(err)))
    check_count(c, "after the step")
    check(c:postponed() <= W.max_bound, "more calls postponed than max_postponed allows",
      format("%s: %d, max_postponed %d at most so far", tostring(c), c:postponed(), W.max_bound))
    info.fifo, info.current = {}, nil    -- everything fired was handled before the step returned
  end
  local ok, err = pcall(modal.stats)     -- reads every live instance's state
  check(ok, "modal.stats() raised", err)
  W.checking = false
end

local function new_world(iter)
  return { iter = iter, step = "setup", trace = { n = 0 }, info = {}, insts = {}, calls = {},
    deferreds = {}, pending = {}, whens = {}, by_holder = {}, handles = {}, bound = {}, ops = 0, depth = 0,
    wrap = 0, in_bomb = 0, in_migrate = 0, in_reload = 0, finalized = 0, eager = EAGER_BUDGET,
    migrated = {}, quiet = true }
end

local OTHER = modal.machine {
  name = "fz_other", initial = "x", methods = { "m1", "m2", "m3", "m9" },
  states = { x = { m1 = function() end, m2 = function() end, m3 = function() end,
                   m9 = function() end, on = { a = "x" } } },
}
local other_inst = OTHER:new()
local bound_other = {}
for _, method in ipairs { "m1", "m2", "m3", "m9" } do
  bound_other[#bound_other + 1] = { method = method, fn = other_inst[method] }
end

local function setup(iter)
  W = new_world(iter)
  W.other_inst, W.bound_other = other_inst, bound_other
  local shape = gen_shape()
  W.shape = shape
  W.max_bound = shape.max_postponed or 10000   -- the largest bound any version had
  if chance(0.35) then                    -- from a file: modal.load, later modal.reload
    local k = random(1, POOL_SIZE)
    local entry = pool[k]
    if not entry then
      entry = { path = format("%s/def_%d_%s_%d.lua", DIR, SEED, RUN_TAG, k) }
      local f = assert(io.open(entry.path, "w"))
      f:write("return MODAL_FUZZ_DEFINITION()\n")
      f:close()
      pool[k] = entry
      shape.name = format("fz_file%d", k)
      W.next_shape = shape
      W.installing = true
      entry.M = modal.load(entry.path)
      W.installing = false
    else
      shape.name = format("fz_file%d", k)
      -- First a tomb (only `dead`: every instance left from earlier iterations migrates
      -- there, so none comes back to life in the new definition), then the new shape.
      shape.version = entry.version + 2
      W.next_shape = fix_shape { name = shape.name, version = entry.version + 1, methods = {},
        states = { dead = { final = true, handlers = {}, on = {} } }, initial = "dead",
        migrate = "dead" }
      W.installing = true
      collectgarbage()
      local M, err = modal.reload(entry.path)
      check(M ~= nil, "installing a tomb definition by reload failed", err)
      W.next_shape = shape
      M, err = modal.reload(entry.path)
      W.installing = false
      check(M ~= nil, "installing a new definition by reload failed", err)
    end
    entry.version = shape.version
    W.M, W.path = entry.M, entry.path
  else
    local ok, M = pcall(modal.machine, build_def(shape))
    if not ok then
      io.stdout:write("the fuzzer made an invalid definition: ", tostring(M), "\n")
      os.exit(2)
    end
    W.M = M
  end
  W.next_shape = nil
  W.quiet = false
  if VERBOSE then io.stdout:write(describe_shape(shape), "\n") end
  if W.path and chance(0.3) then W.nested_reload_armed = true end
  W.step = "new"
  for _ = 1, random(1, 3) do op_new(nil, nil, true) end
  step_checks()
end

local function cleanup()
  W.step = "cleanup"
  W.quiet = true
  for _, c in ipairs(W.insts) do
    if not is_final(W.shape, c.state) then
      local ok, err = pcall(c.fire, c, "halt")
      check(ok, "halt from outside raised", err)
      check(is_final(W.shape, c.state), "halt from outside did not reach a final state",
        format("%s in %s", tostring(c), tostring(c.state)))
    end
  end
  for _, rec in ipairs(W.pending) do
    if rec.d:state() == "pending" then rec.d:cancel() end
  end
  turn()
  collectgarbage()
  collectgarbage()
  for _, rec in ipairs(W.calls) do
    check(rec.answers == 1, "a call was never answered", format("call #%d %s:%s (waiting %s, "
      .. "outcome %s, Deferred %s, state %s, c:postponed() = %d)", rec.id, tostring(rec.inst),
      rec.method, tostring(rec.waiting), tostring(rec.outcome), rec.d:state(),
      tostring(rec.inst.state), rec.inst:postponed()))
  end
  for _, rec in ipairs(W.whens) do
    check(rec.answers == 1, "a when() Deferred was never answered",
      format("%s waiting for %s, in %s", tostring(rec.inst), rec.target, tostring(rec.inst.state)))
  end
  for _, c in ipairs(W.insts) do
    check(c:postponed() == 0, "calls still postponed after the cleanup",
      format("%s in %s: %d", tostring(c), tostring(c.state), c:postponed()))
  end
end

local function mark_current(iter)        -- where a sanitizer abort happened (specs/fuzz/run.sh)
  local f = io.open(format("%s/current_%d", DIR, SEED), "w")
  if f then
    f:write(format("seed %d, iteration %d (replay: FUZZ_SEED=%d FUZZ_START=%d "
      .. "FUZZ_ITERATIONS=%d)\n", SEED, iter, SEED, START, iter - START + 1))
    f:close()
  end
end

local function iteration(iter)
  mark_current(iter)
  math.randomseed(SEED, iter)
  setup(iter)
  local nsteps = random(4, 24)
  for step = 1, nsteps do
    W.step = step
    outside_op()
    stats.steps = stats.steps + 1
    step_checks()
  end
  cleanup()
  W.quiet = true
  stats.iterations = stats.iterations + 1
  if GC_MANUAL then
    collectgarbage()
    collectgarbage("stop")
  end
end

-- ======================================================================== main

ensure_dir()
if GC_MANUAL then collectgarbage("stop") end
modal.on_log(log_sink)
modal.on_unhandled(reporter)
local clock = os.clock()
io.stdout:write(format("driver_fuzz: seed %d, iterations %d..%d\n", SEED, START,
  START + ITERATIONS - 1))
io.stdout:flush()
for iter = START, START + ITERATIONS - 1 do
  VERBOSE = VERBOSE_FROM > 0 and iter >= VERBOSE_FROM
  if VERBOSE then io.stdout:write(format("iteration %d\n", iter)) end
  iteration(iter)
  if stats.iterations % 5000 == 0 then
    io.stdout:write(format("  ... %d iterations, %d operations, %.0f s\n", stats.iterations,
      stats.ops, os.clock() - clock))
    io.stdout:flush()
  end
end
W = nil
collectgarbage()
for _, entry in ipairs(pool) do os.remove(entry.path) end
io.stdout:write(format("driver_fuzz: seed %d: %d iterations, %d outside steps, %d chaos operations "
  .. "(%d calls, %d fires, %d reloads of which %d succeeded, %d user-code runs, %d loop turns), "
  .. "%d finding(s), %.1f s CPU\n", SEED, stats.iterations, stats.steps, stats.ops, stats.calls,
  stats.fires, stats.reloads, stats.reloads_ok, stats.user_code, stats.turns, #finding_order,
  os.clock() - clock))
for _, what in ipairs(finding_order) do
  io.stdout:write(format("  %dx %s (first: %s)\n", findings[what].count, what, findings[what].first))
end
os.exit(#finding_order == 0 and 0 or 1)
