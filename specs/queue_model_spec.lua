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
--
-- The second property adds what a transition sets going besides inputs (rules 2 and 10):
-- postponed calls and their retry, when() waiters and on_transition observers (see below).
local modal = require "modal"

local SEED = 20261129
local SEQUENCES = 2000
local INPUTS = { "i1", "i2", "i3", "i4" }
local STATES = { "s1", "s2", "s3" }

local random = math.random

local function pick(list) return list[random(#list)] end

-- Whether ... are exactly the values of args (a table.pack), nils and count included.
local function same_args(args, ...)
  if select("#", ...) ~= args.n then return false end
  for i = 1, args.n do
    if not rawequal(select(i, ...), args[i]) then return false end
  end
  return true
end

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

-- ============================================================ calls, waiters and observers
-- The same queue with everything else a transition sets going (rules 2, 4 and 10): method
-- `q` is "postpone" in some states, answers in others, and in others runs and postpones again;
-- postponed calls are retried oldest first after each change of state name (after enter, the
-- observers and the when() waiters), keep their place when they postpone again, and fail
-- `overloaded` past max_postponed; c:when(state) succeeds at once in that state, else when the
-- instance next enters it; observers see every external transition. Hooks and handlers fire
-- inputs (queued), make calls (run at once) and wait for states; from outside: inputs, calls,
-- waiters, cancelled calls and observers. The model lists every callback the machine must
-- make, in order, with what each one does; the machine's callbacks check themselves against it.
local MAX_POSTPONED = 3
local SEQUENCES_CALLS = 600
local KINDS = { "postpone", "answer", "again" }

local serial = 0
local function next_id()
  serial = serial + 1
  return serial
end

-- Actions run by a hook or a handler: fires (each with its own hooks' actions), calls (with
-- what their handler fires when it answers) and when() waiters.
local gen_actions
local function gen_fire2(depth, budget)
  local f = { kind = "fire", name = pick(INPUTS), args = gen_args(), hooks = {} }
  for _, hook in ipairs { "exit", "action", "enter" } do f.hooks[hook] = gen_actions(depth, budget) end
  return f
end
local function gen_call2(depth, budget)
  local fires = {}
  while depth < 3 and random() < 0.4 and budget.left > 0 do
    budget.left = budget.left - 1
    fires[#fires + 1] = gen_fire2(depth + 1, budget)
  end
  return { kind = "call", id = next_id(), args = gen_args(), fires = fires }
end
gen_actions = function(depth, budget)
  local list = {}
  if depth >= 3 then return list end
  while random() < 0.3 and budget.left > 0 do
    budget.left = budget.left - 1
    local r = random()
    if r < 0.6 then list[#list + 1] = gen_fire2(depth + 1, budget)
    elseif r < 0.85 then list[#list + 1] = gen_call2(depth + 1, budget)
    else list[#list + 1] = { kind = "when", id = next_id(), state = pick(STATES) }
    end
  end
  return list
end

-- The model of one instance. Each callback the machine makes is a step:
-- { what = "exit" | "action" | "enter" | "q" | "observe" | "when", ... , actions = {...} }.
local function new_model(table_, kinds)
  local md = { state = "s1", inputs = {}, calls = {}, waiters = {}, observers = {}, steps = {} }
  local run_actions
  local function step(t)
    md.steps[#md.steps + 1] = t
    run_actions(t.actions or {})
  end
  local function queue_call(call)
    if #md.calls >= MAX_POSTPONED then
      call.outcome = "overloaded"
    else
      call.outcome = "queued"
      md.calls[#md.calls + 1] = call
    end
  end
  local function call_now(call)
    local kind = kinds[md.state]
    if kind == "postpone" then return queue_call(call) end
    step { what = "q", call = call, state = md.state, actions = kind == "answer" and call.fires or {} }
    if kind == "answer" then call.outcome = "answered" else queue_call(call) end
  end
  run_actions = function(list)
    for _, a in ipairs(list) do
      if a.kind == "fire" then
        md.inputs[#md.inputs + 1] = a
      elseif a.kind == "call" then
        call_now(a)
      elseif md.state == a.state then
        a.outcome = "succeeded"
        step { what = "when", waiter = a }
      else
        a.outcome = "waiting"
        md.waiters[#md.waiters + 1] = a
      end
    end
  end
  local function retry()
    local kept, list = {}, md.calls
    md.calls = kept
    for _, call in ipairs(list) do
      local kind = kinds[md.state]
      if kind == "postpone" then
        kept[#kept + 1] = call
      elseif kind == "again" then
        step { what = "q", call = call, state = md.state }
        kept[#kept + 1] = call
      else
        call.outcome = "answered"
        step { what = "q", call = call, state = md.state, actions = call.fires }
      end
    end
  end
  local function handle(f)
    local from, to = md.state, table_[md.state][f.name]
    if not to then
      step { what = "action", fire = f, state = from, actions = f.hooks.action }
      return
    end
    step { what = "exit", fire = f, state = from, other = to, actions = f.hooks.exit }
    step { what = "action", fire = f, state = from, actions = f.hooks.action }
    md.state = to
    step { what = "enter", fire = f, state = to, other = from, actions = f.hooks.enter }
    for _, o in ipairs(md.observers) do
      if o.live then step { what = "observe", observer = o, from = from, to = to, input = f.name } end
    end
    local left = {}
    for _, w in ipairs(md.waiters) do
      if w.state == to then
        w.outcome = "succeeded"
        step { what = "when", waiter = w }
      else
        left[#left + 1] = w
      end
    end
    md.waiters = left
    if to ~= from then retry() end
  end
  -- An operation from outside: what it does, then the queue drained.
  function md.outside(op)
    if op.kind == "fire" then handle(op) else run_actions { op } end
    while #md.inputs > 0 do handle(table.remove(md.inputs, 1)) end
  end
  function md.cancel(call)
    for i, c in ipairs(md.calls) do
      if c == call then
        table.remove(md.calls, i)
        call.outcome = "cancelled"
        return
      end
    end
  end
  return md
end

describe("the input queue with calls, waiters and observers (rules 2, 4 and 10, against a model)",
  function()
  it("makes every callback in the model's order; every call and waiter ends as the model says",
    function()
    math.randomseed(SEED + 1)
    local previous = modal.on_log(function() end)   -- unreachable-state warnings, by design
    finally(function() modal.on_log(previous) end)
    local counts = { ops = 0, steps = 0, retried = 0, queued = 0, overloaded = 0, waited = 0,
      observed = 0, cancelled = 0 }
    local current = {}
    local table_, kinds, M
    for seq = 1, SEQUENCES_CALLS do
      if seq % 5 == 1 then               -- a new machine every five sequences
        table_, kinds = {}, {}
        for _, s in ipairs(STATES) do
          table_[s], kinds[s] = {}, pick(KINDS)
          for _, input in ipairs(INPUTS) do
            table_[s][input] = random() < 0.7 and pick(STATES) or nil
          end
        end
        local states = {}
        for _, s in ipairs(STATES) do
          local on = {}
          for _, input in ipairs(INPUTS) do
            on[input] = { to = table_[s][input],
                          action = function(m, ...) current.probe("action", m, s, input, nil, ...) end }
          end
          local q = "postpone"
          if kinds[s] ~= "postpone" then
            q = function(m, id, ...) return current.probe("q", m, s, id, nil, ...) end
          end
          states[s] = {
            on = on, q = q,
            exit = function(m, to, input, ...) current.probe("exit", m, s, input, to, ...) end,
            enter = function(m, from, input, ...) current.probe("enter", m, s, input, from, ...) end,
          }
        end
        M = modal.machine { name = "queue_model_calls", initial = "s1", methods = { "q" },
          inputs = INPUTS, max_postponed = MAX_POSTPONED, states = states }
      end
      local md = new_model(table_, kinds)
      local instance, cursor, failure, op_no = nil, 1, nil, 0
      local calls, waiters = {}, {}
      local function fail(fmt, ...)
        failure = failure or (("sequence %d, operation %d, callback %d: "):format(seq, op_no, cursor)
          .. fmt:format(...))
        error(failure, 0)
      end
      local run_actions
      local function take(what)
        local want = md.steps[cursor]
        if not want then fail("%s: more callbacks than the model", what) end
        if want.what ~= what then fail("expected %s, got %s", want.what, what) end
        cursor = cursor + 1
        return want
      end
      current.probe = function(hook, m, s, input, other, ...)
        if instance == nil then return end          -- the first entry, inside M:new
        if not rawequal(m, instance) then fail("a callback of another instance") end
        local want = take(hook)
        if want.state ~= s then fail("%s ran in state %s, the model says %s", hook, s, want.state) end
        if hook == "q" then
          if input ~= want.call.id or not same_args(want.call.args, ...) then
            fail("call #%d expected, #%s ran with %d argument(s)", want.call.id, tostring(input),
              select("#", ...))
          end
          run_actions(m, want.actions or {})
          if kinds[s] == "again" then return m:postpone() end
          return want.call.id
        end
        local f = want.fire
        if input ~= f.name or not same_args(f.args, ...) then
          fail("expected %s, got %s on '%s' with %d argument(s)", show_fire(f.name, f.args), hook,
            tostring(input), select("#", ...))
        end
        if want.other ~= other then fail("%s: %s, the model says %s", hook, other, want.other) end
        run_actions(m, want.actions)
      end
      run_actions = function(m, list)
        for _, a in ipairs(list) do
          if a.kind == "fire" then
            m:fire(a.name, table.unpack(a.args, 1, a.args.n))
          elseif a.kind == "call" then
            local d = m:q(a.id, table.unpack(a.args, 1, a.args.n))
            local rec = { node = a, d = d }
            calls[#calls + 1] = rec
            d:add_both(function(v) rec.done, rec.result = true, v end)   -- (handled: nil)
          else
            local d = m:when(a.state)
            waiters[#waiters + 1] = { node = a, d = d }
            d:add_callback(function(c)
              local want = take("when")
              if want.waiter ~= a then fail("waiter #%d succeeded, the model says #%d", a.id,
                want.waiter.id) end
              if not rawequal(c, instance) or c.state ~= a.state then
                fail("waiter #%d: wrong value", a.id)
              end
            end)
          end
        end
      end
      instance = M:new()
      local handles = {}
      for k = 1, random(0, 2) do
        local o = { id = k, live = true }
        md.observers[k] = o
        handles[k] = instance:on_transition(function(c, from, to, input)
          local want = take("observe")
          if want.observer ~= o or want.from ~= from or want.to ~= to or want.input ~= input
              or not rawequal(c, instance) then
            fail("observer %d saw %s -> %s on %s; the model: observer %d, %s -> %s on %s", k,
              tostring(from), tostring(to), tostring(input), want.observer.id, want.from, want.to,
              want.input)
          end
        end)
      end
      for _ = 1, random(5, 20) do
        op_no = op_no + 1
        counts.ops = counts.ops + 1
        local r = random()
        if r < 0.06 and #md.calls > 0 then          -- the caller gives up on a waiting call
          local call = pick(md.calls)
          md.cancel(call)
          for _, c in ipairs(calls) do
            if c.node == call then c.d:cancel() end
          end
        elseif r < 0.08 and #md.observers > 0 then
          local k = random(#md.observers)
          md.observers[k].live = false
          handles[k]:cancel()
        else
          local budget = { left = random(0, 12) }
          local op
          if r < 0.7 then op = gen_fire2(0, budget)
          elseif r < 0.9 then op = gen_call2(0, budget)
          else op = { kind = "when", id = next_id(), state = pick(STATES) }
          end
          local first = #md.steps + 1
          md.outside(op)
          assert.equal(first, cursor)
          if op.kind == "fire" then
            instance:fire(op.name, table.unpack(op.args, 1, op.args.n))
          else
            run_actions(instance, { op })
          end
        end
        assert(failure == nil, failure)
        assert(cursor == #md.steps + 1, ("sequence %d, operation %d: %d callback(s) before the "
          .. "outside operation returned, the model says %d"):format(seq, op_no, cursor - 1, #md.steps))
        assert.equal(md.state, instance.state)
        assert.equal(#md.calls, instance:postponed())
        for _, c in ipairs(calls) do
          local outcome, got = c.node.outcome, c.result
          assert.equal(outcome ~= "queued", c.done == true, outcome)
          if outcome == "answered" then
            assert.equal(c.node.id, got)
          elseif outcome ~= "queued" then
            assert.is_true(modal.is_failure(got), outcome)
            assert.equal(outcome, got.kind)
          end
        end
        for _, w in ipairs(waiters) do
          assert.equal(w.node.outcome == "succeeded" and "succeeded" or "pending", w.d:state())
        end
      end
      counts.steps = counts.steps + #md.steps
      for _, st in ipairs(md.steps) do
        if st.what == "q" and st.call.outcome ~= "answered" then counts.retried = counts.retried + 1 end
        if st.what == "observe" then counts.observed = counts.observed + 1 end
        if st.what == "when" then counts.waited = counts.waited + 1 end
      end
      for _, c in ipairs(calls) do
        local o = c.node.outcome
        if o == "queued" then counts.queued = counts.queued + 1 end
        if o == "overloaded" then counts.overloaded = counts.overloaded + 1 end
        if o == "cancelled" then counts.cancelled = counts.cancelled + 1 end
        if c.d:state() == "pending" then c.d:cancel() end
      end
      for _, w in ipairs(waiters) do
        if w.d:state() == "pending" then w.d:cancel() end
        w.d:add_errback(function() end)
      end
      for _, h in ipairs(handles) do h:cancel() end
    end
    -- every kind of event happened, many times
    for what, n in pairs(counts) do
      assert(n > 50, ("only %d of %s over the run"):format(n, what))
    end
  end)
end)
