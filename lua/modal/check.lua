--- lua/modal/check.lua — the one reader of a machine definition (doc/machines.md, "Validation"):
-- reads it once, raw, reports every error and warning at once, each as "path: message", and
-- turns a valid one into the plain normalized form that the C compile reads. Never raises.
--
--   local check = require "modal.check"
--   local ok, errors, warnings = check.check(def)        -- also check(def)
--   local norm, errors, warnings = check.normalize(def)  -- norm is nil when errors
--   io.write(check.format(errors, "conn.lua"))           -- "conn.lua: path: message\n" lines
--
-- Every table of the definition is read once with next (no metamethod runs) into a private
-- copy, and everything after works on the copies: a table with a metatable is an error, and
-- what was checked is exactly what is normalized. A problem in this module itself is reported
-- as an error too.
--
-- The normalized form (plain tables, nothing shared with the definition but its functions):
--
--   { name = "conn", version = 3 (or nil), initial = "idle", max_postponed = 10000,
--     migrate = fn (or nil),
--     methods = { "query", "close" },               -- in order; method i is index i - 1
--     inputs = { "reset" },                         -- declared, in order
--     ignore = { "tick" },                          -- the machine's, in order
--     input_names = { "timeout", "done", "error", ... }, -- every input; input i is index i - 1
--     ntransitions = 7,                             -- transitions of every state, in all
--     states = {                                    -- sorted by name; state i is index i - 1
--       { name = "idle", final = false, enter = fn, exit = fn, run = fn,   -- each or nil
--         timeout = seconds or fn (or nil),
--         handlers = { fn or "postpone", ... },     -- one per method, defaults folded in
--         ignore = { "tick", ... },                 -- the machine's and the state's
--         on = { { input = "connect",               -- sorted by input
--                  transitions = { { to = "connecting" (or nil), guard = fn, action = fn } } } },
--       }, ... } }
--
-- @module modal.check

local type, next, pcall, ipairs = type, next, pcall, ipairs
local concat, sort, insert = table.concat, table.sort, table.insert
local format, byte = string.format, string.byte
local getinfo, getmetatable = debug.getinfo, debug.getmetatable
local mtype, huge, tointeger = math.type, math.huge, math.tointeger

local check = {}

--- The keys a definition may have, per level, in documentation order.
check.KEYS = {
  machine = { "name", "version", "initial", "methods", "inputs", "defaults", "ignore",
              "max_postponed", "migrate", "states" },
  state = { "enter", "exit", "on", "run", "timeout", "final", "ignore" },
  transition = { "to", "guard", "action" },
}

--- Names an instance answers to itself (fields first, then methods): no method, state or
-- input may take one of them.
check.INSTANCE_FIELDS = { "state", "data", "machine", "id" }
check.INSTANCE_METHODS = { "fire", "when", "on_transition", "postponed", "postpone", "new" }

--- What the compiled form can hold (src/machine.h has the same numbers): a definition past
-- one of them is refused at validation, with the limit named.
check.LIMITS = {
  states = 65535,          -- an instance keeps its state in 16 bits
  methods = 65535,
  choices = 255,           -- transitions for one input of one state (an 8-bit count)
  cells = 4194304,         -- states x methods, and states x inputs: the compiled tables
  transitions = 4194304,   -- transitions of every state, in all
  max_postponed = 2147483647,
}
local LIMITS = check.LIMITS

--- The inputs modal fires itself; they take the first input indices, in this order.
check.BUILTIN_INPUTS = { "timeout", "done", "error" }

local DEFAULT_MAX_POSTPONED = 10000

local METATABLE = "has a metatable; modal reads definitions raw — copy shared fields instead"

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local MACHINE_KEY = set_of(check.KEYS.machine)
local STATE_KEY = set_of(check.KEYS.state)
local TRANSITION_KEY = set_of(check.KEYS.transition)
local INSTANCE_FIELD = set_of(check.INSTANCE_FIELDS)
local INSTANCE_METHOD = set_of(check.INSTANCE_METHODS)
local KEYWORD = set_of { "and", "break", "do", "else", "elseif", "end", "false", "for",
  "function", "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
  "true", "until", "while" }

--- True when `s` is a string usable as a Lua name (`c.s`, `c:s()`): an identifier, not a
-- keyword.
function check.is_identifier(s)
  return type(s) == "string" and s:find("^[%a_][%w_]*$") ~= nil and not KEYWORD[s]
end
local is_identifier = check.is_identifier

