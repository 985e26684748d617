-- examples/demo/main.lua — `make demo`: one service object (examples/demo/policy.lua, a
-- modal.service) driven for about ten seconds against the testing kit's fault server through
-- two outages, a policy changed while calls wait (hot reload of the policy file), a half-open
-- server that only the keepalive finds, and a refused password. It prints a timeline —
-- transitions with their inputs, backoff delays, calls answered, failed and waiting, and the
-- failures that say why — writes the service's state diagram, checks that every call was
-- answered exactly once, and exits by itself (status 0; 1 if a call was lost or answered twice).
--
--   build/modal run examples/demo/main.lua [OUTDIR]      (OUTDIR: where the copy and the
--                                                         diagram go; default build/demo)
local modal = require "modal"
local graph = require "modal.graph"
local server = require("modal.testing").server

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local out = arg[1] or "build/demo"

local started = modal.now()
local function say(who, fmt, ...)
  io.write(string.format("[%5.2fs] %-7s " .. fmt .. "\n", modal.now() - started, who, ...))
  io.flush()
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The policy file runs from a copy: the demo edits the copy's backoff while it runs.
assert(os.execute("mkdir -p '" .. out .. "'"), "cannot make " .. out)
local policy_path = out .. "/policy.lua"
local policy_text = read(here .. "/policy.lua")
write(policy_path, policy_text)
write(out .. "/line.lua", read(here .. "/../echo/line.lua"))

local Echo = modal.load(policy_path)
local s = server { mode = "echo" }
local c = Echo:new { host = "127.0.0.1", port = s.port }
say("server", "listening on 127.0.0.1:%d (echo)", s.port)

-- Transitions, with the backoff's next delay and what the service knows about the last failure.
c:on_transition(function(_, from, to, input)
  local st = modal.service.status(c)
  if to == "backoff" and input == "lost" then
    say(c.machine.name .. "#" .. c.id, "%s -> %s (lost: %s); next attempt in %.2f s", from, to,
      tostring(st.last), st.retry_in or 0)
  elseif to == "backoff" then
    say(c.machine.name .. "#" .. c.id, "%s -> %s (%s): attempt %d failed (%s); next attempt in "
      .. "%.2f s", from, to, input, st.attempts, tostring(st.last), st.retry_in or 0)
  else
    say(c.machine.name .. "#" .. c.id, "%s -> %s (%s)", from, to, input)
  end
end)

-- Calls: one every 100 ms, each with a deadline of its own; every answer is counted.
local answers, made, tally = {}, 0, { answered = 0, failed = 0 }
local kinds = {}
local function call()
  made = made + 1
  local id = made
  answers[id] = 0
  c:echo("call " .. id):add_timeout(1.2):add_both(function(v)
    answers[id] = answers[id] + 1
    if modal.is_failure(v) then
      tally.failed = tally.failed + 1
      kinds[v.kind] = (kinds[v.kind] or 0) + 1
      local why = type(v.value) == "table" and v.value.state and string.format(
        " [f.value: state %s, %d attempts, next in %s s]", v.value.state, v.value.attempts or 0,
        v.value.retry_in and string.format("%.2f", v.value.retry_in) or "-") or ""
      say("call", "%d failed: %s%s", id, tostring(v), why)
    else
      tally.answered = tally.answered + 1
    end
  end)
end

local calling = true
local ticks = 0
local function tick()
  if not calling then return end
  call()
  ticks = ticks + 1
  if ticks % 10 == 0 then
    say("calls", "%d made: %d answered, %d failed, %d waiting (state %s)", made, tally.answered,
      tally.failed, c:postponed(), c.state)
  end
  modal.call_later(0.1, tick)
end

local function reload_with(backoff)
  write(policy_path, (policy_text:gsub("backoff = %b{}", "backoff = " .. backoff)
    :gsub("version = 1", "version = 2")))
  local M, err = modal.reload(policy_path)
  if M then
    say("reload", "policy version %s loaded: backoff = %s; %d calls waiting kept their place",
      tostring(M.version), backoff, c:postponed())
  else
    say("reload", "failed: %s", tostring(err))
  end
end

local main = modal.async(function()
  local function wait(seconds) modal.await(modal.sleep(seconds)) end
  tick()
  wait(1.0)

  say("server", "outage 1: down, its clients dropped")
  s:stop()
  wait(1.2)
  s:start()
  say("server", "back up")
  modal.await(c:when("ready"))
  wait(0.6)

  say("server", "outage 2: down")
  s:stop()
  modal.await(c:when("connecting"))
  wait(0)                                -- out of the transition: reloads come from outside
  reload_with("{ initial = 0.1, multiplier = 1.5, jitter = 0.1, max = 0.4 }")
  wait(1.8)
  s:start()
  say("server", "back up")
  modal.await(c:when("ready"))
  wait(0.6)

  say("server", "half-open: accepts, never answers; only the keepalive can tell")
  s:set("blackhole")
  modal.await(c:when("backoff"))
  wait(0.8)
  s:set("echo")
  say("server", "answering again")
  modal.await(c:when("ready"))
  wait(0.6)

  local locked = server { mode = "echo", auth = "sesame" }
  say("server", "a second one, on port %d, wants a password; a client with the wrong one:",
    locked.port)
  local wrong = Echo:new { host = "127.0.0.1", port = locked.port, secret = "guess" }
  wrong:on_transition(function(_, from, to, input)
    say("echo#" .. wrong.id, "%s -> %s (%s)", from, to, input)
  end)
  for _, text in ipairs { "let me in", "please" } do
    local r = modal.await(modal.settled { wrong:echo(text) })[1]
    say("call", "%q failed: %s (the service stays %s: a refused password is final)", text,
      tostring(r.failure), wrong.state)
  end
  locked:close()

  calling = false
  wait(1.3)                              -- the last calls' deadlines pass
  modal.await(c:close())
  local after = modal.await(modal.settled { c:echo("after close") })[1]
  say("call", "made after close() failed: %s", tostring(after.failure))
  say("calls", "%d made: %d answered, %d failed (%s)", made, tally.answered, tally.failed,
    (function()
      local parts = {}
      for k, n in pairs(kinds) do parts[#parts + 1] = k .. " " .. n end
      table.sort(parts)
      return #parts > 0 and table.concat(parts, ", ") or "none"
    end)())
  local lost, twice = 0, 0
  for id = 1, made do
    if answers[id] == 0 then lost = lost + 1 elseif answers[id] > 1 then twice = twice + 1 end
  end
  say("check", "every call answered exactly once: %s (%d unanswered, %d answered twice)",
    (lost == 0 and twice == 0) and "yes" or "NO", lost, twice)
  say("server", "%d connections accepted, %d lines read", s.accepts, s.lines)
  s:close()

  local dot = out .. "/echo.dot"
  write(dot, graph.dot(Echo.definition))
  local png = out .. "/echo.png"
  if os.execute("command -v dot >/dev/null 2>&1") and
      os.execute(string.format("dot -Tpng -o '%s' '%s'", png, dot)) then
    say("diagram", "%s and %s", dot, png)
  else
    say("diagram", "%s (Graphviz's dot renders it)", dot)
  end
  if lost > 0 or twice > 0 then os.exit(1) end
end)

main():add_errback(function(f)
  say("demo", "failed: %s", tostring(f))
  s:close()
  os.exit(1)
end)
