-- examples/flaky_echo.lua — a flaky echo service on loopback and a client that copes with it using
-- modal's Deferreds and timers: connect with retry and backoff, calls bounded by timeouts,
-- parallel calls with modal.all, a race against a deadline. Exits by itself.
--
--   build/modal run examples/flaky_echo.lua
local modal = require "modal"
local uv = require "luv"

local started = modal.now()
local function say(fmt, ...)
  io.write(string.format("[%6.3fs] " .. fmt .. "\n", modal.now() - started, ...))
  io.flush()
end

-- The service: a TCP echo server that starts late (after 0.25 s), answers "slow" lines
-- after 0.3 s, and echoes everything else at once.
local server
local function start_server(port)
  server = uv.new_tcp()
  assert(server:bind("127.0.0.1", port))
  assert(server:listen(16, function(err)
    assert(not err, err)
    local conn = uv.new_tcp()
    server:accept(conn)
    conn:read_start(function(rerr, chunk)
      if rerr or not chunk then conn:close() return end
      for line in chunk:gmatch("[^\n]+") do
        if line:match("^slow") then
          modal.call_later(0.3, function()
            if not conn:is_closing() then conn:write(line .. "\n") end
          end)
        else
          conn:write(line .. "\n")
        end
      end
    end)
  end))
  say("server: listening on 127.0.0.1:%d", port)
end

-- connect(port) -> Deferred(connection). A connection's request(line) -> Deferred(reply).
local function connect(port)
  local sock = uv.new_tcp()
  local d = modal.deferred(function() if not sock:is_closing() then sock:close() end end)
  sock:connect("127.0.0.1", port, function(err)
    if err then                          -- ECANCELED: closed meanwhile (by the canceller)
      if not sock:is_closing() then sock:close() end
      d:errback(modal.failure("unavailable", "connect: " .. err))
      return
    end
    local waiting, buffer = {}, ""
    sock:read_start(function(rerr, chunk)
      if rerr or not chunk then
        for _, w in ipairs(waiting) do w.d:errback(modal.failure("unavailable", "connection lost")) end
        waiting = {}
        return
      end
      buffer = buffer .. chunk
      for line in buffer:gmatch("([^\n]*)\n") do
        -- replies may come out of order ("slow" ones later): match them by content
        for i, w in ipairs(waiting) do
          if w.line == line then table.remove(waiting, i); w.d:callback(line) break end
        end
      end
      buffer = buffer:match("[^\n]*$")
    end)
    d:callback({
      request = function(_, line)
        local r = modal.deferred()
        waiting[#waiting + 1] = { line = line, d = r }
        sock:write(line .. "\n")
        return r
      end,
      close = function() sock:close() end,
    })
  end)
  return d
end

-- Retry with exponential backoff, written once, as a coroutine.
local connect_with_retry = modal.async(function(port)
  local delay = 0.05
  for attempt = 1, 10 do
    local ok, conn = pcall(modal.await, connect(port):add_timeout(1))
    if ok then
      say("client: connected on attempt %d", attempt)
      return conn
    end
    say("client: attempt %d failed (%s); retrying in %.2fs", attempt, tostring(conn), delay)
    modal.await(modal.sleep(delay))
    delay = delay * 2
  end
  error(modal.failure("unavailable", "gave up after 10 attempts"))
end)

local main = modal.async(function()
  local port = 7000 + math.random(0, 1999)
  say("client: connecting before the server is up (it starts in 0.25s)")
  modal.call_later(0.25, start_server, port)
  local conn = modal.await(connect_with_retry(port))

  say("client: three requests in parallel")
  local replies = modal.await(modal.all({
    conn:request("alpha"), conn:request("beta"), conn:request("gamma"),
  }))
  say("client: all replied: %s", table.concat(replies, ", "))

  say("client: a slow request with a 0.1s timeout")
  local ok, f = pcall(modal.await, conn:request("slow one"):add_timeout(0.1))
  say("client: %s", ok and "answered?!" or ("failed as expected: " .. tostring(f)))

  say("client: a slow request racing a 1s deadline")
  local winner = modal.await(modal.race({
    conn:request("slow two"),
    modal.sleep(1):add_callback(function() return "deadline" end),
  }))
  say("client: the race was won by: %s", winner)

  conn:close()
  server:close()
  say("client: done; the loop has no work left, so the program exits")
end)

main():add_errback(function(f)
  say("demo failed: %s", tostring(f))
  if server and not server:is_closing() then server:close() end
  os.exit(1)
end)
