-- specs/breaker_host_spec.lua — a breaker is a machine for the host's tools too
-- (doc/policies.md, "Breaker"; doc/host.md): `modal check` and `modal graph` read a file
-- returning modal.breaker.machine{...}, `modal run --trace` logs its transitions, `modal ctl
-- status` counts it per state. The host runs as a child process on specs/fixtures/breaker/.
local cjson = require "cjson"
local support = require "support"

local FIXTURES = "specs/fixtures/breaker/"

local modal_cmd = support.modal_cmd

describe("a breaker file in the host's tools", function()
  it("modal check validates it and modal graph draws closed, open and half_open", function()
    local status, stdout, stderr = modal_cmd("check", FIXTURES .. "guard.lua")
    assert.equal(0, status, stdout .. stderr)
    status, stdout = modal_cmd("graph", FIXTURES .. "guard.lua")
    assert.equal(0, status)
    for _, edge in ipairs { '"closed" -> "open" [label="trip [guard]"]',
      '"open" -> "half_open" [label="timeout"]', '"half_open" -> "closed" [label="recovered [guard]"]',
      '"half_open" -> "open" [label="trip [guard]"]', '"open" -> "closed" [label="force_closed"]' } do
      assert.matches(edge, stdout, 1, true)
    end
  end)

  it("modal test walks paths that take every transition of it", function()
    local status, stdout, stderr = modal_cmd("test", FIXTURES .. "guard.lua")
    assert.equal(0, status, stdout .. stderr)
    assert.matches("guard.lua: (%d+)/%1 transitions taken", stdout)
  end)

  it("modal run --trace logs its transitions; ctl status counts it per state", function()
    local dir = os.tmpname()
    os.remove(dir)
    local socket = dir .. ".sock"
    local p = support.spawn_host { "run", "--trace", "--admin", socket, FIXTURES .. "run.lua" }
    finally(function() p.reap(); os.remove(socket) end)
    assert.is_true(support.wait_for(p.said("open\n"), 5), p.out .. p.err)
    local status, stdout = modal_cmd("ctl", socket, "status")
    assert.equal(0, status, stdout)
    local m = cjson.decode(stdout).machines.guard
    assert.is_table(m, stdout)
    assert.equal(1, m.version)
    assert.equal(1, m.instances)
    assert.equal(1, m.states.open)
    assert.is_true(support.wait_for(p.done, 10), p.out .. p.err)
    assert.equal(0, p.code, p.err)
    -- the fourth failure opens it before that call's own errback runs: the breaker's link is first
    assert.matches("call 1: timeout\ncall 2: timeout\ncall 3: timeout\nopen\nfail-fast: unavailable\n" ..
      "call 4: timeout\nanswer: trial, closed\n", p.out, 1, true)
    for _, t in ipairs { "guard#1 closed -> open on 'trip'",
      "guard#1 open -> half_open on 'timeout' after 10",
      "guard#1 half_open -> closed on 'recovered'" } do
      assert.matches(t, p.err, 1, true)
    end
  end)
end)
