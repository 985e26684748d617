-- specs/log_chain_spec.lua — a sink of one's own that forwards to the default one
-- (doc/loop.md, "Logging"): modal.on_log returns the default sink, which a filtering sink can
-- call with (level, message, fields), with (level, message) only, or even without a level; it
-- writes each line to stderr in its usual form and keeps its level filter.
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

describe("a sink that forwards to the default one", function()
  it("writes the lines it keeps in the default form, with or without fields and level", function()
    local status, stdout, stderr = child [[
local modal = require "modal"
local default
default = modal.on_log(function(level, message, fields)
  if message:find("keep", 1, true) then default(level, message, fields) end
end)
modal.log("warn", "keep this one")
modal.log("warn", "drop this one")
modal.log("error", "keep with fields", { machine = "conn", id = 3, state = "ready", input = "lost" })
default("warn", "keep forwarded bare")
default(nil, "keep with no level")
default("debug", "keep below the threshold")
print("done")
]]
    assert.equal(0, status, stderr)
    assert.equal("done\n", stdout)
    local lines = {}
    for line in stderr:gmatch("[^\n]+") do
      lines[#lines + 1] = line:gsub("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ ", "<time> ")
    end
    assert.same({
      "<time> warn modal keep this one",
      "<time> error conn#3 keep with fields state=ready input=lost",
      "<time> warn modal keep forwarded bare",
      "<time> info modal keep with no level",
    }, lines)
  end)
end)
