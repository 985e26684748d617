-- specs/service_soak_spec.lua — a soak of modal.service over real sockets (doc/policies.md):
-- 20,000 calls, each with a deadline, across 20 restarts of the server. Every call is answered
-- exactly once; answers on one connection come in call order, each to its own call; and the
-- resident memory after the run is within 10% of what it was after a warm-up (the same
-- traffic, until the resident size settles).
local modal = require "modal"
local ss = require "service_support"

-- Under valgrind (make valgrind) everything runs ~30x slower: a smaller soak.
local SLOW = os.getenv("MODAL_VALGRIND") == "1"
local CALLS = SLOW and 2000 or 20000
local RESTARTS = SLOW and 5 or 20
local PER_TICK = 100          -- calls issued every TICK seconds, ...
local TICK = 0.002
local WINDOW = 500            -- at most this many calls outstanding (a steady state)
local DEADLINE = 2

local function rss_kb()
  local f = io.open("/proc/self/statm")
  if not f then return nil end
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4
end

local function settle_memory()
  for _ = 1, 3 do collectgarbage("collect") end
  ss.pause(0.05)
  for _ = 1, 3 do collectgarbage("collect") end
end

describe("modal.service soak", function()
  after_each(ss.cleanup)

  it(string.format("answers %d calls across %d server restarts exactly once, in order, in bounded memory",
    CALLS, RESTARTS), function()
    local s = ss.server()
    local sent = setmetatable({}, { __mode = "k" })      -- conn -> calls sent on it
    local answered = setmetatable({}, { __mode = "k" })  -- conn -> last call answered on it
    local misrouted, out_of_order = 0, 0
    local M = ss.echo {
      backoff = { initial = 0.005, multiplier = 2, jitter = 0.2, max = 0.02 },
      methods = { echo = function(_, conn, id)
        local seq = (sent[conn] or 0) + 1
        sent[conn] = seq
        return conn:request(tostring(id)):add_callback(function(reply)
          if reply ~= tostring(id) then misrouted = misrouted + 1 end
          if seq <= (answered[conn] or 0) then out_of_order = out_of_order + 1 end
          answered[conn] = seq
          return reply
        end)
      end },
    }
    local c = ss.new(M, { port = s.port })

    -- One phase: `calls` calls issued PER_TICK every TICK, the server restarted `restarts`
    -- times along the way. Returns the counts of answers per call and of outcomes.
    local function phase(calls, restarts)
      local times, ok, kinds = {}, 0, {}
      for i = 1, calls do times[i] = 0 end
      local issued, ticks, done_restarts = 0, 0, 0
      local every = math.max(1, (calls // PER_TICK) // (restarts + 1))
      local function answer(v, id)
        times[id] = times[id] + 1
        if modal.is_failure(v) then kinds[v.kind] = (kinds[v.kind] or 0) + 1 else ok = ok + 1 end
      end
      local function issue()
        ticks = ticks + 1
        local outstanding = issued - ok
        for _, k in pairs(kinds) do outstanding = outstanding - k end
        for _ = 1, math.min(PER_TICK, WINDOW - outstanding) do
          if issued < calls then
            issued = issued + 1
            c:echo(issued):add_timeout(DEADLINE):add_both(answer, issued)
          end
        end
        if ticks % every == 0 and done_restarts < restarts then
          done_restarts = done_restarts + 1
          s:stop()
          modal.call_later(0.01, function() s:start() end)
        end
        if issued < calls then modal.call_later(TICK, issue) end
      end
      issue()
      local total = function()
        local n = ok
        for _, k in pairs(kinds) do n = n + k end
        return n
      end
      assert.is_true(ss.wait(function() return total() >= calls end,
        DEADLINE + calls / PER_TICK * TICK * 4 + 5))
      ss.pause(0.05)                                    -- nothing answers twice later
      local once = 0
      for i = 1, calls do if times[i] == 1 then once = once + 1 end end
      return once, ok, kinds, done_restarts
    end

    -- Warm-up: the same traffic, until the resident size settles (the allocator keeps the Lua
    -- heap's high-water mark, which a phase or two reach).
    local before
    for _ = 1, 4 do
      local once, ok, _, r = phase(CALLS, RESTARTS)
      assert.equal(CALLS, once)
      assert.equal(RESTARTS, r)
      assert.is_true(ok > 0)
      settle_memory()
      local now = rss_kb()
      local settled = before and now <= before * 1.02
      before = now
      if settled or not now then break end
    end

    local t0 = modal.now()
    local once, ok, kinds, r = phase(CALLS, RESTARTS)
    local took = modal.now() - t0
    io.stderr:write(string.format("soak: %d calls, %d restarts, %.1f s, %d ok, RSS %d -> %d KiB\n", CALLS,
      RESTARTS, took, ok, before or -1, rss_kb() or -1))
    assert.equal(CALLS, once)
    assert.equal(RESTARTS, r)
    assert.equal(0, misrouted)
    assert.equal(0, out_of_order)
    for kind in pairs(kinds) do
      assert.is_true(kind == "unavailable" or kind == "timeout", "a call failed with kind " .. kind)
    end
    -- Most calls succeed; under valgrind more of them meet their deadline in a backoff first.
    local least = SLOW and CALLS // 4 or CALLS // 2
    assert.is_true(ok >= least, string.format("only %d of %d calls succeeded", ok, CALLS))
    assert.equal(0, c:postponed())
    assert.is_true(s.accepts >= RESTARTS + 1)
    settle_memory()
    local after = rss_kb()

    if before and after then
      assert.is_true(after <= before * 1.10,
        string.format("RSS %d KiB after the run, %d KiB after warm-up", after,
        before))
    end
    assert.is_true(took < 30, string.format("the soak took %.1f s", took))
  end)
end)
