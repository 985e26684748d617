-- examples/echo/main.lua — one object for a service that comes and goes: calls through
-- examples/echo/echo.lua (modal.service) to the testing kit's fault server, which starts late,
-- goes down, comes back, turns half-open (found by keepalive), and finally wants a password the
-- client does not have. Every call gets an answer or a failure that says why. Exits by itself.
--
--   build/modal run examples/echo/main.lua
local modal = require "modal"
local server = require("modal.testing").server

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local Echo = modal.load(here .. "/echo.lua")

local started = modal.now()
local function say(fmt, ...)
  io.write(string.format("[%5.2fs] " .. fmt .. "\n", modal.now() - started, ...))
  io.flush()
end

local s = server { mode = "refuse" }
local c = Echo:new { host = "127.0.0.1", port = s.port }
c:on_transition(function(_, from, to, input) say("echo: %s -> %s (%s)", from, to, input) end)

local function call(text, deadline)
  local d = c:echo(text)
  if deadline then d:add_timeout(deadline) end
  return d:add_both(function(v)
    if modal.is_failure(v) then
      say("call %q failed: %s", text, tostring(v))
    else
      say("call %q -> %q", text, v)
    end
  end)
end

local main = modal.async(function()
  say("two calls while nothing listens: they wait")
  local waiting = modal.all { call("hello"), call("world") }
  modal.await(modal.sleep(0.5))
  say("status: %d calls waiting, %d failed attempts", c:postponed(), modal.service.status(c).attempts)
  s:set("echo")
  say("server: up")
  modal.await(waiting)

  s:stop()
  say("server: down (its clients are dropped)")
  modal.await(c:when("backoff"))
  local outage = call("during the outage")
  modal.await(modal.settled { call("with a 0.3 s deadline", 0.3) })
  s:start()
  say("server: up again")
  modal.await(outage)

  s:set("blackhole")
  say("server: half-open (accepts, never reads); keepalive will notice")
  modal.await(modal.settled { call("into the void", 0.5) })
  modal.await(c:when("backoff"))
  say("why: %s", tostring(modal.service.status(c).last))
  s:set("echo")
  modal.await(call("back"))
  modal.await(c:close())

  s:set { auth = "sesame" }
  say("server: now wants a password; a client with the wrong one:")
  local wrong = Echo:new { host = "127.0.0.1", port = s.port, secret = "guess" }
  modal.await(modal.settled { wrong:echo("let me in"):add_errback(function(f)
    say("call failed: %s", tostring(f))
    return f
  end) })
  say("that client is %s; a later call fails the same way: %s", wrong.state,
    tostring(modal.await(modal.settled { wrong:echo("please") })[1].failure))
  local right = Echo:new { host = "127.0.0.1", port = s.port, secret = "sesame" }
  say("with the right one: %q", modal.await(right:echo("open sesame")))
  modal.await(right:close())
  say("done: %d connections accepted, %d lines read", s.accepts, s.lines)
  s:close()
end)

main():add_errback(function(f)
  say("example failed: %s", tostring(f))
  s:close()
  os.exit(1)
end)
