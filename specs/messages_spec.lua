-- specs/messages_spec.lua — what a newcomer reads when something is wrong: each message names
-- what was wrong and where, and no error value can turn a clear error into a raised one
-- (doc/machines.md, doc/reload.md, doc/deferreds.md).
local modal = require "modal"
local support = require "support"

local function tmp_file(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  support.defer(function() os.remove(path) end)
  return path
end

describe("messages", function()
  after_each(support.run_undo)

  it("M:new(42) says what M:new takes", function()
    local M = modal.machine { name = "msg_new", initial = "a", methods = {}, states = { a = {} } }
    local ok, err = pcall(M.new, M, 42)
    assert.is_false(ok)
    assert.matches("M:new(data): data must be a table or nil, got number", err, 1, true)
    ok, err = pcall(M.new)
    assert.is_false(ok)
    assert.matches("call it on a machine, as M:new(data)", err, 1, true)
  end)

  it("an input no state takes, fired from inside, is logged by its name", function()
    local lines = support.capture_log()
    local M = modal.machine { name = "msg_input", initial = "a", methods = { "poke" },
      states = { a = { poke = function(m) m:fire("nowhere", 1) end } } }
    M:new():poke()
    local found
    for _, line in ipairs(lines) do
      if line.level == "warn" and line.fields.machine == "msg_input" then found = line end
    end
    assert.truthy(found, "nothing logged")
    assert.equal("input 'nowhere' not taken (no state takes it) in state 'a'", found.message)
    assert.equal("nowhere", found.fields.input)
  end)

  it("modal.reload returns nil and a message when the file raises a value whose __tostring raises", function()
    support.capture_log()
    local path = tmp_file('return { name = "msg_reload", initial = "a", methods = {}, states = { a = {} } }')
    local M = modal.load(path)
    local f = assert(io.open(path, "w"))
    f:write('error(setmetatable({}, { __tostring = function() error("no") end }))')
    f:close()
    local ok, err = modal.reload(path)
    assert.is_nil(ok)
    assert.matches("error object is a table value whose __tostring failed", err, 1, true)
    assert.equal(1, #M.states)
  end)

  it("a definition file that loads itself says so", function()
    local path = tmp_file("")
    local f = assert(io.open(path, "w"))
    f:write(("require('modal').load(%q)\nreturn { name = 'msg_self', initial = 'a', methods = {}, " ..
      "states = { a = {} } }"):format(path))
    f:close()
    local ok, err = pcall(modal.load, path)
    assert.is_false(ok)
    assert.matches(path .. " loads itself", err, 1, true)
    assert.is_nil(modal.loaded().msg_self)
  end)

  for _, name in ipairs { "all", "settled", "race" } do
    it("modal." .. name .. " refuses a list whose __len is negative", function()
      local ok, err = pcall(modal[name], setmetatable({}, { __len = function() return -3 end }))
      assert.is_false(ok)
      assert.matches("bad argument #1 to '" .. name .. "' (its length is -3", err, 1, true)
    end)
  end

  it("a failing unhandled reporter is logged with its own message and the failure it was given", function()
    local lines = support.capture_log()
    local previous = modal.on_unhandled(function() error("reporter broke") end)
    support.defer(function() modal.on_unhandled(previous) end)
    do modal.fail("lost", "the failure nobody took") end
    collectgarbage(); collectgarbage()
    support.run_loop(0.05)
    local found
    for _, line in ipairs(lines) do
      if line.message:find("on_unhandled reporter failed", 1, true) then found = line.message end
    end
    assert.truthy(found, "nothing logged")
    assert.matches("reporter broke", found, 1, true)
    assert.matches("lost: the failure nobody took", found, 1, true)
  end)

  it("c:fire of an input this state does not take names the input", function()
    local M = modal.machine { name = "msg_fire", initial = "a", methods = {},
      states = { a = { on = { go = "b" } }, b = { on = { back = "a" } } } }
    local c = M:new()
    local ok, err = pcall(c.fire, c, "back")
    assert.is_false(ok)
    assert.matches("msg_fire#1 in state 'a' does not take input 'back'$", err)
    err = select(2, pcall(c.fire, c, "nope"))
    assert.matches("does not take input 'nope' (no state does)", err, 1, true)
  end)

  it("bad arguments name the method and what it takes", function()
    local M = modal.machine { name = "msg_args", initial = "a", methods = {}, states = { a = {} } }
    local c = M:new()
    local cases = {
      { function() c:fire() end, "bad argument #1 to 'fire' (input name expected, got no value)" },
      { function() c:fire({}) end, "bad argument #1 to 'fire' (input name expected, got table)" },
      { function() c:when(1) end, "bad argument #1 to 'when' (state name expected, got number)" },
      { function() c:on_transition("f") end,
        "bad argument #1 to 'on_transition' (function expected, got string)" },
      { function() modal.deferred():add_timeout("1") end,
        "bad argument #1 to 'add_timeout' (seconds expected, got string)" },
      { function() modal.deferred():add_timeout(-1) end,
        "bad argument #1 to 'add_timeout' (seconds must be a number >= 0, got -1)" },
      { function() c.state = "b" end, "cannot set field 'state' of an instance (#1)" },
      { function() c() end, "attempt to call an instance (msg_args#1 (a))" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[1])
      assert.is_false(ok)
      assert.matches(case[2], err, 1, true)
    end
  end)

  it("tostring(M) names the machine and its version", function()
    local M = modal.machine { name = "conn", version = 3, initial = "a", methods = {}, states = { a = {} } }
    assert.equal("modal.machine 'conn' version 3", tostring(M))
  end)

  it("a run that returns a failure fires input error with it", function()
    local got
    local M = modal.machine { name = "msg_run_failure", initial = "a", methods = {},
      states = { a = { run = function() return modal.failure("refused", "no") end,
                       on = { done = "ok", error = { to = "bad", action = function(_, f) got = f end } } },
                 ok = {}, bad = {} } }
    local c = M:new()
    assert.equal("bad", c.state)
    assert.equal("refused", got.kind)
  end)

  it("modal.load and modal.reload take any path of a file as the same file", function()
    local p = assert(io.popen("mktemp -d /tmp/modal_alias.XXXXXX"))
    local dir = p:read("l")
    p:close()
    support.defer(function() os.execute("rm -rf '" .. dir .. "'") end)
    local f = assert(io.open(dir .. "/d.lua", "w"))
    f:write('ALIAS_RUNS = (ALIAS_RUNS or 0) + 1\n' ..
      'return { name = "msg_alias", initial = "a", methods = {}, states = { a = {} } }\n')
    f:close()
    assert(os.execute("ln -s d.lua '" .. dir .. "/link.lua'"))
    _G.ALIAS_RUNS = 0
    support.defer(function() _G.ALIAS_RUNS = nil end)
    local M = modal.load(dir .. "/d.lua")
    assert.equal(M, modal.load(dir .. "/./d.lua"))
    assert.equal(M, modal.load(dir .. "/link.lua"))
    assert.equal(1, _G.ALIAS_RUNS)
    assert.equal(M, modal.reload(dir .. "/../" .. dir:match("[^/]+$") .. "/d.lua"))
    assert.equal(M, modal.reload(dir .. "/link.lua"))
    assert.equal(3, _G.ALIAS_RUNS)
  end)
end)
