-- specs/line_client.lua — a line-protocol TCP client over luv for the policy specs: the
-- connection a modal.service facade drives (doc/policies.md).
--
--   local line = require "line_client"
--   line.connect(m, { port = s.port, auth = "secret", greeting = true }) -> Deferred(conn)
--   conn:request("text") -> Deferred("text")    replies are lines, in call order
--   conn:close()                                 fails the requests in flight (kind unavailable)
--   line.stats                                   { opened =, closed = } sockets, for leak checks
--
-- Failures: a refused or failed connect is kind "unavailable" ("connect: ECONNREFUSED"); a
-- refused password kind "auth"; a lost connection fails its requests in flight with kind
-- "unavailable" after it fires m:fire("lost", failure, conn), once (not after conn:close()).
-- Cancelling the connect Deferred closes the socket.
local modal = require "modal"
local uv = require "luv"

local line = { stats = { opened = 0, closed = 0 } }

local Conn = {}
Conn.__index = Conn

local function errname(err)
  return tostring(err):match("^([%u_]+)") or tostring(err)
end

local function close_sock(conn)
  if not conn.sock:is_closing() then
    conn.sock:close()
    line.stats.closed = line.stats.closed + 1
  end
end

-- Ends the connection: requests in flight fail with f; lost fires once unless closed by us.
local function finish(conn, f, by_us)
  if conn.dead then return end
  conn.dead = true
  close_sock(conn)
  if not by_us and conn.m and conn.ready then conn.m:fire("lost", f, conn) end
  local waiting, head, tail = conn.waiting, conn.head, conn.tail
  conn.waiting, conn.head, conn.tail = {}, 1, 0
  for i = head, tail do                   -- answered ones left holes before head: not #waiting
    local d = waiting[i]
    if d then d:errback(f) end
  end
  if conn.handshake then
    local h = conn.handshake
    conn.handshake = nil
    h:errback(f)
  end
end

function Conn:request(text)
  if self.dead then return modal.fail("unavailable", "connection closed") end
  local d = modal.deferred()
  local t = self.tail + 1
  self.tail = t
  self.waiting[t] = d
  self.sock:write(text .. "\n")
  return d
end

function Conn:close()
  finish(self, modal.failure("unavailable", "connection closed"), true)
end

local function on_line(conn, text)
  local h = conn.handshake
  if h then
    if conn.expect == "greeting" then
      if conn.auth then
        conn.expect = "auth"
        conn.sock:write("AUTH " .. conn.auth .. "\n")
        return
      end
    elseif conn.expect == "auth" and text ~= "+OK" then
      conn.handshake = nil
      h:errback(modal.failure("auth", text))
      finish(conn, modal.failure("auth", text), true)
      return
    end
    conn.handshake = nil
    conn.ready = true
    h:callback(conn)
    return
  end
  local i = conn.head
  local d = conn.waiting[i]
  if d == nil then return end             -- a reply nobody asked for
  conn.waiting[i] = nil
  conn.head = i + 1
  d:callback(text)
end

--- Connects; opts: port, host (127.0.0.1), greeting (wait for a greeting line first), auth.
function line.connect(m, opts)
  local sock = uv.new_tcp()
  line.stats.opened = line.stats.opened + 1
  local conn = setmetatable({ sock = sock, m = m, waiting = {}, head = 1, tail = 0, buffer = "",
    auth = opts.auth, dead = false, ready = false }, Conn)
  local d = modal.deferred(function()
    conn.handshake = nil
    finish(conn, modal.failure("cancelled", "connect cancelled"), true)
  end)
  conn.handshake = d
  sock:connect(opts.host or "127.0.0.1", opts.port, function(err)
    if conn.dead then return end
    if err then
      conn.handshake = nil
      finish(conn, modal.failure("unavailable", "connect: " .. errname(err)), true)
      d:errback(modal.failure("unavailable", "connect: " .. errname(err)))
      return
    end
    sock:read_start(function(rerr, chunk)
      if rerr or not chunk then
        finish(conn, modal.failure("unavailable", "connection lost: " .. (rerr and errname(rerr) or "EOF")))
        return
      end
      local buffer = conn.buffer .. chunk
      local at = 1
      while not conn.dead do
        local i = buffer:find("\n", at, true)
        if not i then break end
        on_line(conn, buffer:sub(at, i - 1))
        at = i + 1
      end
      conn.buffer = buffer:sub(at)
    end)
    if opts.greeting then
      conn.expect = "greeting"
    elseif opts.auth then
      conn.expect = "auth"
      sock:write("AUTH " .. opts.auth .. "\n")
    else
      conn.handshake = nil
      conn.ready = true
      d:callback(conn)
    end
  end)
  return d
end

return line
