-- specs/log_spec.lua — logging (doc/machines.md, "Logging"): the on_log sink, the default
-- stderr sink, and the default unhandled-failure reporter that logs through it.
local modal = require "modal"
local support = require "support"
local defer = support.defer
local run_undo = support.run_undo

local run_loop = support.run_loop
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
    "LUA_CPATH='%s/?.so;;' timeout 10 lua5.4 %s >%s 2>%s", BUILD, script, out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(script); os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end


-- Installs a capturing sink (and, with `default_reporter`, the default unhandled reporter) for
-- the current test; returns the list of { level, message, fields } it fills.
local function capture_log(default_reporter)
  local lines = {}
  local previous = modal.on_log(function(level, message, fields)
    lines[#lines + 1] = { level = level, message = message, fields = fields }
  end)
  local previous_reporter
  if default_reporter then previous_reporter = modal.on_unhandled(nil) end
  defer(function()
    modal.on_log(previous)
    if default_reporter then modal.on_unhandled(previous_reporter) end
  end)
  return lines
end

-- The captured lines whose message contains `text`.
local function lines_with(lines, text)
  local found = {}
  for _, line in ipairs(lines) do
    if type(line.message) == "string" and line.message:find(text, 1, true) then
      found[#found + 1] = line
    end
  end
  return found
end

-- Lets reports made "from the collector or on the next loop turn" arrive.
local function settle()
  collectgarbage()
  collectgarbage()
  run_loop(0.2)
end

describe("modal logging", function()
  after_each(run_undo)

  describe("on_log()", function()
    it("raises when the sink is neither a function nor nil", function()
      assert.has_error(function() modal.on_log(42) end)
      assert.has_error(function() modal.on_log("stderr") end)
    end)

    it("returns the previous sink", function()
      local function first() end
      local function second() end
      local original = modal.on_log(first)
      defer(function() modal.on_log(original) end)
      assert.equal(first, modal.on_log(second))
      assert.equal(second, modal.on_log(nil))
      local default = modal.on_log(first)     -- the default sink, however it is represented
      assert.are_not.equal(first, default)
      assert.are_not.equal(second, default)
    end)

    it("sends each line to the current sink only", function()
      local replaced = {}
      local original = modal.on_log(function(_, message) replaced[#replaced + 1] = message end)
      defer(function() modal.on_log(original) end)
      local lines = capture_log(true)
      do modal.fail("timeout", "only the new sink hears this") end
      settle()
      assert.equal(1, #lines_with(lines, "only the new sink hears this"))
      assert.same({}, replaced)
    end)

    it("calls the sink with a level, a message and a fields table (or nil)", function()
      local lines = capture_log(true)
      modal.call_later(0, function() error("shape of a log line", 0) end)
      assert.is_true(run_loop(1))
      settle()
      local found = lines_with(lines, "shape of a log line")
      assert.equal(1, #found)
      local line = found[1]
      assert.equal("error", line.level)
      assert.is_string(line.message)
      assert.is_true(line.fields == nil or type(line.fields) == "table")
    end)
  end)

  describe("log()", function()
    it("raises a clear error on an unknown level, naming the levels", function()
      local lines = capture_log(false)
      local ok, err = pcall(modal.log, "loud", "hello")
      assert.is_false(ok)
      assert.matches("unknown level 'loud'", err, 1, true)
      assert.matches("error, warn, info or debug", err, 1, true)
      assert.has_error(function() modal.log(nil, "hello") end)
      assert.has_error(function() modal.log("WARN", "hello") end)
      assert.same({}, lines)
    end)

    it("raises when the message is not a string, or fields not a table", function()
      local lines = capture_log(false)
      assert.has_error(function() modal.log("info") end)
      assert.has_error(function() modal.log("info", {}) end)
      assert.has_error(function() modal.log("info", "hello", "fields") end)
      assert.same({}, lines)
    end)

    it("keeps the line when the sink raises: it goes to stderr instead", function()
      local status, _, stderr = child [[
        local modal = require "modal"
        modal.on_log(function() error("sink broke") end)
        modal.log("warn", "a line that must not be lost")
        print("after")
      ]]
      assert.equal(0, status, stderr)
      assert.truthy(stderr:find("a line that must not be lost", 1, true), stderr)
      assert.truthy(stderr:find("sink broke", 1, true), stderr)
    end)

    it("writes one line through the current sink: level, message and fields", function()
      local lines = capture_log(false)
      local fields = { machine = "conn", id = 3 }
      modal.log("warn", "disk almost full", fields)
      modal.log("debug", "no fields")
      assert.equal(2, #lines)
      assert.equal("warn", lines[1].level)
      assert.equal("disk almost full", lines[1].message)
      assert.equal(fields, lines[1].fields)
      assert.equal("debug", lines[2].level)
      assert.equal("no fields", lines[2].message)
      assert.same({}, lines[2].fields)
    end)

    it("writes a message with % signs as it is", function()
      local lines = capture_log(false)
      modal.log("info", "100% done %s %d")
      assert.equal("100% done %s %d", lines[1].message)
    end)

    it("goes through the default sink's level filter, with machine#id when given", function()
      local status, _, stderr = child [[
        local modal = require "modal"
        modal.log_level("warn")
        modal.log("info", "filtered out")
        modal.log("debug", "filtered out too")
        modal.log("warn", "kept at warn", { machine = "conn", id = 7, state = "ready" })
        modal.log("error", "kept at error")
      ]]
      assert.equal(0, status, stderr)
      assert.falsy(stderr:find("filtered out", 1, true), stderr)
      assert.truthy(stderr:find("warn conn#7 kept at warn state=ready", 1, true), stderr)
      assert.truthy(stderr:find("error modal kept at error", 1, true), stderr)
    end)

    it("follows the host's --log-level", function()
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write([[
        local modal = require "modal"
        modal.log("info", "info line")
        modal.log("debug", "debug line")
      ]])
      f:close()
      local out, err = os.tmpname(), os.tmpname()
      local ok = os.execute(string.format("timeout 10 %s/modal run --log-level debug %s >%s 2>%s",
        BUILD, script, out, err))
      local stderr = read_file(err)
      os.remove(script); os.remove(out); os.remove(err)
      assert.is_true(ok == true, stderr)
      assert.truthy(stderr:find("info modal info line", 1, true), stderr)
      assert.truthy(stderr:find("debug modal debug line", 1, true), stderr)
    end)
  end)

  describe("the default unhandled reporter", function()
    it("logs an error raised in a timer at level error, with the failure's kind: message", function()
      local lines = capture_log(true)
      modal.call_later(0, function() error("kaboom in a timer", 0) end)
      assert.is_true(run_loop(1))
      settle()
      local found = lines_with(lines, "error: kaboom in a timer")
      assert.equal(1, #found)
      assert.equal("error", found[1].level)
    end)

    it("logs a collected Deferred that failed, once, at level error", function()
      local lines = capture_log(true)
      do modal.fail("timeout", "gave up waiting") end
      settle()
      settle()
      local found = lines_with(lines, "timeout: gave up waiting")
      assert.equal(1, #found)
      assert.equal("error", found[1].level)
    end)

    it("includes the traceback of a Lua error", function()
      local lines = capture_log(true)
      local function deep_in_the_stack() error("where was I", 0) end
      modal.call_later(0, function() deep_in_the_stack() end)
      assert.is_true(run_loop(1))
      settle()
      local found = lines_with(lines, "where was I")
      assert.equal(1, #found)
      local text = found[1].message
      for _, v in pairs(found[1].fields or {}) do
        if type(v) == "string" then text = text .. "\n" .. v end
      end
      assert.truthy(text:find("traceback", 1, true), "no traceback in: " .. text)
      assert.truthy(text:find("deep_in_the_stack", 1, true), "traceback lacks the raising function")
    end)

    it("is not used while a reporter is set", function()
      local lines = capture_log(false)
      local reported = {}
      local previous = modal.on_unhandled(function(f) reported[#reported + 1] = f end)
      defer(function() modal.on_unhandled(previous) end)
      do modal.fail("timeout", "reported, not logged") end
      settle()
      assert.equal(1, #reported)
      assert.same({}, lines_with(lines, "reported, not logged"))
    end)
  end)

  describe("the default sink", function()
    it("writes nothing to stderr while a sink of one's own is set", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        modal.on_log(function(level, message) print("sink", level, message) end)
        modal.call_later(0, function() error("kaboom to the sink", 0) end)
        modal.run()
        collectgarbage(); collectgarbage()
        modal.run()
        print("done")
      ]]
      assert.equal(0, status, stderr)
      assert.truthy(stdout:find("sink\terror\t[^\n]*kaboom to the sink"), stdout)
      assert.falsy(stderr:find("kaboom to the sink", 1, true), stderr)
    end)

    it("writes to stderr, with the level, by default", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        do modal.fail("timeout", "nobody listened") end
        collectgarbage(); collectgarbage()
        modal.run()
        print("done")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("done\n", stdout)
      assert.truthy(stderr:find("timeout: nobody listened", 1, true), stderr)
      assert.truthy(stderr:lower():find("error", 1, true), stderr)
    end)

    it("is restored by on_log(nil)", function()
      local status, stdout, stderr = child [[
        local modal = require "modal"
        modal.on_log(function() end)
        modal.on_log(nil)
        modal.call_later(0, function() error("kaboom to stderr", 0) end)
        modal.run()
        collectgarbage(); collectgarbage()
        modal.run()
        print("done")
      ]]
      assert.equal(0, status, stderr)
      assert.equal("done\n", stdout)
      assert.truthy(stderr:find("error: kaboom to stderr", 1, true), stderr)
    end)
  end)

  describe("modal.trace(true)", function()
    after_each(function() modal.trace(false) end)

    it("logs each transition with its input and the real time spent in the old state", function()
      local lines = support.capture_log()
      local M = modal.machine { name = "traced", initial = "a", methods = {},
        states = { a = { timeout = 0.1, on = { timeout = "b" } }, b = {} } }
      modal.trace(true)
      local t0 = os.clock()
      while os.clock() - t0 < 0.15 do end      -- the loop's cached time goes stale meanwhile
      M:new()
      support.run_loop(2)
      local found
      for _, line in ipairs(lines) do
        if line.fields.machine == "traced" then found = line end
      end
      assert.truthy(found, "no trace line")
      local ms = tonumber(found.message:match("^a %-> b on 'timeout' after (%d+) ms in a$"))
      assert.truthy(ms, found.message)
      assert.is_true(ms >= 95 and ms < 140, found.message)
      assert.equal("timeout", found.fields.input)
    end)

    it("says no time for a state entered while the trace was off", function()
      local lines = support.capture_log()
      local M = modal.machine { name = "traced_late", initial = "a", methods = {}, inputs = { "flip" },
        states = { a = { on = { flip = "b" } }, b = { on = { flip = "a" } } } }
      local c = M:new()
      c:fire("flip")
      modal.trace(true)
      c:fire("flip")
      c:fire("flip")
      local got = {}
      for _, line in ipairs(lines) do
        if line.fields.machine == "traced_late" then got[#got + 1] = line.message end
      end
      assert.equal("b -> a on 'flip'", got[1])
      assert.matches("^a %-> b on 'flip' after %d+ ms in a$", got[2])
    end)
  end)
end)
