-- examples/connection.lua — a reconnecting TCP client written as a modal machine: calls made
-- before the server is up wait (postponed), a lost connection backs off and reconnects, and a
-- closed client answers every call with a clear failure. Exits by itself.
--
--   build/modal run examples/connection.lua
local modal = require "modal"
local uv = require "luv"

local started = modal.now()
local function say(fmt, ...)
  io.write(string.format("[%6.3fs] " .. fmt .. "\n", modal.now() - started, ...))
  io.flush()
end

-- An echo server on loopback that can be started and stopped (dropping its clients).
local server, clients = nil, {}
local function start_server(port)
  server = uv.new_tcp()
  assert(server:bind("127.0.0.1", port))
  assert(server:listen(16, function()
    local conn = uv.new_tcp()
    server:accept(conn)
    clients[#clients + 1] = conn
    conn:read_start(function(err, chunk)
      if err or not chunk then if not conn:is_closing() then conn:close() end return end
      conn:write(chunk)
    end)
  end))
  say("server: up on port %d", port)
end
local function stop_server()
  for _, conn in ipairs(clients) do if not conn:is_closing() then conn:close() end end
  clients = {}
  server:close()
  say("server: down (its clients are dropped)")
end

-- The client's definition is a file of its own, loaded (and reloadable) by path.
local here = (arg and arg[0] or ""):match("^(.*)/") or "."
local Client = modal.load(here .. "/echo_client.lua")

local port = 9000 + math.random(0, 999)
local client = Client:new { port = port }
client:on_transition(function(_, from, to, input)
  say("client: %s -> %s (%s)", from, to, input)
end)

local main = modal.async(function()
  say("client: two calls before the server exists; they wait")
  local a, b = client:echo("hello"), client:echo("world")
  modal.call_later(0.2, start_server, port)
  local replies = modal.await(modal.all({ a, b }))
  say("client: answered: %q %q", replies[1], replies[2])

  stop_server()
  modal.await(client:when("backoff"))          -- the client notices the loss
  say("client: a call while the server is down waits for the reconnect")
  local late = client:echo("after the restart")
  modal.call_later(0.3, start_server, port)
  say("client: answered: %q", modal.await(late))

  modal.await(client:close())
  local ok, f = pcall(modal.await, client:echo("too late"))
  say("client: after close, a call %s: %s", ok and "succeeded?!" or "fails", tostring(f))
  server:close()
end)

main():add_errback(function(f)
  say("example failed: %s", tostring(f))
  os.exit(1)
end)
