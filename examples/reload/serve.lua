-- examples/reload/serve.lua — serves calls through the policy in policy.lua for a few seconds,
-- printing each answer; with --watch, saving policy.lua reloads it without losing a call.
--   build/modal run --watch examples/reload/serve.lua [seconds]
local modal = require "modal"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local Policy = modal.load(here .. "/policy.lua")
local client = Policy:new()
local seconds = tonumber(arg[1]) or 3
local started, asked, answered = modal.now(), 0, 0

local ticker
local function ask()
  asked = asked + 1
  local n = asked
  client:get():add_callback(function(answer)
    answered = answered + 1
    print(string.format("[%5.2fs] call %d: %s", modal.now() - started, n, answer))
  end)
  if modal.now() - started < seconds then
    ticker = modal.call_later(0.25, ask)
  else
    client:close()                    -- a final state: no timer left, the program ends
    print(string.format("%d calls, %d answered", asked, answered))
  end
end
ask()
modal.on_stop(function() if ticker then ticker:cancel() end; client:close() end)
