-- examples/redis/main.lua — `build/modal run examples/redis/main.lua`: one object in front of
-- a real redis-server that crashes and comes back. It starts redis-server (Debian's) on a free
-- loopback port with a password, talks to it through the Redis service (redis.lua: RESP over
-- luv TCP, reconnecting) behind a circuit breaker (modal.breaker), kills the server, watches
-- calls time out, the breaker open and fail fast, restarts the server, watches one trial
-- close the breaker, shows that a wrong password fails for good after one attempt, and stops
-- the server. Exits by itself.
local modal = require "modal"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local server = dofile(here .. "/server.lua")
local Redis = modal.load(here .. "/redis.lua")

local await = modal.await

-- Runs a call to its end: its value, or the failure it raised, as text.
local function try(d)
  local ok, v = pcall(await, d)
  return ok and tostring(v) or tostring(v)
end

local main = modal.async(function()
  local s = await(server.start { password = "open sesame" })
  print(string.format("redis-server pid %d on 127.0.0.1:%d", s.pid, s.port))

  local r = Redis:new { port = s.port, password = "open sesame" }
  local b = modal.breaker { target = r, methods = { "get", "set", "incr" },
    window = 6, min_calls = 6, trials = 1, open_wait = { initial = 0.5, multiplier = 2, jitter = 0 } }
  b:on_transition(function(_, from, to, input)
    print(string.format("  breaker: %s -> %s (%s)", from, to, input))
  end)

  print("set greeting: " .. try(b:set("greeting", "hello")))
  print("get greeting: " .. try(b:get("greeting")))
  for _ = 1, 3 do print("incr visits:  " .. try(b:incr("visits"))) end

  await(s:kill())
  print("redis-server killed")
  for i = 1, 6 do        -- each call carries its own deadline; the service waits to reconnect
    print(string.format("call %d: %s", i, try(b:incr("visits"):add_timeout(0.2))))
  end

  await(s:restart())
  print("redis-server back (an empty database: nothing was saved)")
  for i = 1, 20 do       -- fail fast while open; the first call once half_open is the trial
    local text = try(b:incr("visits"))
    print(string.format("call %d: %s", i, text))
    if b.state == "closed" then break end
    await(modal.sleep(0.2))
  end

  local wrong = Redis:new { port = s.port, password = "guess" }
  print("with a wrong password: " .. try(wrong:get("greeting")) .. " (state: " .. wrong.state .. ")")
  print("and again:             " .. try(wrong:get("greeting")))

  await(r:close())
  await(s:stop())
  print("done: redis-server stopped")
end)

main():add_errback(function(f)
  print("the example failed: " .. tostring(f))
  os.exit(1)
end)
