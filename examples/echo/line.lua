-- examples/echo/line.lua — a line-protocol TCP client over luv: the connection a
-- modal.service facade drives (examples/echo/echo.lua).
--
--   line.open(m, host, port [, secret | opts]) -> Deferred(conn)   m: the service instance
--   conn:request(text) -> Deferred(reply line)             replies come in request order
--   conn:close()                                            fails the requests still in flight
--
-- opts: { secret = "..." (sent as AUTH, answered +OK), greeting = true (the server's first
-- line is a greeting, not a reply: open waits for it, and conn.greeting holds it) }.
-- A refused connect fails with kind "unavailable" ("connect: ECONNREFUSED"), a refused secret
-- with kind "auth". A connection that dies reports it with m:fire("lost", failure, conn), then
-- fails its requests in flight (the service never re-sends them). Cancelling the Deferred that
-- open returned closes the socket.
--
-- Replies are paired with requests by their order alone (doc/policies.md, the fault server):
-- a server that drops a line without answering it (the fault server's `silent` mode) shifts
-- every later reply onto the wrong request, and a greeting it sends unannounced (without
-- `greeting = true`) is taken as the first reply. Close such a connection rather than reuse
-- it (a call's add_timeout, then conn:close()).
local modal = require "modal"
local uv = require "luv"

local line = {}

local Conn = {}
Conn.__index = Conn

local function errname(err)
  return tostring(err):match("^([%u_]+)") or tostring(err)
end

-- Ends the connection once: the socket closes, the loss is reported (unless we closed it),
-- and every request in flight fails with f.
local function finish(conn, f, by_us)
  if conn.dead then return end
  conn.dead = true
  if not conn.sock:is_closing() then conn.sock:close() end
  if not by_us and conn.ready then conn.m:fire("lost", f, conn) end
  for i = conn.head, conn.tail do
    local d = conn.waiting[i]
    conn.waiting[i] = nil
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
  self.tail = self.tail + 1
  self.waiting[self.tail] = d
  self.sock:write(text .. "\n")
  return d
end

function Conn:close()
  finish(self, modal.failure("unavailable", "connection closed"), true)
end

-- The greeting is in (or none was expected): send the secret, or the connection is ready.
local function greeted(conn)
  local d = conn.handshake
  if conn.secret then
    conn.sock:write("AUTH " .. conn.secret .. "\n")
  else
    conn.handshake = nil
    conn.ready = true
    d:callback(conn)
  end
end

local function on_line(conn, text)
  if conn.expect_greeting then            -- the server's first line, before any reply
    conn.expect_greeting = false
    conn.greeting = text
    return greeted(conn)
  end
  if conn.handshake then                 -- the answer to AUTH
    local h = conn.handshake
    conn.handshake = nil
    if text == "+OK" then
      conn.ready = true
      h:callback(conn)
    else
      finish(conn, modal.failure("auth", text), true)
      h:errback(modal.failure("auth", text))
    end
    return
  end
  local d = conn.waiting[conn.head]
  if d == nil then return end
  conn.waiting[conn.head] = nil
  conn.head = conn.head + 1
  d:callback(text)
end

function line.open(m, host, port, opts)
  if type(opts) ~= "table" then opts = { secret = opts } end
  local sock = uv.new_tcp()
  local conn = setmetatable({ sock = sock, m = m, waiting = {}, head = 1, tail = 0, buffer = "",
                              secret = opts.secret }, Conn)
  local d = modal.deferred(function() conn.handshake = nil; conn:close() end)
  conn.handshake = d
  sock:connect(host, port, function(err)
    if conn.dead then return end
    if err == "ECANCELED" or tostring(err):match("^ECANCELED") then
      -- Not closed by us (that makes conn dead): the loop is closing with the Lua state
      -- (a script run by plain lua5.4 without modal.run()), and the socket may already have
      -- been collected. Touch nothing.
      conn.dead, conn.handshake = true, nil
      return
    end
    if err then
      conn.handshake = nil
      finish(conn, nil, true)
      return d:errback(modal.failure("unavailable", "connect: " .. errname(err)))
    end
    sock:read_start(function(rerr, chunk)
      if rerr or not chunk then
        local why = rerr and errname(rerr) or "EOF"
        return finish(conn, modal.failure("unavailable", "connection lost: " .. why))
      end
      local buffer, at = conn.buffer .. chunk, 1
      while not conn.dead do
        local i = buffer:find("\n", at, true)
        if not i then break end
        on_line(conn, buffer:sub(at, i - 1))
        at = i + 1
      end
      conn.buffer = buffer:sub(at)
    end)
    if opts.greeting then
      conn.expect_greeting = true          -- greeted() once it is in
    else
      greeted(conn)
    end
  end)
  return d
end

return line
