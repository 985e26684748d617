-- floor_deferred.lua — two plain-Lua Deferreds that modal's native one is measured against
-- (W5, as project floors beside the judged one in floor_plain.lua): a Twisted-like one and a
-- bare minimal one.
--
-- Both are written to be as fast as idiomatic plain Lua 5.4 allows, so that a ratio against
-- them means something: fields are all set in the constructor (one table, hash part sized
-- once), links live in the Deferred's own array part (no second table), hot paths cache
-- their look-ups in locals.
--
--   twisted  callback/errback pair per link, pcall per link call, a failure wrapper for
--            errors, a link returning a Deferred pauses the chain until that one fires,
--            add_callbacks/add_callback/add_errback/add_both, "already called".
--            Left out (they would only make the floor slower): extra link arguments,
--            cancellation, tracebacks in failures, unhandled-failure reporting (a __gc).
--   bare     callbacks only: no errbacks, no pcall, no pausing.
--
-- `lua5.4 bench/floor_deferred.lua` runs the self-check and prints "ok".

local M = {}

-- Failures --------------------------------------------------------------------------------

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.kind .. ": " .. f.message end

function Failure:is(kind) return self.kind == kind end

local function failure(kind, message, value)
  return setmetatable({ kind = kind, message = message, value = value }, Failure)
end

-- An error value or errback argument as a failure (a failure stays as it is).
local function as_failure(e)
  if getmetatable(e) == Failure then return e end
  return setmetatable({ kind = "error", message = tostring(e), value = e }, Failure)
end

local function is_failure(x) return getmetatable(x) == Failure end

-- Twisted-like Deferred ---------------------------------------------------------------------
--
-- Link k occupies self[2k-1] (callback or false) and self[2k] (errback or false).
-- n: slots used; pos: slot of the next link's callback; called: fired; paused: waiting on an
-- inner Deferred; running: inside run (links added meanwhile are picked up by the loop).

local T = {}
T.__index = T

local run

function T.new()
  return setmetatable({ n = 0, pos = 1, called = false, paused = false, running = false,
                        result = false }, T)
end

