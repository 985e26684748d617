-- specs/timer_edges_spec.lua — modal's timers at their edges (doc/loop.md, doc/testing.md):
-- delays too long to count (a delay is at most ~31 years of virtual time; a real one that long
-- stays armed and cancellable), several real-time timers moved onto the testing clock keep
-- their order, and timers cancelled or reset out of deadline order leave the others firing in
-- deadline order.
local modal = require "modal"
local support = require "support"

-- A recorder: r.at(name) is a callback that notes name@modal.now().
local function recorder()
  local r = { seen = {} }
  function r.at(name)
    return function() r.seen[#r.seen + 1] = name .. "@" .. modal.now() end
  end
  return r
end

describe("modal's timers at their edges", function()
  after_each(support.run_undo)

  describe("a delay too long to count", function()
    it("arms a real-time timer that stays armed and cancellable (1e300 s, math.huge)", function()
      local fired = false
      local h1 = modal.call_later(1e300, function() fired = true end)
      local h2 = modal.call_later(math.huge, function() fired = true end)
      assert.is_true(h1:active())
      assert.is_true(h2:active())
      h1:cancel()
      h2:cancel()
      assert.is_false(h1:active())
      assert.is_false(h2:active())
      assert.is_true(support.run_loop(1))                   -- nothing keeps the loop alive
      assert.is_false(fired)
    end)

    it("is capped at about 31 years (1e9 s) of virtual time", function()
      local clock = support.clock()
      local r = recorder()
      modal.call_later(1e300, r.at("far"))
      modal.sleep(math.huge):add_callback(r.at("sleep"))
      assert.same({ 1e9, 1e9 }, clock:pending())
      clock:advance(1e9 - 1)
      assert.same({}, r.seen)
      clock:advance(1)
      assert.same({ "far@1000000000.0", "sleep@1000000000.0" }, r.seen)
    end)

    it("armed in real time, is capped the same when the testing clock takes it over", function()
      local h = modal.call_later(1e300, function() end)
      local clock = support.clock()
      assert.same({ 1e9 }, clock:pending())
      h:cancel()
      assert.same({}, clock:pending())
    end)
  end)

  it("moves several real-time timers onto the testing clock in their deadline order", function()
    local r = recorder()
    modal.call_later(30, r.at("c"))
    modal.call_later(10, r.at("a"))
    modal.call_later(20, r.at("b"))
    modal.call_later(25, r.at("b2"))
    local clock = support.clock()
    local pending = clock:pending()
    assert.equal(4, #pending)
    for i, want in ipairs { 10, 20, 25, 30 } do
      assert.is_true(pending[i] > want - 0.1 and pending[i] <= want, tostring(pending[i]))
    end
    clock:advance(30)
    assert.equal(4, #r.seen)
    local order = {}
    for i, s in ipairs(r.seen) do order[i] = s:match("^(%w+)@") end
    assert.same({ "a", "b", "b2", "c" }, order)
  end)

  it("keeps firing in deadline order when timers are cancelled and reset out of order", function()
    local clock = support.clock()
    local r = recorder()
    local handles, delays = {}, {}
    for i = 1, 60 do
      delays[i] = (i * 37) % 61 + 1                   -- 1..61 s, a scrambled permutation
      handles[i] = modal.call_later(delays[i], r.at("t" .. i))
    end
    local kept = {}
    for i = 60, 1, -1 do                            -- cancel every third, latest armed first
      if i % 3 == 0 then handles[i]:cancel() end
    end
    for i = 1, 60, 5 do                             -- move some of the others (no ties)
      if i % 3 ~= 0 then
        delays[i] = 100.5 - i
        handles[i]:reset(delays[i])
      end
    end
    for i = 1, 60 do
      if i % 3 ~= 0 then kept[#kept + 1] = { name = "t" .. i, at = delays[i] } end
    end
    table.sort(kept, function(a, b) return a.at < b.at end)
    local want = {}
    for i, k in ipairs(kept) do want[i] = k.name .. "@" .. tostring(k.at + 0.0) end
    clock:advance(100)
    assert.same(want, r.seen)
  end)
end)
