--- lua/modal/testing/paths.lua — test paths from a machine definition (doc/testing.md): the
-- shortest paths from `initial` that together take every transition of the definition, and a
-- walk that drives a fresh instance along one path under the virtual clock.
--
--   local testing = require "modal.testing"
--   for _, path in ipairs(testing.paths(Connection)) do
--     testing.walk(Connection, path)      -- raises "walk: step 3 of 4 ..." on a mismatch
--   end
--
-- A step is { input = name, args = {...} } (fire an input), { advance = seconds } (virtual
-- time: the state's timeout) or { job = "done" | "error", args = {...} } (settle the state's
-- run). Generated steps also say where they lead (`to`) and which transition they take
-- (`edge`, a path into the definition like "states.connecting.on.error[2]").
--
-- Paths are found by running the definition, not by reading it alone: an instrumented copy
-- of it (each `run` a Deferred the steps settle, each transition recording itself, each
-- timeout recording its delay) is replayed breadth first from `initial`, one node per state
-- and data, so guards see real instances and the paths found are the shortest. The walk
-- replays one path the same way and checks each step's state against the path (`to`) or,
-- when a step does not say, against the definition's transitions.
--
-- @module modal.testing.paths

local modal = require "modal"
local check = require "modal.check"

local C = modal._clock
local type, pairs, ipairs, next, tostring = type, pairs, ipairs, next, tostring
local pcall, error, setmetatable, getmetatable = pcall, error, setmetatable, getmetatable
local format, concat, sort = string.format, table.concat, table.sort

local M = {}

local DEFAULT_MAX_DEPTH = 10
local DEFAULT_MAX_NODES = 2000

-- The seed math.random gets for each instance a search or a walk drives (doc/testing.md):
-- a definition that draws from math.random (modal.backoff's jitter) draws the same numbers
-- on the walk as on the search. When they end, math.random is reseeded with a number drawn
-- from it before they began: a caller's own seed still decides what it draws next.
local SEED = 20240229

-- The options of paths and of walk (one table serves both: walk uses `data` only).
M.OPTIONS = { "args", "data", "max_depth", "max_nodes" }

local function whole(v)
  return math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v)
    and v < math.huge)
end

-- What is wrong with options for paths or walk (modal test checks --options with it): a
-- list of messages, empty when they are valid ("unknown option 'max_dept' (did you mean
-- 'max_depth'?)", "max_depth takes a whole number >= 1, got 0").
-- What is wrong with the `n` of an argument list (a step's `args`, or one of
-- opts.args[input]) that `name` names, or nil: when given, a whole number >= 0.
local function args_n_problem(args, name)
  local n = args.n
  if n ~= nil and not (math.type(n) == "integer" and n >= 0) then
    return format("%s.n is the number of arguments, a whole number >= 0, got %s", name,
      type(n) == "string" and format("%q", n) or n ~= n and "NaN" or tostring(n))
  end
  return nil
end

