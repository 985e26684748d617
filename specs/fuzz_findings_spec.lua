-- specs/fuzz_findings_spec.lua — what `make fuzz` found (doc/fuzzing.md), each reproduced
-- through the public Lua API from the steps its report listed, so that it stays fixed without
-- the fuzzer.
local modal = require "modal"
local support = require "support"
local uv = require "luv"

-- A folder of this run's own, removed at the end of the file's tests.
local function tmpdir()
  local p = assert(io.popen("mktemp -d /tmp/modal_fuzz_findings.XXXXXX"))
  local dir = assert(p:read("l"))
  p:close()
  return dir
end

describe("fuzz finding", function()
  after_each(support.run_undo)

  -- definition harness: `timeout = 0` with `on.timeout` back to the same state re-arms a
  -- zero-delay timer on every entry. The clock must raise (doc/testing.md), not hang, and
  -- leave the instance in its state and usable.
  -- definition harness: `timeout = math.maxinteger` (capped at 1e9 s) re-entering its state,
  -- and clock:next() called over and over, walked the clock past its range (2^62 ns): the
  -- deadlines went on growing until clock:advance(2) raised, and later ones would have wrapped
  -- around 2^64 ns into the past. A deadline past the range is now kept at its end, which
  -- the clock never reaches: next() says so.
  it("a longest state timeout re-entered by next() after next() stops at the clock's end", function()
    local clock = support.clock()
    local M = modal.machine {
      name = "longest_timeout", initial = "a", methods = { "ping" },
      states = { a = { timeout = math.maxinteger, on = { timeout = "a" },
                       run = function() return modal.fail("app", "job failed") end,
                       ignore = { "done", "error" }, ping = function() return "pong" end } },
    }
    local c = M:new()
    local entries = 0
    c:on_transition(function() entries = entries + 1 end)
    local times = {}
    for i = 1, 4 do times[i] = (clock:next()) end
    assert.same({ 1e9, 2e9, 3e9, 4e9 }, times)
    assert.equal(4, entries)
    assert.same({ 2 ^ 62 / 1e9 }, clock:pending())
    for _ = 1, 20 do
      local ok, err = pcall(clock.next, clock)
      assert.is_false(ok)
      assert.matches("clock:next: the next deadline is past the clock's range", err, 1, true)
    end
    assert.equal(4e9, modal.now())
    clock:advance(2)
    assert.equal(4, entries)
    assert.equal("a", c.state)
    clock:drop()
    assert.same({ "succeeded", "pong" }, { support.outcome(c:ping()) })
  end)

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

  -- definition harness: a `run` that returns a plain value is done at once, and `on.done`
  -- back to the same state starts it again: a loop without waiting, inside M:new(). modal
  -- says so once, at warn, naming the cycle, and keeps going (doc/machines.md): the
  -- definition's job is to stop, as this one does after 150,000 rounds.
  it("a job done at once that re-enters its own state is warned about once, with its cycle", function()
    support.clock()                   -- its state timeout is virtual, dropped after the test
    local lines = support.capture_log()
    local rounds = 0
    local M = modal.machine {
      name = "done_at_once", initial = "a", methods = {}, ignore = { "error" },
      states = { a = {
        run = function()
          rounds = rounds + 1
          if rounds < 150000 then return false end
          return modal.deferred()                       -- pending: the loop ends here
        end,
        timeout = 1, on = { done = "a", timeout = "a" },
      } },
    }
    local c = M:new()
    assert.equal(150000, rounds)
    assert.equal("a", c.state)
    local warned = {}
    for _, line in ipairs(lines) do
      if line.level == "warn" then warned[#warned + 1] = line.message end
    end
    assert.same({ "100000 transitions in one run to completion: the definition loops without "
                  .. "waiting (cycle: a -> a)" }, warned)
  end)

  -- admin harness: `reload fuzzed_admin<zero byte>...` over the admin socket reloaded machine
  -- 'fuzzed_admin': modal.reload and modal.load looked the string up (and opened it) as a C
  -- string, so a zero byte cut it to its prefix. A name or path with a zero byte names nothing.
  describe("a zero byte in a name or path", function()
    local dir, path, M
    setup(function()
      dir = tmpdir()
      path = dir .. "/zero_app.lua"
      local f = assert(io.open(path, "w"))
      f:write('return { name = "zero_app", initial = "a", methods = {}, states = { a = {} } }\n')
      f:close()
      M = modal.load(path)
    end)
    teardown(function()
      os.remove(path)
      uv.fs_rmdir(dir)
    end)

    it("modal.reload of a loaded name followed by a zero byte reloads nothing", function()
      local log = support.capture_log()
      local got, err = modal.reload("zero_app\0junk")
      assert.is_nil(got)
      assert.matches("modal.reload: 'zero_app' is followed by a zero byte (13 bytes in all)",
                     err, 1, true)
      assert.equal(0, modal.stats().machines.zero_app.reloads)
      assert.equal(0, #log)
      assert.equal(M, modal.reload("zero_app"))         -- the name itself still reloads
      assert.equal(1, modal.stats().machines.zero_app.reloads)
    end)

    it("modal.reload of a loaded path followed by a zero byte reloads nothing", function()
      local got, err = modal.reload(path .. "\0")
      assert.is_nil(got)
      assert.matches("is followed by a zero byte", err, 1, true)
    end)

    it("modal.load of a path followed by a zero byte raises, and opens nothing", function()
      local ok, err = pcall(modal.load, dir .. "/other.lua\0/zero_app.lua")
      assert.is_false(ok)
      assert.matches("modal.load: the path '" .. dir .. "/other.lua' is followed by a zero byte",
                     err, 1, true)
    end)

    it("the admin command 'reload NAME<zero byte>' is refused and says why", function()
      local host = require "modal.host"
      local reply = host.command("reload zero_app\0\134")
      assert.is_false(reply.ok)
      assert.matches("is followed by a zero byte", reply.error, 1, true)
    end)
  end)
end)
