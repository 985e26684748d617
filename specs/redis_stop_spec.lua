-- specs/redis_stop_spec.lua — examples/redis/server.lua when the host is asked to stop
-- (examples/redis/README.md): SIGTERM stops and reaps the redis-server and the host exits,
-- and a second SIGTERM right after the first (the host exits at once) leaves no redis-server
-- running either. The host runs as a child process; redis-server is Debian's.
local uv = require "luv"
local support = require "support"
local ps = require "pool_support"

local function hold()
  local p = support.spawn_host { "run", "specs/fixtures/redis/hold.lua" }
  finally(p.reap)
  assert.is_true(support.wait_for(p.said("redis pid "), 8), p.out .. p.err)
  local pid, dir = p.out:match("redis pid (%d+) dir (%S+)")
  pid = tonumber(pid)
  finally(function() if ps.running(pid) then uv.kill(pid, "sigkill") end end)
  assert.is_true(ps.running(pid))
  return p, pid, dir
end

describe("examples/redis/server.lua in a host that is told to stop", function()
  it("SIGTERM: the redis-server is stopped and reaped, its folder removed, and the host exits 0",
     function()
    local p, pid, dir = hold()
    uv.kill(p.pid, "sigterm")
    assert.is_true(support.wait_for(p.done, 5), "the host did not exit: " .. p.out .. p.err)
    assert.equal(0, p.code, p.err)
    assert.is_true(ps.gone(pid), "redis-server " .. pid .. " is left")
    assert.is_nil(uv.fs_stat(dir), dir .. " is left")
  end)

  it("two SIGTERMs at once: the host exits at the second, and the redis-server ends anyway", function()
    local p, pid = hold()
    uv.kill(p.pid, "sigterm")
    uv.kill(p.pid, "sigterm")
    assert.is_true(support.wait_for(p.done, 5), "the host did not exit: " .. p.out .. p.err)
    assert.is_true(support.wait_for(function() return not ps.running(pid) end, 5),
      "redis-server " .. pid .. " outlived its host")
  end)
end)
