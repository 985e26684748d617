-- specs/fuzz_findings_spec.lua — what `make fuzz` found (doc/fuzzing.md), each reproduced
-- through the public Lua API from the steps its report listed, so that it stays fixed without
-- the fuzzer.
local modal = require "modal"
local support = require "support"

describe("fuzz finding", function()
  after_each(support.run_undo)

  -- definition harness: `timeout = 0` with `on.timeout` back to the same state re-arms a
  -- zero-delay timer on every entry. The clock must raise (doc/testing.md), not hang, and
  -- leave the instance in its state and usable.
  it("a state timeout of 0 re-entering its state makes clock:advance raise, not hang", function()
    local clock = support.clock()
    local M = modal.machine {
      name = "zero_timeout", initial = "a", methods = { "ping" },
      states = { a = { timeout = 0, on = { timeout = "a" }, ping = function() return "pong" end } },
    }
    local c = M:new()
    local entries = 0
    c:on_transition(function() entries = entries + 1 end)
    local ok, err = pcall(clock.advance, clock, 1)
    assert.is_false(ok)
    assert.matches("timers in a row were armed and ran at 0.0 s", err, 1, true)
    assert.matches("never lets time pass", err, 1, true)
    assert.is_true(entries >= 100000, entries .. " entries")
    assert.equal("a", c.state)
    clock:drop()
    assert.same({ "succeeded", "pong" }, { support.outcome(c:ping()) })
  end)
end)
