-- specs/graph_spec.lua — `modal graph` (doc/host.md): the state diagram of a machine
-- definition as Graphviz dot (rendered to PNG by `dot -Tpng` when Graphviz is installed) and
-- as Mermaid. Fixtures are loaded through modal.cli, so the C driver plays no part.
local SIX = "specs/fixtures/valid/six_states.lua"
local CONNECTION = "specs/fixtures/valid/connection.lua"
local PNG_SIGNATURE = "\137PNG\r\n\26\n"

local function load(file)
  local ok, def = require("modal.cli").load(file)
  assert(ok, def)
  return def
end

local function has_dot()
  return os.execute("command -v dot >/dev/null 2>&1") == true
end

-- Renders dot text to PNG; returns the PNG's bytes and dot's stderr.
local function render(text)
  local src, png, log = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(src, "w"))
  f:write(text)
  f:close()
  os.execute(string.format("dot -Tpng %s -o %s 2>%s", src, png, log))
  local g = io.open(png, "rb")
  local bytes = g and g:read("a")
  if g then g:close() end
  local h = assert(io.open(log))
  local errors = h:read("a")
  h:close()
  os.remove(src); os.remove(png); os.remove(log)
  return bytes, errors
end

local function contains(text, piece)
  assert.is_truthy(text:find(piece, 1, true), "missing " .. piece .. " in:\n" .. text)
end

describe("modal.graph", function()
  local graph

  before_each(function()
    package.loaded["modal.graph"] = nil
    graph = require "modal.graph"
  end)

  it("raises on a definition that is not a table", function()
    assert.has.error(function() graph.dot(nil) end,
      "bad argument #1 (a machine definition table expected, got nil)")
    assert.has.error(function() graph.mermaid("x") end,
      "bad argument #1 (a machine definition table expected, got string)")
  end)

  describe("dot()", function()
    it("marks the initial state, final states, guards, internal transitions and notes", function()
      local text = graph.dot(load(SIX))
      contains(text, 'digraph "six_states" {')
      contains(text, '"(start)" [shape=point')
      contains(text, '"(start)" -> "idle";')
      contains(text, '"failed" [shape=doublecircle')
      contains(text, '"closed" [shape=doublecircle')
      contains(text, '"connecting" [label="connecting\\npostpones: query\\ntimeout: 20s\\nruns a job"]')
      contains(text, '"backoff" [label="backoff\\npostpones: query\\ntimeout: (function)"]')
      contains(text, '"idle" -> "connecting" [label="connect"];')
      contains(text, '"connecting" -> "failed" [label="error [guard]"];')
      contains(text, '"connecting" -> "backoff" [label="error"];')
      contains(text, '"ready" -> "ready" [label="ping (internal)", style=dashed];')
      assert.is_nil(text:find('"ready" [label="ready\\n', 1, true))   -- ready postpones nothing
    end)

    it("is the same text every time (states breadth first from initial)", function()
      local def = load(SIX)
      assert.are.equal(graph.dot(def), graph.dot(def))
      local order = {}
      for name in graph.dot(def):gmatch('\n  "(%w+)" %[') do order[#order + 1] = name end
      assert.are.same({ "idle", "closed", "connecting", "ready", "failed", "backoff" }, order)
    end)

    it("renders the six-state machine to a PNG with Graphviz", function()
      if not has_dot() then
        pending("graphviz 'dot' is not installed")
        return
      end
      local png, errors = render(graph.dot(load(SIX)))
      assert.are.equal("", errors)
      assert.is_truthy(png)
      assert.are.equal(PNG_SIGNATURE, png:sub(1, 8))
      assert.is_true(#png > 1000)
    end)

    it("renders doc/machines.md's connection machine and odd names with Graphviz", function()
      if not has_dot() then
        pending("graphviz 'dot' is not installed")
        return
      end
      local odd = { name = 'q"uote\\', initial = "a b", methods = {},
        states = { ["a b"] = { on = { ['g"o'] = 'c\\d', x = { { guard = print } } } },
                   ['c\\d'] = { final = true } } }
      for _, def in ipairs { load(CONNECTION), odd } do
        local png, errors = render(graph.dot(def))
        assert.are.equal("", errors)
        assert.are.equal(PNG_SIGNATURE, png:sub(1, 8))
      end
    end)
  end)

  describe("mermaid()", function()
    it("contains each state and each transition", function()
      local text = graph.mermaid(load(SIX))
      assert.matches("^stateDiagram%-v2\n", text)
      contains(text, "  [*] --> idle\n")
      for _, edge in ipairs {
        "idle --> connecting : connect", "idle --> closed : close",
        "connecting --> ready : done", "connecting --> failed : error [guard]",
        "connecting --> backoff : error", "connecting --> backoff : timeout",
        "connecting --> closed : close", "ready --> backoff : lost", "ready --> closed : close",
        "ready --> ready : ping (internal)", "backoff --> connecting : timeout",
        "backoff --> closed : close", "failed --> [*]", "closed --> [*]",
      } do
        contains(text, "  " .. edge .. "\n")
      end
      contains(text, "  connecting : postpones query\n")
      contains(text, "  connecting : timeout 20s\n")
      contains(text, "  backoff : postpones query\n")
      local _, edges = text:gsub("%-%->", "")
      assert.are.equal(15, edges)                   -- 12 transitions, start, two finals
    end)

    it("declares states whose names are not plain words", function()
      local text = graph.mermaid { name = "x", initial = "a b", methods = {},
        states = { ["a b"] = { on = { go = "c" } }, c = { final = true } } }
      contains(text, '  state "a b" as s_a20b\n')
      contains(text, "  [*] --> s_a20b\n")
      contains(text, "  s_a20b --> c : go\n")
    end)
  end)
end)
