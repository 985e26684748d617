-- examples/reload/policy.lua — a retry policy as a machine definition; edit it while
-- `build/modal run --watch examples/reload/serve.lua` runs and the host reloads it in place.
local modal = require "modal"

return modal.machine {
  name = "flaky_call", version = 1, initial = "trying",
  methods = { "get", "close" },
  defaults = { close = function(m) m:fire("close") end },
  states = {
    trying = {
      get = "postpone",                         -- callers wait while we try
      timeout = 0.2,                            -- each attempt takes this long here
      on = { timeout = "answering", close = "closed" },
    },
    answering = {
      get = function(m) return "answered by policy v1 (attempts: " .. m.data.attempts .. ")" end,
      enter = function(m) m.data.attempts = (m.data.attempts or 0) + 1 end,
      timeout = 0.5,                            -- then back to trying
      on = { timeout = "trying", close = "closed" },
    },
    closed = {
      final = true,
      get = function() return modal.fail("stopped", "closed") end,
      close = function() end,
    },
  },
}
