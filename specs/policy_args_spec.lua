-- specs/policy_args_spec.lua — what the policies' helper functions and a breaker machine's
-- M:new say when given the wrong thing (doc/policies.md): status and pids name what they got
-- instead of returning made-up figures; M:new logs what is missing or misspelt.
local modal = require "modal"
local support = require "support"

describe("the policies' functions given the wrong thing", function()
  after_each(support.run_undo)

  local plain = modal.machine { name = "args_plain", initial = "s", methods = { "get" },
    states = { s = { get = function() return 1 end } } }

  it("status and pids name what they expected and what they got", function()
    local c = plain:new()
    local b = modal.breaker { target = c, methods = { "get" }, name = "args_breaker" }
    local cases = {
      { modal.breaker.status, {},
        "bad argument #1 to 'status' (a modal.breaker instance expected, got table)" },
      { modal.breaker.status, nil,
        "bad argument #1 to 'status' (a modal.breaker instance expected, got nil)" },
      { modal.breaker.status, c, "bad argument #1 to 'status' (a modal.breaker instance expected, got an "
        .. "instance of machine 'args_plain', not of a breaker)" },
      { modal.pool.status, b, "bad argument #1 to 'status' (a modal.pool instance expected, got an "
        .. "instance of machine 'args_breaker', not of a pool)" },
      { modal.pool.pids, 5, "bad argument #1 to 'pids' (a modal.pool instance expected, got number)" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[1], case[2])
      assert.is_false(ok)
      assert.equal(case[3], err)
    end
    assert.equal("closed", modal.breaker.status(b).state)
  end)

  it("a breaker machine's M:new logs a missing target, a misspelt field and a missing method",
     function()
    local log = support.capture_log()
    local B = modal.breaker.machine { name = "args_guard", methods = { "get", "put" }, window = 2 }
    local b1 = B:new { targte = plain:new() }
    local b2 = B:new { target = plain:new(), window = 3 }
    local b3 = B:new { target = { get = function() return 1 end, put = function() return 2 end } }
    local messages = {}
    for i, l in ipairs(log) do messages[i] = l.level .. " " .. l.message end
    local text = table.concat(messages, "\n")
    assert.matches("error args_guard#1: M:new: unknown field 'targte' (did you mean 'target'?); no target "
      .. "(make it with M:new{ target = instance })", text, 1, true)
    assert.matches("args_guard#2: M:new: 'window' is an option of modal.breaker.machine{...}, not of "
      .. "M:new (ignored); its target has no method 'put'", text, 1, true)
    assert.falsy(text:find("args_guard#3", 1, true))
    local state, f = support.outcome(b1:get())
    assert.equal("failed", state)
    assert.matches("has no target with a method 'get'", f.message, 1, true)
    assert.equal("closed", b2.state)
    assert.equal("closed", b3.state)
  end)
end)
