-- specs/service_support.lua — helpers for the modal.service specs: an echo service over the
-- spec line client, fault servers and instances closed after each test, and waiting on the
-- loop for outcomes.
--
--   local ss = require "service_support"
--   local s = ss.server { mode = "refuse" }           -- closed by ss.cleanup
--   local Echo = ss.echo { fail_after = 3 }            -- modal.service{...}, short timings
--   local c = ss.new(Echo, { port = s.port })          -- closed by ss.cleanup
--   local got = ss.watch(c:echo("x"))                  -- got.fired, got.ok, got.value, got.at
--   ss.wait(function() return got.fired end, 2)
--   after_each(ss.cleanup)
--
-- The echo service's connect reads m.data: port, auth, greeting (the line client's options);
-- its disconnect closes the connection and counts: ss.disconnected[conn] = times.
local modal = require "modal"
local uv = require "luv"
local line = require "line_client"
local support = require "support"

local ss = { disconnected = setmetatable({}, { __mode = "k" }), line = line }

local servers, instances = {}, {}
local seq = 0

function ss.server(opts)
  local s = require("modal.testing").server(opts)
  servers[#servers + 1] = s
  return s
end

--- A unique machine name for this run.
function ss.name(prefix)
  seq = seq + 1
  return string.format("%s_%d", prefix or "svc", seq)
end

function ss.connect(m)
  local d = m.data
  return line.connect(m, { port = d.port, auth = d.auth, greeting = d.greeting })
end

function ss.disconnect(_, conn)
  ss.disconnected[conn] = (ss.disconnected[conn] or 0) + 1
  conn:close()
end

--- The echo service's options, with `opts` over them (a value `false` removes an option).
function ss.options(opts)
  local o = {
    name = ss.name("echo"),
    connect = ss.connect,
    disconnect = ss.disconnect,
    methods = { echo = function(_, conn, text) return conn:request(text) end },
    backoff = { initial = 0.02, multiplier = 2, jitter = 0, max = 0.08 },
    connect_timeout = 0.5,
  }
  for k, v in pairs(opts or {}) do
    if v == false and k ~= "wait_for_ready" then o[k] = nil else o[k] = v end
  end
  return o
end

function ss.echo(opts)
  return modal.service(ss.options(opts))
end

function ss.new(M, data)
  local c = M:new(data)
  instances[#instances + 1] = c
  return c
end

--- Records the outcome of d without handling it for anyone else: fields fired, ok, value
-- (the result or the failure), at (modal.now() when it fired), n (times fired).
function ss.watch(d)
  local got = { fired = false, n = 0 }
  d:add_both(function(v)
    got.n = got.n + 1
    got.fired, got.at, got.value = true, modal.now(), v
    got.ok = not modal.is_failure(v)
  end)
  return got
end

--- Runs the loop until pred() or seconds; returns pred().
function ss.wait(pred, seconds)
  return support.wait_for(pred, seconds or 3)
end

--- Runs the loop for `seconds`.
function ss.pause(seconds)
  local t0 = uv.hrtime()
  support.wait_for(function() return uv.hrtime() - t0 >= seconds * 1e9 end, seconds + 1)
end

--- Every transition of c, as "from>to:input" strings; and their times (modal.now()).
function ss.transitions(c)
  local list, at = {}, {}
  c:on_transition(function(_, from, to, input)
    list[#list + 1] = string.format("%s>%s:%s", from, to, tostring(input))
    at[#list] = modal.now()
  end)
  return list, at
end

--- Closes every instance and server the test made, and lets the loop settle.
function ss.cleanup()
  for _, c in ipairs(instances) do
    if c.state ~= "closed" and c.state ~= "failed" then
      local ok = pcall(c.close, c)
      if not ok then pcall(c.fire, c, "close") end
    end
  end
  instances = {}
  for _, s in ipairs(servers) do s:close() end
  servers = {}
  support.wait_for(function() return false end, 0.02)
  support.run_undo()
end

return ss
