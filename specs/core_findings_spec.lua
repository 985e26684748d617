-- specs/core_findings_spec.lua — minimal reproducers of core problems found while building
-- the connection policies (doc/policies.md), marked pending until the core's owners fix them.
-- Each says what it expects; remove the pending marker once the fix lands.
local modal = require "modal"

describe("core findings", function()
  pending("tostring(M) of a machine with a version names the machine, not its version " ..
    "(src/machine.c md_machine_tostring reads the name at -2 after luaL_tolstring pushed)", function()
    local M = modal.machine { name = "named", version = 4, initial = "a", methods = {}, states = { a = {} } }
    assert.equal("modal.machine 'named' version 4", tostring(M))
  end)
end)
