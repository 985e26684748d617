-- specs/unhandled_spec.lua — failed Deferreds collected unhandled: modal.on_unhandled, default log.
local support = require "support"

-- Collects garbage twice and lets the loop turn, twice over: reports run from the collector
-- or on the next loop turn.
local function flush()
  for _ = 1, 2 do
    collectgarbage()
    collectgarbage()
    support.run_loop(0.2)
  end
end

describe("unhandled failures", function()
  local modal, reports, previous

  before_each(function()
    modal = require "modal"
    flush()                       -- leftovers of earlier specs go to the reporter they found
    reports = {}
    previous = modal.on_unhandled(function(f) reports[#reports + 1] = f end)
  end)

  after_each(function()
    flush()
    modal.on_unhandled(previous)
  end)

  -- Runs make() in its own frame, so nothing it made stays reachable, then flushes.
  local function dropped(make)
    make()
    flush()
  end

  describe("modal.on_unhandled()", function()
    it("returns the previous reporter", function()
      local function one() end
      local function two() end
      local mine = modal.on_unhandled(one)
      assert.is_function(mine)
      assert.is_true(rawequal(one, modal.on_unhandled(two)))
      assert.is_true(rawequal(two, modal.on_unhandled(mine)))
    end)

    it("reports a failed Deferred dropped unhandled exactly once, with its failure", function()
      local f = modal.failure("custom", "nobody listened")
      dropped(function()
        local d = modal.deferred()
        d:errback(f)
      end)
      assert.equal(1, #reports)
      assert.is_true(rawequal(f, reports[1]))
      flush()
      assert.equal(1, #reports)
    end)

    it("reports modal.fail() and errback(value) failures", function()
      dropped(function()
        modal.fail("first dropped")
        modal.deferred():errback({ code = 2 })
      end)
      assert.equal(2, #reports)
      local seen = {}
      for _, f in ipairs(reports) do
        assert.is_true(modal.is_failure(f))
        assert.equal("error", f.kind)
        seen[#seen + 1] = type(f.value)
      end
      table.sort(seen)
      assert.same({ "string", "table" }, seen)
    end)

    it("does not report a failure an errback took", function()
      dropped(function()
        modal.fail("handled"):add_errback(function() end)
        modal.fail(modal.failure("control", "dropped"))
      end)
      assert.equal(1, #reports)
      assert.equal("control", reports[1].kind)
    end)

    it("does not report an errback that recovered, a success or a pending Deferred", function()
      dropped(function()
        modal.fail("recovered"):add_errback(function() return "fine" end)
        modal.succeed("fine")
        modal.deferred()
        modal.fail(modal.failure("control", "dropped"))
      end)
      assert.equal(1, #reports)
      assert.equal("control", reports[1].kind)
    end)

    it("reports the new failure when the last errback raised again", function()
      dropped(function()
        modal.fail("original"):add_errback(function() error("raised again", 0) end)
      end)
      assert.equal(1, #reports)
      assert.equal("error", reports[1].kind)
      assert.equal("raised again", reports[1].message)
    end)

    it("reports an error raised by a callback with its traceback", function()
      dropped(function()
        modal.succeed(1):add_callback(function() error("callback blew up") end)
      end)
      assert.equal(1, #reports)
      assert.equal("error", reports[1].kind)
      assert.matches("callback blew up", reports[1].message, 1, true)
      assert.is_string(reports[1].traceback)
    end)

    it("reports a failure passed on to a paused outer Deferred once", function()
      local f = modal.failure("custom", "inner failure")
      dropped(function()
        local inner = modal.deferred()
        modal.succeed(1):add_callback(function() return inner end)
        inner:errback(f)
      end)
      assert.equal(1, #reports)
      assert.is_true(rawequal(f, reports[1]))
    end)

    it("does not report a failure passed on to an outer Deferred that handled it", function()
      dropped(function()
        local inner = modal.deferred()
        modal.succeed(1):add_callback(function() return inner end):add_errback(function() end)
        inner:errback("inner failure")
        modal.fail(modal.failure("control", "dropped"))
      end)
      assert.equal(1, #reports)
      assert.equal("control", reports[1].kind)
    end)
  end)

  describe("exactly once", function()
    it("does not report a failure handed over by a link and handled by the outer chain", function()
      local seen = "unset"
      dropped(function()
        local inner = modal.fail("boom", "handled by the outer chain")
        local outer = modal.deferred()
        outer:add_callback(function() return inner end)
        outer:add_errback(function() return "recovered" end)
        outer:callback(nil)
        inner:add_callback(function(v) seen = v end)
      end)
      assert.equal(0, #reports)
      assert.is_nil(seen)
    end)

    it("reports a failure handed along a nest of Deferreds once, from the outermost", function()
      local f = modal.failure("custom", "deep")
      dropped(function()
        local innermost = modal.deferred()
        local cur = innermost
        for _ = 1, 10 do
          local prev = cur
          cur = modal.succeed():add_callback(function() return prev end)
        end
        innermost:errback(f)
        innermost:add_both(function(r) return r end)   -- a later link sees nil
      end)
      assert.equal(1, #reports)
      assert.is_true(rawequal(f, reports[1]))
    end)

    it("reports a timeout once, whether the Deferred was paused or not", function()
      dropped(function()
        modal.deferred():add_timeout(0.01)
        modal.succeed():add_callback(function() return modal.deferred() end):add_timeout(0.01)
        support.run_loop(2)
      end)
      assert.equal(2, #reports)
      assert.same({ "timeout", "timeout" }, { reports[1].kind, reports[2].kind })
    end)

    it("does not report the inner cancel failure a timed-out outer one took over", function()
      dropped(function()
        local inner = modal.deferred()
        modal.succeed():add_callback(function() return inner end)
          :add_timeout(0.01):add_errback(function() end)
        support.run_loop(2)
      end)
      assert.equal(0, #reports)
    end)

    it("reports the failure of an async call once, not the awaited Deferred's too", function()
      local f = modal.failure("custom", "awaited")
      dropped(function()
        local w = modal.deferred()
        modal.async(function() return modal.await(w) end)()
        w:errback(f)
      end)
      assert.equal(1, #reports)
      assert.is_true(rawequal(f, reports[1]))
    end)

    it("reports a cycle's cancel failure once", function()
      dropped(function()
        local a, b = modal.deferred(), modal.deferred()
        a:add_callback(function() return b end)
        b:add_callback(function() return a end)
        a:callback(); b:callback()
        a:cancel()
      end)
      assert.equal(1, #reports)
      assert.equal("cancelled", reports[1].kind)
    end)

    it("reports the losers of a race and the later failures of all() never", function()
      dropped(function()
        local x, y = modal.deferred(), modal.deferred()
        modal.race({ x, y }):add_errback(function() end)
        x:errback("first")
        local p, q = modal.deferred(), modal.deferred()
        modal.all({ p, q }):add_errback(function() end)
        p:errback("first"); q:errback("second")
      end)
      assert.equal(0, #reports)
    end)

    it("reports once when a finalizer acts on Deferreds while modal allocates", function()
      local pool = {}
      local gc = { __gc = function()
        local d = pool[#pool]
        if d then pcall(d.errback, d, modal.failure("gc", "fired by a finalizer")) end
        pool[#pool + 1] = modal.deferred()
      end }
      dropped(function()
        collectgarbage("incremental", 1, 1000)
        for i = 1, 2000 do
          setmetatable({}, gc)
          local d = modal.deferred()
          pool[#pool + 1] = d
          d:add_callback(function(v) return v end, i)
          if i % 3 == 0 then d:add_timeout(0) end
          if i % 5 == 0 then pcall(d.errback, d, "plain") end
        end
        collectgarbage("incremental", 200, 100)
        pool = {}
      end)
      local seen = {}
      for _, f in ipairs(reports) do
        assert.is_nil(seen[f], "a failure was reported twice")
        seen[f] = true
      end
    end)
  end)

  describe("the default reporter", function()
    -- True when a log entry carries text in its message or in one of its fields.
    local function mentions(entry, text)
      if entry.message:find(text, 1, true) then return true end
      for _, v in pairs(entry.fields or {}) do
        if type(v) == "string" and v:find(text, 1, true) then return true end
        if modal.is_failure(v) and (v.message:find(text, 1, true)
            or (v.traceback or ""):find(text, 1, true)) then
          return true
        end
      end
      return false
    end

    it("logs at level 'error' through modal.on_log, with the failure and its traceback", function()
      local entries = {}
      local traceback
      local previous_log = modal.on_log(function(level, message, fields)
        entries[#entries + 1] = { level = level, message = message, fields = fields }
      end)
      finally(function() modal.on_log(previous_log) end)
      modal.on_unhandled(nil)
      dropped(function()
        modal.succeed(1)
          :add_callback(function() error("unique-unhandled-7f3a") end)
          :add_errback(function(f) traceback = f.traceback; error(f) end)
      end)
      assert.equal(0, #reports)
      local matching = {}
      for _, e in ipairs(entries) do
        if mentions(e, "unique-unhandled-7f3a") then matching[#matching + 1] = e end
      end
      assert.equal(1, #matching)
      assert.equal("error", matching[1].level)
      assert.is_string(traceback)
      assert.is_true(mentions(matching[1], traceback), "the log entry lacks the traceback")
    end)

    it("is what on_unhandled(nil) puts back", function()
      local entries = {}
      local previous_log = modal.on_log(function(level, message, fields)
        entries[#entries + 1] = { level = level, message = message, fields = fields }
      end)
      finally(function() modal.on_log(previous_log) end)
      modal.on_unhandled(function() error("this reporter must not run") end)
      modal.on_unhandled(nil)
      dropped(function()
        modal.fail(modal.failure("custom", "unique-default-91bc"))
      end)
      local found = 0
      for _, e in ipairs(entries) do
        if e.level == "error" and mentions(e, "unique-default-91bc") then
          found = found + 1
        end
      end
      assert.equal(1, found)
      assert.equal(0, #reports)
    end)
  end)
end)
