-- specs/worker_parent_spec.lua — modal.worker when its host dies without a word (doc/policies.md,
-- "Writing a worker"): a worker busy in a long handler does not wait for the handler to return
-- (serve's own check while Lua runs; worker.parent_alive() for a handler waiting in C); then
-- parent_alive() and serve's argument check. The host runs as a child process.
local uv = require "luv"
local support = require "support"
local ps = require "pool_support"
local worker = require "modal.worker"

describe("modal.worker", function()
  it("a host killed (SIGKILL) while its workers are busy in long handlers: they exit soon", function()
    local p = support.spawn_host { "run", "specs/fixtures/pool/busy_host.lua" }
    finally(p.reap)
    assert.is_true(support.wait_for(p.said("pids: "), 5), p.out .. p.err)
    local pids = {}
    for pid in p.out:match("pids: ([%d ]+)\n"):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    assert.equal(2, #pids, p.out)
    for _, pid in ipairs(pids) do assert.is_true(ps.running(pid), "worker " .. pid .. " is not up") end
    uv.kill(p.pid, "sigkill")
    assert.is_true(support.wait_for(p.done, 5))
    -- orphans now: whoever adopted them reaps them, so a zombie counts as gone
    assert.is_true(support.wait_for(function()
      for _, pid in ipairs(pids) do if ps.running(pid) then return false end end
      return true
    end, 5), "a busy worker outlived its host")
  end)

  it("parent_alive() is true while the process that started it lives", function()
    assert.equal(math.tointeger(uv.os_getppid()), worker.parent_pid)
    assert.is_true(worker.parent_alive())
  end)

  it("serve refuses a handler that is not a function, saying so", function()
    local ok, err = pcall(worker.serve, "upper")
    assert.is_false(ok)
    assert.matches("modal.worker.serve: expected a handler function(line) -> answer, got string",
      err, 1, true)
  end)
end)
