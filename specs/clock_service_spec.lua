-- specs/clock_service_spec.lua — the connection policies on the testing clock (doc/testing.md):
-- a service's backoff schedule checked to the exact virtual time (jitter 0), and its
-- definition's paths taking every transition. Pending until modal.service exists.
local modal = require "modal"
local support = require "support"
local testing = require "modal.testing"

-- modal.service, wherever the Lua half puts it; nil while it does not exist.
local function service_of()
  if modal.service then return modal.service end
  local ok, m = pcall(require, "modal.service")
  if ok and type(m) == "table" then return m.service or m end
  return nil
end

describe("modal.service on the testing clock", function()
  after_each(support.run_undo)

  it("backs off by its ten delays exactly, with jitter 0, in under 10 ms of wall time", function()
    local service = service_of()
    if not service then
      pending("modal.service is not built yet")
      return
    end
    local clock = support.clock()
    local Echo = service {
      name = "clock_echo",
      connect = function() return modal.fail("refused", "no server") end,
      methods = { echo = function(_, conn, line) return conn:request(line) end },
      backoff = { initial = 1, multiplier = 1.6, jitter = 0, max = 120 },
    }
    local c = Echo:new {}
    local attempts = {}
    c:on_transition(function(_, _, to)
      if to == "connecting" then attempts[#attempts + 1] = modal.now() end
    end)
    local call = c:echo("hello")            -- the first call starts connecting, and waits
    local wall = os.clock()
    while #attempts < 11 do assert(clock:next(), "nothing armed while backing off") end
    wall = os.clock() - wall
    local t, expected = attempts[1], {}
    for i = 1, 10 do
      t = t + math.min(1.6 ^ (i - 1), 120)
      expected[i] = t
    end
    for i = 1, 10 do
      assert.is_true(math.abs(attempts[i + 1] - expected[i]) < 1e-9,
        ("attempt %d at %.9f s, expected %.9f s"):format(i + 1, attempts[i + 1], expected[i]))
    end
    local slow = (os.getenv("MODAL_VALGRIND") == "1" and 50)       -- valgrind, make asan
      or (os.getenv("MODAL_SANITIZE") == "1" and 5) or 1
    assert.is_true(wall < 0.01 * slow, "the schedule took " .. wall * 1000 .. " ms of CPU time")
    assert.equal("pending", call:state())
    c:close()
    assert.equal("failed", (support.outcome(call)))
  end)

  it("has paths that take every transition of its definition", function()
    local service = service_of()
    if not service then
      pending("modal.service is not built yet")
      return
    end
    local Echo = service {
      name = "clock_paths",
      connect = function() return modal.deferred() end,
      methods = { echo = function(_, conn, line) return conn:request(line) end },
      backoff = { initial = 1, multiplier = 2, jitter = 0, max = 4 },
    }
    local paths, coverage = testing.paths(Echo)
    for _, e in ipairs(coverage.edges) do assert.is_true(e.taken, e.id) end
    for _, path in ipairs(paths) do testing.walk(Echo, path) end
  end)
end)
