-- specs/reload_nested_spec.lua — a reload asked for while another reload runs (doc/reload.md,
-- "Reloads come from outside"): a definition file that calls modal.reload while it is being
-- reloaded, and a migrate that does, make that reload fail — nil and an error naming the way
-- out, logged at error — and nothing changes: the old definition keeps serving.
local modal = require "modal"
local support = require "support"

local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_reload_nested.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end

local function write(name, text)
  local path = dir .. "/" .. name .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local WAY_OUT = "modal.reload: called while another reload runs (its file, its migrate, its "
  .. "switch); reloads come from outside (the main chunk, a timer, a signal, the admin socket): "
  .. "use modal.call_later(0, modal.reload, '%s')"

describe("a reload asked for while another runs", function()
  local lines
  before_each(function() lines = support.capture_log() end)
  after_each(support.run_undo)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function errors_logged(name)
    local n = 0
    for _, line in ipairs(lines) do
      if line.level == "error" and line.fields.machine == name then n = n + 1 end
    end
    return n
  end

  it("from the definition file being reloaded: that reload fails and the old version serves", function()
    write("nested_other", [[
return { name = "nested_other", initial = "x", methods = {}, states = { x = {} } }]])
    local source = [[
local modal = require "modal"
if VERSION == 2 then modal.reload("nested_other") end
return { name = "nested_file", version = VERSION, initial = "x", methods = { "v" },
  states = { x = { v = function() return VERSION end } } }]]
    local path = write("nested_file", "local VERSION = 1\n" .. source)
    local M = modal.load(path)
    modal.load(dir .. "/nested_other.lua")
    local c = M:new()
    write("nested_file", "local VERSION = 2\n" .. source)
    local got, err = modal.reload(path)
    assert.is_nil(got)
    assert.matches(WAY_OUT:format("nested_other"), err, 1, true)
    assert.equal(1, M.version)
    assert.same({ "succeeded", 1 }, { support.outcome(c:v()) })
    assert.equal(1, errors_logged("nested_file"))
  end)

  it("from a migrate: that reload fails and the instance stays where it was", function()
    local source = [[
local modal = require "modal"
local states = VERSION == 1 and { old = { on = { go = "old" } } } or { fresh = {} }
return { name = "nested_migrate", version = VERSION, initial = VERSION == 1 and "old" or "fresh",
  methods = {}, states = states,
  migrate = function() modal.reload("nested_migrate"); return "fresh" end }]]
    local path = write("nested_migrate", "local VERSION = 1\n" .. source)
    local M = modal.load(path)
    local c = M:new()
    write("nested_migrate", "local VERSION = 2\n" .. source)
    local got, err = modal.reload(path)
    assert.is_nil(got)
    assert.matches(WAY_OUT:format("nested_migrate"), err, 1, true)
    assert.equal(1, M.version)
    assert.equal("old", c.state)
    assert.equal(1, errors_logged("nested_migrate"))
  end)
end)
