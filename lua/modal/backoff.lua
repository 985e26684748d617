--- lua/modal/backoff.lua — exponential backoff with jitter (doc/policies.md, "Backoff"), with
-- gRPC's connection-backoff defaults: 1 s, times 1.6 each step, ±20 %, capped at 120 s.
--
--   local b = modal.backoff { initial = 1, multiplier = 1.6, jitter = 0.2, max = 120 }
--   b:next()   --> 1.13, then about 1.6, 2.56, ... (seconds); b:reset() starts again
--
-- @module modal.backoff

local type, next, ipairs, tostring, random = type, next, ipairs, tostring, math.random
local format, concat = string.format, table.concat
local huge = math.huge
local nearest = require("modal.check").nearest

local backoff = {}

--- The defaults every option falls back to (gRPC's connection backoff).
backoff.DEFAULTS = { initial = 1, multiplier = 1.6, jitter = 0.2, max = 120 }

local OPTIONS = { "initial", "multiplier", "jitter", "max", "random" }

local Backoff = {}
Backoff.__index = Backoff
Backoff.__name = "modal.backoff"

local function finite(x)
  return type(x) == "number" and x == x and x > -huge and x < huge
end

-- The problems with one option table, as "option: message" strings (in OPTIONS order).
local function problems(opts)
  local out = {}
  local known = {}
  for _, k in ipairs(OPTIONS) do known[k] = true end
  local unknown = {}
  for k in next, opts do
    if not known[k] then unknown[#unknown + 1] = tostring(k) end
  end
  table.sort(unknown)
  for _, k in ipairs(unknown) do
    local near = nearest(k, OPTIONS)
    out[#out + 1] = format("%s: unknown option%s", k,
      near and format(" (did you mean '%s'?)",
        near) or " (options: initial, multiplier, jitter, max, random)")
  end
  local function number(k, ok, want)
    local v = opts[k]
    if v ~= nil and (not finite(v) or not ok(v)) then
      out[#out + 1] = format("%s: expected %s, got %s", k, want,
        type(v) == "number" and tostring(v) or type(v))
    end
  end
  number("initial", function(v) return v >= 0 end, "a number of seconds >= 0")
  number("multiplier", function(v) return v >= 1 end, "a number >= 1")
  number("jitter", function(v) return v >= 0 and v <= 1 end, "a number between 0 and 1")
  number("max", function(v) return v >= 0 end, "a number of seconds >= 0")
  if opts.random ~= nil and type(opts.random) ~= "function" then
    out[#out + 1] = format("random: expected a function() -> [0, 1), got %s", type(opts.random))
  end
  return out
end

-- Checks backoff options without raising. Returns a list of "option: message" strings
-- (empty when `opts` is valid); `where` prefixes each ("backoff." for modal.service).
function backoff._problems(opts, where)
  if type(opts) ~= "table" then
    return { format("%sexpected a table of options, got %s", where and where:gsub("%.$", ": ") or "",
      type(opts)) }
  end
  local out = problems(opts)
  if where then
    for i, p in ipairs(out) do out[i] = where .. p end
  end
  return out
end

--- A new backoff: gRPC's connection-backoff algorithm, with its defaults.
-- @tparam[opt] table opts `initial` (seconds, default 1), `multiplier` (>= 1, default 1.6),
--   `jitter` (0..1, default 0.2: each delay is drawn uniformly within ±20 % of its base),
--   `max` (seconds, default 120: the cap of the base delay; a jittered delay may exceed it),
--   `random` (optional `function() -> [0, 1)`, default math.random).
-- @return a backoff object: `b:next()`, `b:reset()`, `b:peek()`; fields `b.count` (delays
--   drawn since the last reset) and the options.
-- @raise "modal.backoff: option: message" for every invalid option at once.
function backoff.new(opts)
  opts = opts == nil and {} or opts
  local errs = backoff._problems(opts)
  if #errs > 0 then
    error("modal.backoff: " .. concat(errs, "\n  "), 2)
  end
  local d = backoff.DEFAULTS
  local b = setmetatable({
    initial = opts.initial or d.initial,
    multiplier = opts.multiplier or d.multiplier,
    jitter = opts.jitter or d.jitter,
    max = opts.max or d.max,
    random = opts.random or random,
    count = 0,
  }, Backoff)
  return b
end

--- The base delay of the next draw (seconds, no jitter): `initial` times `multiplier` to the
-- number of draws since the last reset, capped at `max`.
function Backoff:peek()
  local base = self.initial * self.multiplier ^ self.count
  if base > self.max or base ~= base then base = self.max end
  return base
end

--- The next delay in seconds: the base delay (see peek) drawn uniformly within ±`jitter` of
-- itself; never negative. Each call moves one step up the schedule.
function Backoff:next()
  local base = self:peek()
  self.count = self.count + 1
  local j = self.jitter
  if j == 0 or base == 0 then return base end
  local delay = base * (1 - j + 2 * j * self.random())
  if delay < 0 then delay = 0 end
  return delay
end

--- Starts the schedule again from `initial`.
function Backoff:reset()
  self.count = 0
end

-- A copy with other options that stands at the same step (a reloaded policy keeps its place).
function Backoff:_rebased(opts)
  local b = backoff.new(opts)
  b.count = self.count
  return b
end

function Backoff:__tostring()
  return format("modal.backoff(initial=%g, multiplier=%g, jitter=%g, max=%g, count=%d)",
    self.initial, self.multiplier, self.jitter, self.max, self.count)
end

return setmetatable(backoff, { __call = function(_, opts) return backoff.new(opts) end })
