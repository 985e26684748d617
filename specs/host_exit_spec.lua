-- specs/host_exit_spec.lua — calls nobody can answer any more when the loop ends
-- (doc/host.md): the host fails every postponed call and when() waiter with kind "stopped"
-- (referenced or not) and says so, one warn line per machine and state; in module mode
-- modal.run() returning says the same and leaves them pending.
local modal = require "modal"
local support = require "support"

local BUILD = os.getenv("MODAL_BUILD") or "build"
local HOST = BUILD .. "/modal"
local FIXTURES = "specs/fixtures/host/"

local function run_host(script)
  local out, err = os.tmpname(), os.tmpname()
  local _, how, status = os.execute(string.format("timeout 10 %s run %s >%s 2>%s </dev/null",
    HOST, script, out, err))
  local f = assert(io.open(out)); local stdout = f:read("a"); f:close()
  f = assert(io.open(err)); local stderr = f:read("a"); f:close()
  os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

describe("calls nobody can answer when the loop ends", function()
  after_each(support.run_undo)

  describe("in the host", function()
    it("fail with kind 'stopped' (host exiting), their callbacks run, and it says so", function()
      local status, stdout, stderr = run_host(FIXTURES .. "stranded.lua")
      assert.equal(0, status, stderr)
      assert.truthy(stdout:find("answered: 1", 1, true), stdout)
      assert.truthy(stdout:find("call 1: stopped: host exiting", 1, true), stdout)
      assert.truthy(stdout:find("call 2: stopped", 1, true), stdout)
      assert.truthy(stdout:find("when: stopped", 1, true), stdout)
      local _, lines = stderr:gsub("2 postponed call%(s%) and 1 when%(%) waiter%(s%) in state 'shut' " ..
        "failed with kind 'stopped': the host is exiting", "")
      assert.equal(1, lines, stderr)
      assert.truthy(stderr:find("gate", 1, true), stderr)
    end)

    it("also fail the calls callbacks make while the host fails the others", function()
      local status, stdout, stderr = run_host(FIXTURES .. "stranded_retry.lua")
      assert.equal(0, status, stderr)
      assert.equal("call 1 failed: stopped\nwhen failed: stopped\ncall 2 failed: stopped\n" ..
        "second when failed: stopped\ncall 3 failed: stopped\n", stdout)
      local _, n = stderr:gsub("in state 'down' failed with kind 'stopped'", "")
      assert.equal(1, n, stderr)
      assert.truthy(stderr:find("3 postponed call(s) and 2 when() waiter(s) in state 'down'", 1, true),
        stderr)
    end)
  end)

  describe("in module mode", function()
    it("are logged when modal.run() returns, and stay pending for a later run", function()
      local lines = support.capture_log()
      local M = modal.machine { name = "gate_module", initial = "shut", methods = { "q" },
        states = { shut = { q = "postpone", on = { open = "open" } },
                   open = { q = function() return 1 end } } }
      local c = M:new()
      local d = c:q()
      modal.run()
      local said = 0
      for _, line in ipairs(lines) do
        if line.level == "warn" and line.fields.machine == "gate_module" and line.fields.state == "shut"
            and line.message:find("1 postponed call(s) and 0 when() waiter(s) still waiting", 1, true) then
          said = said + 1
        end
      end
      assert.equal(1, said)
      assert.equal("pending", d:state())
      c:fire("open")
      assert.same({ "succeeded", 1 }, { support.outcome(d) })
    end)
  end)
end)
