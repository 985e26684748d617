-- examples/redis/server.lua — a throwaway redis-server (Debian's redis-server) on a free
-- loopback port, for the example and its spec: no persistence, its files in a fresh folder
-- removed by stop(). Every step returns a Deferred; nothing blocks the loop.
--
--   local server = dofile("examples/redis/server.lua")
--   server.start { password = "secret" }  -> Deferred(s) once it accepts connections (s.port, s.pid)
--   s:kill()     -> Deferred once it is reaped (SIGKILL: a crash)
--   s:restart()  -> Deferred(s) once it accepts again, on the same port
--   s:stop()     -> Deferred once it is reaped (SIGTERM) and its folder removed
--
-- A SIGINT/SIGTERM to the host (modal.on_stop) stops every server still running: SIGTERM at
-- once, so it ends even if a second signal makes the host exit without waiting; the loop
-- drains once each is reaped and its folder removed. A host killed with SIGKILL cannot stop
-- it: see README.md.
local modal = require "modal"
local uv = require "luv"

local server = {}

local running = {}            -- server -> true: started and not reaped yet
local stop_registered = false

local Server = {}
Server.__index = Server

-- A free port on 127.0.0.1: bind port 0, read it, let it go.
local function free_port()
  local t = uv.new_tcp()
  assert(t:bind("127.0.0.1", 0))
  local port = t:getsockname().port
  t:close()
  return port
end

-- Succeeds once a connect to port works; fails after `seconds` or when the process ended.
local function until_accepting(s, seconds)
  local d = modal.deferred()
  local deadline = uv.hrtime() + seconds * 1e9
  local timer = uv.new_timer()
  local function try()
    if s.exited or uv.hrtime() > deadline then
      timer:close()
      return d:errback(modal.failure("error", "redis-server did not start on port " .. s.port ..
        (s.exited and " (it exited with status " .. tostring(s.code) .. ")" or "")))
    end
    local t = uv.new_tcp()
    t:connect("127.0.0.1", s.port, function(err)
      t:close()
      if err then return timer:start(20, 0, try) end
      timer:close()
      d:callback(s)
    end)
  end
  try()
  return d
end

function Server:_spawn()
  local args = { "--port", tostring(self.port), "--bind", "127.0.0.1", "--save", "",
    "--appendonly", "no", "--dir", self.dir, "--logfile", "" }
  if self.password then
    args[#args + 1] = "--requirepass"
    args[#args + 1] = self.password
  end
  self.exited = false
  self.gone = modal.deferred()
  local handle, pid = uv.spawn("redis-server", { args = args, stdio = {} },   -- its log: /dev/null
    function(code, signal)
      self.exited, self.code, self.signal = true, code, signal
      running[self] = nil
      self.handle:close()
      self.gone:callback(self)
    end)
  if not handle then
    return modal.fail("error", "cannot start redis-server: " .. tostring(pid))
  end
  self.handle, self.pid = handle, pid
  running[self] = true
  if not stop_registered then
    stop_registered = true
    modal.on_stop(function()
      stop_registered = false
      for s in next, running do s:stop() end
    end)
  end
  return until_accepting(self, 5)
end

--- Starts a redis-server; opts: password. A Deferred of the server once it accepts.
function server.start(opts)
  opts = opts or {}
  local dir = os.tmpname()
  os.remove(dir)
  assert(uv.fs_mkdir(dir, tonumber("700", 8)))
  local s = setmetatable({ port = free_port(), password = opts.password, dir = dir, exited = true }, Server)
  return s:_spawn()
end

--- SIGKILL, as a crash; a Deferred fired once it is reaped.
function Server:kill()
  if self.exited then return modal.succeed(self) end
  self.handle:kill("sigkill")
  return self.gone
end

--- Starts it again on the same port; a Deferred of the server once it accepts.
function Server:restart()
  if not self.exited then
    return self:kill():add_callback(function() return self:_spawn() end)
  end
  return self:_spawn()
end

--- SIGTERM; a Deferred fired once it is reaped and its folder removed.
function Server:stop()
  local d = modal.succeed(self)
  if not self.exited then
    self.handle:kill("sigterm")
    d = self.gone
  end
  return d:add_callback(function()
    local req = uv.fs_scandir(self.dir)
    while req do
      local name = uv.fs_scandir_next(req)
      if not name then break end
      os.remove(self.dir .. "/" .. name)
    end
    uv.fs_rmdir(self.dir)
    return self
  end)
end

return server
