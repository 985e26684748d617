-- specs/pool_support.lua — helpers for the modal.pool specs: the scriptable worker's command,
-- pools closed (and their workers checked gone) after each test, and process checks by pid.
--
--   local ps = require "pool_support"
--   local p = ps.pool { size = 2 }            -- modal.pool{ cmd = ps.CMD, ... }, closed by ps.cleanup
--   ps.wait(function() return got.fired end)  -- runs the loop until true (3 s at most)
--   ps.running(pid)                           -- the process exists and is not a zombie
--   after_each(ps.cleanup)                    -- closes every pool, fails if a worker is left
local modal = require "modal"
local support = require "support"

local ps = {}

ps.WORKER = "specs/fixtures/pool/worker.lua"
ps.CMD = { "lua5.4", ps.WORKER }

local pools, pids = {}, {}
local seq = 0

--- A unique machine name for this run.
function ps.name(prefix)
  seq = seq + 1
  return string.format("%s_%d", prefix or "pool", seq)
end

--- modal.pool with the scriptable worker and short timings; `opts` over them (false removes).
function ps.options(opts)
  local o = { name = ps.name(), cmd = ps.CMD, size = 2, kill_timeout = 1,
              backoff = { initial = 0.05, multiplier = 2, max = 1, jitter = 0 } }
  for k, v in pairs(opts or {}) do
    if v == false then o[k] = nil else o[k] = v end
  end
  return o
end

function ps.pool(opts)
  local p = modal.pool(ps.options(opts))
  pools[#pools + 1] = p
  return p
end

--- Remembers p's workers now (ps.cleanup checks every pid it saw is gone).
function ps.pids(p)
  local list = modal.pool.pids(p)
  for _, pid in ipairs(list) do pids[pid] = true end
  return list
end

--- The process state letter of pid ("R", "S", "Z", ...), or nil when there is no such process.
function ps.proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("^%d+ %b() (%a)")
end

--- Whether pid is a live process (a zombie has exited: not live).
function ps.running(pid)
  local st = ps.proc_state(pid)
  return st ~= nil and st ~= "Z"
end

--- Whether pid is gone entirely: exited and reaped.
function ps.gone(pid)
  return ps.proc_state(pid) == nil
end

--- Records the outcome of d: got.fired, got.ok, got.value, got.n (times fired), got.at.
function ps.watch(d)
  local got = { fired = false, n = 0 }
  d:add_both(function(v)
    got.n = got.n + 1
    got.fired, got.at, got.value = true, modal.now(), v
    got.ok = not modal.is_failure(v)
  end)
  return got
end

function ps.wait(pred, seconds)
  return support.wait_for(pred, seconds or 3)
end

--- Closes every pool the test made, waits for each close, and checks that no worker the test
-- saw is left (running or a zombie: we reap our own children).
function ps.cleanup()
  support.run_undo()                       -- the test's clock closed first: closing takes real time
  for _, p in ipairs(pools) do
    for _, pid in ipairs(modal.pool.pids(p)) do pids[pid] = true end
    local closed = false
    p:close():add_both(function() closed = true end)
    support.wait_for(function() return closed end, 5)
    assert(closed, "a pool did not close within 5 s")
  end
  pools = {}
  local left = {}
  for pid in pairs(pids) do
    if not ps.gone(pid) then left[#left + 1] = pid .. " (" .. tostring(ps.proc_state(pid)) .. ")" end
  end
  pids = {}
  assert(#left == 0, "workers left after the test: " .. table.concat(left, ", "))
end

return ps