function M._option_problems(opts)
  if type(opts) ~= "table" then
    return { "expected a table of options, got " .. type(opts) }
  end
  local out, known, unknown = {}, {}, {}
  for _, k in ipairs(M.OPTIONS) do known[k] = true end
  for k in next, opts do
    if not known[k] then unknown[#unknown + 1] = tostring(k) end
  end
  sort(unknown)
  for _, k in ipairs(unknown) do
    local near = check.nearest(k, M.OPTIONS)
    out[#out + 1] = format("unknown option '%s'%s", k, near
      and format(" (did you mean '%s'?)", near)
      or " (options: " .. concat(M.OPTIONS, ", ") .. ")")
  end
  for _, k in ipairs({ "max_depth", "max_nodes" }) do
    local v = opts[k]
    if v ~= nil and not (whole(v) and v >= 1) then
      out[#out + 1] = format("%s takes a whole number >= 1, got %s", k,
        type(v) == "number" and (v ~= v and "NaN" or tostring(v)) or type(v))
    end
  end
  local data = opts.data
  if data ~= nil and type(data) ~= "table" and type(data) ~= "function" then
    out[#out + 1] = "data takes a table or a function returning one, got " .. type(data)
  end
  local args = opts.args
  if args ~= nil and type(args) ~= "table" then
    out[#out + 1] = "args takes a table { [input] = { args1, args2, ... } }, got " .. type(args)
  elseif args ~= nil then
    for input, alts in next, args do
      if type(alts) ~= "table" then
        out[#out + 1] = format("args.%s takes a list of argument lists, got %s",
          tostring(input), type(alts))
      else
        for i, list in ipairs(alts) do
          if type(list) ~= "table" then
            out[#out + 1] = format("args.%s[%d] takes a list of arguments { ... }, got %s (write "
              .. "{ { %s } } for one call with that argument)", tostring(input), i, type(list),
              type(list) == "string" and format("%q", list) or tostring(list))
          else
            out[#out + 1] = args_n_problem(list, format("args.%s[%d]", tostring(input), i))
          end
        end
      end
    end
  end
  return out
end

-- Raises "fname: problem" (each problem on its own line) when `opts` are not valid.
local function checked_options(opts, fname)
  if opts == nil then return {} end
  local problems = M._option_problems(opts)
  if #problems > 0 then
    error(format("%s: %s", fname, concat(problems, "\n  ")), 3)
  end
  return opts
end

-- ============================================================== reading a definition

-- Per definition table: { def, norm, edges, by_id, copy (the instrumented machine), info }.
local cache = setmetatable({}, { __mode = "k" })

local function is_machine(x)
  return type(x) == "userdata" and tostring(x):find("^modal%.machine") ~= nil
end

-- The name of transition k of on[input] in state `sname`: its path in the definition, as
-- validation writes it ("states.a.on.go", "states.a.on.go[2]" in a list).
local function edge_id(def, sname, input, k)
  local raw = def.states[sname].on[input]
  local listed = type(raw) == "table" and raw[1] ~= nil
  return "states." .. sname .. ".on." .. input .. (listed and "[" .. k .. "]" or "")
end

-- The transitions of a normalized definition, in state and input order: { id, state, input,
-- branch, to (the target; the state itself for an internal one), internal, guarded }.
local function edges_of(def, norm)
  local edges, by_id = {}, {}
  for _, st in ipairs(norm.states) do
    for _, entry in ipairs(st.on or {}) do
      for k, t in ipairs(entry.transitions) do
        local id = edge_id(def, st.name, entry.input, k)
        local e = { id = id, state = st.name, input = entry.input, branch = k,
                    to = t.to or st.name, internal = t.to == nil, guarded = t.guard ~= nil }
        edges[#edges + 1] = e
        by_id[id] = e
      end
    end
  end
  return edges, by_id
end

-- What one instance of the instrumented copy did: the transitions it took (ids, in order),
-- its current job's Deferred, and when its current state's timeout was armed and for how long.
local function info_of(entry, m)
  local i = entry.info[m]
  if not i then
    i = { edges = {} }
    entry.info[m] = i
  end
  return i
end

-- The copy of `def` that a walk drives: same states, handlers and hooks, but every transition
-- records itself (an action wrapping the one given), every `run` returns a Deferred the walk
-- settles, and every `timeout` records its delay.
local function instrument(entry)
  local def, norm = entry.def, entry.norm
  local copy = {}
  for k, v in next, def do copy[k] = v end
  copy.states = {}
  for _, st in ipairs(norm.states) do
    local raw = def.states[st.name]
    local cs = {}
    for k, v in next, raw do cs[k] = v end
    local enter = raw.enter
    cs.enter = function(m, ...)           -- a new entry: no timeout, no job yet
      local i = info_of(entry, m)
      i.armed_at, i.delay, i.job = nil, nil, nil
      if enter then return enter(m, ...) end
    end
    if raw.run ~= nil then
      cs.run = function(m)
        local d = modal.deferred()
        info_of(entry, m).job = d
        return d
      end
    end
    if raw.timeout ~= nil then
      local timeout = raw.timeout
      cs.timeout = function(m)
        local s = timeout
        if type(s) == "function" then s = s(m) end
        if type(s) == "number" and s >= 0 and s < math.huge then
          local i = info_of(entry, m)
          i.armed_at, i.delay = modal.now(), s
        end
        return s
      end
    end
    if raw.on ~= nil then
      cs.on = {}
      for _, e in ipairs(st.on) do
        local list = {}
        for k, t in ipairs(e.transitions) do
          local id = edge_id(def, st.name, e.input, k)
          local action, guard = t.action, t.guard
          if guard then                   -- a guard that raises: noted for the coverage
            local raw_guard = guard
            guard = function(m, ...)
              local ok, r = pcall(raw_guard, m, ...)
              if not ok then
                if entry.guard_errors[id] == nil then entry.guard_errors[id] = tostring(r) end
                error(r, 0)
              end
              return r
            end
          end
          list[k] = { to = t.to, guard = guard, action = function(m, ...)
            local taken = info_of(entry, m).edges
            taken[#taken + 1] = id
            if action then return action(m, ...) end
          end }
        end
        cs.on[e.input] = list
      end
    end
    copy.states[st.name] = cs
  end
  entry.copy = modal.machine(copy)
end

-- The cached reading of a machine or a definition table; raises when it is not valid.
local function read(x, fname)
  local def = x
  if is_machine(x) then
    def = x.definition
  elseif type(x) ~= "table" then
    error(format("%s: expected a machine or a definition table, got %s", fname, type(x)), 3)
  end
  local entry = cache[def]
  if entry then return entry end
  local norm, errors = check.normalize(def)
  if not norm then
    error(format("%s: not a valid definition:\n  %s", fname, concat(errors, "\n  ")), 3)
  end
  entry = { def = def, norm = norm, info = setmetatable({}, { __mode = "k" }),
            guard_errors = {} }
  entry.edges, entry.by_id = edges_of(def, norm)
  entry.states = {}
  for _, st in ipairs(norm.states) do
    local on = {}
    for _, e in ipairs(st.on or {}) do on[e.input] = e.transitions end
    local ignore = {}
    for _, name in ipairs(st.ignore or {}) do ignore[name] = true end
    entry.states[st.name] = { record = st, on = on, ignore = ignore,
                              timed = st.timeout ~= nil, job = st.run ~= nil }
  end
  instrument(entry)
  cache[def] = entry
  return entry
end

-- ============================================================== data and values

-- A deep copy of plain data: tables copied (metatables kept), anything else shared.
local function deep_copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  for k, x in next, v do t[deep_copy(k, seen)] = deep_copy(x, seen) end
  return setmetatable(t, getmetatable(v))
end

-- Fresh data for one instance: opts.data called, or deep-copied, or a new table.
local function fresh_data(opts)
  local data = opts.data
  if type(data) == "function" then
    local made = data()
    if made ~= nil and type(made) ~= "table" then
      error(format("data: the function returned a %s, not a table (an instance's data)",
        type(made)), 0)
    end
    return made
  end
  if type(data) == "table" then return deep_copy(data) end
  return {}
end

-- A text that is the same for equal plain data (the node of a search is state + data).
local function fingerprint(v, depth, seen)
  local tv = type(v)
  if tv == "string" then return format("%q", v) end
  if tv == "number" then return format("%.17g", v) end
  if tv ~= "table" then return tv == "boolean" and tostring(v) or tv end
  if depth > 6 or seen[v] then return "{...}" end
  seen[v] = true
  local keys = {}
  for k in next, v do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return false
  end)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = fingerprint(k, depth + 1, seen) .. "=" .. fingerprint(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. concat(parts, ",") .. "}"
end

local function pack(list)
  if list == nil then return { n = 0 } end
  local t = { n = list.n or #list }
  for i = 1, t.n do t[i] = list[i] end
  return t
end

-- A value as text; NaN is "NaN" whatever its sign bit (tostring says "-nan" or "nan").
local function show_value(v)
  if type(v) == "string" then return format("%q", v) end
  if v ~= v then return "NaN" end
  return tostring(v)
end

--- A step as text: `connect`, `connect(1, "a")`, `advance 1.5`, `job done`, `job error`.
function M.describe(step)
  if type(step) ~= "table" then return tostring(step) end
  if step.advance ~= nil then return "advance " .. show_value(step.advance) end
  local name = step.input and tostring(step.input) or ("job " .. tostring(step.job))
  local args = step.args
  if args and (args.n or #args) > 0 and step.input then
    local shown = {}
    for i = 1, args.n or #args do shown[i] = show_value(args[i]) end
    return name .. "(" .. concat(shown, ", ") .. ")"
  end
  return name
end

-- ============================================================== driving one instance

local STEP_KEYS = { "advance", "args", "edge", "input", "job", "to" }
local STEP_ACTIONS = { "input", "advance", "job" }

-- What is wrong with step k of a path, or nil: a step is a table with exactly one of
-- `input`, `advance`, `job`, and no key but those and `args`, `to`, `edge`.
local function step_problem(step)
  if type(step) ~= "table" then
    return "a step is a table { input = | advance = | job = }, got " .. type(step)
  end
  local unknown, actions = {}, {}
  for key in next, step do
    local known = false
    for _, k in ipairs(STEP_KEYS) do
      if key == k then known = true end
    end
    if not known then unknown[#unknown + 1] = tostring(key) end
  end
  sort(unknown)
  if #unknown > 0 then
    local near = check.nearest(unknown[1], STEP_KEYS)
    return format("unknown key '%s' in a step%s (a step has: %s)", unknown[1],
      near and format(" (did you mean '%s'?)", near) or "", concat(STEP_KEYS, ", "))
  end
  for _, k in ipairs(STEP_ACTIONS) do
    if step[k] ~= nil then actions[#actions + 1] = "`" .. k .. "`" end
  end
  if #actions ~= 1 then
    return format("a step has exactly one of `input`, `advance`, `job`, this one has %s",
      #actions == 0 and "none" or concat(actions, " and "))
  end
  local args = step.args
  if args ~= nil then
    if type(args) ~= "table" then
      return "args is the list of the step's arguments { ... }, got " .. type(args)
    end
    local problem = args_n_problem(args, "args")
    if problem then return problem end
  end
  if step.to ~= nil and type(step.to) ~= "string" then
    return "to is the name of the state the step leads to, got " .. type(step.to)
  end
  if step.edge ~= nil and type(step.edge) ~= "string" then
    return "edge is the path of the transition the step takes (a string such as "
      .. "'states.idle.on.connect'), got " .. type(step.edge)
  end
  return nil
end

-- A run to completion that takes more transitions than this stops, and the replay with it:
-- the definition loops without waiting (the driver only warns about it, at 100,000).
local DRAIN_LIMIT = 10000

-- The walk's clock: the caller's, or one it installs and closes. The timers armed before it
-- (the caller's, a loaded file's) are parked, never due, their deadlines and the clock's time
-- given back at the end; each replay starts at 0 (`restart`).
local function session_start(who)
  if C.installed() and C.stepping() then
    error(format("%s: called from a timer the clock is running (call it after clock:advance or "
      .. "clock:next returns)", who), 3)
  end
  local own = not C.installed()
  if own then C.install(0) end
  local ok, err = pcall(C.park, who)
  if not ok then
    if own then C.close() end
    error(err, 3)
  end
  -- drawn from the caller's generator: it goes on from there once we are done
  return { own = own, mark = C.mark(), reseed = math.random(0), limit = C.drain_limit(DRAIN_LIMIT) }
end

local function session_end(s)
  C.drop(s.mark)
  C.drain_limit(s.limit)
  C.looped()
  C.unpark()
  if s.own then C.close() end
  math.randomseed(s.reseed)                -- the caller's draws go on, not the fixed seed's
end

-- A new instance of the instrumented copy, on a clock at 0, nothing of a former replay left
-- armed.
local function new_instance(entry, s, opts)
  C.drop(s.mark)
  C.looped()
  C.restart(0)
  math.randomseed(SEED)                  -- each replay draws what the search drew
  local c = entry.copy:new(fresh_data(opts))
  return c, info_of(entry, c)
end

-- Applies one step to instance `c`; returns true, or false and why it could not.
local function apply(entry, c, i, step)
  if type(step) ~= "table" then
    return false, "a step is a table, got " .. type(step)
  end
  local st = entry.states[c.state]
  if step.advance ~= nil then
    local s = step.advance
    if type(s) ~= "number" or s ~= s or s < 0 or s == math.huge then
      return false, "advance takes a finite number of seconds >= 0, got " .. show_value(s)
    end
    local ok, err = pcall(C.advance, s)  -- past the clock's range, or a 0-delay loop
    if not ok then return false, tostring(err) end
    return true
  elseif step.job ~= nil then
    if step.job ~= "done" and step.job ~= "error" then
      return false, format("job is \"done\" or \"error\", got %s", tostring(step.job))
    end
    local d = i.job
    if not (st and st.job) or d == nil or d:state() ~= "pending" then
      return false, format("state '%s' has no job running", c.state)
    end
    local args = step.args or {}
    if step.job == "done" then
      d:callback(args[1])
    else
      d:errback(args[1] ~= nil and args[1] or modal.failure("error", "walk: the job failed"))
    end
    return true
  elseif step.input ~= nil then
    local input = step.input
    if not (st and (st.on[input] or st.ignore[input])) then
      return false, format("state '%s' does not take input '%s'", c.state, tostring(input))
    end
    local args = pack(step.args)
    local ok, err = pcall(c.fire, c, input, table.unpack(args, 1, args.n))
    if not ok then return false, tostring(err) end
    return true
  end
  return false, "a step has `input`, `advance` or `job`"
end

-- Applies `step` and runs what it made due at once (advance(0)). Returns true; or false, why
-- it could not be applied; or false, the cycle, true when the run to completion it started
-- looped without waiting (the drain limit stopped it).
local function settle(entry, c, i, step)
  local applied, why = apply(entry, c, i, step)
  if not applied then return false, why end
  C.advance(0)
  local looped = C.looped()
  if looped then return false, looped, true end
  return true
end

-- A new instance and its first entry run to the end: it, its info, and the cycle when that
-- entry looped without waiting.
local function first_entry(entry, s, opts)
  local c, i = new_instance(entry, s, opts)
  C.advance(0)
  return c, i, C.looped()
end

-- The states a step may lead to by the definition's transitions alone (for a step that does
-- not say `to`): every target of the input's transitions, and the state itself when one is
-- guarded (no guard passing drops the input) or the input is ignored.
local function graph_targets(entry, from, step)
  local st = entry.states[from]
  local input = step.input or (step.advance ~= nil and "timeout") or step.job
  local set = {}
  local ts = st and st.on[input]
  if not ts then
    set[from] = true
    return set
  end
  for _, t in ipairs(ts) do
    set[t.to or from] = true
    if t.guard then set[from] = true end
  end
  return set
end

local function names(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = "'" .. k .. "'" end
  sort(list)
  return concat(list, " or ")
end

-- What a walk's failure value says was expected: the state's name, or the sorted list of the
-- names when a step could lead to several.
local function expected_value(set)
  local list = {}
  for k in pairs(set) do list[#list + 1] = k end
  sort(list)
  if #list == 1 then return list[1] end
  return list
end

-- The candidate steps from the state instance `c` is in: each input its state takes, once per
-- argument list of opts.args[input]; its timeout as the time left; its job's outcomes.
local function candidates(entry, c, i, opts)
  local st = entry.states[c.state]
  local list = {}
  local given = opts.args or {}
  local function each_args(input, default)
    local alts = given[input]
    if alts == nil then return { default or { n = 0 } } end
    local out = {}
    for k, a in ipairs(alts) do out[k] = pack(a) end
    return out
  end
  for _, e in ipairs(st.record.on or {}) do
    local input = e.input
    if input == "timeout" and st.timed then
      if i.delay then                     -- the delay itself when armed now: exact
        local now = modal.now()
        local left = now == i.armed_at and i.delay or i.armed_at + i.delay - now
        list[#list + 1] = { advance = left > 0 and left or 0 }
      end
    elseif (input == "done" or input == "error") and st.job then
      local default = input == "error" and { modal.failure("error", "walk: the job failed"), n = 1 }
      for _, a in ipairs(each_args(input, default)) do
        list[#list + 1] = { job = input, args = a }
      end
    else
      for _, a in ipairs(each_args(input)) do
        list[#list + 1] = { input = input, args = a }
      end
    end
  end
  return list
end

-- Replays `steps` on a new instance: it and its info; or nil when a step cannot be applied
-- (a definition whose behaviour depends on more than its state and data), nil and the cycle
-- when a run to completion loops without waiting.
local function replay(entry, s, steps, opts)
  local c, i, looped = first_entry(entry, s, opts)
  if looped then return nil, looped end
  for _, step in ipairs(steps) do
    local ok, why, loop = settle(entry, c, i, step)
    if not ok then return nil, loop and why or nil end
  end
  return c, i
end

-- ============================================================== paths

-- What the search says of opts.args: an entry for an input no state takes would never be
-- tried, silently (a misspelt input), so each gets a note, with the input meant when near.
local function args_notes(entry, args)
  local notes = {}
  if args == nil then return notes end
  local known, list = { done = true, error = true }, { "done", "error" }
  for _, st in pairs(entry.states) do
    for input in pairs(st.on) do
      if not known[input] then known[input] = true; list[#list + 1] = input end
    end
  end
  sort(list)
  for input in next, args do
    if not known[input] then
      local near = type(input) == "string" and check.nearest(input, list)
      notes[#notes + 1] = format("args.%s: no state takes input '%s'%s", tostring(input),
        tostring(input), near and format(" (did you mean '%s'?)", near)
        or " (inputs: " .. concat(list, ", ") .. ")")
    end
  end
  return notes
end

--- The shortest paths from `initial` that together take every transition of the definition
-- of machine `Mach` (or of a definition table) at least once. Options: `max_depth` (steps in
-- a path, default 10), `max_nodes` (state-and-data nodes searched, default 2000), `data` (an
-- instance's data: a table, deep-copied for each instance, or a function returning it),
-- `args` (`{ [input] = { args1, args2, ... } }`: the argument lists to try for an input, or
-- for a job's `done`/`error`). Returns the list of paths and the coverage: `{ total =,
-- taken =, edges = { { id =, taken = bool, path = index, guard_error = message }, ... },
-- errors = { message, ... } }` (guard_error: what the transition's guard raised, if it did)
-- (errors: the distinct lines logged at level error while searching, such as a hook that
-- raised; the search itself logs nothing) (loops: those of errors that say a replay looped
-- without waiting: 10,000 transitions in one run to completion stop it) (cut: "max_depth" or
-- "max_nodes" when a transition was left out and the search was cut short by that limit)
-- (notes: options that had no effect, such as args for an input no state takes).
-- After XState's graph testing (`@xstate/graph`),
-- with timers and jobs as steps.
function M.paths(Mach, opts)
  opts = checked_options(opts, "paths")
  local entry = read(Mach, "paths")
  local notes = args_notes(entry, opts.args)
  local max_depth = opts.max_depth or DEFAULT_MAX_DEPTH
  local max_nodes = opts.max_nodes or DEFAULT_MAX_NODES
  local covered, ncovered, total = {}, 0, #entry.edges
  entry.guard_errors = {}
  local found, errors, seen_error, loops, cut = {}, {}, {}, {}, nil
  local previous = modal.on_log(function(level, message)   -- replays would repeat each line
    if level == "error" and not seen_error[message] and #errors < 20 then
      seen_error[message] = true
      errors[#errors + 1] = message
    end
  end)
  local s = session_start("paths")
  local ok, err = pcall(function()
    local function cover(taken, path_index)
      local new = false
      for _, id in ipairs(taken) do
        if entry.by_id[id] and not covered[id] then
          covered[id] = path_index
          ncovered = ncovered + 1
          new = true
        end
      end
      return new
    end
    -- a replay that loops without waiting is a dead end, said once in `errors`
    local function loop_error(steps, looped)
      local shown = {}
      for k, step in ipairs(steps) do shown[k] = M.describe(step) end
      local message = format("after %s: %s", #steps == 0 and "the first entry" or
        "steps " .. concat(shown, ", "), looped)
      if not seen_error[looped] and #errors < 20 then
        seen_error[looped] = true
        errors[#errors + 1] = message
        loops[#loops + 1] = message
      end
    end
    local c0, i0 = replay(entry, s, {}, opts)
    if c0 then cover(i0.edges, 0) elseif i0 then loop_error({}, i0) end
    local queue, head = { { steps = {} } }, 1
    local seen = { [c0 and (c0.state .. fingerprint(c0.data, 0, {})) or ""] = true }
    local nodes = 1
    while head <= #queue and ncovered < total do
      local node = queue[head]
      head = head + 1
      if #node.steps >= max_depth then
        cut = "max_depth"
      else
        local c, i = replay(entry, s, node.steps, opts)
        local cands = c and candidates(entry, c, i, opts) or {}
        for _, cand in ipairs(cands) do
          local c2, i2 = replay(entry, s, node.steps, opts)
          if c2 then
            local before = #i2.edges
            local path = {}
            for k, x in ipairs(node.steps) do path[k] = x end
            path[#path + 1] = cand
            local ok, why, looped = settle(entry, c2, i2, cand)
            if looped then loop_error(path, why) end
            if ok then
              cand.to = c2.state
              cand.edge = i2.edges[before + 1]
              if cover(i2.edges, #found + 1) then found[#found + 1] = path end
              local key = c2.state .. fingerprint(c2.data, 0, {})
              if not seen[key] and nodes < max_nodes then
                seen[key] = true
                nodes = nodes + 1
                queue[#queue + 1] = { steps = path }
              elseif not seen[key] then
                cut = cut or "max_nodes"
              end
            end
          end
          if ncovered == total then break end
        end
      end
    end
  end)
  session_end(s)
  modal.on_log(previous)
  if not ok then error(err, 0) end

  -- A path that another one extends takes nothing the longer one does not: keep the longer.
  local function extends(long, short)
    if #long <= #short then return false end
    for k = 1, #short do if long[k] ~= short[k] then return false end end
    return true
  end
  local keep, by, kept_at = {}, {}, {}
  for a, p in ipairs(found) do
    for b = a + 1, #found do
      if extends(found[b], p) then by[a] = b; break end
    end
    if not by[a] then
      keep[#keep + 1] = p
      kept_at[a] = #keep
    end
  end
  local function kept(a)                   -- the kept path that takes what path a took
    while by[a] do a = by[a] end
    return kept_at[a]
  end
  local coverage = { total = total, taken = ncovered, edges = {}, errors = errors,
                    loops = loops, cut = ncovered < total and cut or nil, notes = notes }
  for k, e in ipairs(entry.edges) do
    local at = covered[e.id]
    coverage.edges[k] = { id = e.id, taken = at ~= nil, path = at and at > 0 and kept(at) or nil,
                          guard_error = entry.guard_errors[e.id] }
  end
  return keep, coverage
end

-- ============================================================== walk

--- Drives a fresh instance of machine `Mach` (or of a definition table) along `path` under
-- the virtual clock (the installed one, else one installed for the walk), each `run` replaced
-- by a Deferred that the path's job steps settle. Returns the states visited (the initial
-- state first, then one per step) and the transitions taken (their ids, in order). Raises a
-- failure of kind "walk" (value: { step =, expected =, state =, states =, edges = }) at the first step
-- that cannot be applied, or after which the instance is not where the path (`to`) or the
-- definition says. Options: `data` (as for paths).
function M.walk(Mach, path, opts)
  opts = checked_options(opts, "walk")
  local entry = read(Mach, "walk")
  if type(path) ~= "table" then
    error("walk: expected a path (a list of steps), got " .. type(path), 2)
  end
  local last, count = #path, 0
  for k in next, path do
    if math.type(k) ~= "integer" or k < 1 or k > last then
      error(format("walk: a path is a list of steps 1..n, without holes; it has key %s "
        .. "beside steps 1..%d", type(k) == "string" and format("%q", k) or show_value(k), last), 2)
    end
    count = count + 1
  end
  if count ~= last then
    local hole = 1
    while path[hole] ~= nil do hole = hole + 1 end
    error(format("walk: a path is a list of steps 1..n, without holes; step %d of %d is missing",
      hole, last), 2)
  end
  local s = session_start("walk")
  local states, taken, failure = {}, nil, nil
  local ok, err = pcall(function()
    for k, step in ipairs(path) do        -- a malformed step fails before anything runs
      local problem = step_problem(step)
      if problem then
        failure = modal.failure("walk", format("step %d of %d: %s", k, #path, problem),
          { step = k, states = states })
        return
      end
    end
    local c, i, looped = first_entry(entry, s, opts)
    if looped then
      failure = modal.failure("walk", format("the first entry (from '%s'): %s", c.state, looped),
        { step = 0, state = c.state, states = states, edges = {} })
      return
    end
    states[1] = c.state
    for k, step in ipairs(path) do
      local from = c.state
      local left                           -- the time left before from's timeout, if armed
      if i.delay then left = i.armed_at + i.delay - modal.now() end
      local before_step = #i.edges
      local applied, why = settle(entry, c, i, step)
      local expected
      if applied then
        if type(step.to) == "string" then
          expected = { [step.to] = true }
        else
          expected = graph_targets(entry, from, step)
        end
        if not expected[c.state] then
          local says = type(step.to) == "string" and "path" or "definition"
          why = format("the instance is in '%s', the %s says %s", c.state, says, names(expected))
          if step.advance ~= nil and c.state == from then
            if left == nil then
              why = format("the %s expects %s after advance %s, but state '%s' has no timeout "
                .. "armed: the instance stayed in '%s'", says, names(expected),
                show_value(step.advance), from, from)
            elseif step.advance < left then
              why = format("the %s expects %s after advance %s, but the timeout of '%s' had "
                .. "not come yet (due in %.15g s of the %.15g armed): the instance stayed in '%s'", says,
                names(expected), show_value(step.advance), from, left, i.delay, from)
            end
          end
        end
        local took = i.edges[before_step + 1]
        if not why and step.edge ~= nil and took ~= step.edge then
          why = format("the step took %s, the path says it takes %s", took or "no transition",
            step.edge)
        end
      end
      if why then
        local before = {}                  -- the transitions the steps before this one took
        for n = 1, #i.edges do before[n] = i.edges[n] end
        failure = modal.failure("walk", format("step %d of %d (%s, from '%s'): %s", k, #path,
          M.describe(step), from, why), { step = k,
          expected = expected and expected_value(expected),
          state = c.state, states = states, edges = before })
        return
      end
      states[#states + 1] = c.state
    end
    taken = i.edges
  end)
  session_end(s)
  if not ok then error(err, 0) end
  if failure then error(failure, 2) end
  local ids = {}
  for k, id in ipairs(taken) do ids[k] = id end
  return states, ids
end

--- The transitions of a definition (or machine): a list of { id, state, input, branch, to,
-- internal, guarded }, in state and input order.
function M.transitions(Mach)
  local entry = read(Mach, "transitions")
  local list = {}
  for k, e in ipairs(entry.edges) do
    local copy = {}
    for key, v in pairs(e) do copy[key] = v end
    list[k] = copy
  end
  return list
end

return setmetatable(M, { __call = function(_, ...) return M.paths(...) end })
