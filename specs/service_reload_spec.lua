-- specs/service_reload_spec.lua — hot reload of a file returning modal.service{...}
-- (doc/policies.md, "Reloading a service"; doc/reload.md): waiting calls, backoff timers,
-- attempt counts and live connections survive; the new options apply from the next step; a bad
-- file changes nothing.
local modal = require "modal"
local ss = require "service_support"
local support = require "support"

local watch, wait, pause = ss.watch, ss.wait, ss.pause
local status = modal.service.status

local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_service_reload.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end

local files = 0
-- A service file: write(text_of_options) rewrites it; returns path, name, write.
local function service_file(extra_methods)
  files = files + 1
  local name = string.format("reload_echo_%d_%d", files, math.random(1e6))
  local path = string.format("%s/%s.lua", dir, name)
  local function write(version, options)
    local f = assert(io.open(path, "w"))
    f:write(string.format([[
local modal = require "modal"
local ss = require "service_support"
local support = require "support"
local o = ss.options { name = %q, version = %d, %s }
%s
return modal.service(o)
]], name, version, options, extra_methods or ""))
    f:close()
  end
  return path, name, write
end

describe("reloading a service file", function()
  after_each(ss.cleanup)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("that is broken changes nothing and says which option is wrong", function()
    local s = ss.server { mode = "refuse" }
    local path, _, write = service_file()
    write(1, "backoff = { initial = 0.3, jitter = 0 }")
    local M = modal.load(path)
    local c = ss.new(M, { port = s.port })
    local got = watch(c:echo("a"))
    assert.is_true(wait(function() return c.state == "backoff" end))
    write(2, "backoff = { initial = -1 }, conect_timeout = 2")
    local lines = require("support").capture_log()
    local ok, err = modal.reload(path)
    assert.equal("error", lines[1].level)
    assert.is_nil(ok)
    assert.matches("backoff.initial: expected a number of seconds >= 0, got -1", err, 1, true)
    assert.matches("conect_timeout: unknown option (did you mean 'connect_timeout'?)", err, 1, true)
    assert.equal(1, M.version)
    assert.equal(1, c:postponed())
    s:set("echo")
    assert.is_true(wait(function() return got.fired end))
    assert.equal("a", got.value)
  end)

  it("while calls wait in backoff loses none, and keeps the backoff timer and the attempt count", function()
    local s = ss.server { mode = "refuse" }
    local path, _, write = service_file()
    write(1, "backoff = { initial = 0.4, multiplier = 1, jitter = 0 }")
    local M = modal.load(path)
    local c = ss.new(M, { port = s.port })
    local seen, at = ss.transitions(c)
    local calls = {}
    for i = 1, 100 do calls[i] = watch(c:echo("call " .. i)) end
    assert.is_true(wait(function() return c.state == "backoff" end))
    local entered = at[#seen]
    local attempts = status(c).attempts
    pause(0.1)
    write(2, "backoff = { initial = 0.02, multiplier = 1, jitter = 0 }")
    assert.equal(M, modal.reload(path))
    assert.equal(2, M.version)
    assert.equal("backoff", c.state)
    assert.equal(100, c:postponed())
    assert.equal(attempts, status(c).attempts)
    s:set("echo")
    assert.is_true(wait(function() return calls[100].fired end))
    local waited = at[#seen - 1] - entered            -- backoff>connecting, then connecting>ready
    assert.equal("backoff>connecting:timeout", seen[#seen - 1])
    -- the old deadline
    assert.is_true(waited >= 0.399 and waited < 0.4 + 0.05 * support.SLACK, tostring(waited))
    for i = 1, 100 do
      assert.equal(1, calls[i].n)
      assert.equal("call " .. i, calls[i].value)
    end
    assert.equal(0, status(c).attempts)
  end)

  it("applies the new backoff options from the next step, at the same place in the schedule", function()
    local s = ss.server { mode = "refuse" }
    local path, _, write = service_file()
    write(1, "backoff = { initial = 0.01, multiplier = 2, jitter = 0, max = 10 }")
    local M = modal.load(path)
    local c = ss.new(M, { port = s.port })
    local seen, at = ss.transitions(c)
    watch(c:echo("a"))
    assert.is_true(wait(function() return status(c).attempts == 3 and c.state == "backoff" end))
    write(2, "backoff = { initial = 0.02, multiplier = 2, jitter = 0, max = 10 }")
    assert.equal(M, modal.reload(path))
    assert.is_true(wait(function() return status(c).attempts == 4 and c.state == "backoff" end))
    local n = #seen
    assert.is_true(wait(function() return seen[n + 1] ~= nil end))
    assert.equal("backoff>connecting:timeout", seen[n + 1])
    local waited = at[n + 1] - at[n]
    -- 0.02 x 2^3, the 4th step
    assert.is_true(waited >= 0.159 and waited < 0.16 + 0.04 * support.SLACK, tostring(waited))
  end)

  it("that drops classify moves a failed instance to closed", function()
    local s = ss.server { auth = "pw" }
    local path, _, write = service_file()
    write(1, 'classify = function() return "fatal" end')
    local M = modal.load(path)
    local c = ss.new(M, { port = s.port, auth = "guess" })
    local got = watch(c:echo("a"))
    assert.is_true(wait(function() return got.fired end))
    assert.equal("failed", c.state)
    write(2, "")
    assert.equal(M, modal.reload(path))
    assert.equal("closed", c.state)
    assert.equal("stopped", watch(c:echo("b")).value.kind)
  end)

  it("while ready keeps the connection and the calls in flight", function()
    local s = ss.server()
    local path, _, write = service_file([[
o.methods.slow = function(_, conn, text)
  return modal.sleep(0.1):add_callback(function() return conn:request(text) end)
end]])
    write(1, "")
    local M = modal.load(path)
    local c = ss.new(M, { port = s.port })
    local up = watch(c:echo("up"))
    assert.is_true(wait(function() return up.fired end))
    local conn = c.data.conn
    local inflight = {}
    for i = 1, 10 do inflight[i] = watch(c:slow("slow " .. i)) end
    write(2, "idle_timeout = 5")
    assert.equal(M, modal.reload(path))
    assert.equal("ready", c.state)
    assert.is_true(wait(function() return inflight[10].fired end))
    for i = 1, 10 do assert.equal("slow " .. i, inflight[i].value) end
    assert.equal(conn, c.data.conn)
    assert.equal(1, s.accepts)
    local closed = watch(c:close())                     -- the new definition closes it
    assert.is_true(wait(function() return closed.fired end))
    assert.equal(1, ss.disconnected[conn])
  end)
end)
