--- lua/modal/testing/init.lua — the testing kit, `require "modal.testing"` (doc/testing.md):
-- each part loads on first use, by field name: clock, current_clock, paths, walk, server.
--
--   local testing = require "modal.testing"
--   local clock = testing.clock()          -- loads lua/modal/testing/clock.lua
--
-- @module modal.testing

local PARTS = {
  clock = "modal.testing.clock",
  current_clock = "modal.testing.clock",
  paths = "modal.testing.paths",
  walk = "modal.testing.paths",
  server = "modal.testing.server",
}

return setmetatable({}, {
  __index = function(testing, name)
    local module = PARTS[name]
    if not module then return nil end
    local part = require(module)
    local value = part[name]
    if value == nil then value = part end
    rawset(testing, name, value)
    return value
  end,
})
