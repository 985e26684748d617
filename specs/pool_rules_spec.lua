-- specs/pool_rules_spec.lua — modal.pool, each rule of doc/policies.md ("Pool"), unhappy paths
-- first: a crashed worker's call and its diagnosis, the restart backoff (on the testing
-- clock), the intensity limit and reset(), close(), then calls: on demand, the line protocol,
-- one call per worker, size, encode/decode, idle_timeout, cancel, max_queued. Workers are real
-- processes (specs/fixtures/pool/worker.lua); after each test every worker seen must be gone.
local modal = require "modal"
local support = require "support"
local ps = require "pool_support"

local function call(p, ...) return ps.watch(p:call(...)) end

describe("modal.pool", function()
  after_each(ps.cleanup)

  describe("options", function()
    it("refuses bad options, every one at once, each named", function()
      local ok, err = pcall(modal.pool, { cmd = "worker", size = 0, sise = 2, backoff = { initial = -1 },
        idle_timeout = "soon", encode = 3 })
      assert.is_false(ok)
      for _, text in ipairs {
        "modal.pool: ",
        "sise: unknown option (did you mean 'size'?)",
        'cmd: expected an argv list { "program", "arg", ... } (the program is found on PATH), got "worker"',
        "size: expected a whole number of workers >= 1, got 0",
        'idle_timeout: expected a number of seconds > 0, got "soon"',
        "encode: expected a function, got 3",
        "backoff.initial: expected a number of seconds >= 0, got -1",
      } do
        assert.matches(text, err, 1, true)
      end
    end)
  end)

  describe("a worker that dies", function()
    it("fails the call it held with kind worker: pid, exit status, restart count, stderr's last lines",
       function()
      local p = ps.pool { size = 1 }
      local pid = call(p, "pid")
      assert.is_true(ps.wait(function() return pid.fired end))
      ps.pids(p)
      local said = call(p, "stderr first words")
      local crash = call(p, "crash it broke")
      assert.is_true(ps.wait(function() return crash.fired end))
      assert.is_true(said.ok)
      assert.is_false(crash.ok)
      local f = crash.value
      assert.equal("worker", f.kind)
      assert.matches(p.machine.name .. "#%d+ worker pid " .. pid.value .. " exited with status 1", f.message)
      assert.matches("restart 1 (at most 5 within 30 s)", f.message, 1, true)
      assert.matches("last stderr: first words | worker: it broke", f.message, 1, true)
      assert.equal(tonumber(pid.value), f.value.pid)
      assert.equal(1, f.value.status)
      assert.equal(1, f.value.restarts)
      assert.same({ "first words", "worker: it broke" }, f.value.stderr)
    end)

    it("names the signal of a worker killed by one", function()
      local p = ps.pool { size = 1 }
      -- SIGABRT (an assert in a C worker): under `make asan` the workers carry the preloaded ASan
      -- runtime, which turns a SIGSEGV into an abort of its own, but lets SIGABRT through
      local got = call(p, "kill SIGABRT")
      assert.is_true(ps.wait(function() return got.fired end))
      assert.equal("worker", got.value.kind)
      assert.matches("killed by SIGABRT (signal 6)", got.value.message, 1, true)
      assert.equal(6, got.value.value.signal)
      assert.equal("SIGABRT", got.value.value.signal_name)
    end)

    it("fails only the call it held: the waiting calls go to a replacement, started after the backoff",
       function()
      local clock = support.clock()
      local p = ps.pool { size = 1 }
      local crash = call(p, "crash once")
      local a, b = call(p, "echo a"), call(p, "echo b")
      ps.pids(p)
      assert.is_true(ps.wait(function() return crash.fired end))
      assert.equal("worker", crash.value.kind)
      assert.is_false(a.fired or b.fired)
      assert.same({}, modal.pool.pids(p))           -- nothing starts before the backoff's 0.05 s
      assert.near(0.05, modal.pool.status(p).retry_in, 1e-9)
      clock:advance(0.049)
      assert.same({}, modal.pool.pids(p))
      clock:advance(0.001)
      assert.equal(1, #ps.pids(p))
      assert.is_true(ps.wait(function() return b.fired end))
      assert.equal("a", a.value)
      assert.equal("b", b.value)
      assert.equal(1, a.n + b.n - 1)
    end)

    it("waits longer after each crash in a row: the backoff grows, and restarts when calls wait", function()
      local clock = support.clock()
      local p = ps.pool { size = 1, backoff = { initial = 1, multiplier = 2, max = 3, jitter = 0 } }
      local waits = {}
      for i = 1, 4 do
        local got = call(p, "crash number " .. i)
        assert.is_true(ps.wait(function() return got.fired end))
        assert.matches("restart " .. i .. " ", got.value.message, 1, true)
        waits[i] = modal.pool.status(p).retry_in
        clock:advance(waits[i])                       -- no call waits: nothing starts meanwhile
      end
      assert.same({ 1, 2, 3, 3 }, waits)
      assert.equal("idle", p.state)                  -- no worker runs until the next call
      local later = call(p, "echo later")
      assert.is_true(ps.wait(function() return later.fired end))
      assert.equal("later", later.value)
    end)

    it("waits 0.5, 1, 2 s by default: the default backoff has no jitter", function()
      local clock = support.clock()
      local p = ps.pool { size = 1, backoff = false }     -- the pool's own default
      local waits = {}
      for i = 1, 3 do
        local got = call(p, "crash number " .. i)
        assert.is_true(ps.wait(function() return got.fired end))
        waits[i] = modal.pool.status(p).retry_in
        clock:advance(waits[i])
      end
      assert.same({ 0.5, 1, 2 }, waits)
    end)

    it("starts the backoff again once a worker has stayed up restart_window seconds", function()
      local clock = support.clock()
      local p = ps.pool { size = 1, restart_window = 10,
                          backoff = { initial = 1, multiplier = 2, jitter = 0 } }
      local got = call(p, "crash first")
      assert.is_true(ps.wait(function() return got.fired end))
      assert.equal(1, modal.pool.status(p).retry_in)
      clock:advance(1)
      local up = call(p, "pid")
      assert.is_true(ps.wait(function() return up.fired end))
      clock:advance(9.9)
      got = call(p, "crash soon")                     -- up 9.9 s: the backoff goes on
      assert.is_true(ps.wait(function() return got.fired end))
      assert.equal(2, modal.pool.status(p).retry_in)
      clock:advance(2)
      up = call(p, "pid")
      assert.is_true(ps.wait(function() return up.fired end))
      clock:advance(10)                               -- up 10 s: the backoff starts again
      got = call(p, "crash late")
      assert.is_true(ps.wait(function() return got.fired end))
      assert.equal(1, modal.pool.status(p).retry_in)
    end)
  end)

  describe("the intensity limit", function()
    it("fails the pool past max_restarts within restart_window: waiting and later calls fail " ..
       "unavailable with the diagnosis until reset()", function()
      local clock = support.clock()
      local p = ps.pool { size = 1, max_restarts = 2 }
      local crashes = { call(p, "crash one"), call(p, "crash two"), call(p, "crash three") }
      local waiting = call(p, "echo waiting")
      for i = 1, 3 do
        assert.is_true(ps.wait(function() return crashes[i].fired end), "crash " .. i)
        assert.equal("worker", crashes[i].value.kind)
        if i < 3 then clock:advance(modal.pool.status(p).retry_in) end
      end
      assert.matches("restart 3 is more than max_restarts = 2 within 30 s: the pool failed",
        crashes[3].value.message, 1, true)
      assert.equal("failed", p.state)
      assert.is_true(waiting.fired)
      local f = waiting.value
      assert.equal("unavailable", f.kind)
      assert.matches(p.machine.name .. "#%d+ failed: 3 worker restarts within 30 s %(more than " ..
        "max_restarts = 2%); last: worker pid %d+ exited with status 1", f.message)
      assert.matches("last stderr: worker: three; p:reset() starts again", f.message, 1, true)
      assert.equal("failed", f.value.state)
      local later = call(p, "echo later")
      assert.is_true(later.fired)                     -- at once, without a worker
      assert.equal(f.message, later.value.message)
      assert.same({}, modal.pool.pids(p))
      p:reset()
      assert.equal("idle", p.state)
      local again = call(p, "echo again")
      assert.is_true(ps.wait(function() return again.fired end))
      assert.equal("again", again.value)
    end)

    it("counts only the restarts within restart_window", function()
      local clock = support.clock()
      local p = ps.pool { size = 1, max_restarts = 1, restart_window = 5,
                          backoff = { initial = 3, multiplier = 1, jitter = 0 } }
      for i = 1, 4 do
        local got = call(p, "crash " .. i)
        assert.is_true(ps.wait(function() return got.fired end))
        assert.equal("idle", p.state)                -- no worker, none failed
        clock:advance(3)                             -- 6 s between crashes: one in the window each time
        local up = call(p, "pid")
        assert.is_true(ps.wait(function() return up.fired end))
        clock:advance(3)
      end
    end)
  end)

  describe("close()", function()
    it("kills and reaps every worker: calls in flight and waiting fail stopped, so do later ones", function()
      local p = ps.pool { size = 2 }
      local h1, h2, q = call(p, "hang"), call(p, "hang"), call(p, "echo queued")
      local pids = ps.pids(p)
      assert.equal(2, #pids)
      local closed = ps.watch(p:close())
      assert.equal("closing", p.state)
      assert.is_true(q.fired)
      assert.equal("stopped", q.value.kind)
      assert.is_true(ps.wait(function() return closed.fired end))
      assert.equal("closed", p.state)
      assert.is_true(closed.ok)
      for _, got in ipairs { h1, h2 } do
        assert.equal("stopped", got.value.kind)
        assert.matches("the pool was closed while it held the call", got.value.message, 1, true)
      end
      for _, pid in ipairs(pids) do assert.is_true(ps.gone(pid), "pid " .. pid) end
      local later = call(p, "echo later")
      assert.equal("stopped", later.value.kind)
      assert.is_true(ps.watch(p:close()).ok)
    end)

    it("kills a worker that ignores its stdin and SIGTERM after kill_timeout", function()
      local p = ps.pool { size = 1, kill_timeout = 0.2, env = { POOL_WORKER_MODE = "stubborn",
        PATH = os.getenv("PATH") } }
      local up = call(p, "pid")
      assert.is_true(ps.wait(function() return up.fired end))
      local pid = tonumber(up.value)
      local t0 = require("luv").hrtime()
      local closed = ps.watch(p:close())
      assert.is_true(ps.wait(function() return closed.fired end))
      assert.is_true((require("luv").hrtime() - t0) / 1e9 >= 0.15)
      assert.is_true(ps.gone(pid))
    end)
  end)

  describe("calls", function()
    it("start workers on demand: none before the first call", function()
      local p = ps.pool {}
      assert.equal("idle", p.state)
      assert.same({}, modal.pool.pids(p))
      local got = call(p, "echo hello")
      assert.equal("running", p.state)
      assert.equal(1, #ps.pids(p))
      assert.is_true(ps.wait(function() return got.fired end))
      assert.equal("hello", got.value)
    end)

    it("speak one line each way by default; a value that is not a line fails the call", function()
      local p = ps.pool {}
      local nl = call(p, "echo a\nb")
      assert.equal("error", nl.value.kind)
      assert.matches("a line may not hold a newline", nl.value.message, 1, true)
      local tbl = call(p, {})
      assert.equal("error", tbl.value.kind)
      assert.matches("expected a line (a string), got table", tbl.value.message, 1, true)
      local num = call(p, 42)
      assert.equal("unknown: 42", (ps.wait(function() return num.fired end) and num.value))
    end)

    it("give a worker one call at a time, and start at most size workers", function()
      local p = ps.pool { size = 3 }
      local got, most = {}, 0
      for i = 1, 12 do got[i] = call(p, "sleep 20 " .. i) end
      assert.is_true(ps.wait(function()
        most = math.max(most, #ps.pids(p))
        return got[12].fired
      end))
      assert.equal(3, most)
      for i = 1, 12 do assert.equal(tostring(i), got[i].value) end
      local overlaps = {}
      for i = 1, 3 do overlaps[i] = call(p, "sleep 30 x") end  -- one on each worker
      assert.is_true(ps.wait(function() return overlaps[3].fired end))
      local counts = {}
      for i = 1, 3 do counts[i] = call(p, "overlaps") end
      assert.is_true(ps.wait(function() return counts[1].fired and counts[2].fired and counts[3].fired end))
      for i = 1, 3 do assert.equal("0", counts[i].value) end
    end)

    it("take encode and decode for another protocol; decode may answer with a failure", function()
      local p = ps.pool {
        encode = function(cmd, arg) return cmd .. " " .. arg .. "\n" end,
        decode = function(buf)
          local line, rest = buf:match("^([^\n]*)\n(.*)$")
          if not line then return nil end
          if line:match("^ERR ") then return modal.failure("remote", line:sub(5)), rest end
          return { text = line }, rest
        end,
      }
      local ok, bad = call(p, "echo", "fine"), call(p, "echo", "ERR no such key")
      assert.is_true(ps.wait(function() return ok.fired and bad.fired end))
      assert.same({ text = "fine" }, ok.value)
      assert.equal("remote", bad.value.kind)
      assert.equal("no such key", bad.value.message)
    end)

    it("stop a worker idle for idle_timeout (not a crash); the next call starts another", function()
      local clock = support.clock()
      local p = ps.pool { size = 1, idle_timeout = 5 }
      local got = call(p, "pid")
      assert.is_true(ps.wait(function() return got.fired end))
      local pid = tonumber(got.value)
      clock:advance(4.9)
      assert.is_true(ps.running(pid))
      got = call(p, "pid")                            -- a call starts the idle time again
      assert.is_true(ps.wait(function() return got.fired end))
      clock:advance(4.9)
      assert.is_true(ps.running(pid))
      clock:advance(0.1)
      assert.is_true(ps.wait(function() return p.state == "idle" end))
      assert.is_true(ps.gone(pid))
      assert.equal(0, modal.pool.status(p).restarts_total)
      got = call(p, "pid")
      assert.is_true(ps.wait(function() return got.fired end))
      assert.not_equal(pid, tonumber(got.value))
    end)

    it("take a cancelled waiting call out of the queue: it is never sent", function()
      local p = ps.pool { size = 1 }
      local first = call(p, "sleep 100 first")
      local d = p:call("echo cancelled")
      local last = call(p, "echo last")
      assert.equal(2, modal.pool.status(p).queued)
      d:cancel()
      assert.equal("cancelled", select(2, support.outcome(d)).kind)
      assert.equal(1, modal.pool.status(p).queued)
      assert.is_true(ps.wait(function() return last.fired end))
      assert.equal("first", first.value)
      assert.equal("last", last.value)
    end)

    it("stop the worker of a cancelled call in flight and start another: not a crash", function()
      local p = ps.pool { size = 1 }
      local up = call(p, "pid")
      assert.is_true(ps.wait(function() return up.fired end))
      local d = p:call("hang")
      d:add_timeout(0.1)
      local hung = ps.watch(d)
      local after = call(p, "pid")
      assert.is_true(ps.wait(function() return after.fired end))
      assert.equal("timeout", hung.value.kind)
      assert.not_equal(up.value, after.value)
      assert.is_true(ps.wait(function() return ps.gone(tonumber(up.value)) end))
      assert.equal(0, modal.pool.status(p).restarts_total)
    end)

    it("fail with overloaded past max_queued waiting calls", function()
      local p = ps.pool { size = 1, max_queued = 2 }
      local calls = { call(p, "sleep 50 a"), call(p, "echo b"), call(p, "echo c"), call(p, "echo d") }
      assert.is_true(calls[4].fired)
      assert.equal("overloaded", calls[4].value.kind)
      assert.matches("2 calls are waiting for a worker (max_queued)", calls[4].value.message, 1, true)
      assert.is_true(ps.wait(function() return calls[3].fired end))
      assert.equal("c", calls[3].value)
    end)

    it("take nil with a rest as an answer of nil, and nothing (or nil alone) as incomplete", function()
      local p = ps.pool { size = 1, decode = function(buf)
        local line, rest = buf:match("^([^\n]*)\n(.*)$")
        if not line then return nil end                       -- incomplete, said as nil alone
        if line == "null" then return nil, rest end           -- the answer is nil
        return line, rest
      end }
      local null, after = call(p, "echo null"), call(p, "echo after")
      assert.is_true(ps.wait(function() return after.fired end))
      assert.is_true(null.ok)
      assert.is_nil(null.value)
      assert.equal("after", after.value)
    end)

    it("fail the call, and stop the worker, when decode answers without taking from the buffer",
       function()
      local lines = support.capture_log()
      local p = ps.pool { size = 1, decode = function(buf)
        local line, rest = buf:match("^([^\n]*)\n(.*)$")
        if line == "stuck" then return "again and again", buf end   -- would answer for ever
        if line then return line, rest end
      end }
      local stuck = call(p, "echo stuck")
      assert.is_true(ps.wait(function() return stuck.fired end))
      assert.equal("error", stuck.value.kind)
      assert.matches("decode returned an answer but took nothing from the buffer", stuck.value.message,
        1, true)
      local next_call = call(p, "echo next")                  -- a new worker answers it
      assert.is_true(ps.wait(function() return next_call.fired end))
      assert.equal("next", next_call.value)
      local logged = false
      for _, l in ipairs(lines) do
        if l.level == "error" and l.message:find("took nothing from the buffer", 1, true) then
          logged = true
        end
      end
      assert.is_true(logged)
    end)

    it("log an answer that comes with no call in flight", function()
      local lines = support.capture_log()
      local p = ps.pool { size = 1, decode = function(buf)
        local line, rest = buf:match("^([^\n]*)\n(.*)$")
        if line == "ok" then return "ok", rest .. "extra\n" end    -- a second answer appears
        if line then return line, rest end
      end }
      local got = call(p, "stderr x")
      assert.is_true(ps.wait(function() return got.fired end))
      local found
      for _, l in ipairs(lines) do
        local text = 'wrote an answer while it held no call (dropped): "extra"'
        if l.message:find(text, 1, true) then found = l end
      end
      assert.is_table(found)
      assert.equal("warn", found.level)
    end)
  end)
end)
