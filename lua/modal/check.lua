-- lua/modal/check.lua — validates a machine definition (DESIGN.md section 5): every error and
-- warning at once, each as "path: message", in plain Lua, never raising on any input.
--
--   local check = require "modal.check"
--   local ok, errors, warnings = check.check(def)     -- also check(def)
--   io.write(check.format(errors, "conn.lua"))        -- "conn.lua: path: message\n" lines
--
-- It reads the definition with rawget/next/rawlen only, so metatables, cycles and junk values
-- cannot make it raise or loop; a problem in this module itself is reported as an error too.
--
-- @module modal.check

local type, next, rawget, rawlen, pcall = type, next, rawget, rawlen, pcall
local concat, sort, insert = table.concat, table.sort, table.insert
local format, byte = string.format, string.byte
local getinfo = debug.getinfo

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
    if math.type(v) == "integer" then return format("%d", v) end
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
    if type(c) == "string" and c ~= word and #c <= 64 then
      local d = distance(lw, c:lower())
      if d <= limit and (not best_d or d < best_d) then best, best_d = c, d end
    end
  end
  return best
end
local nearest = check.nearest

local function suggest(word, candidates)
  local n = nearest(word, candidates)
  return n and (" (did you mean " .. quote(n) .. "?)") or ""
end

-- The keys of t, sorted: numbers, then strings, then the rest by type name.
local RANK = { number = 1, string = 2 }
local function sorted_keys(t)
  local keys = {}
  local k = next(t)
  while k ~= nil do
    keys[#keys + 1] = k
    k = next(t, k)
  end
  sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    local ra, rb = RANK[ta] or 3, RANK[tb] or 3
    if ra ~= rb then return ra < rb end
    if ra == 3 then return ta < tb end
    return a < b
  end)
  return keys
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

-- Checks that v is a list (keys 1..n); reports once at `path` otherwise. Returns n or nil.
function Run:list(path, v, noun)
  if type(v) ~= "table" then
    self:err(path, v, format("expected a list of %s, got %s", noun, show(v)))
    return nil
  end
  local n = rawlen(v)
  for _, k in ipairs(sorted_keys(v)) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      if math.type(k) == "integer" and k > n then
        self:err(path, nil, format("expected a list of %s, but it has a hole before [%s]",
          noun, show(k)))
      elseif type(k) == "number" then
        self:err(path, nil, format("expected a list of %s, got key [%s]", noun, show(k)))
      else
        self:err(path, nil, format("expected a list of %s like { \"a\", \"b\" }, got key %s",
          noun, type(k) == "string" and quote(k) or show(k)))
      end
      return nil
    end
  end
  return n
end

