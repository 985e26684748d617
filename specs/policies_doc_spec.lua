-- specs/policies_doc_spec.lua — the users' pages against the code: every option modal.breaker
-- and modal.pool take is a row of its table in doc/policies.md, with the default the code uses,
-- and modal(7) names each option in its POLICIES section.
local breaker = require "modal.breaker"
local pool = require "modal.pool"

local read_file = require("support").read_file

-- The text of `## title` up to the next `## ` heading.
local function chapter(text, title)
  local start = text:find("\n## " .. title .. "\n", 1, true)
  assert(start, "doc/policies.md has no chapter " .. title)
  local stop = text:find("\n## ", start + 1, true) or #text
  return text:sub(start, stop)
end

-- The option table's row of `name`: "| `name` | default | ... |".
local function row(text, name)
  return text:match("\n| `" .. name:gsub("%p", "%%%0") .. "` |([^\n]*)")
end

local doc = read_file("doc/policies.md")
local man = read_file("man/modal.7"):gsub("\\f[BIRP]", "")
local policies_section = man:match("\n%.SH POLICIES\n(.-)\n%.SH ")

for _, case in ipairs({ { "Breaker", "modal.breaker", breaker }, { "Pool", "modal.pool", pool } }) do
  local title, what, mod = case[1], case[2], case[3]
  describe(what .. " in the users' pages", function()
    local text = chapter(doc, title)

    it("has a row in doc/policies.md for every option it takes", function()
      for _, name in ipairs(mod.OPTIONS) do
        assert.truthy(row(text, name), "doc/policies.md, " .. title .. ": no row for option " .. name)
      end
    end)

    it("gives each default the code uses", function()
      for name, v in pairs(mod.DEFAULTS) do
        local r = row(text, name)
        assert.truthy(r, "no row for " .. name)
        if type(v) == "number" then
          local plain = string.format("%g", v)
          local grouped = plain:gsub("^(%d%d?)(%d%d%d)$", "%1,%2")   -- 10000 reads 10,000
          assert.truthy(r:find(grouped, 1, true) or r:find(plain, 1, true),
            title .. ": the row of " .. name .. " does not say its default " .. plain .. ":" .. r)
        else
          for k, x in pairs(v) do
            assert.truthy(r:find(k .. " = " .. string.format("%g", x), 1, true),
              title .. ": the row of " .. name .. " does not say " .. k .. " = " .. tostring(x))
          end
        end
      end
    end)

    it("is in modal(7)'s POLICIES, with every option but the machine's name and version", function()
      assert.truthy(policies_section, "modal(7) has no POLICIES section")
      assert.truthy(policies_section:find(what .. "(", 1, true), "modal(7) lacks " .. what)
      for _, name in ipairs(mod.OPTIONS) do
        if name ~= "name" and name ~= "version" then
          assert.truthy(policies_section:find(name, 1, true),
            "modal(7) POLICIES lacks " .. what .. "'s " .. name)
        end
      end
    end)
  end)
end
