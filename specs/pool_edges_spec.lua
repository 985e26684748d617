-- specs/pool_edges_spec.lua — modal.pool at its edges (doc/policies.md, "Pool"), unhappy paths
-- first: extra lines a worker writes are dropped, not handed to the next call; the crashing
-- call's failure comes before the unavailable failures of the calls waiting when the limit is
-- hit; f.value.signal only for a signal; bad cmd, env, cwd and max_queued refused up front,
-- named; a spawn failure names the cwd that caused it. Workers are real processes
-- (specs/fixtures/pool/worker.lua); after each test every worker seen must be gone.
local modal = require "modal"
local uv = require "luv"
local support = require "support"
local ps = require "pool_support"

local function call(p, ...) return ps.watch(p:call(...)) end

local function strays(log)
  local out = {}
  for _, l in ipairs(log) do
    local text = l.message:match("wrote an answer while it held no call %(dropped%): (.*)$")
    if text then out[#out + 1] = text end
  end
  return out
end

local function refused(opts)
  local ok, err = pcall(modal.pool, opts)
  assert.is_false(ok)
  return err
end

describe("modal.pool at its edges", function()
  after_each(ps.cleanup)

  describe("a worker that writes extra lines", function()
    it("lines after the answer in the same read are dropped, and the next call gets its own answer",
       function()
      local log = support.capture_log()
      local p = ps.pool { size = 1 }
      local first = call(p, "lines A B C")
      local second = call(p, "echo next")           -- waits: it is sent once A answered the first
      assert.is_true(ps.wait(function() return second.fired end))
      ps.pids(p)
      assert.equal("A", first.value)
      assert.equal("next", second.value)
      assert.same({ '"B"', '"C"' }, strays(log))
      local third = call(p, "echo third")
      assert.is_true(ps.wait(function() return third.fired end))
      assert.equal("third", third.value)
    end)

    it("a line written while the worker holds no call is dropped, not kept for the next call", function()
      local log = support.capture_log()
      local p = ps.pool { size = 1 }
      local first = call(p, "later 50 stray")
      assert.is_true(ps.wait(function() return first.fired end))
      ps.pids(p)
      assert.equal("ok", first.value)
      assert.is_true(ps.wait(function() return #strays(log) == 1 end))
      assert.same({ '"stray"' }, strays(log))
      local second = call(p, "echo after")
      assert.is_true(ps.wait(function() return second.fired end))
      assert.equal("after", second.value)
    end)

    it("with a decode: extra answers in the same read are dropped the same way", function()
      local log = support.capture_log()
      local p = ps.pool { size = 1, decode = function(buf)
        local i = buf:find("\n", 1, true)
        if i then return "<" .. buf:sub(1, i - 1) .. ">", buf:sub(i + 1) end
      end }
      local first = call(p, "lines A B")
      local second = call(p, "echo next")
      assert.is_true(ps.wait(function() return second.fired end))
      ps.pids(p)
      assert.equal("<A>", first.value)
      assert.equal("<next>", second.value)
      assert.same({ '"<B>"' }, strays(log))
    end)
  end)

  describe("names", function()
    it("gives pools made without a name distinct default names; a given name is kept", function()
      local a = ps.pool { name = false }
      local b = ps.pool { name = false }
      local named = ps.pool { name = "hashers" }
      assert.matches("^pool", a.machine.name)
      assert.matches("^pool_%d+$", b.machine.name)
      assert.are_not.equal(a.machine.name, b.machine.name)
      assert.equal("hashers", named.machine.name)
      assert.matches("^" .. b.machine.name .. "#1$", tostring(b):match("[%w_]+#%d+"))
    end)
  end)

  describe("the intensity limit", function()
    it("fails the call whose crash broke the limit first, then the calls that waited", function()
      local p = ps.pool { size = 1, max_restarts = 0, env = { POOL_WORKER_MODE = "crash_at_start",
        PATH = os.getenv("PATH") } }
      local order, failures = {}, {}
      for i = 1, 3 do
        p:call("echo " .. i):add_errback(function(f)
          order[#order + 1] = i .. ":" .. f.kind
          failures[i] = f
        end)
      end
      assert.is_true(ps.wait(function() return #order == 3 end))
      assert.same({ "1:worker", "2:unavailable", "3:unavailable" }, order)
      assert.equal("failed", p.state)
      assert.matches("restart 1 is more than max_restarts = 0", failures[1].message, 1, true)
      assert.equal(failures[1], failures[2].value.last)
    end)
  end)

  describe("a worker's failure", function()
    it("has no signal for a worker that exited by itself", function()
      local p = ps.pool { size = 1 }
      local got = call(p, "exit 3")
      assert.is_true(ps.wait(function() return got.fired end))
      assert.equal("worker", got.value.kind)
      assert.matches("exited with status 3", got.value.message, 1, true)
      assert.equal(3, got.value.value.status)
      assert.is_nil(got.value.value.signal)
      assert.is_nil(got.value.value.signal_name)
    end)
  end)

  describe("options", function()
    it("refuses max_queued = 0, which could answer no call, saying why", function()
      local err = refused { cmd = ps.CMD, max_queued = 0 }
      assert.matches("modal.pool: max_queued: expected a whole number of calls >= 1 (a call " ..
        "waits in the queue while its worker starts: 0 would refuse every call), got 0", err, 1, true)
    end)

    it("refuses a cmd element, an env value or name that is not a string, each named", function()
      local err = refused { cmd = { "sh", "-c", "echo $0", 3 }, env = { A = 1, B = true, "NOEQUALS",
        [5] = "X=1", ["C=D"] = "x" } }
      for _, text in ipairs {
        "cmd[4]: expected a string (an argument is passed as it is), got 3",
        'env.A: expected a string value, got 1 (write it as a string: "1")',
        "env.B: expected a string value, got true",
        'env[1]: expected "NAME=value" (a string with a name before \'=\'), got "NOEQUALS"',
        'env: "C=D": expected a variable\'s name (a string without \'=\')',
      } do
        assert.matches(text, err, 1, true)
      end
      assert.matches("cmd: 9: expected an argv list of strings",
        refused { cmd = { "cat", [9] = "x" } }, 1, true)
    end)

    it("does not count as a restart a worker that ends once the pool has failed", function()
      local p = ps.pool { size = 2, max_restarts = 0 }
      local first = ps.watch(p:call("sleep 200 a"))
      local second = ps.watch(p:call("sleep 300 b"))
      assert.is_true(ps.wait(function() return #modal.pool.pids(p) == 2 end))
      local pids = ps.pids(p)
      for _, pid in ipairs(pids) do uv.kill(pid, "sigkill") end
      assert.is_true(ps.wait(function() return first.fired and second.fired end))
      assert.equal("failed", p.state)
      local texts = first.value.message .. "\n" .. second.value.message
      assert.matches("restart 1 is more than max_restarts = 0", texts, 1, true)
      assert.matches("the pool has failed: no restart", texts, 1, true)
      assert.matches("failed: 1 worker restart within 30 s (more than max_restarts = 0)",
        modal.pool.status(p).diagnosis, 1, true)
    end)

    it("refuses a cwd that is not a folder, naming it", function()
      assert.matches("modal.pool: cwd: no such folder: /nonexistent-modal-dir",
        refused { cmd = ps.CMD, cwd = "/nonexistent-modal-dir" }, 1, true)
      assert.matches("cwd: " .. ps.WORKER .. " is a file, not a folder",
        refused { cmd = ps.CMD, cwd = ps.WORKER }, 1, true)
      assert.matches('cwd: expected a folder (a non-empty string), got ""',
        refused { cmd = ps.CMD, cwd = "" }, 1, true)
      assert.matches("cwd: may not hold a NUL byte", refused { cmd = ps.CMD, cwd = "/tmp\0x" }, 1, true)
    end)

    it("a cwd gone by the time a worker starts: the spawn failure names it", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert.is_true(os.execute("mkdir " .. dir))
      local p = ps.pool { size = 1, cwd = dir, cmd = { "cat" }, max_restarts = 0 }
      os.remove(dir)
      local got = call(p, "x")
      assert.is_true(ps.wait(function() return got.fired end))
      -- the spawn failed before the call was handed over: the call waited, and fails with the
      -- pool's diagnosis (max_restarts = 0), which quotes the spawn failure
      assert.equal("unavailable", got.value.kind)
      assert.matches("could not start: spawn cat: ENOENT", got.value.message, 1, true)
      assert.matches("; cwd: no such folder: " .. dir, got.value.message, 1, true)
    end)

    it("a valid cwd and env are the workers'", function()
      local p = ps.pool { size = 1, cwd = "/", cmd = { "sh", "-c", "read l; echo \"$PWD $A\"" },
        env = { A = "set", PATH = os.getenv("PATH") } }
      local got = call(p, "x")
      assert.is_true(ps.wait(function() return got.fired end))
      ps.pids(p)
      assert.equal("/ set", got.value)
    end)
  end)
end)