-- Quotes a user string for a message: printable ASCII as is, the rest as \ddd; long ones cut.
local function quote(s)
  local cut = #s > 60
  if cut then s = s:sub(1, 57) end
  s = s:gsub("[%c\\'\128-\255]", function(c) return format("\\%d", byte(c)) end)
  return "'" .. s .. (cut and "...'" or "'")
end

-- A value as a message shows it: numbers and booleans literally, strings quoted, else a type.
local function show(v)
  local t = type(v)
  if t == "string" then return quote(v)
  elseif t == "number" then
    if mtype(v) == "integer" then return format("%d", v)
    elseif v ~= v then return "NaN"      -- not the C library's spelling ("-nan" on glibc)
    elseif v == huge or v == -huge then return v > 0 and "inf" or "-inf"
    end
    return format("%.14g", v)
  elseif t == "boolean" or t == "nil" then return t == "nil" and "nil" or (v and "true" or "false")
  end
  return "a " .. t
end

-- A key appended to a path: `.name` for identifiers, `[3]` for integers, `["a b"]` otherwise.
local function join(path, key)
  local part
  if is_identifier(key) then
    return path and (path .. "." .. key) or key
  elseif type(key) == "string" then
    part = '["' .. key:gsub('[%c\\"\128-\255]', function(c) return format("\\%d", byte(c)) end)
      .. '"]'
  elseif type(key) == "number" or type(key) == "boolean" then
    part = "[" .. show(key) .. "]"
  else
    part = "[<" .. type(key) .. ">]"
  end
  return (path or "") .. part
end

