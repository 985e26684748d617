-- w9_pool.lua — W9's pieces (bench/README.md): 20,000 trivial calls answered by 4 worker
-- processes, through modal.pool and by hand-written luv (spawn + pipes, a line protocol, one
-- call per worker at a time, the next waiting call sent as soon as a worker answers). The
-- worker is `cat` for both: it answers each line with itself, so what is measured is the
-- parent's side. The workers are started (and answered one call each) before the clock
-- starts; the figure is wall time per call from the first call to the last answer (the calls
-- wait on the workers: throughput is its inverse). Each run checks every answer.
--
--   local w9 = require "w9_pool"
--   w9.pool(n) -> µs per call        w9.raw(n) -> µs per call
local modal = require "modal"
local uv = require "luv"

local w9 = {}

local hrtime = uv.hrtime
local find, sub, tostring = string.find, string.sub, tostring
local SIZE, CMD = 4, "cat"

local function run_until(pred)
  while not pred() do uv.run("once") end
end

function w9.pool(n)
  local p = modal.pool { name = "w9_pool", cmd = { CMD }, size = SIZE, max_queued = n }
  local warm = 0
  for _ = 1, SIZE do p:call("warm"):add_callback(function() warm = warm + 1 end) end
  run_until(function() return warm == SIZE end)
  assert(#modal.pool.pids(p) == SIZE, "W9: the pool did not start its workers")
  local answered, wrong = 0, 0
  local function check(v, i)
    if v ~= tostring(i) then wrong = wrong + 1 end
    answered = answered + 1
  end
  collectgarbage("collect")
  collectgarbage("collect")
  local t0 = hrtime()
  for i = 1, n do p:call(i):add_callback(check, i) end
  run_until(function() return answered == n end)
  local us = (hrtime() - t0) / 1e3 / n
  local closed = false
  p:close():add_callback(function() closed = true end)
  run_until(function() return closed end)
  uv.run("nowait")
  assert(wrong == 0, "W9 pool: wrong answers")
  return us
end

--- By hand: SIZE workers on luv pipes; calls wait in a queue, each worker holds one.
function w9.raw(n)
  local workers, queue, head = {}, {}, 1
  local answered, wrong, warm = 0, 0, 0
  local function send(w)
    local i = queue[head]
    if i == nil then w.cur = nil return end
    queue[head] = nil
    head = head + 1
    w.cur = i
    w.stdin:write(tostring(i) .. "\n")
  end
  for k = 1, SIZE do
    local w = { buf = "", exited = false }
    w.stdin, w.stdout = uv.new_pipe(false), uv.new_pipe(false)
    w.handle = assert(uv.spawn(CMD, { args = {}, stdio = { w.stdin, w.stdout, 2 } }, function()
      w.exited = true
      w.handle:close()
    end))
    w.stdout:read_start(function(err, data)
      if err or not data then w.stdout:close() return end
      local buf = w.buf .. data
      local at = 1
      while true do
        local j = find(buf, "\n", at, true)
        if not j then break end
        local line = sub(buf, at, j - 1)
        at = j + 1
        if w.cur == "warm" then
          warm = warm + 1
          w.cur = nil
        else
          if line ~= tostring(w.cur) then wrong = wrong + 1 end
          answered = answered + 1
          send(w)
        end
      end
      w.buf = sub(buf, at)
    end)
    workers[k] = w
    w.cur = "warm"
    w.stdin:write("warm\n")
  end
  run_until(function() return warm == SIZE end)
  collectgarbage("collect")
  collectgarbage("collect")
  local t0 = hrtime()
  for i = 1, n do queue[i] = i end
  for _, w in ipairs(workers) do send(w) end
  run_until(function() return answered == n end)
  local us = (hrtime() - t0) / 1e3 / n
  for _, w in ipairs(workers) do w.stdin:close() end
  run_until(function()
    for _, w in ipairs(workers) do if not w.exited then return false end end
    return true
  end)
  uv.run("nowait")
  assert(wrong == 0, "W9 raw: wrong answers")
  return us
end

return w9
