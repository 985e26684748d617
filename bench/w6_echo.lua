-- w6_echo.lua — W6's pieces (bench/README.md): the local echo server as a process of its own
-- (the testing kit's fault server, echo mode), one line protocol connection over luv TCP, and
-- the two clients measured on it: calls through a modal.service facade and the same calls made
-- by hand on a raw luv connection.
--
--   local w6 = require "w6_echo"
--   local server = w6.start_server(lua)     -- { port =, stop = function() }
--   w6.raw(port, n)  -> ns per call: CPU, wall     w6.service(port, n) -> the same
--
-- Both clients pipeline: the n calls are all made first (each writes its line at once, as a
-- real client does: one write per call, no batching on either side), then the loop runs until
-- every answer is in. Both times run from the first call to the last answer: this process's
-- CPU time (the server works in its own process, not counted) and wall time. Each run checks
-- every answer: each call gets its own line back, once.
local uv = require "luv"

local w6 = {}

local hrtime = uv.hrtime
local find, sub, type = string.find, string.sub, type
local clock = os.clock

-- The server: lua5.4 running modal.testing.server in echo mode (ref = true, so its loop runs)
-- until its stdin closes. Returns { port =, stop = function() }.
function w6.start_server(lua)
  local stdin, stdout = uv.new_pipe(false), uv.new_pipe(false)
  local code = [[
local uv = require "luv"
local s = require("modal.testing").server { mode = "echo", ref = true }
io.stdout:write(s.port, "\n"); io.stdout:flush()
local input = uv.new_pipe(false); input:open(0)
input:read_start(function(_, data) if not data then s:close(); input:close() end end)
uv.run()
]]
  local exited = false
  local handle, pid = uv.spawn(lua, { args = { "-e", code }, stdio = { stdin, stdout, 2 } }, function()
    exited = true
  end)
  assert(handle, pid)
  local got = ""
  stdout:read_start(function(_, data) if data then got = got .. data end end)
  local deadline = hrtime() + 5e9
  while not got:find("\n") and hrtime() < deadline and not exited do uv.run("once") end
  local port = tonumber(got:match("^(%d+)\n"))
  assert(port, "W6: the echo server did not start: " .. got)
  stdout:read_stop()
  return {
    port = port,
    stop = function()
      stdin:close()
      stdout:close()
      local until_t = hrtime() + 2e9
      while not exited and hrtime() < until_t do uv.run("once") end
      if not exited then handle:kill("sigkill") end
      handle:close()
      uv.run("nowait")
    end,
  }
end

-- A line protocol connection: conn:request(text, on_reply) writes a line; replies come back in
-- order, each to its own on_reply(line) — a function, or a Deferred (on_reply:callback(line)).
-- The same object serves both clients.
local Conn = {}
Conn.__index = Conn

function w6.connect(port)
  local sock = uv.new_tcp()
  local conn = setmetatable({ sock = sock, waiting = {}, head = 1, tail = 0, buffer = "" }, Conn)
  local done, err = false, nil
  sock:connect("127.0.0.1", port, function(e) done, err = true, e end)
  while not done do uv.run("once") end
  assert(not err, err)
  sock:nodelay(true)
  sock:read_start(function(rerr, chunk)
    if rerr or not chunk then          -- fails loudly only when answers are still owed
      assert(conn.head > conn.tail, "W6: the echo server went away")
      return conn:close()
    end
    local buffer = conn.buffer .. chunk
    local at, waiting = 1, conn.waiting
    while true do
      local i = find(buffer, "\n", at, true)
      if not i then break end
      local h = conn.head
      local cb = waiting[h]
      waiting[h] = nil
      conn.head = h + 1
      if type(cb) == "function" then cb(sub(buffer, at, i - 1)) else cb:callback(sub(buffer, at, i - 1)) end
      at = i + 1
    end
    conn.buffer = sub(buffer, at)
  end)
  return conn
end

function Conn:request(text, on_reply)
  local t = self.tail + 1
  self.tail = t
  self.waiting[t] = on_reply
  self.sock:write(text .. "\n")
end

function Conn:close()
  if not self.sock:is_closing() then self.sock:close() end
end

local LINES = {}
local function line(i)
  local s = LINES[i]
  if not s then s = "call " .. i; LINES[i] = s end
  return s
end

-- Runs the loop until pred() (modal's timers and luv's handles share it).
local function run_until(pred)
  while not pred() do uv.run("once") end
end

--- The raw client: n calls on a luv connection, each with its own callback (a closure that
-- checks its answer), as a luv program gives each request its callback.
function w6.raw(port, n)
  local conn = w6.connect(port)
  local answered, wrong = 0, 0
  local function check(text, i)
    if text ~= line(i) then wrong = wrong + 1 end
    answered = answered + 1
  end
  for i = 1, n do line(i) end
  collectgarbage("collect")
  collectgarbage("collect")
  local c0, t0 = clock(), hrtime()
  for i = 1, n do
    local text = line(i)
    conn:request(text, function(reply) check(reply, i) end)
  end
  run_until(function() return answered == n end)
  local cpu, wall = (clock() - c0) * 1e9 / n, (hrtime() - t0) / n
  conn:close()
  assert(wrong == 0, "W6 raw: wrong answers")
  return cpu, wall
end

--- The service: a modal.service facade over the same connection; n × c:echo(line) plus a
-- callback on each Deferred. Connected before the clock starts.
local Echo
function w6.service(port, n)
  local modal = require "modal"
  if not Echo then
    local deferred = modal.deferred
    Echo = modal.service {
      name = "w6_echo",
      connect = function(m) return w6.connect(m.data.port) end,
      disconnect = function(_, conn) conn:close() end,
      methods = {
        echo = function(_, conn, text)
          local d = deferred()
          conn:request(text, d)
          return d
        end,
      },
      max_postponed = n + 1,
    }
  end
  local c = Echo:new { port = port }
  local ready = false
  c:connect_now():add_callback(function() ready = true end)
  run_until(function() return ready end)
  local answered, wrong = 0, 0
  local function check(text, i)
    if text ~= line(i) then wrong = wrong + 1 end
    answered = answered + 1
  end
  for i = 1, n do line(i) end
  collectgarbage("collect")
  collectgarbage("collect")
  local c0, t0 = clock(), hrtime()
  for i = 1, n do c:echo(line(i)):add_callback(check, i) end
  run_until(function() return answered == n end)
  local cpu, wall = (clock() - c0) * 1e9 / n, (hrtime() - t0) / n
  local closed = false
  c:close():add_callback(function() closed = true end)
  run_until(function() return closed end)
  uv.run("nowait")
  assert(wrong == 0, "W6 service: wrong answers")
  return cpu, wall
end

--- For scale: a plain modal.machine in one state over the same connection (the core's share
-- of a service call: dispatch, the caller's Deferred following the body's).
local Plain
function w6.machine(port, n)
  local modal = require "modal"
  local conn = w6.connect(port)
  if not Plain then
    local deferred = modal.deferred
    Plain = modal.machine { name = "w6_machine", initial = "ready", methods = { "echo" },
      max_postponed = n + 1,
      states = { ready = { echo = function(m, text)
        local d = deferred()
        m.data.conn:request(text, d)
        return d
      end } } }
  end
  local c = Plain:new { conn = conn }
  local answered, wrong = 0, 0
  local function check(text, i)
    if text ~= line(i) then wrong = wrong + 1 end
    answered = answered + 1
  end
  for i = 1, n do line(i) end
  collectgarbage("collect")
  collectgarbage("collect")
  local c0, t0 = clock(), hrtime()
  for i = 1, n do c:echo(line(i)):add_callback(check, i) end
  run_until(function() return answered == n end)
  local cpu, wall = (clock() - c0) * 1e9 / n, (hrtime() - t0) / n
  conn:close()
  assert(wrong == 0, "W6 machine: wrong answers")
  return cpu, wall
end

return w6
