-- specs/breaker_support.lua — helpers for the modal.breaker specs: a scriptable target (a
-- machine instance whose `call(how)` answers as told), breakers with short timings, outcomes
-- and transitions recorded.
--
--   local bs = require "breaker_support"
--   local t = bs.target()                  -- t.c: the instance; t.calls: calls it received
--   local b = bs.breaker(t, { window = 4 }) -- modal.breaker{ target = t.c, methods = { "call" }, ... }
--   local got = bs.watch(b:call("fail"))    -- got.fired, got.ok, got.value, got.n
--   local seen = bs.transitions(b)          -- { "closed>open:trip", ... }
--
-- t.c:call(how): "ok" succeeds at once, "fail" fails at once (kind remote), "hang" waits (the
-- Deferred goes to t.pending), "slow S" succeeds after S seconds (modal.sleep: the testing
-- clock's time when one is installed), "notfound" fails with kind notfound.
local modal = require "modal"

local bs = {}
local seq = 0

function bs.name(prefix)
  seq = seq + 1
  return string.format("%s_%d", prefix or "brk", seq)
end

function bs.target()
  local t = { calls = 0, pending = {} }
  local M = modal.machine { name = bs.name("target"), initial = "up", methods = { "call" },
    states = { up = { call = function(_, how)
      t.calls = t.calls + 1
      if how == "ok" then return modal.succeed("ok") end
      if how == "fail" then return modal.fail("remote", "boom") end
      if how == "notfound" then return modal.fail("notfound", "no such key") end
      if how == "hang" then
        local d = modal.deferred()
        t.pending[#t.pending + 1] = d
        return d
      end
      local s = how and how:match("^slow (%S+)$")
      if s then return modal.sleep(tonumber(s)):add_callback(function() return "slow ok" end) end
      error("the target does not know " .. tostring(how))
    end } } }
  t.c = M:new()
  return t
end

--- modal.breaker over t with jitter 0 and `opts` over the defaults.
function bs.breaker(t, opts)
  local o = { target = t.c, methods = { "call" }, name = bs.name(), open_wait = { jitter = 0 } }
  for k, v in pairs(opts or {}) do o[k] = v end
  return modal.breaker(o)
end

function bs.watch(d)
  local got = { fired = false, n = 0 }
  d:add_both(function(v)
    got.n = got.n + 1
    got.fired, got.at, got.value = true, modal.now(), v
    got.ok = not modal.is_failure(v)
  end)
  return got
end

--- Calls b:call(how) for each of `list`, in order; returns their outcomes.
function bs.calls(b, list)
  local out = {}
  for i, how in ipairs(list) do out[i] = bs.watch(b:call(how)) end
  return out
end

function bs.transitions(b)
  local list, at = {}, {}
  b:on_transition(function(_, from, to, input)
    list[#list + 1] = string.format("%s>%s:%s", from, to, tostring(input))
    at[#list] = modal.now()
  end)
  return list, at
end

return bs
