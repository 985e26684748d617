--- lua/modal/testing/server.lua — the fault server (doc/policies.md, "The fault server"): a
-- line protocol TCP server on 127.0.0.1 that a test scripts to fail the ways real servers fail.
--
--   local server = require("modal.testing").server
--   local s = server { mode = "echo" }        -- listening at once, on a free port: s.port
--   s:set("blackhole")                        -- accepts, never reads: a half-open peer
--   s:stop(); s:start()                       -- a restart: clients dropped, same port
--   print(s.accepts, s.open, s.lines)         -- counters
--   s:close()                                 -- frees the port
--
-- Modes: echo (each line back), refuse (the port stays reserved, nothing listens: connects are
-- refused), blackhole (accepts, never reads), accept_close (accepts and closes at once), silent
-- (reads, never answers), reset_mid_reply (answers half a line, then resets the connection).
-- Options beside the mode: greeting (a line sent on accept: a string, or true for "+OK
-- modal.testing"), slow_greeting (seconds before the greeting; lines wait for it meanwhile),
-- auth (the first line must be "AUTH <secret>": answered "+OK", else "-ERR auth" and closed),
-- ref (true: the server keeps the loop alive; by default it never does, so a test's loop ends
-- when the client's work does).
--
-- A mode applies to the connections already open too, from their next line on: blackhole
-- stops reading them, echo and silent (re)start; refuse and stop() drop them.
--
-- @module modal.testing.server

local uv = require "luv"

local type, next, ipairs, pairs, tostring, error = type, next, ipairs, pairs, tostring, error
local format, concat, find, sub = string.format, table.concat, string.find, string.sub
local floor = math.floor

local HOST = "127.0.0.1"
local RESET_DELAY_MS = 10

local server = {}

--- The modes a server takes.
server.MODES = { "echo", "refuse", "blackhole", "accept_close", "silent", "reset_mid_reply" }
local MODE = {}
for _, m in ipairs(server.MODES) do MODE[m] = true end

--- The options `server{...}` and `s:set{...}` take.
server.OPTIONS = { "mode", "port", "greeting", "slow_greeting", "auth", "ref" }

local DEFAULT_GREETING = "+OK modal.testing"

local Server = {}
Server.__index = Server
Server.__name = "modal.testing.server"

-- A luv handle still closing when the Lua state closes crashes luv's finalizers (libuv still
-- lists the handle whose memory luv frees). So each close arms a waiter: it is finalized
-- before its handle (finalizers run newest first), and when the close is still pending then
-- (a test that ends right after s:stop()), it lets libuv finish the closes with one pass of
-- the loop. Kept in `waiting` until the close is done, so that no ordinary collection runs it.
local waiting = {}   -- luacheck: ignore 241 (it keeps the waiters alive: never read)

local function waiter_gc(w)
  if w.closing then pcall(uv.run, "nowait") end
end

local function close_handle(h, reset)
  if not h or h:is_closing() then return end
  local w = setmetatable({ closing = true }, { __gc = waiter_gc })
  waiting[w] = true
  local function closed()
    w.closing = false
    waiting[w] = nil
  end
  if reset then h:close_reset(closed) else h:close(closed) end
end

local function reserve(port, ref)
  local h = uv.new_tcp()
  local ok, err = h:bind(HOST, port)
  if not ok then
    close_handle(h)
    return nil, err
  end
  if not ref then h:unref() end
  return h
end

-- Checks and applies options to s (port only at creation).
local function apply(s, opts, creating)
  if type(opts) == "string" then opts = { mode = opts } end
  if type(opts) ~= "table" then
    error(format("modal.testing.server: expected a mode (%s) or a table of options, got %s",
      concat(server.MODES, ", "), type(opts)), 3)
  end
  local errs = {}
  for k in next, opts do
    local known = false
    for _, o in ipairs(server.OPTIONS) do if o == k then known = true end end
    if not known then errs[#errs + 1] = format("%s: unknown option (options: %s)", tostring(k),
      concat(server.OPTIONS, ", ")) end
  end
  if opts.mode ~= nil and not MODE[opts.mode] then
    errs[#errs + 1] = format("mode: expected one of %s, got %s", concat(server.MODES, ", "),
      tostring(opts.mode))
  end
  if opts.port ~= nil then
    if not creating then
      errs[#errs + 1] = "port: set only when the server is made"
    elseif math.type(opts.port) ~= "integer" or opts.port < 0 or opts.port > 65535 then
      errs[#errs + 1] = "port: expected a port number (0 to 65535), got " .. tostring(opts.port)
    end
  end
  if opts.greeting ~= nil and opts.greeting ~= false and opts.greeting ~= true
      and (type(opts.greeting) ~= "string" or find(opts.greeting, "\n", 1, true)) then
    errs[#errs + 1] = "greeting: expected true, false or a line of text (no newline)"
  end
  local sg = opts.slow_greeting
  if sg ~= nil and sg ~= false and (type(sg) ~= "number" or sg ~= sg or sg < 0) then
    errs[#errs + 1] = "slow_greeting: expected a number of seconds >= 0 (or false), got "
      .. (sg ~= sg and "NaN" or tostring(opts.slow_greeting))
  end
  if opts.auth ~= nil and opts.auth ~= false and (type(opts.auth) ~= "string" or opts.auth == "") then
    errs[#errs + 1] = "auth: expected the secret (a string), or false"
  end
  if #errs > 0 then error("modal.testing.server: " .. concat(errs, "\n  "), 3) end
  for _, k in ipairs { "mode", "greeting", "slow_greeting", "auth", "ref" } do
    local v = opts[k]
    if v ~= nil then
      if v == false and k ~= "ref" then v = nil end
      s[k] = v
    end
  end
end

-- A client's writes; a closed client is left alone.
local function send(c, text)
  if not c.sock:is_closing() then c.sock:write(text) end
end

local function drop(s, c, reset)
  if c.gone then return end
  c.gone = true
  s.clients[c] = nil
  s.open = s.open - 1
  if c.timer then close_handle(c.timer); c.timer = nil end
  close_handle(c.sock, reset)
end

local answer_lines

-- Reading follows the mode: blackhole reads nothing. A client still waiting for its greeting
-- is read (so its close is seen), and its lines wait for the greeting.
local function update_reading(s, c)
  if c.gone then return end
  local want = s.running and s.mode ~= "blackhole"
  if want and not c.reading then
    c.reading = true
    c.sock:read_start(function(err, chunk)
      if err or not chunk then
        drop(s, c)
        return
      end
      answer_lines(s, c, chunk)
    end)
  elseif not want and c.reading then
    c.reading = false
    c.sock:read_stop()
  end
end

-- One line from client c, in the current mode.
local function on_line(s, c, line)
  s.lines = s.lines + 1
  if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
  if s.auth and not c.authed then
    if line == "AUTH " .. s.auth then
      c.authed = true
      send(c, "+OK\n")
    else
      send(c, "-ERR auth\n")
      c.sock:shutdown(function() drop(s, c) end)
      c.closing = true
    end
    return
  end
  local mode = s.mode
  if mode == "echo" then
    send(c, line .. "\n")
  elseif mode == "reset_mid_reply" then
    local half = sub(line .. "\n", 1, floor((#line + 1) / 2))
    if half ~= "" then send(c, half) end
    -- The reset a moment later: a peer that reads the half and the reset together may see
    -- the end of the connection as a plain EOF.
    c.closing = true
    if c.reading then c.reading = false; c.sock:read_stop() end
    c.timer = uv.new_timer()
    if not s.ref then c.timer:unref() end
    c.timer:start(RESET_DELAY_MS, 0, function() drop(s, c, true) end)
  elseif mode == "accept_close" then
    drop(s, c)
  end                                   -- silent: read, never answered
end

answer_lines = function(s, c, chunk)
  if c.closing or c.gone then return end
  if not c.greeted then
    c.buffer = c.buffer .. chunk
    return
  end
  -- The fast path: echo mode, past auth, whole lines: the chunk goes back as it came.
  if s.mode == "echo" and (c.authed or not s.auth) and c.buffer == "" and sub(chunk, -1) == "\n" then
    local n, at = 0, 1
    while true do
      local i = find(chunk, "\n", at, true)
      if not i then break end
      n, at = n + 1, i + 1
    end
    s.lines = s.lines + n
    if find(chunk, "\r", 1, true) then chunk = chunk:gsub("\r\n", "\n") end
    send(c, chunk)
    return
  end
  local buffer = c.buffer .. chunk
  local at = 1
  while not c.gone and not c.closing do
    local i = find(buffer, "\n", at, true)
    if not i then break end
    on_line(s, c, sub(buffer, at, i - 1))
    at = i + 1
  end
  c.buffer = sub(buffer, at)
end

local function greet(s, c)
  if c.gone then return end
  c.greeted = true
  local g = s.greeting
  if g == nil and s.slow_greeting then g = true end
  if g then send(c, (g == true and DEFAULT_GREETING or g) .. "\n") end
  update_reading(s, c)
  if c.buffer ~= "" then                  -- lines that came before the greeting
    local early = c.buffer
    c.buffer = ""
    answer_lines(s, c, early)
  end
end

local function on_connection(s, err)
  if err then return end
  local sock = uv.new_tcp()
  if not s.listener:accept(sock) then
    close_handle(sock)
    return
  end
  if not s.ref then sock:unref() end
  s.accepts = s.accepts + 1
  if s.mode == "accept_close" then
    close_handle(sock)
    return
  end
  s.open = s.open + 1
  local c = { sock = sock, buffer = "", greeted = false, reading = false, authed = false }
  s.clients[c] = true
  if s.mode == "blackhole" then return end   -- not greeted, never read
  if s.slow_greeting and s.slow_greeting > 0 then
    update_reading(s, c)
    c.timer = uv.new_timer()
    if not s.ref then c.timer:unref() end
    -- capped at 1e9 s as modal's delays are (math.huge: a greeting that never comes)
    c.timer:start(floor(math.min(s.slow_greeting, 1e9) * 1000 + 0.5), 0, function()
      close_handle(c.timer)
      c.timer = nil
      greet(s, c)
    end)
  else
    greet(s, c)
  end
end

local function listen(s)
  close_handle(s.listener)
  s.listener = nil
  local h, err = reserve(s.port, s.ref)
  if not h then
    error(format("modal.testing.server: cannot bind %s:%d: %s", HOST, s.port, tostring(err)), 3)
  end
  if s.port == 0 then s.port = h:getsockname().port end
  s.listener = h
  if s.running and s.mode ~= "refuse" then
    local ok, lerr = h:listen(1024, function(e) on_connection(s, e) end)
    if not ok then
      error(format("modal.testing.server: cannot listen on %s:%d: %s", HOST, s.port, tostring(lerr)), 3)
    end
  end
end

local function drop_all(s)
  local list = {}
  for c in pairs(s.clients) do list[#list + 1] = c end
  for _, c in ipairs(list) do drop(s, c) end
end

--- A new fault server, listening at once (in mode refuse: bound, not listening).
-- @tparam[opt] string|table opts a mode, or `{ mode = "echo", port = 0, greeting =,
--   slow_greeting = seconds, auth = "secret", ref = false }`.
-- @return the server: fields `port`, `host` ("127.0.0.1"), `mode`, counters `accepts`
--   (connections accepted), `open` (connections open now), `lines` (lines read).
-- @raise "modal.testing.server: option: message" for a bad option; when the port is taken.
function server.new(opts)
  local s = setmetatable({ host = HOST, port = 0, mode = "echo", accepts = 0, open = 0, lines = 0,
    clients = {}, running = true, ref = false }, Server)
  if opts ~= nil then apply(s, opts, true) end
  if type(opts) == "table" and opts.port then s.port = opts.port end
  listen(s)
  return s
end

--- Changes the mode or options (a mode name, or a table as server{} takes, without `port`).
-- Clients already connected follow from their next line; refuse drops them. Returns s.
function Server:set(opts)
  local was = self.mode
  apply(self, opts, false)
  if self.closed then return self end
  if (self.mode == "refuse") ~= (was == "refuse") and self.running then
    if self.mode == "refuse" then drop_all(self) end
    listen(self)
  end
  for c in pairs(self.clients) do
    if self.mode == "blackhole" then
      update_reading(self, c)
    elseif self.mode ~= "refuse" then
      if not c.greeted and not c.timer then greet(self, c) else update_reading(self, c) end
    end
  end
  return self
end

--- Listens again after stop(), on the same port, in the current mode. Returns s.
function Server:start()
  if self.closed then error("modal.testing.server: start() after close()", 2) end
  if not self.running then
    self.running = true
    listen(self)
  end
  return self
end

--- Stops: drops every client and stops listening; the port stays reserved (connects are
-- refused) until start() or close(). Returns s.
function Server:stop()
  if self.running then
    self.running = false
    drop_all(self)
    if not self.closed then listen(self) end
  end
  return self
end

--- Drops every client, resetting their connections (RST), and keeps listening. Returns s.
function Server:drop()
  local list = {}
  for c in pairs(self.clients) do list[#list + 1] = c end
  for _, c in ipairs(list) do drop(self, c, true) end
  return self
end

--- Closes everything and frees the port. Let the loop turn once after (uv.run("nowait")).
function Server:close()
  if self.closed then return end
  self.closed = true
  self.running = false
  drop_all(self)
  close_handle(self.listener)
  self.listener = nil
end

function Server:__tostring()
  return format("modal.testing.server(%s:%d, %s%s; accepts=%d open=%d lines=%d)", self.host, self.port,
    self.mode, self.running and "" or ", stopped", self.accepts, self.open, self.lines)
end

return setmetatable(server, { __call = function(_, opts) return server.new(opts) end })
