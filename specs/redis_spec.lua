-- specs/redis_spec.lua — the Redis example (examples/redis/) against a real redis-server
-- (Debian's), started on a free loopback port: the RESP client behind the modal.service
-- facade, a refused password (failed after one attempt), the server killed and restarted
-- while calls flow (every call answered exactly once), the example run by one command; no
-- redis-server left behind (checked by pid).
local modal = require "modal"
local uv = require "luv"
local support = require "support"
local ps = require "pool_support"

local server = dofile("examples/redis/server.lua")
local resp = dofile("examples/redis/resp.lua")
local Redis = modal.load("examples/redis/redis.lua")

local servers = {}

local function start(opts)
  local got = ps.watch(server.start(opts))
  assert(support.wait_for(function() return got.fired end, 6), "redis-server did not start")
  assert(got.ok, tostring(got.value))
  servers[#servers + 1] = got.value
  return got.value
end

local function wait_for(d, seconds)
  local got = ps.watch(d)
  assert(support.wait_for(function() return got.fired end, seconds or 3), "no answer")
  return got
end

describe("examples/redis", function()
  local instances = {}
  local function new(data)
    local r = Redis:new(data)
    instances[#instances + 1] = r
    return r
  end

  after_each(function()
    for _, r in ipairs(instances) do
      if r.state ~= "closed" and r.state ~= "failed" then wait_for(r:close()) end
    end
    instances = {}
    local pids = {}
    for _, s in ipairs(servers) do
      pids[#pids + 1] = s.pid
      wait_for(s:stop(), 6)
    end
    servers = {}
    for _, pid in ipairs(pids) do assert.is_true(ps.gone(pid), "redis-server " .. pid .. " is left") end
  end)

  it("parses RESP replies: status, error, integer, bulk, null, array", function()
    local parse = resp._parse
    assert.same({ "OK", 6 }, { parse("+OK\r\n", 1) })
    local f = parse("-ERR wrong\r\n", 1)
    assert.equal("redis", f.kind)
    assert.equal("ERR wrong", f.message)
    assert.same({ 42, 6 }, { parse(":42\r\n", 1) })
    assert.same({ "hello", 12 }, { parse("$5\r\nhello\r\n", 1) })
    assert.is_nil(parse("$5\r\nhel", 1))
    assert.same({ false, 6 }, { parse("$-1\r\n", 1) })
    local list = parse("*3\r\n:1\r\n$-1\r\n+x\r\n", 1)
    assert.same({ 1, nil, "x", n = 3 }, list)
    assert.equal("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", resp._encode { "GET", "k" })
  end)

  it("refuses a wrong password for good: failed after one attempt, every call answered with it", function()
    local s = start { password = "right" }
    local r = new { port = s.port, password = "wrong" }
    local seen = {}
    r:on_transition(function(_, from, to, input) seen[#seen + 1] = from .. ">" .. to .. ":" .. input end)
    local got = wait_for(r:get("k"))
    assert.equal("auth", got.value.kind)
    assert.matches("WRONGPASS", got.value.message, 1, true)
    assert.equal("failed", r.state)
    assert.same({ "idle>connecting:connect", "connecting>failed:error" }, seen)
    local again = ps.watch(r:incr("n"))
    assert.is_true(again.fired)                     -- at once: no new attempt
    assert.equal(got.value, again.value)
    local none = new { port = s.port }              -- no password where one is wanted: fatal too
    assert.equal("auth", wait_for(none:get("k")).value.kind)
    assert.equal("failed", none.state)
  end)

  it("answers every call exactly once while redis-server is killed and restarted", function()
    local s = start {}
    local r = new { port = s.port }
    assert.equal("OK", wait_for(r:set("greeting", "hello")).value)
    local got, n, restarted = {}, 0, nil
    local timer = uv.new_timer()
    timer:start(0, 3, function()
      n = n + 1
      got[n] = ps.watch(r:incr("counter"))
      if n == 60 then s:kill() end
      if n == 120 then restarted = ps.watch(s:restart()) end
      if n == 240 then timer:stop() end
    end)
    local done = support.wait_for(function()
      if n < 240 then return false end
      for i = 1, n do if not got[i].fired then return false end end
      return true
    end, 15)
    timer:close()
    assert.is_true(done, "calls left unanswered")
    assert.is_true(restarted.ok, tostring(restarted.value))
    local kinds, last = {}, 0
    for i = 1, n do
      assert.equal(1, got[i].n, "call " .. i)
      local k = got[i].ok and "ok" or got[i].value.kind
      kinds[k] = (kinds[k] or 0) + 1
      if got[i].ok then last = got[i].value end
    end
    assert.is_true(kinds.ok >= 120, "ok: " .. tostring(kinds.ok))
    for k in pairs(kinds) do assert.is_true(k == "ok" or k == "unavailable", k) end
    assert.is_true(last > 0 and last < n, "the counter started again after the restart: " .. last)
    assert.equal("ready", r.state)
    assert.is_nil(wait_for(r:get("greeting")).value)  -- nothing was saved
  end)

  it("runs examples/redis/main.lua by one command", function()
    local p = support.spawn_host { "run", "examples/redis/main.lua" }
    finally(p.reap)
    assert.is_true(support.wait_for(p.done, 20), p.out .. p.err)
    assert.equal(0, p.code, p.out .. p.err)
    for _, text in ipairs { "get greeting: hello", "incr visits:  3", "redis-server killed",
      "timeout: timed out after 0.2 seconds", "breaker: closed -> open (trip)",
      "unavailable: redis_breaker#1 is open: 3 of 6 calls failed", "redis-server back",
      "breaker: half_open -> closed (recovered)", "with a wrong password: auth: redis: WRONGPASS",
      "(state: failed)", "done: redis-server stopped" } do
      assert.matches(text, p.out, 1, true)
    end
    local pid = tonumber(p.out:match("redis%-server pid (%d+)"))
    assert.is_true(ps.gone(pid))
  end)

  it("modal check reads the service file", function()
    local host = (os.getenv("MODAL_BUILD") or "build") .. "/modal"
    local out = io.popen(host .. " check examples/redis/redis.lua 2>&1")
    local text = out:read("a")
    assert.is_true(out:close(), text)
    assert.matches("redis.lua: ok", text, 1, true)
  end)
end)