-- Optimal string alignment distance (Levenshtein plus adjacent transpositions).
local function distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb elseif lb == 0 then return la end
  local prev2, prev = {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    local ca = byte(a, i)
    for j = 1, lb do
      local cb = byte(b, j)
      local cost = ca == cb and 0 or 1
      local d = prev[j] + 1
      if cur[j - 1] + 1 < d then d = cur[j - 1] + 1 end
      if prev[j - 1] + cost < d then d = prev[j - 1] + cost end
      if i > 1 and j > 1 and ca == byte(b, j - 1) and byte(a, i - 1) == cb
          and prev2[j - 2] + 1 < d then
        d = prev2[j - 2] + 1
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return prev[lb]
end

--- The candidate nearest to `word` (OSA edit distance at most 2, at most 1 for words of three
-- letters or fewer, case ignored), or nil. Ties go to the earlier candidate.
function check.nearest(word, candidates)
  if type(word) ~= "string" or #word > 64 then return nil end
  local lw = word:lower()
  local limit = #word <= 3 and 1 or 2
  local best, best_d
  for _, c in ipairs(candidates) do
    if type(c) == "string" and c ~= word and #c <= #word + limit and #c >= #word - limit then
      local d = distance(lw, c:lower())
      if d <= limit and (not best_d or d < best_d) then best, best_d = c, d end
    end
  end
  return best
end
local nearest = check.nearest

-- Other words people write for a key, per level.
local SYNONYM = {
  machine = { init = "initial", start = "initial", events = "inputs", default = "defaults",
              handlers = "defaults", interface = "methods" },
  state = { entry = "enter", leave = "exit", job = "run", invoke = "run", after = "timeout",
            transitions = "on", events = "on", terminal = "final" },
  transition = { target = "to", next = "to", ["goto"] = "to", when = "guard", cond = "guard",
                 condition = "guard", ["if"] = "guard", ["do"] = "action", run = "action",
                 effect = "action" },
}
-- Words around a key that say nothing: `on_enter`, `onExit`, `is_final`, `timeout_secs`.
local AFFIX = set_of { "on", "is", "do", "fn", "func", "function", "hook", "handler", "cb",
  "callback", "s", "sec", "secs", "seconds", "ms", "state", "machine", "the", "a", "of" }

-- The meaningful words of a key: split at "_" and lowerUpper, lowercased, affixes dropped.
local function words(key)
  local list = {}
  for part in key:gsub("(%l)(%u)", "%1_%2"):gmatch("[^_]+") do
    part = part:lower()
    if not AFFIX[part] then list[#list + 1] = part end
  end
  return list
end

-- The key `word` most likely stands for at `level`, among `candidates`: the nearest by
-- spelling, else a synonym, else the one meaningful word left once affixes are dropped.
local function near_key(word, candidates, level)
  if type(word) ~= "string" or #word > 64 then return nil end
  local n = nearest(word, candidates)
  if n then return n end
  local syn = SYNONYM[level][word:lower()]
  if syn then return syn end
  local w = words(word)
  if #w ~= 1 then return nil end
  for _, c in ipairs(candidates) do
    if c == w[1] then return c end
  end
  return nearest(w[1], candidates) or SYNONYM[level][w[1]]
end

local function hint(near)
  return near and (" (did you mean " .. quote(near) .. "?)") or ""
end

local function suggest(word, candidates)
  return hint(nearest(word, candidates))
end

-- Sorts keys: numbers, then strings, then the rest by type name.
local RANK = { number = 1, string = 2 }
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  local ra, rb = RANK[ta] or 3, RANK[tb] or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return ta < tb end
  return a < b
end

-- The keys of t, sorted.
local function sorted_keys(t)
  local keys = {}
  local k = next(t)
  while k ~= nil do
    keys[#keys + 1] = k
    k = next(t, k)
  end
  sort(keys, key_order)
  return keys
end

-- The strings of lists a and b, in order, each once.
local function merge(a, b)
  local list, seen = {}, {}
  for _, l in ipairs { a, b } do
    for _, s in ipairs(l) do
      if not seen[s] then
        seen[s] = true
        list[#list + 1] = s
      end
    end
  end
  return list
end

-- Where a Lua function was defined, "file:line", or nil for C functions.
local function where(fn)
  local ok, info = pcall(getinfo, fn, "S")
  if not ok or not info or info.what == "C" then return nil end
  return format("%s:%d", info.short_src, info.linedefined)
end

local function problem(path, value, message)
  if type(value) == "function" then
    local w = where(value)
    if w then path = path .. " (" .. w .. ")" end
  end
  return { path = path, message = message, text = path .. ": " .. message }
end

-- The context of one run: the two lists and what was learned about the definition.
local Run = {}
Run.__index = Run

function Run:err(path, value, message)
  insert(self.errors, problem(path, value, message))
end

function Run:warn(path, value, message)
  insert(self.warnings, problem(path, value, message))
end

-- Reads the table t once, raw, into a private copy (everything after reads the copy); a
-- metatable is an error at `path`: its metamethods would answer differently from the table.
function Run:read(path, t)
  if getmetatable(t) ~= nil then self:err(path, nil, METATABLE) end
  local copy = {}
  local k, v = next(t)
  while k ~= nil do
    copy[k] = v
    k, v = next(t, k)
  end
  return copy
end

-- Why `name` cannot name a method/state/input, or nil. `what` is "method", "state", "input".
local function name_problem(name, what)
  if not is_identifier(name) then
    return format("%s name %s is not a Lua identifier%s", what, quote(name),
      KEYWORD[name] and " (it is a keyword)" or "")
  elseif INSTANCE_FIELD[name] then
    return format("%s name %s collides with the instance field '%s'", what, quote(name), name)
  elseif INSTANCE_METHOD[name] then
    return format("%s name %s collides with the instance method '%s'", what, quote(name), name)
  elseif STATE_KEY[name] then
    return format("%s name %s collides with the state key '%s'", what, quote(name), name)
  end
end

-- A list (keys 1..n, no holes) at `path`: returns its copy and n, or nil after reporting once.
function Run:list(path, v, noun)
  if type(v) ~= "table" then
    self:err(path, v, format("expected a list of %s, got %s", noun, show(v)))
    return nil
  end
  local t = self:read(path, v)
  local n = 0
  for _, k in ipairs(sorted_keys(t)) do
    if k == n + 1 and mtype(k) == "integer" then
      n = k
    else
      if mtype(k) == "integer" and k > n then
        self:err(path, nil, format("expected a list of %s, but [%d] is missing (a hole "
          .. "before [%s])", noun, n + 1, show(k)))
      elseif type(k) == "number" then
        self:err(path, nil, format("expected a list of %s, got key [%s]", noun, show(k)))
      else
        self:err(path, nil, format("expected a list of %s like { \"a\", \"b\" }, got key %s",
          noun, type(k) == "string" and quote(k) or show(k)))
      end
      return nil
    end
  end
  return t, n
end

-- A list of names (methods, inputs): each a valid, distinct name. Returns every entry in
-- order, the valid names in order, every string listed as a set (name -> first position) and
-- whether every entry is valid; nil when the field itself is unusable.
function Run:names(key, v, what)
  local t, n = self:list(key, v, what .. " names")
  if not t then return nil end
  local list, valid, seen, all = {}, {}, {}, true
  for i = 1, n do
    local name, path = t[i], join(key, i)
    list[i] = name
    if type(name) ~= "string" then
      self:err(path, name, format("expected a %s name (a string), got %s", what, show(name)))
      all = false
    elseif seen[name] then
      self:err(path, nil, format("duplicate %s %s (also %s)", what, quote(name),
        join(key, seen[name])))
      all = false
    else
      seen[name] = i
      local why = name_problem(name, what)
      if why then
        self:err(path, nil, why)         -- known, but not required of every state
        all = false
      else
        valid[#valid + 1] = name
      end
    end
  end
  return list, valid, seen, all
end

-- A list of input names to ignore: returns its strings, in order, or an empty list.
function Run:ignore(path, v)
  local t, n = self:list(path, v, "input names")
  local list = {}
  for i = 1, n or 0 do
    local name = t[i]
    if type(name) ~= "string" then
      self:err(join(path, i), name, format("expected an input name (a string), got %s",
        show(name)))
    else
      list[#list + 1] = name
    end
  end
  return list
end

-- A handler value: a function or "postpone".
function Run:handler(path, v)
  if type(v) == "function" or v == "postpone" then return end
  local near = type(v) == "string" and suggest(v, { "postpone" }) or ""
  self:err(path, v, format("expected a function or 'postpone', got %s%s", show(v), near))
end

function Run:target(path, name)
  if type(name) ~= "string" then
    self:err(path, name, format("expected a state name, got %s", show(name)))
  elseif self.state_set and not self.state_set[name] then
    self:err(path, nil, format("unknown state %s%s", quote(name),
      suggest(name, self.state_names)))
  end
end

-- One transition table { to=, guard=, action= } (its copy): returns it normalized.
function Run:transition(path, t)
  for _, k in ipairs(sorted_keys(t)) do
    if not TRANSITION_KEY[k] then
      local x = t[k]
      if type(k) == "string" then
        self:err(join(path, k), x, format("unknown key %s%s", quote(k),
          hint(near_key(k, check.KEYS.transition, "transition"))))
      elseif mtype(k) == "integer" then
        self:err(join(path, k), x, "unexpected list entry in a transition table")
      else
        self:err(join(path, k), x, "unknown key " .. show(k))
      end
    end
  end
  local to, action = t.to, t.action
  if to ~= nil then self:target(join(path, "to"), to) end
  for _, key in ipairs { "guard", "action" } do
    local fn = t[key]
    if fn ~= nil and type(fn) ~= "function" then
      self:err(join(path, key), fn, format("expected a function, got %s", show(fn)))
    end
  end
  if to == nil and action == nil then
    self:warn(path, nil, "transition does nothing (no 'to' and no 'action')")
  end
  return { to = to, guard = t.guard, action = action }
end

-- The value of on[input]: a state name, a transition table or a list of those. Returns the
-- list of its transitions, normalized.
function Run:transitions(path, spec)
  if type(spec) == "string" then
    self:target(path, spec)
    return { { to = spec } }
  elseif type(spec) ~= "table" then
    self:err(path, spec, format(
      "expected a state name, a transition table or a list of them, got %s", show(spec)))
    return {}
  end
  local t = self:read(path, spec)
  if t[1] == nil then return { self:transition(path, t) } end
  local n = 0
  for _, k in ipairs(sorted_keys(t)) do
    if k == n + 1 and mtype(k) == "integer" then
      n = k
    else
      self:err(join(path, k), t[k], type(k) == "number"
        and "list of transitions has a hole here"
        or "a list of transitions cannot also have transition keys (put each in an entry)")
    end
  end
  local list = {}
  for i = 1, n do
    local entry, p = t[i], join(path, i)
    local guarded = false
    if type(entry) == "string" then
      self:target(p, entry)
      list[i] = { to = entry }
    elseif type(entry) == "table" then
      list[i] = self:transition(p, self:read(p, entry))
      guarded = list[i].guard ~= nil
    else
      guarded = true                     -- reported below; do not add an order error
      list[i] = {}
      self:err(p, entry, format("expected a state name or a transition table, got %s",
        show(entry)))
    end
    if not guarded and i < n then
      self:err(p, entry, format("unguarded entry must be last (%s never run)",
        i + 1 == n and "the entry after it would" or "the entries after it would"))
    end
  end
  if n > LIMITS.choices then
    self:err(path, nil, format("%d transitions for one input, more than modal supports "
      .. "(at most %d)", n, LIMITS.choices))
  end
  return list
end

-- The state's `on` table: returns its entries normalized, sorted by input.
function Run:on(p, v, record)
  local on = self:read(p, v)
  local list = {}
  for _, input in ipairs(sorted_keys(on)) do
    local ip = join(p, input)
    if type(input) ~= "string" then
      self:err(ip, nil, format("expected an input name (a string), got %s", show(input)))
    elseif not is_identifier(input) then
      self:err(ip, nil, format("input name %s is not a Lua identifier", quote(input)))
    end
    local ts = self:transitions(ip, on[input])
    list[#list + 1] = { input = input, transitions = ts }
    self.ntransitions = self.ntransitions + #ts
    for _, t in ipairs(ts) do
      if type(t.to) == "string" then record.edges[#record.edges + 1] = t.to end
    end
  end
  return list, on
end

-- An unknown key of a state: a handler for an undeclared method, or a misspelled key.
function Run:state_key(kp, k, v)
  local handler_like = type(v) == "function" or v == "postpone"
  local near
  local rest = k:match("^on_(%a[%w_]*)$") or k:match("^on(%u[%w_]*)$")
  if rest and not handler_like then       -- on_done = "ready": meant on.done
    near = "on." .. rest:sub(1, 1):lower() .. rest:sub(2)
  else
    near = near_key(k, self.candidates, "state")
  end
  if handler_like and not STATE_KEY[near] then
    self:err(kp, v, format("handler for undeclared method %s%s", quote(k), hint(near)))
  else
    self:err(kp, v, format("unknown key %s%s", quote(k), hint(near)))
  end
end

-- One state: its keys, its handlers and the rules that tie them together. Returns its
-- normalized record.
function Run:state(sname, v)
  local p = join("states", sname)
  local st = self:read(p, v)
  local is_final = st.final == true
  local method_set = self.method_set
  local record = { name = sname, final = is_final, edges = {} }
  local ignore, on_table = {}, nil

  for _, k in ipairs(sorted_keys(st)) do
    local x, kp = st[k], join(p, k)
    if type(k) ~= "string" then
      self:err(kp, x, "unknown key " .. show(k))
    elseif k == "enter" or k == "exit" or k == "run" then
      if type(x) ~= "function" then
        self:err(kp, x, format("expected a function, got %s", show(x)))
      end
      record[k] = x
    elseif k == "timeout" then
      if type(x) == "number" then
        if not (x >= 0 and x < huge) then
          self:err(kp, x, format("expected a finite number of seconds >= 0 (or a function), got %s", show(x)))
        end
      elseif type(x) ~= "function" then
        self:err(kp, x, format("expected seconds (a number) or a function, got %s", show(x)))
      end
      record.timeout = x
    elseif k == "final" then
      if type(x) ~= "boolean" then
        self:err(kp, x, format("expected a boolean, got %s", show(x)))
      end
    elseif k == "ignore" then
      ignore = self:ignore(kp, x)
    elseif k == "on" then
      if type(x) ~= "table" then
        self:err(kp, x, format("expected a table of transitions by input, got %s", show(x)))
      elseif not is_final then
        record.on, on_table = self:on(kp, x, record)
      end
    elseif method_set and method_set[k] then
      self:handler(kp, x)
    elseif self.methods or not (type(x) == "function" or x == "postpone") then
      -- methods unusable: a handler-like value may be one of them; anything else is reported
      self:state_key(kp, k, x)
    end
  end
  record.on = record.on or {}
  record.ignore = self.too_wide and {} or merge(self.ignore_list, ignore)

  if is_final then
    for _, k in ipairs { "on", "run", "timeout" } do
      if st[k] ~= nil then self:err(join(p, k), st[k], "not allowed in a final state") end
    end
  end

  -- Every method answers in every state (the consistent-interface rule); postponing.
  local postponing, handlers, defaults = {}, {}, self.defaults
  if self.methods and not self.too_big then
    for i, m in ipairs(self.methods) do
      local own, h = st[m], st[m]
      if h == nil then h = defaults[m] end
      handlers[i] = h
      if h == nil then
        self:err(join(p, m), nil, format("missing handler for method %s (and no defaults.%s)",
          quote(m), m))
      elseif h == "postpone" then
        if is_final then
          self:err(join(p, m), own, own == "postpone" and "a final state cannot postpone"
            or format("a final state cannot postpone (defaults.%s is 'postpone'; give it a "
              .. "handler)", m))
        else
          postponing[#postponing + 1] = quote(m)
        end
      end
    end
  end
  record.handlers = handlers

  if is_final then return record end
  local on, timeout = st.on, st.timeout
  if #postponing > 0 and (on == nil or (on_table and next(on_table) == nil)) and timeout == nil then
    self:err(p, nil, format("postpones %s with no way out (no 'on' and no 'timeout')",
      concat(postponing, ", ")))
  end
  if on ~= nil and not on_table then return record end   -- already reported
  local function takes(input) return on_table ~= nil and on_table[input] ~= nil end
  if timeout ~= nil and not takes("timeout") then
    self:err(join(p, "timeout"), timeout, "timeout without on.timeout to take it")
  end
  -- An input this state lists in `ignore` and also takes in `on`: `on` wins, so the ignore
  -- entry does nothing; the machine's own `ignore` is the usual default and is not warned of.
  for i, input in ipairs(ignore) do
    if takes(input) then
      self:warn(join(join(p, "ignore"), i), nil, format("%s is also in on.%s, which takes it "
        .. "(the ignore entry has no effect)", quote(input), input))
    end
  end
  if st.run ~= nil then
    local dropped = {}
    for _, input in ipairs(record.ignore) do dropped[input] = true end
    local missing = {}
    for _, input in ipairs { "done", "error" } do
      if not takes(input) and not dropped[input] then missing[#missing + 1] = input end
    end
    if #missing > 0 then
      local listed = {}
      for i, input in ipairs(missing) do listed[i] = "on." .. input end
      self:err(join(p, "run"), st.run, format("run without %s: its job's outcome fires %s; "
        .. "take %s in `on`, or list %s in `ignore` to drop %s", concat(listed, " and "),
        #missing == 2 and "input 'done' or 'error'" or format("input '%s'", missing[1]),
        #missing == 2 and "them" or "it", #missing == 2 and "them" or "it",
        #missing == 2 and "them" or "it"))
    end
  else
    for _, input in ipairs { "done", "error" } do
      if takes(input) and not self.input_set[input] then
        self:err(join(join(p, "on"), input), nil, format(
          "on.%s without run (list '%s' in inputs to fire it by hand)", input, input))
      end
    end
  end
  return record
end

-- Adds an input name to the normalized input list (once).
function Run:input(name)
  if type(name) == "string" and not self.input_index[name] then
    local list = self.input_names
    list[#list + 1] = name
    self.input_index[name] = #list
  end
end

-- The machine's scalar keys; returns the normalized values.
function Run:scalars(def)
  local name = def.name
  if name == nil then
    self:err("name", nil, "missing (a string naming the machine)")
  elseif type(name) ~= "string" then
    self:err("name", name, format("expected a string, got %s", show(name)))
  elseif name == "" then
    self:err("name", nil, "must not be empty")
  elseif not is_identifier(name) then
    self:err("name", name, format("machine name %s is not a Lua identifier%s (log lines and "
      .. "modal.stats name it)", quote(name), KEYWORD[name] and " (it is a keyword)" or ""))
  end

  local version = def.version
  if version ~= nil and type(version) ~= "number" then
    self:err("version", version, format("expected a number, got %s", show(version)))
  elseif version ~= nil and not (version > -huge and version < huge) then
    self:err("version", version, format("expected a finite number, got %s", show(version)))
  end

  local maxp = def.max_postponed
  if maxp == nil then
    maxp = DEFAULT_MAX_POSTPONED
  elseif type(maxp) ~= "number" or not tointeger(maxp) or maxp < 1 then
    self:err("max_postponed", maxp, format("expected a positive integer, got %s", show(maxp)))
  elseif maxp > LIMITS.max_postponed then
    self:err("max_postponed", maxp, format("%s is more than modal supports (at most %d)",
      show(maxp), LIMITS.max_postponed))
  end

  local migrate = def.migrate
  if migrate ~= nil and type(migrate) ~= "function" then
    self:err("migrate", migrate, format("expected a function, got %s", show(migrate)))
  end
  return { name = name, version = version, max_postponed = tointeger(maxp), migrate = migrate }
end

-- The `defaults` table: handlers by method name. Returns its copy (empty when absent).
function Run:defaults(v)
  if v == nil then return {} end
  if type(v) ~= "table" then
    self:err("defaults", v, format("expected a table of handlers by method, got %s", show(v)))
    return {}
  end
  local defaults = self:read("defaults", v)
  for _, k in ipairs(sorted_keys(defaults)) do
    local x, kp = defaults[k], join("defaults", k)
    if self.methods and not self.method_set[k] then
      self:err(kp, x, type(k) == "string"
        and format("%s is not a method%s", quote(k), suggest(k, self.methods))
        or format("expected a method name, got %s", show(k)))
    else
      self:handler(kp, x)
    end
  end
  return defaults
end

-- The names of `states` (a copy): returns the state names in order, the names of the ones
-- that are tables.
function Run:state_names_of(states)
  self.state_names, self.state_set = {}, {}
  local tables = {}
  for _, k in ipairs(sorted_keys(states)) do
    local v, kp = states[k], join("states", k)
    if mtype(k) == "integer" then
      self:err(kp, v, "states is a table of states by name (states.idle = { ... }), not a list")
    elseif type(k) ~= "string" then
      self:err(kp, v, format("expected a state name (a string), got %s", show(k)))
    else
      local why = name_problem(k, "state")
      if why then self:err(kp, nil, why) end
      self.state_names[#self.state_names + 1] = k
      self.state_set[k] = true
      if type(v) ~= "table" then
        self:err(kp, v, format("expected a state table, got %s", show(v)))
      else
        tables[#tables + 1] = k
      end
    end
  end
  return tables
end

-- Limits on counts known before the states are read: states, methods, their cells.
function Run:limits(nstates)
  local nmethods = self.methods and #self.methods or 0
  if nstates > LIMITS.states then
    self:err("states", nil, format("%d states, more than modal supports (at most %d: an "
      .. "instance keeps its state in 16 bits)", nstates, LIMITS.states))
  end
  if nmethods > LIMITS.methods then
    self:err("methods", nil, format("%d methods, more than modal supports (at most %d)",
      nmethods, LIMITS.methods))
  end
  if nstates * nmethods > LIMITS.cells then
    self:err("states", nil, format("%d states and %d methods make %d handlers, more than "
      .. "modal supports (at most %d)", nstates, nmethods, nstates * nmethods, LIMITS.cells))
    self.too_big = true                  -- no handler by handler check: it would take ages
  end
  self.too_wide = self:input_cells(nstates)   -- the machine's inputs alone: no state merges
end

-- States times inputs (those known so far) past the cells: reports it and returns true.
function Run:input_cells(nstates)
  local ninputs = #self.input_names
  if nstates * ninputs > LIMITS.cells then
    self:err("states", nil, format("%d states and %d inputs make %d cells, more than modal "
      .. "supports (at most %d)", nstates, ninputs, nstates * ninputs, LIMITS.cells))
    return true
  end
  return false
end

-- Warning: states no chain of `on` transitions reaches from `initial`.
function Run:reachability(initial, records)
  local edges = {}
  for _, r in ipairs(records) do edges[r.name] = r.edges end
  local seen, queue, head = { [initial] = true }, { initial }, 1
  while head <= #queue do
    for _, to in ipairs(edges[queue[head]] or {}) do
      if self.state_set[to] and not seen[to] then
        seen[to] = true
        queue[#queue + 1] = to
      end
    end
    head = head + 1
  end
  for _, sname in ipairs(self.state_names) do
    if not seen[sname] then
      self:warn(join("states", sname), nil, format(
        "unreachable from the initial state %s (no transition leads here)", quote(initial)))
    end
  end
end

function Run:machine()
  local def = self:read("definition", self.def)
  for _, k in ipairs(sorted_keys(def)) do
    if not MACHINE_KEY[k] then
      self:err(join(nil, k), def[k], type(k) == "string"
        and format("unknown key %s%s", quote(k), hint(near_key(k, check.KEYS.machine, "machine")))
        or "unknown key " .. show(k))
    end
  end
  local norm = self:scalars(def)

  local methods, valid, method_set, all
  if def.methods == nil then
    self:err("methods", nil, "missing (a list of method names, may be empty)")
  else
    methods, valid, method_set, all = self:names("methods", def.methods, "method")
  end
  self.methods, self.method_set = valid, method_set
  norm.methods = all and methods or nil
  local inputs, input_set = {}, {}
  if def.inputs ~= nil then
    local _
    _, inputs, input_set = self:names("inputs", def.inputs, "input")
  end
  self.input_set = input_set or {}
  self.ignore_list = def.ignore ~= nil and self:ignore("ignore", def.ignore) or {}
  -- Every input, in index order: the built-in ones, the declared, then as the states name them.
  self.input_names, self.input_index = {}, {}
  for _, list in ipairs { check.BUILTIN_INPUTS, inputs or {}, self.ignore_list } do
    for _, name in ipairs(list) do self:input(name) end
  end
  self.defaults = self:defaults(def.defaults)
  self.candidates = {}
  for _, k in ipairs(check.KEYS.state) do self.candidates[#self.candidates + 1] = k end
  for _, m in ipairs(valid or {}) do self.candidates[#self.candidates + 1] = m end

  -- States: names first, so that targets and `initial` can be resolved.
  local states, tables = def.states, {}
  if states == nil then
    self:err("states", nil, "missing (a table of states by name)")
  elseif type(states) ~= "table" then
    self:err("states", states, format("expected a table of states by name, got %s",
      show(states)))
  else
    states = self:read("states", states)
    tables = self:state_names_of(states)
  end
  self:limits(self.state_names and #self.state_names or 0)

  local initial = def.initial
  if initial == nil then
    self:err("initial", nil, "missing (the name of the first state)")
  elseif type(initial) ~= "string" then
    self:err("initial", initial, format("expected a state name, got %s", show(initial)))
  elseif self.state_set and not self.state_set[initial] then
    self:err("initial", nil, format("unknown state %s%s", quote(initial),
      suggest(initial, self.state_names)))
  end

  self.ntransitions = 0
  local records = {}
  for _, sname in ipairs(tables) do
    records[#records + 1] = self:state(sname, states[sname])
  end
  if type(initial) == "string" and self.state_set and self.state_set[initial] then
    self:reachability(initial, records)
  end

  for _, r in ipairs(records) do
    for _, e in ipairs(r.on) do self:input(e.input) end
    for _, name in ipairs(r.ignore) do self:input(name) end
    r.edges = nil
  end
  if not self.too_wide then self:input_cells(#records) end
  if self.ntransitions > LIMITS.transitions then
    self:err("states", nil, format("%d transitions in all, more than modal supports (at "
      .. "most %d)", self.ntransitions, LIMITS.transitions))
  end

  norm.initial, norm.inputs, norm.ignore = initial, inputs, self.ignore_list
  norm.input_names, norm.states, norm.ntransitions = self.input_names, records, self.ntransitions
  self.norm = norm
end

-- Runs every check on `def`: returns the run (errors, warnings and, when no error, norm).
local function run(def)
  local r = setmetatable({ def = def, errors = {}, warnings = {} }, Run)
  if type(def) ~= "table" then
    r:err("definition", nil, format("expected a table, got %s", show(def)))
  else
    local ok, why = pcall(Run.machine, r)
    if not ok then
      r:err("definition", nil, "cannot be checked: " .. (type(why) == "string" and why
        or type(why)))
    end
  end
  if #r.errors > 0 then r.norm = nil end
  return r
end

local function texts(problems)
  local list = {}
  for i, p in ipairs(problems) do list[i] = p.text end
  return list
end

--- The problems of `def` as records `{ path =, message =, text = "path: message" }`:
-- returns errors, warnings (two lists). Never raises.
function check.problems(def)
  local r = run(def)
  return r.errors, r.warnings
end

--- Validates `def`: returns ok (no errors), errors, warnings — lists of "path: message"
-- strings. Every problem is reported at once; it never raises.
function check.check(def)
  local r = run(def)
  return #r.errors == 0, texts(r.errors), texts(r.warnings)
end

--- Reads `def` once and returns its normalized form (see the top of this file), or nil when
-- it has errors; then errors and warnings as check() does. Never raises.
function check.normalize(def)
  local r = run(def)
  return r.norm, texts(r.errors), texts(r.warnings)
end

-- Splits "path: message" at the first ": " outside brackets, parentheses and quotes.
local function split(s)
  local depth, quoted, i = 0, false, 1
  while i < #s do
    local c = s:sub(i, i)
    if quoted then
      if c == "\\" then i = i + 1 elseif c == '"' then quoted = false end
    elseif c == '"' then quoted = true
    elseif c == "[" or c == "(" then depth = depth + 1
    elseif c == "]" or c == ")" then depth = depth - 1
    elseif c == ":" and depth <= 0 and s:sub(i + 1, i + 1) == " " then
      return s:sub(1, i - 1), s:sub(i + 2)
    end
    i = i + 1
  end
  return nil, s
end

--- The problems as text, one "prefix: path: [label: ]message" line each (newline-ended).
-- `problems` holds strings from check() or records from problems(); `prefix` (a file name)
-- and `label` (e.g. "warning") are optional.
function check.format(problems, prefix, label)
  local lines = {}
  for _, p in ipairs(problems or {}) do
    local path, message
    if type(p) == "table" then
      path, message = p.path, p.message
    else
      path, message = split(tostring(p))
    end
    if label then message = label .. ": " .. message end
    local line = path and (path .. ": " .. message) or message
    lines[#lines + 1] = (prefix and (prefix .. ": ") or "") .. line .. "\n"
  end
  return concat(lines)
end

return setmetatable(check, { __call = function(_, def) return check.check(def) end })