-- Runs the links from pos on while the Deferred is fired and not paused.
run = function(self)
  if self.running or self.paused then return end
  self.running = true
  local res, i = self.result, self.pos
  local fail = getmetatable(res) == Failure
  while i < self.n do
    local f
    if fail then f = self[i + 1] else f = self[i] end
    i = i + 2
    if f then
      local ok, r = pcall(f, res)
      if ok then
        local mt = getmetatable(r)
        if mt == T then
          -- Pause until the inner Deferred fires; its outcome continues this chain (and the
          -- inner one's result becomes nil, as in Twisted).
          self.pos, self.result, self.running, self.paused = i, nil, false, true
          r:add_both(function(v)
            self.paused, self.result = false, v
            run(self)
          end)
          return
        end
        res, fail = r, mt == Failure
      else
        res, fail = as_failure(r), true
      end
    end
  end
  self.pos, self.result, self.running = i, res, false
end

function T:add_callbacks(cb, eb)
  local n = self.n
  self[n + 1], self[n + 2], self.n = cb or false, eb or false, n + 2
  if self.called then run(self) end
  return self
end

function T:add_callback(cb)
  local n = self.n
  self[n + 1], self[n + 2], self.n = cb, false, n + 2
  if self.called then run(self) end
  return self
end

function T:add_errback(eb)
  local n = self.n
  self[n + 1], self[n + 2], self.n = false, eb, n + 2
  if self.called then run(self) end
  return self
end

function T:add_both(fn)
  local n = self.n
  self[n + 1], self[n + 2], self.n = fn, fn, n + 2
  if self.called then run(self) end
  return self
end

function T:callback(v)
  if self.called then error("already called", 2) end
  self.called, self.result = true, v
  run(self)
end

function T:errback(e)
  if self.called then error("already called", 2) end
  self.called, self.result = true, as_failure(e)
  run(self)
end

function T:state()
  if not self.called or self.paused then return "pending" end
  return getmetatable(self.result) == Failure and "failed" or "succeeded"
end

-- The current result of a fired, unpaused Deferred (nil otherwise).
function T:value()
  if not self.called or self.paused then return nil end
  return self.result
end

M.twisted = {
  new = T.new,
  succeed = function(v) local d = T.new(); d:callback(v); return d end,
  fail = function(e) local d = T.new(); d:errback(e); return d end,
  failure = failure,
  is_failure = is_failure,
  Deferred = T,
}

-- Bare minimal Deferred ---------------------------------------------------------------------
--
-- self[1..n] are the callbacks; firing runs them in order, each result feeding the next.

local B = {}
B.__index = B

function B.new()
  return setmetatable({ n = 0, called = false, result = false }, B)
end

function B:add_callback(f)
  if self.called then
    self.result = f(self.result)
    return self
  end
  local n = self.n + 1
  self[n], self.n = f, n
  return self
end

function B:callback(v)
  if self.called then error("already called", 2) end
  self.called = true
  for i = 1, self.n do v = self[i](v) end
  self.result = v
end

function B:value()
  if self.called then return self.result end
  return nil
end

M.bare = { new = B.new, Deferred = B }

-- Self-check --------------------------------------------------------------------------------

local function selfcheck()
  local D, inc = M.twisted, function(v) return v + 1 end
  local function value_of(d)
    local got
    d:add_both(function(v) got = v; return v end)
    return got
  end

  -- callbacks in order, each result replacing the last; state
  local d = D.new()
  assert(d:state() == "pending")
  assert(d:add_callback(inc) == d)
  d:add_callback(inc):add_callback(inc)
  d:callback(1)
  assert(value_of(d) == 4 and d:state() == "succeeded")

  -- already called (both ways)
  assert(select(2, pcall(d.callback, d, 1)):find("already called", 1, true))
  assert(select(2, pcall(d.errback, d, 1)):find("already called", 1, true))

  -- a raising callback goes to the next link's errback, not its own
  d = D.new()
  local own, seen = false, nil
  d:add_callbacks(function() error("boom", 0) end, function() own = true end)
  d:add_callback(function() error("skipped") end)
  d:add_errback(function(f) seen = f; return "recovered" end)
  d:add_callback(function(v) return v .. "!" end)
  d:callback(0)
  assert(not own and D.is_failure(seen) and seen:is("error") and seen.value == "boom")
  assert(tostring(seen) == "error: boom")
  assert(value_of(d) == "recovered!" and d:state() == "succeeded")

  -- errback wraps a plain value; a failure passes as it is; returning a failure switches path
  d = D.new()
  d:errback("bad")
  local f = value_of(d)
  assert(D.is_failure(f) and f.kind == "error" and f.message == "bad" and d:state() == "failed")
  local g = D.failure("timeout", "too slow")
  d = D.fail(g)
  assert(value_of(d) == g)
  d = D.succeed(1)
  d:add_callback(function() return g end)
  assert(value_of(d) == g and d:state() == "failed")
  -- raising a failure keeps it as it is; an errback that raises stays on the errback path
  d = D.succeed(1)
  d:add_callback(function() error(g) end)
  assert(value_of(d) == g)
  d:add_errback(function() error("again", 0) end)
  f = value_of(d)
  assert(f ~= g and f.value == "again" and d:state() == "failed")
  -- an errback that returns recovers; add_both sees both paths
  d:add_errback(function() return 7 end)
  assert(value_of(d) == 7 and d:state() == "succeeded")

  -- pausing: a link returning a pending Deferred pauses the chain until it fires
  local inner = D.new()
  d = D.new()
  local after
  d:add_callback(function() return inner end)
  d:add_callback(function(v) after = v; return v * 2 end)
  d:callback(1)
  assert(d:state() == "pending" and after == nil)
  d:add_callback(inc) -- added while paused: runs after the inner one fires
  inner:callback(20)
  assert(after == 20 and value_of(d) == 41 and d:state() == "succeeded")
  assert(inner:value() == nil) -- the inner result went to the outer chain

  -- pausing on an inner Deferred that fails, and on one already fired
  inner = D.new()
  d = D.new()
  d:add_callback(function() return inner end)
  d:callback(1)
  inner:errback("inner failed")
  f = value_of(d)
  assert(D.is_failure(f) and f.value == "inner failed" and d:state() == "failed")
  d = D.succeed(1)
  d:add_callback(function(v) return D.succeed(v + 10) end)
  d:add_callback(inc)
  assert(value_of(d) == 12)

  -- an errback returning a Deferred pauses too
  inner = D.new()
  d = D.fail("x")
  d:add_errback(function() return inner end)
  assert(d:state() == "pending")
  inner:callback("fixed")
  assert(value_of(d) == "fixed")

  -- links added by a running link run after it, in order, without re-entering
  d = D.new()
  local order = {}
  d:add_callback(function(v)
    d:add_callback(function(w) order[#order + 1] = "added"; return w end)
    order[#order + 1] = "first"
    return v
  end)
  d:add_callback(function(v) order[#order + 1] = "second"; return v end)
  d:callback(0)
  assert(table.concat(order, ",") == "first,second,added")

  -- a link returning nothing makes the result nil
  d = D.succeed(5)
  d:add_callback(function() end)
  assert(value_of(d) == nil and d:state() == "succeeded")

  -- bare
  local b = M.bare.new()
  assert(b:add_callback(inc) == b)
  b:add_callback(inc):add_callback(inc)
  assert(b:value() == nil)
  b:callback(1)
  assert(b:value() == 4)
  b:add_callback(inc)
  assert(b:value() == 5)
  assert(select(2, pcall(b.callback, b, 1)):find("already called", 1, true))

  print("ok")
end

-- Run as a script (not required as a module): self-check.
if ... ~= "floor_deferred" then selfcheck() end

return M
