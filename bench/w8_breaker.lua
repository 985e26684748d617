-- w8_breaker.lua — W8's pieces (bench/README.md): a ready modal.service whose connection
-- answers in memory, and the same calls made on it bare and through a modal.breaker in
-- `closed`. run.lua runs both back to back in each repetition; the bar is on the difference
-- (what the breaker adds per call).
--
--   local w8 = require "w8_breaker"
--   w8.bare(n), w8.guarded(n) -> CPU ns per call
--
-- The connection is a plain table: a body queues a pending Deferred per call, and the queue is
-- answered once all the calls are made (as replies arrive on a pipelined connection), so each
-- call's Deferred is pending when the breaker adds its link, as over a real socket, and the
-- links run when it fires. Each run checks every answer (the callbacks' sum) and that the
-- breaker stayed closed. Times are CPU time (os.clock), calls and answers, GC included.
local modal = require "modal"

local w8 = {}

local clock = os.clock
local callback = getmetatable(modal.deferred()).__index.callback
local conn = { q = {}, n = 0 }

local function flush()
  local q = conn.q
  for i = 1, conn.n do
    callback(q[i], i)
    q[i] = nil
  end
  conn.n = 0
end

local c, b
local function setup()
  if c then return end
  local deferred = modal.deferred
  local Memory = modal.service {
    name = "w8_memory",
    connect = function() return conn end,
    methods = { echo = function(_, cn)
      local d = deferred()
      local k = cn.n + 1
      cn.n = k
      cn.q[k] = d
      return d
    end },
  }
  c = Memory:new {}
  c:echo(0)
  flush()
  assert(c.state == "ready", "W8: the service is not ready")
  b = modal.breaker { target = c, methods = { "echo" } }
end

local sum = 0
local function add(x) sum = sum + x; return x end

-- n calls on o (the service or the breaker), answered; CPU ns per call.
local function run(o, n)
  sum = 0
  collectgarbage("collect")
  collectgarbage("collect")
  local t0 = clock()
  for i = 1, n do o:echo(i):add_callback(add) end
  flush()
  local ns = (clock() - t0) * 1e9 / n
  assert(sum == n * (n + 1) // 2, "W8: wrong answers")
  return ns
end

function w8.bare(n)
  setup()
  return run(c, n)
end

function w8.guarded(n)
  setup()
  local ns = run(b, n)
  assert(b.state == "closed", "W8: the breaker left closed")
  return ns
end

return w8
