-- specs/loop_walk_spec.lua — luv's uv.walk with modal loaded (doc/loop.md): walk sees modal's
-- handles as luv handles, and the exit idiom that closes every walked handle neither crashes
-- nor breaks modal: what was armed is disarmed, timers armed later run.
--
-- Closing every handle of the process would close busted's own too, so each scenario runs in
-- a child lua5.4 (or host) and prints what it saw.
local BUILD = os.getenv("MODAL_BUILD") or "build"
if BUILD:sub(1, 1) ~= "/" then BUILD = "./" .. BUILD end

local read_file = require("support").read_file

-- Runs `code` in a child (lua5.4, or the host with `host`); returns status, stdout, stderr.
local function child(code, host)
  local script, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(code)
  f:close()
  local _, how, status = os.execute(string.format(
    "env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' " ..
    "LUA_CPATH='%s/?.so;;' timeout 10 %s %s >%s 2>%s </dev/null", BUILD,
    host and (BUILD .. "/modal run") or "lua5.4", script, out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(script); os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

-- The exit idiom.
local CLOSE_ALL = [[
local function close_all()
  require("luv").walk(function(h) if not h:is_closing() then h:close() end end)
end
]]

describe("uv.walk with modal loaded", function()
  it("closing every handle, then arming a timer: the new one runs, the old does not hold the loop", function()
    -- The scenario of the exit idiom, as a user wrote it.
    local status, stdout, stderr = child [[
      local modal = require "modal"
      local uv = require "luv"
      modal.call_later(10, function() end)
      local t = uv.new_timer(); t:start(10000, 0, function() end)
      uv.walk(function(h) if not h:is_closing() then h:close() end end)
      uv.run("nowait")
      local ran = false
      local t0 = uv.hrtime()
      modal.call_later(0.01, function() ran = true end)
      modal.run()
      print(ran and "timer ran" or "timer did not run", (uv.hrtime() - t0) / 1e9 < 2)
    ]]
    assert.equal(0, status, stderr)
    assert.equal("timer ran\ttrue\n", stdout)
  end)

  it("disarms what was armed: active() is false, reset() raises, a sleep stays pending", function()
    local status, stdout, stderr = child(CLOSE_ALL .. [[
      local modal = require "modal"
      local uv = require "luv"
      local h = modal.call_later(10, function() print("old timer ran") end)
      local s = modal.sleep(10)
      local d = modal.deferred():add_timeout(10)
      close_all()
      print("active", h:active())
      print("reset", (pcall(h.reset, h, 1)))
      print("cancel", (pcall(h.cancel, h)))
      local t0 = uv.hrtime()
      print("alive", modal.run())
      print("quick", (uv.hrtime() - t0) / 1e9 < 2)
      print("sleep", s:state(), "timeout", d:state())
    ]])
    assert.equal(0, status, stderr)
    assert.equal("active\tfalse\nreset\tfalse\ncancel\ttrue\nalive\tfalse\nquick\ttrue\n" ..
      "sleep\tpending\ttimeout\tpending\n", stdout)
  end)

  it("works without closing: walk visits modal's handles, and modal goes on", function()
    local status, stdout, stderr = child [[
      local modal = require "modal"
      local uv = require "luv"
      local kinds = {}
      uv.walk(function(h) kinds[#kinds + 1] = tostring(h):match("^(uv_%w+_t)") end)
      table.sort(kinds)
      print(table.concat(kinds, " "))
      local ran = false
      modal.call_later(0, function() ran = true end)
      modal.run()
      print("ran", ran)
    ]]
    assert.equal(0, status, stderr)
    assert.equal("uv_check_t uv_idle_t uv_timer_t\nran\ttrue\n", stdout)
  end)

  it("from a timer callback mid-run: the timers of that pass stop, timers armed after run", function()
    local status, stdout, stderr = child(CLOSE_ALL .. [[
      local modal = require "modal"
      local order = {}
      modal.call_later(0, function()
        order[#order + 1] = "closer"
        close_all()
        modal.call_later(0.01, function() order[#order + 1] = "armed after" end)
      end)
      modal.call_later(0, function() order[#order + 1] = "same pass" end)
      modal.call_later(5, function() order[#order + 1] = "later" end)
      modal.run()
      print(table.concat(order, ","))
    ]])
    assert.equal(0, status, stderr)
    assert.equal("closer,armed after\n", stdout)
  end)

  it("twice in a row, with luv and modal timers in between, keeps modal working", function()
    local status, stdout, stderr = child(CLOSE_ALL .. [[
      local modal = require "modal"
      local uv = require "luv"
      local n = 0
      for _ = 1, 3 do
        modal.call_later(0, function() n = n + 1 end)
        modal.run()
        close_all()
        uv.run("nowait")
      end
      close_all()
      close_all()
      modal.sleep(0.01):add_callback(function() n = n + 10 end)
      modal.run()
      print("n", n)
    ]])
    assert.equal(0, status, stderr)
    assert.equal("n\t13\n", stdout)
  end)

  it("leaves modal.stop() working (its handle is made anew)", function()
    local status, stdout, stderr = child(CLOSE_ALL .. [[
      local modal = require "modal"
      local uv = require "luv"
      close_all()
      uv.run("nowait")
      local late = false
      modal.call_later(0, function() modal.stop() end)
      modal.call_later(0.2, function() late = true end)
      local t0 = uv.hrtime()
      modal.run()
      print("stopped early", not late and (uv.hrtime() - t0) / 1e9 < 0.15)
      modal.run()
      print("later run", late)
    ]])
    assert.equal(0, status, stderr)
    assert.equal("stopped early\ttrue\nlater run\ttrue\n", stdout)
  end)

  it("right after modal.stop() in the same callback: timers armed later still run", function()
    local status, stdout, stderr = child(CLOSE_ALL .. [[
      local modal = require "modal"
      modal.call_later(0, function()
        modal.stop()
        close_all()
      end)
      modal.run()
      local ran = false
      modal.call_later(0, function() ran = true end)
      modal.run()
      print("ran", ran)
    ]])
    assert.equal(0, status, stderr)
    assert.equal("ran\ttrue\n", stdout)
  end)

  it("in the host: the exit idiom from a callback, then a timer; the host exits 0", function()
    local status, stdout, stderr = child(CLOSE_ALL .. [[
      local modal = require "modal"
      io.stdout:setvbuf("no")
      modal.call_later(0, function()
        close_all()
        modal.call_later(0.01, function() print("timer after the walk ran") end)
      end)
      modal.call_later(5, function() print("old timer ran") end)
    ]], true)
    assert.equal(0, status, stderr)
    assert.equal("timer after the walk ran\n", stdout)
  end)
end)
