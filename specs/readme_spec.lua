-- specs/readme_spec.lua — the README's machine example, run as printed: its `open` failing at
-- once backs off instead of cycling for ever, and the call it postponed is answered once a
-- connection opens. The code is read out of README.md, so the two cannot drift apart.
local modal = require "modal"
local support = require "support"

-- The first ```lua block after the heading `## Machines`.
local function readme_machine_example()
  local f = assert(io.open("README.md"))
  local text = f:read("a")
  f:close()
  local section = assert(text:find("\n## Machines\n", 1, true), "README has no ## Machines")
  local code = text:match("```lua\n(.-)```", section)
  return assert(code, "no lua block under ## Machines")
end

describe("README's connection machine", function()
  after_each(support.run_undo)

  it("backs off between failed attempts and answers the waiting call when one succeeds", function()
    local clock = support.clock()
    local attempts, printed = {}, {}
    local env = setmetatable({
      -- fails at once twice (the case that used to spin), then opens
      open = function()
        attempts[#attempts + 1] = modal.now()
        if #attempts <= 2 then return modal.fail("refused", "connection refused") end
        return modal.succeed({ query = function(_, sql) return modal.succeed("rows of " .. sql) end })
      end,
      print = function(...) printed[#printed + 1] = table.concat({ ... }, " ", 1, select("#", ...)) end,
      require = require,
    }, { __index = _G })
    local chunk = assert(load(readme_machine_example() .. "\nreturn Connection, c", "=README.md",
      "t", env))
    local Connection, c = chunk()
    assert.are.equal("connection", Connection.name)
    -- the example's last line fired `lost` at a connecting instance: ignored, nothing else ran
    assert.are.same({ 0 }, attempts)
    assert.are.equal("backing_off", c.state)

    local answer
    c:query("select 2"):add_callback(function(rows) answer = rows end)
    local steps = 0
    while c.state ~= "ready" do
      assert(clock:next(), "nothing armed: the machine is stuck in " .. c.state)
      steps = steps + 1
      assert(steps < 10, "still not ready after 10 timer steps")
    end
    assert.are.equal(3, #attempts)
    -- gRPC's schedule: about 1 s, then about 1.6 s (jitter 20 %)
    local first, second = attempts[2] - attempts[1], attempts[3] - attempts[2]
    assert.is_true(first >= 0.8 - 1e-9 and first <= 1.2 + 1e-9, tostring(first))
    assert.is_true(second >= 1.28 - 1e-9 and second <= 1.92 + 1e-9, tostring(second))
    assert.are.equal("rows of select 2", answer)
    -- what the example printed: its on_transition lines, then c.state, then select 1's rows
    assert.are.same({
      "backing_off -> connecting timeout", "connecting -> backing_off error",
      "backing_off -> connecting timeout", "connecting -> ready done",
      "ready", "rows of select 1",
    }, printed)
  end)
end)
