-- examples/echo/echo.lua — the echo service: a reconnecting facade over examples/echo/line.lua.
-- A file returning modal.service{...}: `modal check`, `modal graph` and hot reload work on it.
--
--   build/modal graph examples/echo/echo.lua | dot -Tpng > echo.png
local modal = require "modal"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local line = dofile(here .. "/line.lua")

return modal.service {
  name = "echo", version = 1,
  connect = function(m) return line.open(m, m.data.host, m.data.port, m.data.secret) end,
  disconnect = function(_, conn) conn:close() end,
  methods = {
    echo = function(_, conn, text) return conn:request(text) end,
  },
  classify = function(f) return f:is("auth") and "fatal" or "retry" end,   -- a bad secret is final
  backoff = { initial = 0.1, multiplier = 2, jitter = 0.2, max = 1 },
  connect_timeout = 2,
  keepalive = { ping = function(_, conn) return conn:request("PING") end, interval = 1, timeout = 0.5 },
}
