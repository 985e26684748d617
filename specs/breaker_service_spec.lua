-- specs/breaker_service_spec.lua — modal.breaker over a modal.service instance, on real
-- sockets (doc/policies.md, "Breaker"): the service's failures open it, calls then fail fast
-- without reaching the service or the server, and once the server answers again one trial
-- closes it. Every call is answered exactly once.
local modal = require "modal"
local ss = require "service_support"

describe("modal.breaker over a modal.service", function()
  after_each(ss.cleanup)

  it("opens on the service's failures, fails fast without reaching it, and closes after a trial", function()
    local s = ss.server { mode = "refuse" }
    local Echo = ss.echo { wait_for_ready = false }     -- calls fail fast while the service backs off
    local c = ss.new(Echo, { port = s.port })
    local b = modal.breaker { target = c, methods = { "echo" }, window = 4, min_calls = 4, trials = 1,
      open_wait = { initial = 0.3, jitter = 0 } }
    assert.equal(Echo.name .. "_breaker", b.machine.name)
    local seen = ss.transitions(b)
    local got = {}
    for i = 1, 6 do
      got[i] = ss.watch(b:echo("call " .. i))
      ss.wait(function() return got[i].fired end, 2)
    end
    for i = 1, 4 do
      assert.equal("unavailable", got[i].value.kind)
      assert.matches("^" .. Echo.name .. "#", got[i].value.message)    -- the service's own failures
    end
    assert.equal("open", b.state)
    for i = 5, 6 do
      assert.equal("unavailable", got[i].value.kind)
      assert.matches("^" .. b.machine.name .. "#%d+ is open: 4 of 4 calls failed %(100 %%; " ..
        "last: unavailable: " .. Echo.name, got[i].value.message)
    end
    s:set("echo")
    local lines = s.lines
    local fast = ss.watch(b:echo("while open"))
    assert.is_true(fast.fired)                      -- at once, not through the service
    assert.equal(lines, s.lines)
    assert.is_true(ss.wait(function() return b.state == "half_open" end, 2))
    assert.is_true(ss.wait(function() return c.state == "ready" end, 2))
    local trial = ss.watch(b:echo("trial"))
    assert.is_true(ss.wait(function() return trial.fired end, 2))
    assert.equal("trial", trial.value)
    assert.equal("closed", b.state)
    assert.same({ "closed>open:trip", "open>half_open:timeout", "half_open>closed:recovered" }, seen)
    for _, g in ipairs(got) do assert.equal(1, g.n) end
  end)

  it("answers every call exactly once while the server drops and comes back", function()
    local s = ss.server { mode = "echo" }
    local Echo = ss.echo { wait_for_ready = false }
    local c = ss.new(Echo, { port = s.port })
    local b = modal.breaker { target = c, methods = { "echo" }, window = 10, min_calls = 5,
      open_wait = { initial = 0.05, multiplier = 1, jitter = 0 }, trials = 2 }
    local got, n = {}, 0
    local timer = require("luv").new_timer()
    timer:start(0, 2, function()
      n = n + 1
      got[n] = ss.watch(b:echo("line " .. n))
      if n == 40 then s:stop() elseif n == 120 then s:start() end
      if n == 250 then timer:stop() end
    end)
    local done = ss.wait(function()
      if n < 250 then return false end
      for i = 1, n do if not got[i].fired then return false end end
      return true
    end, 10)
    if not done then
      local left = {}
      for i = 1, n do if not got[i].fired then left[#left + 1] = i end end
      error(string.format("n = %d; not answered: %s; breaker %s, service %s", n, table.concat(left, " "),
        b.state, c.state))
    end
    timer:close()
    local kinds = {}
    for i = 1, n do
      assert.equal(1, got[i].n)
      local k = got[i].ok and "ok" or got[i].value.kind
      kinds[k] = (kinds[k] or 0) + 1
      if got[i].ok then assert.equal("line " .. i, got[i].value) end
    end
    assert.is_true(kinds.ok > 100, "ok: " .. tostring(kinds.ok))
    assert.is_true((kinds.unavailable or 0) > 0)
    assert.is_true(ss.wait(function() return b.state == "closed" end, 3))
  end)
end)
