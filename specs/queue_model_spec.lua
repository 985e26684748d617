-- specs/queue_model_spec.lua — rule 4 of doc/machines.md as a property: random sequences of
-- inputs with random arguments (nil, trailing nils, up to 10), fired from outside, from exit
-- hooks, actions and enter hooks while the instance is busy, and from method handlers (called
-- from outside, or from a hook: they run at once, and what they fire waits too), compared step
-- by step with a tiny pure-Lua model: one FIFO per instance; an input fired while the instance
-- is busy joins the back of it; one fired while it is idle is handled at once, and the queue is
-- then drained in order before the outside call returns; never nested.
--
-- Everything is generated before it runs (a tree of fires per outside operation), so the model
-- knows every input, its arguments and what its handling fires; the machine's hooks check each
-- handling against the model's next expectation as it happens. Seeded and deterministic.
local modal = require "modal"

local SEED = 20261129
local SEQUENCES = 2000
local INPUTS = { "i1", "i2", "i3", "i4" }
local STATES = { "s1", "s2", "s3" }

local random = math.random

local function pick(list) return list[random(#list)] end

-- Arguments: 0 to 10 values, nils (leading, inner, trailing) included.
local SHARED = { {}, {}, "x", 0, 1.5, false, true }
local function gen_args()
  local n = random(0, 10)
  if random() < 0.5 then n = random(0, 3) end
  local args = { n = n }
  for i = 1, n do
    if random() < 0.35 then
      args[i] = nil
    else
      args[i] = pick(SHARED)
    end
  end
  return args
end

local function show_fire(name, args)
  local parts = {}
  for i = 1, args.n do parts[i] = tostring(args[i]) end
  return name .. "(" .. table.concat(parts, ", ") .. ")"
end

-- A fire: { kind = "fire", name, args, children = { exit = {...}, action = {...},
-- enter = {...} } }; a call from a hook or from outside: { kind = "call", children = {...} }
-- (what its handler fires). Children are fires or calls.
local gen_children
local function gen_fire(depth, budget)
  local f = { kind = "fire", name = pick(INPUTS), args = gen_args() }
  f.children = gen_children(depth, budget)
  return f
end
local function gen_call(depth, budget)
  local c = { kind = "call", children = {} }
  local n = depth < 3 and random(0, 2) or 0
  for i = 1, n do
    if budget.left <= 0 then break end
    budget.left = budget.left - 1
    c.children[i] = gen_fire(depth + 1, budget)
  end
  return c
end
gen_children = function(depth, budget)
  local children = { exit = {}, action = {}, enter = {} }
  if depth >= 3 then return children end
  for _, hook in ipairs { "exit", "action", "enter" } do
    while random() < 0.3 and budget.left > 0 do
      budget.left = budget.left - 1
      local list = children[hook]
      list[#list + 1] = random() < 0.8 and gen_fire(depth + 1, budget) or gen_call(depth + 1, budget)
    end
  end
  return children
end

-- The model: the order in which fires are handled, with the hooks each handling runs.
-- `table` maps state -> input -> next state (nil: internal, the action only).
local function model_run(op, state, table_)
  local handled, queue, head = {}, {}, 1
  local function queue_children(list)
    for _, ch in ipairs(list) do
      if ch.kind == "fire" then
        queue[#queue + 1] = ch
      else                                 -- a call: its handler runs at once, fires wait
        for _, f in ipairs(ch.children) do queue[#queue + 1] = f end
      end
    end
  end
  local function handle(f)
    local to = table_[state][f.name]
    handled[#handled + 1] = { fire = f, from = state, to = to }
    if to then
      queue_children(f.children.exit)
      queue_children(f.children.action)
      state = to
      queue_children(f.children.enter)
    else
      queue_children(f.children.action)
    end
  end
  if op.kind == "fire" then
    handle(op)
  else
    queue_children({ op })
  end
  while head <= #queue do
    local f = queue[head]
    head = head + 1
    handle(f)
  end
  return handled, state
end

-- The real machine: every state takes every input (external to a state, or internal).
local function build(table_, probe)
  local states = {}
  for _, s in ipairs(STATES) do
    local on = {}
    for _, input in ipairs(INPUTS) do
      local to = table_[s][input]
      on[input] = { to = to, action = function(m, ...) probe("action", m, s, input, nil, ...) end }
    end
    states[s] = {
      on = on,
      exit = function(m, to, input, ...) probe("exit", m, s, input, to, ...) end,
      enter = function(m, from, input, ...) probe("enter", m, s, input, from, ...) end,
      poke = function(m) probe("handler", m) return "poked" end,
    }
  end
  return modal.machine { name = "queue_model", initial = "s1", methods = { "poke" },
    inputs = INPUTS, states = states }
end

describe("the input queue (rule 4, against a model)", function()
  it("handles inputs in the order fired, with their own arguments, never nested", function()
    math.randomseed(SEED)
    local previous = modal.on_log(function() end)   -- unreachable-state warnings, by design
    finally(function() modal.on_log(previous) end)
    local ops, handlings = 0, 0
    local table_, M
    local current = {}                   -- what the machine's hooks report to (per sequence)
    for seq = 1, SEQUENCES do
      if seq % 5 == 1 then               -- a new transition table every five sequences
        table_ = {}
        for _, s in ipairs(STATES) do
          table_[s] = {}
          for _, input in ipairs(INPUTS) do
            table_[s][input] = random() < 0.7 and pick(STATES) or nil
          end
        end
        M = build(table_, function(...) return current.probe(...) end)
      end
      -- The expectations of the current outside operation, and where the machine is in them.
      local expected, k, phase, pending_calls
      local failure
      local function fail(fmt, ...)
        if not failure then
          failure = ("sequence %d, operation %d, handling %d: "):format(seq, ops, k or 0)
            .. fmt:format(...)
        end
        error(failure, 0)
      end
      local function fire_all(m, list)
        for _, ch in ipairs(list) do
          if ch.kind == "fire" then
            m:fire(ch.name, table.unpack(ch.args, 1, ch.args.n))
          else
            pending_calls[#pending_calls + 1] = ch
            local d = m:poke()
            if d:state() ~= "succeeded" then fail("a call from a hook was not answered at once") end
          end
        end
      end
      local function same_args(args, ...)
        if select("#", ...) ~= args.n then return false end
        for i = 1, args.n do
          if not rawequal(select(i, ...), args[i]) then return false end
        end
        return true
      end
      local instance
      local function probe(hook, m, s, input, other, ...)
        if hook == "handler" then      -- poke: fire what the call at the front plans
          local call = table.remove(pending_calls, 1)
          if not call then fail("an unexpected method call") end
          fire_all(m, call.children)
          return
        end
        if expected == nil then return end     -- the first entry, inside M:new
        if not rawequal(m, instance) then fail("a hook of another instance") end
        local want = expected[k]
        if not want then fail("%s of %s on '%s': more handlings than the model", hook, s, input) end
        local f = want.fire
        -- the hooks of one handling: exit, action, enter (external) or the action (internal)
        local order = want.to and { "exit", "action", "enter" } or { "action" }
        if hook ~= order[phase] then
          fail("expected %s of %s, got %s of %s on '%s'", order[phase] or "the next input",
            show_fire(f.name, f.args), hook, s, tostring(input))
        end
        if input ~= f.name or not same_args(f.args, ...) then
          fail("expected %s, got %s on '%s' with %d argument(s)", show_fire(f.name, f.args), hook,
            tostring(input), select("#", ...))
        end
        local st = hook == "enter" and want.to or want.from
        if s ~= st then fail("%s ran in state %s, the model says %s", hook, s, st) end
        if hook == "exit" and other ~= want.to then fail("exit towards %s, not %s", other, want.to) end
        if hook == "enter" and other ~= want.from then fail("enter from %s, not %s", other, want.from) end
        fire_all(m, f.children[hook])
        phase = phase + 1
        if phase > #order then
          k, phase = k + 1, 1
        end
      end
      current.probe = probe
      instance = M:new()
      local state = "s1"
      for _ = 1, random(5, 20) do
        ops = ops + 1
        local budget = { left = random(0, 12) }
        local op = random() < 0.8 and gen_fire(0, budget) or gen_call(0, budget)
        local next_state
        expected, next_state = model_run(op, state, table_)
        k, phase, pending_calls = 1, 1, {}
        if op.kind == "fire" then
          instance:fire(op.name, table.unpack(op.args, 1, op.args.n))
        else
          pending_calls[1] = op
          assert.equal("succeeded", instance:poke():state())
        end
        assert(failure == nil, failure)
        assert(k == #expected + 1 and phase == 1, ("sequence %d, operation %d: %d handling(s) "
          .. "before the outside call returned, the model says %d"):format(seq, ops, k - 1, #expected))
        assert.equal(next_state, instance.state)
        assert.equal(0, #pending_calls)
        handlings = handlings + #expected
        state = next_state
      end
    end
    assert.is_true(handlings > SEQUENCES * 5)
  end)
end)
