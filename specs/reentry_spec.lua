-- specs/reentry_spec.lua — re-entry into the driver (doc/machines.md, rules 1, 4, 10, 12 and 13;
-- doc/reload.md): reproducers of what specs/fuzz/driver_fuzz.lua (`make fuzz-driver`) found,
-- each reduced to the few steps that show it.
--
-- Each says what it expects and what used to happen instead (under ASan some of them ended in
-- a sanitizer report).
--
-- Those under "a finalizer run while modal's own C code allocates" depend on where the
-- collector runs a finalizer: they make the collector run a step at nearly every allocation
-- and try until a finalizer lands in the window they need (it takes a few hundred tries), and
-- check that one ran.
local modal = require "modal"
local support = require "support"
local run_undo = support.run_undo


local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_reentry_spec.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end

-- Definition files: each one line, `return require("reentry_probe").make(KEY)`, which calls
-- the builder this spec registered under KEY; so a reload runs the builder again.
local builders = {}
package.loaded.reentry_probe = {
  make = function(key) return builders[key]() end,
}
local serial = 0
local function def_file(builder)
  serial = serial + 1
  local key = "re_" .. serial
  builders[key] = builder
  local path = dir .. "/" .. key .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(("return require('reentry_probe').make(%q)\n"):format(key))
  f:close()
  support.defer(function() os.remove(path) end)
  return path
end

-- Makes the collector run a step at nearly every allocation, until the test ends.
local function eager_collector()
  collectgarbage("incremental", 1, 100, 10)   -- pause 1: a new cycle at once; steps of 1 KB
  support.defer(function()
    collectgarbage("incremental", 200, 100, 13)
    collectgarbage()
  end)
end

local function quiet_log()
  local previous = modal.on_log(function() end)
  support.defer(function() modal.on_log(previous) end)
end

