-- examples/echo_client.lua — the definition of the reconnecting echo client that
-- examples/connection.lua drives: calls made before the server is up wait (postponed), a lost
-- connection backs off (a timeout function) and reconnects (a `run` job), and a closed client
-- answers every call with kind `stopped`. A definition file: `modal check`, `modal graph` and
-- `modal test examples/echo_client.lua` read it as it is.
local modal = require "modal"
local uv = require "luv"

-- open(m) -> Deferred(connection); the connection reports its loss with m:fire("lost").
local function open(m)
  local sock = uv.new_tcp()
  local d = modal.deferred(function() if not sock:is_closing() then sock:close() end end)
  sock:connect("127.0.0.1", m.data.port, function(err)
    if err then
      sock:close()
      return d:errback(modal.failure("unavailable", err))
    end
    local waiting, buffer = {}, ""
    sock:read_start(function(rerr, chunk)
      if rerr or not chunk then
        if not sock:is_closing() then sock:close() end
        for _, w in ipairs(waiting) do w:errback(modal.failure("unavailable", "connection lost")) end
        waiting = {}
        m:fire("lost")
        return
      end
      buffer = buffer .. chunk                 -- replies are lines, in order
      for line in buffer:gmatch("([^\n]*)\n") do table.remove(waiting, 1):callback(line) end
      buffer = buffer:match("[^\n]*$")
    end)
    d:callback({
      echo = function(_, line)
        local r = modal.deferred()
        waiting[#waiting + 1] = r
        sock:write(line .. "\n")
        return r
      end,
      close = function() if not sock:is_closing() then sock:close() end end,
    })
  end)
  return d
end

return modal.machine {
  name = "echo_client", version = 1, initial = "idle",
  methods = { "echo", "close" },
  defaults = { close = function(m) m:fire("close"); return true end },
  states = {
    idle = {
      echo = function(m) m:fire("connect"); return m:postpone() end,
      on = { connect = "connecting", close = "closed" },
    },
    connecting = {
      run = open,
      timeout = 1,
      echo = "postpone",
      on = { done = { to = "ready", action = function(m, conn) m.data.conn = conn end },
             error = "backoff", timeout = "backoff", close = "closed" },
    },
    ready = {
      enter = function(m) m.data.delay = 0.05 end,
      echo = function(m, line) return m.data.conn:echo(line) end,
      exit = function(m)
        if m.data.conn then m.data.conn:close() end
        m.data.conn = nil
      end,
      on = { lost = "backoff", close = "closed" },
    },
    backoff = {
      timeout = function(m)
        local delay = m.data.delay or 0.05
        m.data.delay = math.min(delay * 2, 1)
        return delay
      end,
      echo = "postpone",
      on = { timeout = "connecting", close = "closed" },
      ignore = { "lost" },
    },
    closed = {
      final = true,
      echo = function() return modal.fail("stopped", "client closed") end,
      close = function() return true end,
    },
  },
}
