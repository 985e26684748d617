-- examples/demo/policy.lua — the echo service's policy for `make demo`: a reconnecting facade
-- over the line client of examples/echo/line.lua, with backoff, a connect timeout, a keepalive
-- that finds a half-open server, and a classifier that makes a refused password final.
-- The demo loads a copy of this file and edits the copy's backoff while it runs (hot reload).
--
--   build/modal check examples/demo/policy.lua
--   build/modal graph examples/demo/policy.lua | dot -Tpng > policy.png
local modal = require "modal"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local beside = io.open(here .. "/line.lua")             -- the demo's copy runs beside its own
if beside then beside:close() end
local line = dofile(here .. (beside and "/line.lua" or "/../echo/line.lua"))

return modal.service {
  name = "echo", version = 1,
  connect = function(m) return line.open(m, m.data.host, m.data.port, m.data.secret) end,
  disconnect = function(_, conn) conn:close() end,
  methods = {
    echo = function(_, conn, text) return conn:request(text) end,
  },
  classify = function(f) return f:is("auth") and "fatal" or "retry" end,   -- a wrong password
  backoff = { initial = 0.2, multiplier = 2, jitter = 0.1, max = 1.6 },
  connect_timeout = 1,
  fail_after = 3,              -- three failed attempts in a row: the waiting calls fail, saying why
  keepalive = { ping = function(_, conn) return conn:request("PING") end, interval = 0.4,
                timeout = 0.3 },
}