describe("re-entry into the driver", function()
  after_each(run_undo)

  describe("a call's Deferred fired by whoever holds it", function()
    -- The caller gives up on a postponed call by failing its Deferred itself (d:errback, a
    -- timeout of its own): the call is answered, so it no longer waits. Instead it stays
    -- counted in c:postponed() for good (the retry drops the slot but never decrements), and
    -- the count keeps the instance pinned (never collected).
    it("is no longer counted by c:postponed() (rules 2 and 12)", function()
      local M = modal.machine { name = "re_holder", initial = "waiting", methods = { "q" },
        states = { waiting = { q = "postpone", on = { go = "ready" } },
                   ready = { q = function() return "ok" end } } }
      local c = M:new()
      local d = c:q()
      assert.equal(1, c:postponed())
      d:errback("the caller gave up")
      d:add_errback(function() end)
      assert.equal(0, c:postponed())      -- is 1
      c:fire("go")
      assert.equal(0, c:postponed())      -- is still 1, for good
    end)
  end)

  describe("the postpone marker returned by a retried call in a final state", function()
    -- m:postpone() returns one marker value for every call; a handler may hand back one it
    -- got earlier. A direct call that returns it in a final state fails with kind "error"
    -- (rule 1); a retried one in the same state is kept in the queue instead — in a final
    -- state nothing retries it again, so it is never answered.
    it("fails the call with kind error, as for a direct call (rule 1)", function()
      local marker
      local M = modal.machine { name = "re_marker", initial = "open", methods = { "q" },
        states = {
          open = { q = function(m) marker = m:postpone() return marker end,
                   on = { close = "closed" } },
          closed = { final = true, q = function() return marker end },
        } }
      local c = M:new()
      local d = c:q()
      c:fire("close")                     -- retried in `closed`: the handler returns the marker
      local direct = c:q()
      assert.equal("failed", direct:state())
      direct:add_errback(function() end)
      assert.equal("failed", d:state())   -- is "pending", and c:postponed() stays 1
      d:add_errback(function() end)
      assert.equal(0, c:postponed())
    end)
  end)

  describe("an outside c:fire of an input the current state does not take", function()
    -- md_fire (src/entry.c) builds the message after the drive returned, from stack index 3,
    -- which is above the top by then (the drive left c and its result): the input's name reads
    -- as "(null)" (an unacceptable index handed to the Lua API). Inputs no state takes (the
    -- "(no state does)" path, before the drive) are named right.
    it("names the input in the error", function()
      local M = modal.machine { name = "re_message", initial = "a", methods = {},
        states = { a = { on = { go = "b" } }, b = { on = { back = "a" } } } }
      local c = M:new()
      local ok, err = pcall(c.fire, c, "back")
      assert.is_false(ok)
      assert.matches("input 'back'", tostring(err), 1, true)   -- is "input '(null)'"
    end)
  end)

  describe("tostring of a machine with a version", function()
    -- md_machine_tostring (src/machine.c) passes lua_tostring(L, -2) and
    -- luaL_tolstring(L, -1, NULL) to one lua_pushfstring: C leaves their order open, and when
    -- luaL_tolstring runs first it pushes, so -2 is the version: the name reads as the version.
    it("shows the machine's name, then its version", function()
      local M = modal.machine { name = "re_named", version = 3, initial = "a", methods = {},
        states = { a = {} } }
      assert.equal("modal.machine 're_named' version 3", tostring(M))   -- "modal.machine '3' version 3"
    end)
  end)

  describe("two postponed calls each answered with the other's Deferred", function()
    -- A handler's returned Deferred is the call's answer: a retried call whose handler returns
    -- another call's pending Deferred waits on it. When q's retried handler returns s's
    -- Deferred and s's returns q's, each waits on the other, and d:cancel() on either used to
    -- walk the cycle for ever. The scenario runs in a child process, under a timeout.
    it("d:cancel() returns; the cancelled call fails 'cancelled', the other is answered", function()
      local script = [[
        local modal = require "modal"
        modal.on_unhandled(function() end)
        local a, b
        local M = modal.machine { name = "re_cycle", initial = "wait", methods = { "q", "s" },
          states = { wait = { q = "postpone", s = "postpone", on = { go = "ready" } },
                     ready = { q = function() return b end, s = function() return a end } } }
        local c = M:new()
        a = c:q()              -- postponed
        b = c:s()              -- postponed
        c:fire("go")           -- q is retried and waits on b; s is retried and waits on a
        print("before " .. a:state() .. " " .. b:state())
        b:cancel()             -- used to never return
        local states, f = a:state() .. " " .. b:state(), nil
        b:add_errback(function(x) f = x end)
        print("after " .. states .. " " .. (f and f.kind or "-"))
      ]]
      local path = dir .. "/cycle.lua"
      local f = assert(io.open(path, "w"))
      f:write(("package.cpath = %q .. ';' .. package.cpath\n"):format(
        "./" .. (os.getenv("MODAL_BUILD") or "build") .. "/?.so"), script)
      f:close()
      support.defer(function() os.remove(path) end)
      local p = assert(io.popen("timeout 10 lua5.4 " .. path .. " 2>&1"))
      local out = p:read("a")
      p:close()
      assert.matches("before pending pending", out, 1, true)
      assert.matches("after succeeded failed cancelled", out, 1, true)   -- killed after 10 s
    end)
  end)

  describe("a reload whose switch runs user code", function()
    -- reload_body (src/reload.c) sets M's new definition, then switches the instances one by
    -- one; user code it runs meanwhile (the enter hook of a migrated instance, its run and
    -- timeout function, callbacks of calls the remap failed) reaches instances whose state is
    -- still an index into the old definition: their state reads as nil, a method call fails
    -- "no handler for method 'q' in state '(null)'", and a fire reads the new definition's
    -- tables at the old index (under ASan: heap-buffer-overflow in modal__drive_input,
    -- src/drive.c). An instance that user code drives before its own switch is then switched
    -- to the state planned before it moved (without exit or enter).
    it("only ever shows user code instances in a state of their definition", function()
      quiet_log()
      local version, other, seen = 1, nil, {}
      local path = def_file(function()
        if version == 1 then
          local states = {}
          for _, s in ipairs { "a", "b", "c", "d", "e" } do
            states[s] = { q = function() return s end, on = { go = "f" } }
          end
          states.f = { q = function() return "f" end }
          return { name = "re_switch", initial = "a", methods = { "q" }, states = states }
        end
        return { name = "re_switch", initial = "z", methods = { "q" },
          migrate = function() return "z" end,
          states = {
            e = { q = function() return "e" end, on = { go = "f" } },
            f = { q = function() return "f" end },
            z = { q = function() return "z" end,
                  enter = function()
                    seen.state = other.state
                    seen.call = other:q()
                    seen.call:add_errback(function(f) return f end)
                  end },
          } }
      end)
      local M = modal.load(path)
      local first = M:new()               -- #1 in a: v2 lacks it, migrate sends it to z (first)
      other = M:new()
      other:fire("go")                    -- #2 in f: index 5 of v1; v2 has three states
      assert.equal("a", first.state)
      version = 2
      support.reloaded(modal.reload(path))
      assert.equal("f", seen.state)       -- is nil: `other` is not switched yet
      assert.equal("succeeded", seen.call:state())   -- fails: "... in state '(null)'"
    end)

    it("does not move an instance that user code drove before its switch back", function()
      quiet_log()
      local version, second = 1, nil
      local path = def_file(function()
        local states = {
          b = { on = { go = "c" } },
          c = {},
        }
        if version == 1 then
          states.a = { on = { go = "b" } }
        else
          states.z = { enter = function() second:fire("go") end }   -- b -> c, before its switch
        end
        return { name = "re_stale_plan", initial = version == 1 and "a" or "z", methods = {},
          migrate = function() return "z" end, states = states }
      end)
      local M = modal.load(path)
      local first = M:new()               -- #1 in a: migrated to z first (ids in order)
      second = M:new()
      second:fire("go")                   -- #2 in b: stays in b by the plan
      assert.equal("a", first.state)
      version = 2
      support.reloaded(modal.reload(path))
      assert.equal("z", first.state)
      assert.equal("c", second.state)     -- is "b": the switch put it back where it was planned
    end)
  end)

  describe("inputs a reload's switch queued", function()
    -- A migrated instance enters its new state from the switch; what its enter hook fires at
    -- itself waits in its queue (rule 4). The switch used to let the instance go with that
    -- queue still full, and drain it only after every other instance's switch had run user
    -- code: an input fired at it meanwhile was handled at once, before the ones queued first.
    it("are handled in the order they were fired, before any fired later", function()
      quiet_log()
      local version, first, order = 1, nil, {}
      local function record(_, name) order[#order + 1] = name end
      local path = def_file(function()
        if version == 1 then
          return { name = "re_switch_queue", initial = "a", methods = {},
            states = { a = {} } }
        end
        return { name = "re_switch_queue", initial = "b", methods = {},
          migrate = function() return "b" end,
          states = { b = {
            enter = function(m, _, input)
              if input ~= "reload" then return end
              if m == first then m:fire("x", "x") else first:fire("y", "y") end
            end,
            on = { x = { action = record }, y = { action = record } },
          } } }
      end)
      local M = modal.load(path)
      first = M:new()                     -- switched first (ids in order): queues x
      M:new()                             -- its enter fires y at the first one
      version = 2
      support.reloaded(modal.reload(path))
      assert.same({ "x", "y" }, order)    -- was { "y", "x" }
    end)
  end)

  describe("modal.reload while another reload loads its file", function()
    -- md_reload refuses while a machine runs user code or migrate plans, but not while the
    -- outer reload runs the definition file and validates it: a reload from there (the log
    -- sink that the new definition's warnings reach, the file itself, a finalizer) runs whole
    -- in the middle of the outer one, which then plans with the definition it read before:
    -- the states map is indexed by the inner definition's state indices (under ASan:
    -- heap-buffer-overflow in reload_body, src/reload.c), and calls are remapped by the wrong
    -- method list.
    it("raises, as while another reload plans (doc/reload.md)", function()
      local version, nested = 1, nil
      local function def(names, prefix)
        local states = {}
        for i = 1, names do
          states[prefix .. i] = { on = { go = prefix .. (i % names + 1) } }
        end
        states.lone = {}                  -- unreachable: a warning when validated
        return { name = "re_nested", version = version, initial = prefix .. "1", methods = {},
          states = states, migrate = function() return prefix .. names end }
      end
      local path = def_file(function()
        if version == 1 then return def(2, "s") end
        if version == 2 then return def(3, "s") end
        return def(40, "t")
      end)
      local M = modal.load(path)
      local c = M:new()
      local previous = modal.on_log(function(level)
        if level == "warn" and version == 2 and nested == nil then
          version = 3
          nested = { pcall(modal.reload, path) }   -- from the sink, while reload #1 validates
          version = 2
        end
      end)
      support.defer(function() modal.on_log(previous) end)
      version = 2
      local ok = pcall(modal.reload, path)
      assert.is_not_nil(nested)
      assert.is_false(nested[1])          -- true: the inner reload ran (and moved c to t40)
      assert.is_true(ok)
      assert.equal("s1", c.state)
    end)
  end)

  describe("a reload that makes the current state final", function()
    -- c:when(state) fails with kind "stopped" once the instance is in a different final state
    -- (rule 10); a reload whose new definition makes the instance's (kept) state final leaves
    -- the waiters pending forever instead.
    it("fails the when() waiters for other states", function()
      quiet_log()
      local version = 1
      local path = def_file(function()
        local done = version == 1 and { on = { go = "over" } } or { final = true }
        return { name = "re_final", version = version, initial = "done", methods = {},
          states = { done = done, over = { final = true } } }
      end)
      local M = modal.load(path)
      local c = M:new()
      local w = c:when("over")
      version = 2
      support.reloaded(modal.reload(path))
      assert.equal("done", c.state)
      assert.equal("failed", w:state())   -- is "pending", for good
      w:add_errback(function() end)
    end)
  end)

  describe("migrate that settles a job", function()
    -- migrate only reads m; M:new, fire and method calls raise from it. Settling or
    -- cancelling a Deferred does not: cancelling another instance's job runs its outcome as
    -- input "error" at once, so that instance moves after the reload planned it — and the
    -- switch then puts it back in the state it planned (no exit, no enter, no job running):
    -- stuck where nothing will ever move it.
    it("does not leave an instance in a state it had left", function()
      quiet_log()
      local version, jobs, B = 1, {}, nil
      local path = def_file(function()
        local states = {
          a = { run = function(m) local d = modal.deferred() jobs[m.id] = d return d end,
                on = { done = "b", error = "b", go = version == 1 and "x" or "y" } },
          b = {},
        }
        if version == 1 then states.x = {} else states.y = {} end
        return { name = "re_migrate", version = version, initial = "a", methods = {},
          states = states, migrate = function() jobs[B.id]:cancel() return "y" end }
      end)
      local M = modal.load(path)
      B = M:new()                         -- #1 in a, its job running: planned to stay in a
      local A = M:new()
      A:fire("go")                        -- #2 in x, which version 2 does not have: migrate
      version = 2
      support.reloaded(modal.reload(path))
      assert.equal("y", A.state)
      assert.equal("b", B.state)          -- is "a", with no job: stuck
    end)
  end)

  describe("a finalizer run while modal's own C code allocates", function()
    -- A __gc (rule 12 lists them) runs at any allocation, modal's included. method_call
    -- (src/entry.c) clears I_BUSY and ctx->driving as soon as the handler returns, then
    -- allocates (the postponed-call record, the caller's Deferred) before it queues the call
    -- and drains; a "postpone" handler never marks the instance busy at all. A finalizer
    -- there drives an idle instance in the middle of the call: the call is queued after the
    -- state changed (in a final state: never answered); an input it fires is handled before
    -- the ones the handler queued; a reload is allowed, and the call is recorded with the old
    -- definition's method index (answered by another method's handler). The same goes for
    -- c:when() when it makes the instance's extras, and for a reload refilling the methods
    -- table (a finalizer finds c.q nil).
    local function bombs(n, fn)
      for _ = 1, n do setmetatable({}, { __gc = fn }) end
    end

    it("never queues a postponed call into a state it was not postponed in", function()
      eager_collector()
      local armed
      local M = modal.machine { name = "re_gc_postpone", initial = "open", methods = { "q" },
        states = { open = { q = function(m) armed = m return m:postpone() end,
                            on = { stop = "closed" } },
                   closed = { final = true, q = function() return "closed" end } } }
      local hits, stuck = 0, 0
      for _ = 1, 20000 do
        local c = M:new()
        bombs(20, function()
          local m = armed
          if m and m:postponed() == 0 and m.state == "open" then
            armed = nil
            hits = hits + 1
            m:fire("stop")              -- while the call is between its handler and the queue
          end
        end)
        local d = c:q()
        armed = nil
        if d:state() == "pending" and c.state == "closed" then stuck = stuck + 1 end
        if hits >= 3 then break end
      end
      assert.is_true(hits > 0, "no finalizer ran in the window: nothing was tried")
      assert.equal(0, stuck)              -- each hit leaves the call pending in `closed`
    end)

    it("never queues more calls than max_postponed when a finalizer calls meanwhile", function()
      -- The bound was checked before the call's record was made; a finalizer run by those
      -- allocations could call the busy instance (a call from inside runs at once) and
      -- postpone one more, which took the last place: the first was queued past the bound.
      eager_collector()
      local armed
      local M = modal.machine { name = "re_gc_bound", initial = "open", methods = { "q" },
        max_postponed = 1,
        states = { open = { q = function(m, outer)
                              if outer then armed = m end
                              return m:postpone()
                            end } } }
      local hits, over = 0, 0
      for _ = 1, 20000 do
        local c = M:new()
        local inner
        bombs(20, function()
          local m = armed
          if m and m:postponed() == 0 then
            armed = nil
            hits = hits + 1
            inner = m:q(false)            -- while the outer call is being queued
          end
        end)
        local outer = c:q(true)
        armed = nil
        if c:postponed() > 1 then over = over + 1 end
        for _, d in ipairs { outer, inner or outer } do
          if d:state() == "pending" then d:cancel() end
          d:add_errback(function() end)
        end
        if hits >= 20 then break end
      end
      assert.is_true(hits > 0, "no finalizer ran in the window: nothing was tried")
      assert.equal(0, over)               -- each hit left two calls queued under a bound of 1
    end)

    it("handles the inputs a handler fired before the one a finalizer fires later", function()
      eager_collector()
      local armed, order = nil, nil
      local M = modal.machine { name = "re_gc_order", initial = "a", methods = { "q" },
        inputs = { "one", "two" },
        states = { a = {
          q = function(m) m:fire("one") armed = m return 1 end,   -- queued: the call is busy
          on = { one = { action = function() order[#order + 1] = "one" end },
                 two = { action = function() order[#order + 1] = "two" end } } } } }
      local hits, swapped = 0, 0
      for _ = 1, 20000 do
        local c = M:new()
        order = {}
        bombs(20, function()
          local m = armed
          if m then
            armed = nil
            hits = hits + 1
            m:fire("two")                -- after "one" in time
          end
        end)
        c:q()
        armed = nil
        if order[1] == "two" then swapped = swapped + 1 end
        if hits >= 20 then break end
      end
      assert.is_true(hits > 0)
      assert.equal(0, swapped)            -- "two" was handled first each time the window hit
    end)

    it("keeps a when() waiter a finalizer adds while c:when() makes the instance's extras",
      function()
      -- An instance gets its extras (queues, waiters, timer) on first need; a finalizer run
      -- by those allocations that needs them too made a second record, which the first then
      -- replaced: the finalizer's waiter was lost, pending for good.
      eager_collector()
      local armed, inner
      local M = modal.machine { name = "re_gc_extras", initial = "a", methods = {},
        states = { a = { on = { stop = "closed", go = "b" } }, b = {}, closed = { final = true } } }
      local hits, lost = 0, 0
      for _ = 1, 20000 do
        local c = M:new()
        inner = nil
        bombs(20, function()
          local m = armed
          if m then
            armed = nil
            hits = hits + 1
            inner = m:when("b")           -- while the outer c:when() runs
          end
        end)
        armed = c
        local outer = c:when("b")
        armed = nil
        c:fire("stop")                    -- a final state: every waiter fails 'stopped'
        assert.equal("failed", outer:state())
        outer:add_errback(function() end)
        if inner then
          if inner:state() == "pending" then lost = lost + 1 end
          inner:add_errback(function() end)
        end
        if hits >= 200 then break end
      end
      assert.is_true(hits > 0, "no finalizer ran in the window: nothing was tried")
      assert.equal(0, lost)               -- the waiter of each hit in the window stays pending
    end)

    it("never records a call with another method when a finalizer reloads", function()
      eager_collector()
      quiet_log()
      local version, armed = 1, nil
      local path = def_file(function()
        local methods = version % 2 == 1 and { "q", "r" } or { "r", "q" }   -- indices swap
        return { name = "re_gc_reload", version = version, initial = "open", methods = methods,
          states = {
            open = { q = function(m) armed = m return m:postpone() end,
                     r = function(m) armed = m return m:postpone() end, on = { go = "ready" } },
            ready = { q = function() return "q" end, r = function() return "r" end } } }
      end)
      local M = modal.load(path)
      local hits, wrong = 0, 0
      for _ = 1, 20000 do
        local c = M:new()
        bombs(20, function()
          local m = armed
          if m and m:postponed() == 0 then
            armed = nil
            hits = hits + 1
            version = version + 1
            modal.reload(path)            -- succeeds: nothing marks the call as in progress
          end
        end)
        local d = c:q()
        armed = nil
        c:fire("go")
        local got
        d:add_both(function(v) got = v end)
        if got ~= "q" then wrong = wrong + 1 end
        if hits >= 6 then break end
      end
      assert.is_true(hits > 0)
      assert.equal(0, wrong)              -- call q answered "r"
    end)

    it("switches an instance a finalizer makes while a reload runs, or refuses to make it",
      function()
      -- A reload lists the live instances, plans them, makes what the switch needs, then
      -- switches the listed ones. An instance a finalizer made after the listing (the plan's
      -- and the switch's allocations run finalizers) was never switched: its state index
      -- pointed into the old definition, and read as another state or none. Now M:new raises
      -- from the listing to the switch; before (while the file loads) it makes a listed one.
      eager_collector()
      collectgarbage("incremental", 1, 100, 1)   -- one step at a time: 10 finalizers at most
      quiet_log()
      local version, armed, made = 1, false, {}
      local path = def_file(function()
        local states = { x = { q = function() return "x" end } }
        if version % 2 == 1 then          -- x is the last of five, then the first of two
          for _, name in ipairs { "a", "b", "c", "d" } do
            states[name] = { q = function() return name end }
          end
        else
          states.y = { q = function() return "y" end }
        end
        return { name = "re_gc_new", version = version, initial = "x", methods = { "q" },
          states = states }
      end)
      local M = modal.load(path)
      local tries, wrong, refusals = 0, 0, {}
      for _ = 1, 300 do
        local started = false
        bombs(200, function()
          if armed then
            tries = tries + 1
            local ok, c = pcall(M.new, M)
            if ok then made[#made + 1] = c else refusals[#refusals + 1] = tostring(c) end
          else
            started = true
          end
        end)
        -- Step the collector until it runs the first of them: the rest run ten per step, at
        -- the reload's allocations (whatever the size of the heap the suite left).
        while not started do collectgarbage("step", 0) end
        version = version + 1
        armed = true
        support.reloaded(modal.reload(path))
        armed = false
        for _, c in ipairs(made) do
          local answer
          c:q():add_both(function(v) answer = v end)
          if c.state ~= "x" or answer ~= "x" then wrong = wrong + 1 end
        end
        made = {}
        if tries >= 200 then break end
      end
      assert.is_true(tries > 0, "no finalizer ran while a reload ran: nothing was tried")
      assert.equal(0, wrong)              -- its state read as another one, or none
      for _, message in ipairs(refusals) do
        assert.matches("M:new() called from migrate or while a reload plans", message, 1, true)
      end
    end)

    it("never shows an instance without its methods while a reload refills them", function()
      eager_collector()
      local path = def_file(function()
        return { name = "re_gc_methods", initial = "a", methods = { "q", "r", "s", "t" },
          states = { a = { q = function() end, r = function() end, s = function() end,
                           t = function() end } } }
      end)
      local M = modal.load(path)
      local c = M:new()
      local missing = 0
      for _ = 1, 1000 do                  -- the refill is short: it takes a few hundred
        bombs(50, function()
          if c.q == nil or c.when == nil then missing = missing + 1 end
        end)
        support.reloaded(modal.reload(path))
        if missing > 0 then break end
      end
      assert.equal(0, missing)            -- c.q / c.when read nil from finalizers
    end)
  end)
end)
