-- lua/modal/testing/init.lua — the testing kit's front door: each field is a submodule of
-- modal.testing, loaded the first time it is read (the fault server: doc/policies.md).
--
--   local testing = require "modal.testing"
--   local s = testing.server { mode = "echo" }      -- lua/modal/testing/server.lua
--
-- A field `name` is require("modal.testing.<name>"): the module's value, or its field `name`
-- when the module returns a table holding one (a module may serve several fields: ALSO lists
-- the fields that live in another field's module). Adding a submodule needs no change here.
--
-- @module modal.testing

local require, rawset, type, pcall = require, rawset, type, pcall

local testing = {}

--- Fields served by another field's module: `walk` lives with `paths`.
testing.ALSO = { walk = "paths" }

return setmetatable(testing, {
  __index = function(t, name)
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then return nil end
    local file = testing.ALSO[name] or name
    local ok, mod = pcall(require, "modal.testing." .. file)
    if not ok then
      if type(mod) == "string" and mod:find("module 'modal.testing." .. file .. "' not found", 1, true) then
        return nil
      end
      error(mod, 2)
    end
    local value = mod
    if type(mod) == "table" and mod[name] ~= nil then value = mod[name] end
    rawset(t, name, value)
    return value
  end,
})
