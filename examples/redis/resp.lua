-- examples/redis/resp.lua — a small Redis client over luv TCP (RESP2): the connection a
-- modal.service facade drives (examples/redis/redis.lua).
--
--   resp.open(m, host, port [, password]) -> Deferred(conn)   m: the service instance
--   conn:command("SET", "k", "v") -> Deferred(reply)          replies come in command order
--   conn:close()                                               fails the commands in flight
--
-- Replies: a status ("+OK") is its text, an integer a Lua integer, a bulk string a string (nil
-- for a null one), an array a table (with `n`); an error reply ("-ERR ...") fails that command
-- with kind "redis" and the server's text. The handshake (AUTH with a password, else PING)
-- fails with kind "auth" when the server refuses the password or wants one ("fatal" for the
-- service's classify), with kind "unavailable" when the connect fails or the socket dies. A
-- connection that dies reports it with m:fire("lost", failure, conn), then fails its commands
-- in flight (kind "unavailable"); the service never re-sends them. Cancelling the Deferred
-- that open returned closes the socket.
local modal = require "modal"
local uv = require "luv"

local resp = {}

local Conn = {}
Conn.__index = Conn

local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat

local function errname(err)
  return tostring(err):match("^([%u_]+)") or tostring(err)
end

-- One command as RESP: an array of bulk strings.
local function encode(args)
  local out = { "*" .. #args .. "\r\n" }
  for i = 1, #args do
    local a = tostring(args[i])
    out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return concat(out)
end

-- Parses one reply at `at` in buf: returns value, next position; nil when incomplete. An
-- error reply is returned as a failure (kind "redis").
local function parse(buf, at)
  local eol = find(buf, "\r\n", at, true)
  if not eol then return nil end
  local kind, line = byte(buf, at), sub(buf, at + 1, eol - 1)
  local after = eol + 2
  if kind == 43 then return line, after end                              -- +
  if kind == 45 then return modal.failure("redis", line), after end      -- -
  if kind == 58 then return math.tointeger(tonumber(line)), after end    -- :
  if kind == 36 then                                                     -- $
    local len = tonumber(line)
    if len < 0 then return false, after end                              -- null: false, then nil
    if #buf < after + len + 1 then return nil end
    return sub(buf, after, after + len - 1), after + len + 2
  end
  if kind == 42 then                                                     -- *
    local n = tonumber(line)
    if n < 0 then return false, after end
    local list = { n = n }
    for i = 1, n do
      local v
      v, after = parse(buf, after)
      if v == nil then return nil end
      if v == false then v = nil end
      list[i] = v
    end
    return list, after
  end
  return modal.failure("redis", "bad reply: " .. sub(buf, at, eol - 1)), after
end

-- Ends the connection once: the socket closes, the loss is reported (unless we closed it),
-- and every command in flight fails with f.
local function finish(conn, f, by_us)
  if conn.dead then return end
  conn.dead = true
  if not conn.sock:is_closing() then conn.sock:close() end
  if not by_us and conn.ready then conn.m:fire("lost", f, conn) end
  local waiting, head, tail = conn.waiting, conn.head, conn.tail
  conn.waiting, conn.head, conn.tail = {}, 1, 0
  for i = head, tail do
    local d = waiting[i]
    if d then d:errback(f) end
  end
end

function Conn:command(...)
  if self.dead then return modal.fail("unavailable", "redis connection closed") end
  local d = modal.deferred()
  local t = self.tail + 1
  self.tail = t
  self.waiting[t] = d
  self.sock:write(encode({ ... }))
  return d
end

function Conn:close()
  finish(self, modal.failure("unavailable", "redis connection closed"), true)
end

local function on_reply(conn, v)
  local i = conn.head
  local d = conn.waiting[i]
  if d == nil then return end
  conn.waiting[i] = nil
  conn.head = i + 1
  if v == false then v = nil end
  if modal.is_failure(v) then d:errback(v) else d:callback(v) end
end

--- Connects and does the handshake; the Deferred succeeds with the connection.
function resp.open(m, host, port, password)
  local sock = uv.new_tcp()
  local conn = setmetatable({ sock = sock, m = m, waiting = {}, head = 1, tail = 0, buffer = "",
    dead = false, ready = false }, Conn)
  local d = modal.deferred(function() conn:close() end)
  sock:connect(host, port, function(err)
    if conn.dead then return end
    if err then
      finish(conn, nil, true)
      return d:errback(modal.failure("unavailable", "connect: " .. errname(err)))
    end
    sock:read_start(function(rerr, chunk)
      if rerr or not chunk then
        return finish(conn, modal.failure("unavailable", "redis connection lost: " ..
          (rerr and errname(rerr) or "EOF")))
      end
      local buf, at = conn.buffer .. chunk, 1
      while not conn.dead do
        local v, after = parse(buf, at)
        if v == nil then break end
        at = after
        on_reply(conn, v)
      end
      conn.buffer = sub(buf, at)
    end)
    local hello = password and conn:command("AUTH", password) or conn:command("PING")
    hello:add_callbacks(function()
      conn.ready = true
      if d:state() == "pending" then d:callback(conn) end
    end, function(f)
      local text = f.message or tostring(f)
      local auth = text:find("^WRONGPASS") or text:find("^NOAUTH") or text:find("password")
      local why = modal.failure(auth and "auth" or f.kind, "redis: " .. text)
      finish(conn, why, true)
      if d:state() == "pending" then d:errback(why) end
    end)
  end)
  return d
end

resp._encode, resp._parse = encode, parse

return resp
