-- specs/reload_switch_spec.lua — what a successful reload's switch does to an instance that
-- stays in its state (doc/reload.md, "What a reload does"): a state that gained a timeout has
-- it armed from the switch, one that gained a run starts it; a postponed call whose method the
-- new definition removed fails with kind error while the others are retried; a when() waiter
-- whose state was removed fails with kind stopped while the others keep waiting.
--
-- Each definition file is written at run time into a temp folder, version by version.
local modal = require "modal"
local support = require "support"

local outcome = support.outcome

local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_reload_switch.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end

local serial = 0
-- A definition file: file.write(source) replaces its text; file.path, file.name. The source
-- is a format string whose %s is the machine's name (unique per test).
local function def_file()
  serial = serial + 1
  local file = { name = "switch_" .. serial }
  file.path = dir .. "/" .. file.name .. ".lua"
  function file.write(source)
    local f = assert(io.open(file.path, "w"))
    f:write(source:format(file.name))
    f:close()
  end
  return file
end

-- Version 1 of the definition the removed-method specs reload: both methods postpone.
local QUERY_ADMIN = [[
return { name = %q, version = 1, initial = "wait", methods = { "query", "admin" },
  states = { wait = { query = "postpone", admin = "postpone", on = { go = "wait" } } } }]]

describe("a reload's switch, for an instance that stays in its state", function()
  before_each(function()
    support.capture_log()
    support.quiet_unhandled()
  end)
  after_each(support.run_undo)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("arms a timeout the state gained, counted from the switch", function()
    local file = def_file()
    file.write [[
return { name = %q, version = 1, initial = "wait", methods = {},
  states = { wait = { on = { go = "after" } }, after = {} } }]]
    local M = modal.load(file.path)
    local clock = support.clock()
    local c = M:new()
    assert.same({}, clock:pending())
    clock:advance(5)
    file.write [[
return { name = %q, version = 2, initial = "wait", methods = {},
  states = { wait = { timeout = 1, on = { go = "after", timeout = "after" } }, after = {} } }]]
    support.reloaded(modal.reload(file.name))
    assert.equal("wait", c.state)
    assert.same({ 6 }, clock:pending())                     -- 1 s from the switch at 5 s
    clock:advance(0.9)
    assert.equal("wait", c.state)
    clock:advance(0.1)
    assert.equal("after", c.state)
  end)

  it("starts a run the state gained; its done goes to the new transition", function()
    local file = def_file()
    file.write [[
return { name = %q, version = 1, initial = "wait", methods = {},
  states = { wait = { on = { go = "ready" } }, ready = {} } }]]
    local M = modal.load(file.path)
    local c = M:new()
    local job, started, kept = modal.deferred(), 0, nil
    package.loaded.reload_switch_probe = {
      run = function() started = started + 1; return job end,
      keep = function(m, conn) kept = conn; assert(m == c) end,
    }
    support.defer(function() package.loaded.reload_switch_probe = nil end)
    file.write [[
local probe = require "reload_switch_probe"
return { name = %q, version = 2, initial = "wait", methods = {},
  states = { wait = { run = probe.run,
                      on = { go = "ready", done = { to = "ready", action = probe.keep },
                             error = "wait" } },
             ready = {} } }]]
    support.reloaded(modal.reload(file.path))
    assert.equal(1, started)
    assert.equal("wait", c.state)
    job:callback("the connection")
    assert.equal("ready", c.state)
    assert.equal("the connection", kept)
  end)

  it("names the removed method of a postponed call made with several arguments, nil among them; "
     .. "a later reload changes nothing of it", function()
    local file = def_file()
    file.write(QUERY_ADMIN)
    local M = modal.load(file.path)
    local c = M:new()
    local a = c:admin("flush", nil, 3)
    file.write [[
return { name = %q, version = 2, initial = "wait", methods = { "query" },
  states = { wait = { query = "postpone", on = { go = "wait" } } } }]]
    support.reloaded(modal.reload(file.path))
    file.write [[
return { name = %q, version = 3, initial = "wait", methods = { "query", "other" },
  states = { wait = { query = "postpone", other = "postpone", on = { go = "wait" } } } }]]
    support.reloaded(modal.reload(file.path))
    local state, f = outcome(a)
    assert.equal("failed", state)
    assert.equal("method 'admin' was removed by a reload", f.message)
  end)

  it("fails a postponed call whose method was removed, with kind error, and retries the others", function()
    local file = def_file()
    file.write(QUERY_ADMIN)
    local M = modal.load(file.path)
    local c = M:new()
    local q1, a, q2 = c:query("first"), c:admin("flush"), c:query("second")
    assert.equal(3, c:postponed())
    file.write [[
return { name = %q, version = 2, initial = "wait", methods = { "query" },
  states = { wait = { query = function(_, x) return "v2 " .. x end } } }]]
    support.reloaded(modal.reload(file.path))
    local state, f = outcome(a)
    assert.equal("failed", state)
    assert.equal("error", f.kind)
    assert.equal("method 'admin' was removed by a reload", f.message)
    assert.same({ "succeeded", "v2 first" }, { outcome(q1) })
    assert.same({ "succeeded", "v2 second" }, { outcome(q2) })
    assert.equal(0, c:postponed())
  end)

  it("fails a when() waiter whose state was removed, with kind stopped; the others keep waiting", function()
    local file = def_file()
    file.write [[
return { name = %q, version = 1, initial = "a", methods = {},
  states = { a = { on = { go = "b", skip = "c" } }, b = { on = { go = "c" } }, c = {} } }]]
    local M = modal.load(file.path)
    local c = M:new()
    local to_b, to_c = c:when("b"), c:when("c")
    file.write [[
return { name = %q, version = 2, initial = "a", methods = {},
  states = { a = { on = { skip = "c" } }, c = {} } }]]
    support.reloaded(modal.reload(file.path))
    local state, f = outcome(to_b)
    assert.equal("failed", state)
    assert.equal("stopped", f.kind)
    assert.equal("the state waited for was removed by a reload", f.message)
    assert.equal("pending", to_c:state())
    c:fire("skip")
    assert.same({ "succeeded", c }, { outcome(to_c) })
  end)
end)
