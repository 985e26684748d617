--- lua/modal/graph.lua — the state diagram of a machine definition (doc/host.md), as
-- Graphviz dot or Mermaid text.
--
--   local graph = require "modal.graph"
--   io.write(graph.dot(def))        -- render with: dot -Tpng -o machine.png
--   io.write(graph.mermaid(def))    -- stateDiagram-v2
--
-- Both draw: the initial state (an arrow from a start point), final states (dot: a double
-- circle; mermaid: an arrow to [*]), one edge per transition labelled with its input
-- ("input [guard]" for a guarded entry, "input (internal)" for a transition without `to`,
-- drawn as a self loop), and per state its postponed methods, timeout and run job. They draw
-- what they can of an invalid definition; run modal.check first for a faithful picture.
--
-- @module modal.graph

local type, rawget, rawlen, next = type, rawget, rawlen, next
local concat, sort, format = table.concat, table.sort, string.format

local graph = {}

-- The states of def in drawing order: breadth first from `initial` (inputs sorted), then the
-- unreachable ones by name. Only string names with table values count.
local function state_order(def, edges)
  local states = rawget(def, "states")
  local names, order, seen = {}, {}, {}
  if type(states) ~= "table" then return order end
  for k, v in next, states do
    if type(k) == "string" and type(v) == "table" then names[#names + 1] = k end
  end
  sort(names)
  local initial = rawget(def, "initial")
  if type(initial) == "string" and type(rawget(states, initial)) == "table" then
    order[1], seen[initial] = initial, true
    local head = 1
    while head <= #order do
      for _, e in ipairs(edges[order[head]] or {}) do
        if not seen[e.to] and type(rawget(states, e.to)) == "table" then
          seen[e.to] = true
          order[#order + 1] = e.to
        end
      end
      head = head + 1
    end
  end
  for _, n in ipairs(names) do
    if not seen[n] then order[#order + 1] = n end
  end
  return order
end

-- The edges leaving one state: { to =, label =, internal = } in input order.
local function state_edges(name, st)
  local out, on = {}, rawget(st, "on")
  if type(on) ~= "table" or rawget(st, "final") == true then return out end
  local inputs = {}
  for k in next, on do
    if type(k) == "string" then inputs[#inputs + 1] = k end
  end
  sort(inputs)
  local function add(input, entry)
    if type(entry) == "string" then
      out[#out + 1] = { to = entry, label = input }
    elseif type(entry) == "table" then
      local to = rawget(entry, "to")
      local label = input
      if rawget(entry, "guard") ~= nil then label = label .. " [guard]" end
      if to == nil then
        out[#out + 1] = { to = name, label = label .. " (internal)", internal = true }
      elseif type(to) == "string" then
        out[#out + 1] = { to = to, label = label }
      end
    end
  end
  for _, input in ipairs(inputs) do
    local spec = rawget(on, input)
    if type(spec) == "table" and rawget(spec, 1) ~= nil then
      for i = 1, rawlen(spec) do add(input, rawget(spec, i)) end
    else
      add(input, spec)
    end
  end
  return out
end

-- What a state does besides its transitions, as short lines: postponed methods, timeout, run.
local function notes(def, st)
  local lines, postponed = {}, {}
  local methods, defaults = rawget(def, "methods"), rawget(def, "defaults")
  if type(methods) == "table" then
    for i = 1, rawlen(methods) do
      local m = rawget(methods, i)
      if type(m) == "string" then
        local h = rawget(st, m)
        if h == nil and type(defaults) == "table" then h = rawget(defaults, m) end
        if h == "postpone" then postponed[#postponed + 1] = m end
      end
    end
  end
  if #postponed > 0 then lines[#lines + 1] = "postpones: " .. concat(postponed, ", ") end
  local timeout = rawget(st, "timeout")
  if type(timeout) == "number" then
    lines[#lines + 1] = format("timeout: %gs", timeout)
  elseif timeout ~= nil then
    lines[#lines + 1] = "timeout: (function)"
  end
  if rawget(st, "run") ~= nil then lines[#lines + 1] = "runs a job" end
  return lines
end

-- Everything both formats draw, computed once.
local function model(def)
  if type(def) ~= "table" then
    error(format("bad argument #1 (a machine definition table expected, got %s)", type(def)), 3)
  end
  local states = rawget(def, "states")
  local edges = {}
  if type(states) == "table" then
    for k, v in next, states do
      if type(k) == "string" and type(v) == "table" then edges[k] = state_edges(k, v) end
    end
  end
  local m = { name = rawget(def, "name"), initial = nil, states = {} }
  for _, n in ipairs(state_order(def, edges)) do
    local st = rawget(states, n)
    m.states[#m.states + 1] = { name = n, final = rawget(st, "final") == true,
                                notes = notes(def, st), edges = edges[n] }
  end
  local initial = rawget(def, "initial")
  if type(initial) == "string" and edges[initial] then m.initial = initial end
  if type(m.name) ~= "string" then m.name = "machine" end
  return m
end

-- A dot string literal.
local function dq(s)
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n"):gsub("%c", "") .. '"'
end

--- The diagram as Graphviz dot text (render with `dot -Tpng`).
function graph.dot(def)
  local m = model(def)
  local out = {
    "digraph " .. dq(m.name) .. " {",
    "  rankdir=LR;",
    '  node [shape=box, style=rounded, fontname="Helvetica"];',
    '  edge [fontname="Helvetica", fontsize=10];',
  }
  local function add(s) out[#out + 1] = s end
  if m.initial then
    add('  "(start)" [shape=point, width=0.15, label=""];')
    add('  "(start)" -> ' .. dq(m.initial) .. ";")
  end
  for _, s in ipairs(m.states) do
    local label = s.name
    if #s.notes > 0 then label = label .. "\n" .. concat(s.notes, "\n") end
    if s.final then
      add(format("  %s [shape=doublecircle, label=%s];", dq(s.name), dq(label)))
    else
      add(format("  %s [label=%s];", dq(s.name), dq(label)))
    end
  end
  for _, s in ipairs(m.states) do
    for _, e in ipairs(s.edges) do
      add(format("  %s -> %s [label=%s%s];", dq(s.name), dq(e.to), dq(e.label),
        e.internal and ", style=dashed" or ""))
    end
  end
  add("}")
  return concat(out, "\n") .. "\n"
end

-- Mermaid state ids must be plain words; anything else is declared with a quoted label.
local function mermaid_id(name)
  if name:find("^[%a_][%w_]*$") then return name end
  return "s_" .. name:gsub("[^%w_]", function(c) return format("%02x", c:byte()) end)
end

--- The diagram as Mermaid `stateDiagram-v2` text.
function graph.mermaid(def)
  local m = model(def)
  local out = { "stateDiagram-v2" }
  local function add(s) out[#out + 1] = s end
  local function text(s) return (s:gsub("[%c:;]", " ")) end
  for _, s in ipairs(m.states) do
    local id = mermaid_id(s.name)
    if id ~= s.name then add(format('  state "%s" as %s', (text(s.name):gsub('"', "'")), id)) end
    for _, note in ipairs(s.notes) do
      add(format("  %s : %s", id, text(note:gsub(": ", " "))))
    end
  end
  if m.initial then add("  [*] --> " .. mermaid_id(m.initial)) end
  for _, s in ipairs(m.states) do
    for _, e in ipairs(s.edges) do
      add(format("  %s --> %s : %s", mermaid_id(s.name), mermaid_id(e.to), text(e.label)))
    end
    if s.final then add(format("  %s --> [*]", mermaid_id(s.name))) end
  end
  return concat(out, "\n") .. "\n"
end

return graph
