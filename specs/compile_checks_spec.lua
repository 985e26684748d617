-- specs/compile_checks_spec.lua — more of the compile's own checks on a malformed normalized
-- form (doc/internals.md; specs/compile_spec.lua has the others): an entry of the wrong type
-- where a name or a table belongs, and too few input names, each refused with a clear error
-- naming where, never a read of garbage (run under `make asan` too).
require "modal"                      -- registers modal.compile
local check = require "modal.check"

local compile = debug.getregistry()["modal.compile"]

local function door()
  return {
    name = "door", version = 2, initial = "closed",
    methods = { "open", "close" },
    inputs = { "kick" },
    defaults = { close = function() end },
    states = {
      closed = {
        open = function(m) m:fire("open") end,
        on = { open = "opened", kick = { { to = "opened", guard = function() end }, "closed" } },
      },
      opened = { open = "postpone", timeout = 5, on = { close = "closed", timeout = "closed" } },
    },
  }
end

local function norm_of(patch)
  local norm = assert(check.normalize(door()))
  patch(norm)
  return norm
end

describe("the compile of a malformed normalized form", function()
  local cases = {
    { "a method that is not a name", function(n) n.methods[2] = 7 end,
      "methods[2]: expected a method name, got number" },
    { "fewer than the three built-in inputs", function(n) n.input_names = { "timeout", "done" } end,
      "input_names: expected timeout, done and error first, got 2 names" },
    { "an input name that is not a string", function(n) n.input_names[4] = false end,
      "input_names[4]: expected an input name, got boolean" },
    { "a state whose name is not a string", function(n) n.states[2].name = {} end,
      "states[2].name: expected a state name, got table" },
    { "an on entry that is not a table", function(n) n.states[1].on[2] = "open" end,
      "states[1].on[2]: expected a table, got string" },
    { "a transition that is not a table", function(n) n.states[1].on[1].transitions[2] = "closed" end,
      "states[1].on[1].transitions[2]: expected a table, got string" },
    { "an initial state that is not a name", function(n) n.initial = 1 end,
      "initial: expected a state name, got number" },
  }
  for _, case in ipairs(cases) do
    it("refuses " .. case[1] .. ", naming where", function()
      local ok, err = pcall(compile, norm_of(case[2]))
      assert.is_false(ok)
      assert.equal("modal.compile: malformed normalized definition: " .. case[3], err)
    end)
  end

  it("compiles the unpatched form (the cases above differ from it only by their patch)", function()
    assert.equal("userdata", type(compile(norm_of(function() end))))
  end)
end)
