-- examples/redis/redis.lua — the Redis service: a reconnecting facade (modal.service) over
-- the RESP client in resp.lua, with get, set and incr. A refused password is fatal: the
-- instance goes to `failed` after one attempt and answers every call with that failure. A
-- file returning modal.service{...}: `modal check`, `modal graph` and hot reload work on it.
--
--   local Redis = modal.load("examples/redis/redis.lua")
--   local r = Redis:new { host = "127.0.0.1", port = 6379, password = "secret" }
--   r:set("k", "v"); r:get("k"):add_callback(print); r:incr("n")
local modal = require "modal"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local resp = dofile(here .. "/resp.lua")

return modal.service {
  name = "redis", version = 1,
  connect = function(m)
    local d = m.data
    return resp.open(m, d.host or "127.0.0.1", d.port or 6379, d.password)
  end,
  disconnect = function(_, conn) conn:close() end,
  methods = {
    get = function(_, conn, key) return conn:command("GET", key) end,
    set = function(_, conn, key, value) return conn:command("SET", key, value) end,
    incr = function(_, conn, key) return conn:command("INCR", key) end,
  },
  classify = function(f) return f:is("auth") and "fatal" or "retry" end,
  backoff = { initial = 0.05, multiplier = 2, jitter = 0.2, max = 1 },
  connect_timeout = 2,
  keepalive = { ping = function(_, conn) return conn:command("PING") end, interval = 5, timeout = 2 },
}
