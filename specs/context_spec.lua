-- specs/context_spec.lua — the per-state context (doc/loop.md): nothing modal owns outlives it.
-- Once lua_close has begun closing modal, a finalizer that cancels or resets a timer, cancels a
-- sleep or a Deferred, adds a timeout or arms a timer does nothing and raises nothing.
--
-- Each scenario ends a Lua state, so each runs in a child lua5.4 that must exit 0 (a crash is a
-- signal; under `make asan` a use after free aborts the child).
local BUILD = os.getenv("MODAL_BUILD") or "build"
if BUILD:sub(1, 1) ~= "/" then BUILD = "./" .. BUILD end

local read_file = require("support").read_file

-- Runs `code` in a child lua5.4 that finds modal in BUILD; returns status, stdout, stderr.
local function child(code)
  local script, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(code)
  f:close()
  local _, how, status = os.execute(string.format(
    "env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' " ..
    "LUA_CPATH='%s/?.so;;' timeout 10 lua5.4 %s >%s 2>%s </dev/null", BUILD, script, out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(script); os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

describe("the context", function()
  describe("a finalizer that runs after modal's (its object was made before require)", function()
    it("cancels a timer, a sleep and a Deferred: nothing happens, the process exits 0", function()
      local status, stdout, stderr = child [[
        local h, s, d
        local guard = setmetatable({}, { __gc = function() h:cancel(); s:cancel(); d:cancel() end })
        local modal = require "modal"
        h = modal.call_later(100, function() end)
        s = modal.sleep(100)
        d = modal.deferred()
        print("armed")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("armed\n", stdout)
    end)

    it("calls, fires, makes instances and cancels a job: nothing is driven, nothing raises", function()
      local status, stdout, stderr = child [[
        local c, M, job
        local seen = {}
        local guard = setmetatable({}, { __gc = function()
          local ok, d = pcall(c.query, c)
          seen[#seen + 1] = ok and d:state() == "failed"
          seen[#seen + 1] = pcall(c.fire, c, "go")
          seen[#seen + 1] = c.state == "a"
          local made, c2 = pcall(M.new, M)
          seen[#seen + 1] = made and c2.state == "a"
          seen[#seen + 1] = pcall(job.cancel, job)
          seen[#seen + 1] = c.state == "a"
          io.write(#seen, " ")
          for _, v in ipairs(seen) do io.write(tostring(v), " ") end
          print()
        end })
        local modal = require "modal"
        M = modal.machine { name = "late", initial = "a", methods = { "query" },
          states = { a = { query = "postpone", on = { go = "b", done = "b", error = "b" },
                           run = function() job = modal.deferred(); return job end },
                     b = { query = function() return 1 end } } }
        c = M:new()
        c:query()
      ]]
      assert.equal(0, status, stderr)
      assert.equal("6 true true true true true true \n", stdout)
    end)

    it("resets, reads, arms and times out: nothing raises, nothing runs", function()
      local status, stdout, stderr = child [[
        local modal, h, d, fired
        local seen = {}
        local guard = setmetatable({}, { __gc = function()
          seen[#seen + 1] = pcall(h.reset, h, 0)
          seen[#seen + 1] = h:active() == false
          seen[#seen + 1] = pcall(modal.call_later, 0, function() fired = true end)
          seen[#seen + 1] = pcall(function() return modal.sleep(0):state() == "pending" end)
          seen[#seen + 1] = pcall(d.add_timeout, d, 0)
          seen[#seen + 1] = pcall(d.cancel, d)
          seen[#seen + 1] = tostring(h):find("inactive", 1, true) ~= nil
          seen[#seen + 1] = not fired
          local ok = true
          for _, v in ipairs(seen) do ok = ok and v end
          io.stdout:write(ok and "finalizer: all quiet\n" or "finalizer: something raised\n")
        end })
        modal = require "modal"
        h = modal.call_later(100, function() end)
        d = modal.deferred()
        d:add_timeout(100)
        print("armed")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("armed\nfinalizer: all quiet\n", stdout)
    end)

    it("cancels the sleep an instance's state awaits, with its timeout armed", function()
      local status, stdout, stderr = child [[
        local job
        local guard = setmetatable({}, { __gc = function()
          job:cancel()              -- the instance's own rules are the driver's (its spec)
          io.stdout:write("finalizer done\n")
        end })
        local modal = require "modal"
        local M = modal.machine { name = "waiter", initial = "waiting", methods = {},
          states = {
            waiting = { run = function() job = modal.sleep(100); return job end, timeout = 50,
                        on = { done = "over", error = "over", timeout = "over", go = "over" } },
            over = { final = true },
          } }
        print(M:new().state)
      ]]
      assert.equal(0, status, stderr)
      assert.equal("waiting\nfinalizer done\n", stdout)
    end)
  end)

  describe("a finalizer that runs before modal's (its object was made after require)", function()
    it("may still arm and cancel timers; they never run and the process exits 0", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        local h = modal.call_later(100, function() end)
        local guard = setmetatable({}, { __gc = function()
          h:cancel()
          modal.call_later(0, function() io.stdout:write("ran at close\n") end)
          modal.sleep(0)
          io.stdout:write("finalizer done\n")
        end })
        print("armed")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("armed\nfinalizer done\n", stdout)
    end)
  end)

  describe("lua_close", function()
    it("with timers armed, some due now, and luv handles open exits 0", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        local uv = require "luv"
        for i = 1, 100 do modal.call_later(i % 2 == 0 and 0 or 100, function() end) end
        local t = uv.new_timer()
        t:start(100000, 0, function() end)
        modal.sleep(100)
        modal.deferred():add_timeout(100)
        print("armed")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("armed\n", stdout)
    end)

    it("after the exit idiom closed modal's handles and new ones were made exits 0", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        local uv = require "luv"
        modal.call_later(100, function() end)
        local early = setmetatable({}, { __gc = function()   -- runs after the new handles' own
          local h = modal.call_later(0, function() end)
          h:reset(1)
          h:cancel()
          io.stdout:write("early finalizer done\n")
        end })
        uv.walk(function(h) if not h:is_closing() then h:close() end end)
        uv.run("nowait")
        modal.call_later(100, function() end)
        local guard = setmetatable({}, { __gc = function()
          modal.call_later(0, function() end)
        end })
        print("armed again")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("armed again\nearly finalizer done\n", stdout)
    end)
  end)

  describe("run-end hooks in module mode", function()
    it("run with exiting = false each time modal.run() returns, never at lua_close", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        modal._on_run_end(function(exiting) print("run ended", exiting) end)
        modal.run()
        modal.call_later(0, function() print("timer") end)
        modal.run()
        require("luv").run()
        print("main done")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("run ended\tfalse\ntimer\nrun ended\tfalse\nmain done\n", stdout)
    end)
  end)
end)