-- A list of names (methods, inputs): each a valid, distinct name. Returns the valid names as a
-- list and every string listed as a set, or nil when the field itself is unusable.
function Run:names(key, what, required)
  local v = rawget(self.def, key)
  if v == nil then
    if required then
      self:err(key, nil, format("missing (a list of %s names%s)", what,
        key == "methods" and ", may be empty" or ""))
    end
    return nil
  end
  local n = self:list(key, v, what .. " names")
  if not n then return nil end
  local list, seen = {}, {}
  for i = 1, n do
    local name, path = rawget(v, i), join(key, i)
    if type(name) ~= "string" then
      self:err(path, name, format("expected a %s name (a string), got %s", what, show(name)))
    elseif seen[name] then
      self:err(path, nil, format("duplicate %s %s (also %s)", what, quote(name),
        join(key, seen[name])))
    else
      seen[name] = i
      local why = name_problem(name, what)
      if why then
        self:err(path, nil, why)         -- known, but not required of every state
      else
        list[#list + 1] = name
      end
    end
  end
  return list, seen
end

-- A list of input names to ignore.
function Run:ignore(path, v)
  local n = self:list(path, v, "input names")
  if not n then return end
  for i = 1, n do
    local name = rawget(v, i)
    if type(name) ~= "string" then
      self:err(join(path, i), name, format("expected an input name (a string), got %s",
        show(name)))
    end
  end
end

-- A handler value: a function or "postpone".
function Run:handler(path, v)
  if type(v) == "function" or v == "postpone" then return end
  local hint = type(v) == "string" and suggest(v, { "postpone" }) or ""
  self:err(path, v, format("expected a function or 'postpone', got %s%s", show(v), hint))
end

function Run:target(path, name)
  if type(name) ~= "string" then
    self:err(path, name, format("expected a state name, got %s", show(name)))
  elseif self.state_set and not self.state_set[name] then
    self:err(path, nil, format("unknown state %s%s", quote(name),
      suggest(name, self.state_names)))
  end
end

-- One transition table { to=, guard=, action= }. Returns its `to` when it is a string.
function Run:transition(path, t)
  for _, k in ipairs(sorted_keys(t)) do
    if not TRANSITION_KEY[k] then
      local v = rawget(t, k)
      if type(k) == "string" then
        self:err(join(path, k), v, format("unknown key %s%s", quote(k),
          suggest(k, check.KEYS.transition)))
      elseif math.type(k) == "integer" then
        self:err(join(path, k), v, "unexpected list entry in a transition table")
      else
        self:err(join(path, k), v, "unknown key " .. show(k))
      end
    end
  end
  local to, action = rawget(t, "to"), rawget(t, "action")
  if to ~= nil then self:target(join(path, "to"), to) end
  for _, key in ipairs { "guard", "action" } do
    local fn = rawget(t, key)
    if fn ~= nil and type(fn) ~= "function" then
      self:err(join(path, key), fn, format("expected a function, got %s", show(fn)))
    end
  end
  if to == nil and action == nil then
    self:warn(path, nil, "transition does nothing (no 'to' and no 'action')")
  end
  if type(to) == "string" then return to end
end

-- The value of on[input]: a state name, a transition table or a list of those. Returns the
-- target names it can lead to.
function Run:transitions(path, spec)
  local targets = {}
  if type(spec) == "string" then
    self:target(path, spec)
    targets[1] = spec
  elseif type(spec) == "table" and rawget(spec, 1) ~= nil then
    local n = rawlen(spec)
    for _, k in ipairs(sorted_keys(spec)) do
      if math.type(k) ~= "integer" or k < 1 or k > n then
        self:err(join(path, k), rawget(spec, k), type(k) == "number"
          and "list of transitions has a hole here"
          or "a list of transitions cannot also have transition keys (put each in an entry)")
      end
    end
    for i = 1, n do
      local entry, p = rawget(spec, i), join(path, i)
      local guarded = false
      if type(entry) == "string" then
        self:target(p, entry)
        targets[#targets + 1] = entry
      elseif type(entry) == "table" then
        guarded = rawget(entry, "guard") ~= nil
        targets[#targets + 1] = self:transition(p, entry)
      else
        guarded = true                     -- reported below; do not add an order error
        self:err(p, entry, format("expected a state name or a transition table, got %s",
          show(entry)))
      end
      if not guarded and i < n then
        self:err(p, entry, format("unguarded entry must be last (%s never run)",
          i + 1 == n and "the entry after it would" or "the entries after it would"))
      end
    end
  elseif type(spec) == "table" then
    targets[1] = self:transition(path, spec)
  else
    self:err(path, spec, format(
      "expected a state name, a transition table or a list of them, got %s", show(spec)))
  end
  return targets
end

-- One state: its keys, its handlers and the rules that tie them together.
function Run:state(sname, st)
  local p = join("states", sname)
  local final = rawget(st, "final")
  local is_final = final == true
  local methods, method_set = self.methods, self.method_set
  local defaults = self.defaults
  local candidates = {}
  for _, k in ipairs(check.KEYS.state) do candidates[#candidates + 1] = k end
  for _, m in ipairs(methods or {}) do candidates[#candidates + 1] = m end

  for _, k in ipairs(sorted_keys(st)) do
    local v, kp = rawget(st, k), join(p, k)
    if type(k) ~= "string" then
      self:err(kp, v, "unknown key " .. show(k))
    elseif k == "enter" or k == "exit" or k == "run" then
      if type(v) ~= "function" then
        self:err(kp, v, format("expected a function, got %s", show(v)))
      end
    elseif k == "timeout" then
      if type(v) == "number" then
        if not (v >= 0 and v < math.huge) then
          self:err(kp, v, format("expected a non-negative number of seconds, got %s", show(v)))
        end
      elseif type(v) ~= "function" then
        self:err(kp, v, format("expected seconds (a number) or a function, got %s", show(v)))
      end
    elseif k == "final" then
      if type(v) ~= "boolean" then
        self:err(kp, v, format("expected a boolean, got %s", show(v)))
      end
    elseif k == "ignore" then
      self:ignore(kp, v)
    elseif k == "on" then
      if type(v) ~= "table" then
        self:err(kp, v, format("expected a table of transitions by input, got %s", show(v)))
      elseif not is_final then
        for _, input in ipairs(sorted_keys(v)) do
          local ip = join(kp, input)
          if type(input) ~= "string" then
            self:err(ip, nil, format("expected an input name (a string), got %s", show(input)))
          elseif not is_identifier(input) then
            self:err(ip, nil, format("input name %s is not a Lua identifier", quote(input)))
          end
          for _, to in ipairs(self:transitions(ip, rawget(v, input))) do
            self.edges[sname][#self.edges[sname] + 1] = to
          end
        end
      end
    elseif not methods or method_set[k] then
      self:handler(kp, v)                  -- methods unusable: check the value only
    else
      local near = nearest(k, candidates)
      local hint = near and (" (did you mean " .. quote(near) .. "?)") or ""
      if not STATE_KEY[near] and (type(v) == "function" or v == "postpone") then
        self:err(kp, v, format("handler for undeclared method %s%s", quote(k), hint))
      else
        self:err(kp, v, format("unknown key %s%s", quote(k), hint))
      end
    end
  end

  local on, run, timeout = rawget(st, "on"), rawget(st, "run"), rawget(st, "timeout")
  if is_final then
    for _, k in ipairs { "on", "run", "timeout" } do
      local v = rawget(st, k)
      if v ~= nil then self:err(join(p, k), v, "not allowed in a final state") end
    end
  end

  -- Every method answers in every state (the consistent-interface rule); postponing.
  local postponing = {}
  for _, m in ipairs(methods or {}) do
    local own, default = rawget(st, m), defaults and rawget(defaults, m)
    if own == nil and default == nil then
      self:err(join(p, m), nil, format("missing handler for method %s (and no defaults.%s)",
        quote(m), m))
    elseif own == "postpone" or (own == nil and default == "postpone") then
      if is_final then
        self:err(join(p, m), own, own == "postpone" and "a final state cannot postpone"
          or format("a final state cannot postpone (defaults.%s is 'postpone'; give it a handler)",
            m))
      else
        postponing[#postponing + 1] = quote(m)
      end
    end
  end

  if is_final then return end
  local on_table = type(on) == "table"
  if #postponing > 0 and (on == nil or (on_table and next(on) == nil)) and timeout == nil then
    self:err(p, nil, format("postpones %s with no way out (no 'on' and no 'timeout')",
      concat(postponing, ", ")))
  end
  if on ~= nil and not on_table then return end   -- already reported
  local function takes(input) return on_table and rawget(on, input) ~= nil end
  if timeout ~= nil and not takes("timeout") then
    self:err(join(p, "timeout"), timeout, "timeout without on.timeout to take it")
  end
  if run ~= nil then
    local missing = {}
    if not takes("done") then missing[#missing + 1] = "on.done" end
    if not takes("error") then missing[#missing + 1] = "on.error" end
    if #missing > 0 then
      self:err(join(p, "run"), run, "run without " .. concat(missing, " and "))
    end
  else
    for _, input in ipairs { "done", "error" } do
      if takes(input) and not self.input_set[input] then
        self:err(join(join(p, "on"), input), nil, format(
          "on.%s without run (list '%s' in inputs to fire it by hand)", input, input))
      end
    end
  end
end

function Run:machine()
  local def = self.def
  for _, k in ipairs(sorted_keys(def)) do
    if not MACHINE_KEY[k] then
      self:err(join(nil, k), rawget(def, k), type(k) == "string"
        and format("unknown key %s%s", quote(k), suggest(k, check.KEYS.machine))
        or "unknown key " .. show(k))
    end
  end

  local name = rawget(def, "name")
  if name == nil then
    self:err("name", nil, "missing (a string naming the machine)")
  elseif type(name) ~= "string" then
    self:err("name", name, format("expected a string, got %s", show(name)))
  elseif name == "" then
    self:err("name", nil, "must not be empty")
  end

  local version = rawget(def, "version")
  if version ~= nil and type(version) ~= "number" then
    self:err("version", version, format("expected a number, got %s", show(version)))
  end

  self.methods, self.method_set = self:names("methods", "method", true)
  local _, input_set = self:names("inputs", "input", false)
  self.input_set = input_set or {}
  if rawget(def, "ignore") ~= nil then self:ignore("ignore", rawget(def, "ignore")) end

  local maxp = rawget(def, "max_postponed")
  if maxp ~= nil and not (type(maxp) == "number" and maxp >= 1 and maxp < math.huge
      and maxp == math.floor(maxp)) then
    self:err("max_postponed", maxp, format("expected a positive integer, got %s", show(maxp)))
  end
  local migrate = rawget(def, "migrate")
  if migrate ~= nil and type(migrate) ~= "function" then
    self:err("migrate", migrate, format("expected a function, got %s", show(migrate)))
  end

  local defaults = rawget(def, "defaults")
  if defaults ~= nil and type(defaults) ~= "table" then
    self:err("defaults", defaults, format("expected a table of handlers by method, got %s",
      show(defaults)))
  elseif defaults ~= nil then
    self.defaults = defaults
    for _, k in ipairs(sorted_keys(defaults)) do
      local v, kp = rawget(defaults, k), join("defaults", k)
      if self.methods and not self.method_set[k] then
        self:err(kp, v, type(k) == "string"
          and format("%s is not a method%s", quote(k), suggest(k, self.methods))
          or format("expected a method name, got %s", show(k)))
      else
        self:handler(kp, v)
      end
    end
  end

  -- States: names first, so that targets and `initial` can be resolved.
  local states = rawget(def, "states")
  local tables = {}
  if states == nil then
    self:err("states", nil, "missing (a table of states by name)")
  elseif type(states) ~= "table" then
    self:err("states", states, format("expected a table of states by name, got %s",
      show(states)))
  else
    self.state_names, self.state_set = {}, {}
    for _, k in ipairs(sorted_keys(states)) do
      local v, kp = rawget(states, k), join("states", k)
      if math.type(k) == "integer" then
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
  end

  local initial = rawget(def, "initial")
  if initial == nil then
    self:err("initial", nil, "missing (the name of the first state)")
  elseif type(initial) ~= "string" then
    self:err("initial", initial, format("expected a state name, got %s", show(initial)))
  elseif self.state_set and not self.state_set[initial] then
    self:err("initial", nil, format("unknown state %s%s", quote(initial),
      suggest(initial, self.state_names)))
  end

  self.edges = {}
  for _, sname in ipairs(tables) do
    self.edges[sname] = {}
    self:state(sname, rawget(states, sname))
  end

  -- Warning: states no chain of `on` transitions reaches from `initial`.
  if type(initial) == "string" and self.state_set and self.state_set[initial] then
    local seen, queue, head = { [initial] = true }, { initial }, 1
    while head <= #queue do
      for _, to in ipairs(self.edges[queue[head]] or {}) do
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
end

--- The problems of `def` as records `{ path =, message =, text = "path: message" }`:
-- returns errors, warnings (two lists). Never raises.
function check.problems(def)
  local run = setmetatable({ def = def, errors = {}, warnings = {} }, Run)
  if type(def) ~= "table" then
    run:err("definition", nil, format("expected a table, got %s", show(def)))
  else
    local ok, why = pcall(Run.machine, run)
    if not ok then
      run:err("definition", nil, "cannot be checked: " .. (type(why) == "string" and why
        or type(why)))
    end
  end
  return run.errors, run.warnings
end

--- Validates `def`: returns ok (no errors), errors, warnings — lists of "path: message"
-- strings. Every problem is reported at once; it never raises.
function check.check(def)
  local errors, warnings = check.problems(def)
  local e, w = {}, {}
  for i, p in ipairs(errors) do e[i] = p.text end
  for i, p in ipairs(warnings) do w[i] = p.text end
  return #e == 0, e, w
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
