-- specs/newcomer_spec.lua — what a newcomer found following README.md and doc/: a second
-- close() (doc/policies.md), modal.service.status on what is not a service, the last failure
-- after a reconnect, clock:next from a timer (doc/testing.md), NaN in delay messages, the
-- README's service tour under lua5.4 and the line client's greeting, and tostring(f) in
-- modal(7).
local modal = require "modal"
local support = require "support"
local ss = require "service_support"

local BUILD = os.getenv("MODAL_BUILD") or "build"
local line = dofile("examples/echo/line.lua")

-- Runs a shell command; returns status, stdout and stderr. `tool`: one not built with the
-- sanitizer (man), which must not inherit its preload under make asan; lua5.4 loading the
-- module needs it.
local function sh(cmd, tool)
  local out, err = os.tmpname(), os.tmpname()
  local _, _, status = os.execute(("%s%s >%s 2>%s </dev/null"):format(
    tool and "env -u LD_PRELOAD " or "", cmd, out, err))
  local function slurp(f)
    local h = assert(io.open(f))
    local s = h:read("a")
    h:close()
    os.remove(f)
    return s
  end
  return status, slurp(out), slurp(err)
end

-- The first ```lua block under the README heading `heading`.
local function readme_block(heading)
  local h = assert(io.open("README.md"))
  local text = h:read("a")
  h:close()
  local at = assert(text:find("\n" .. heading .. "\n", 1, true), "README has no " .. heading)
  local block = assert(text:match("```lua\n(.-)```", at), "no lua block under " .. heading)
  return block
end

local function line_service(opts)
  local o = {
    name = ss.name("line"),
    connect = function(m) return line.open(m, "127.0.0.1", m.data.port, m.data.line) end,
    disconnect = function(_, conn) conn:close() end,
    methods = { echo = function(_, conn, text) return conn:request(text) end },
    backoff = { initial = 0.02, multiplier = 2, jitter = 0, max = 0.08 },
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  return modal.service(o)
end

describe("a newcomer's findings", function()
  after_each(function()
    ss.cleanup()
    support.run_undo()
  end)

  describe("close() twice", function()
    it("logs nothing and succeeds twice when both are called before the first is handled",
      function()
        local lines = support.capture_log()
        local s = ss.server { mode = "echo" }
        local c = ss.new(ss.echo(), { port = s.port })
        local first, second
        c:when("ready"):add_callback(function()
          first, second = ss.watch(c:close()), ss.watch(c:close())
        end)
        c:connect_now()
        assert.is_true(ss.wait(function() return second and second.fired end))
        assert.is_true(first.ok)
        assert.is_true(second.ok)
        assert.equal("closed", c.state)
        for _, l in ipairs(lines) do
          assert.is_nil(l.message:find("not taken", 1, true), l.message)
        end
        assert.is_true(ss.watch(c:close()).ok)        -- closed: once more, still fine
      end)
  end)

  describe("modal.service.status", function()
    it("refuses what is not a service's instance, naming what it got", function()
      local M = modal.machine { name = ss.name("plain"), version = 1, initial = "a", methods = {},
                                states = { a = {} } }
      local cases = { { nil, "got nil" }, { 42, "got number" }, { {}, "got table" },
        { M:new {}, "got an instance of machine '" },
        { M, ", not an instance of it" } }
      for _, case in ipairs(cases) do
        local ok, err = pcall(function() local st = modal.service.status(case[1]); return st end)
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'status' (a modal.service instance expected, ", err, 1,
          true)
        assert.matches(case[2], err, 1, true)
        assert.matches("newcomer_spec.lua:%d+:", err)
      end
    end)

    it("still tells where a service's instance stands", function()
      local c = ss.new(ss.echo(), { port = 1 })
      assert.are.same({ state = "idle", attempts = 0 }, modal.service.status(c))
    end)
  end)

  describe("the last failure", function()
    it("is cleared with the attempts when a connection succeeds", function()
      local s = ss.server { mode = "refuse" }
      local c = ss.new(ss.echo(), { port = s.port })
      local got = ss.watch(c:echo("one"))
      assert.is_true(ss.wait(function() return modal.service.status(c).attempts >= 2 end))
      assert.matches("ECONNREFUSED", tostring(modal.service.status(c).last))
      s:set("echo")
      assert.is_true(ss.wait(function() return got.fired end))
      assert.is_true(got.ok)
      local st = modal.service.status(c)
      assert.equal(0, st.attempts)
      assert.is_nil(st.last)
      c:close()
      local late = ss.watch(c:echo("after close"))
      assert.is_true(ss.wait(function() return late.fired end))
      assert.equal("stopped", late.value.kind)
      assert.is_nil(late.value.message:find("last:", 1, true), late.value.message)
    end)
  end)

  describe("clock:next from a timer", function()
    it("raises even when no other timer is armed", function()
      local clock = support.clock()
      local got
      modal.call_later(1, function() got = table.pack(pcall(clock.next, clock)) end)
      clock:advance(1)
      assert.is_false(got[1])
      assert.matches("clock:next: called from a timer the clock is running", got[2], 1, true)
      assert.is_nil(clock:next())                     -- outside a timer: nothing armed, nil
    end)
  end)

  describe("delays that are NaN", function()
    it("are named NaN, with what a delay must be", function()
      local cases = {
        { function() modal.call_later(0 / 0, print) end,
          "bad argument #1 to 'call_later' (delay must be a number of seconds >= 0, got NaN)" },
        { function() modal.call_later(-1, print) end,
          "bad argument #1 to 'call_later' (delay must be a number of seconds >= 0, got -1)" },
        { function() modal.call_later(nil, print) end,
          "bad argument #1 to 'call_later' (delay must be a number of seconds >= 0, got nil)" },
        { function() modal.sleep(0 / 0) end,
          "bad argument #1 to 'sleep' (delay must be a number of seconds >= 0, got NaN)" },
        { function() modal.deferred():add_timeout(0 / 0) end,
          "bad argument #1 to 'add_timeout' (seconds must be a number >= 0, got NaN)" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(case[1])
        assert.is_false(ok)
        assert.matches(case[2], err, 1, true)
        assert.is_nil(err:find("nan", 1, true), err)
      end
      local h = modal.call_later(1, print)
      local ok, err = pcall(h.reset, h, 0 / 0)
      h:cancel()
      assert.is_false(ok)
      assert.matches("(delay must be a number of seconds >= 0, got NaN)", err, 1, true)
    end)

    it("count a method's arguments without self, as add_timeout does: h:reset(-1) is #1", function()
      local h = modal.call_later(1, print)
      local ok, err = pcall(function() h:reset(-1) end)
      h:cancel()
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'reset' (delay must be a number of seconds >= 0, got -1)",
                     err, 1, true)
    end)
  end)

  describe("the README's service tour", function()
    it("ends cleanly under the stock lua5.4 without modal.run()", function()
      local file = os.tmpname()
      local h = assert(io.open(file, "w"))
      h:write(readme_block("### A service that comes and goes"))
      h:close()
      local status, out, err = sh(("LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' "
        .. "LUA_CPATH='./%s/?.so;;' lua5.4 %s"):format(BUILD, file))
      assert.equal(0, status, err)
      assert.is_nil(err:find("Uncaught", 1, true), err)
      assert.equal("", out)                           -- nothing ran: no loop
      status, out, err = sh(("%s/modal run %s"):format(BUILD, file))
      os.remove(file)
      assert.equal(0, status, err)
      assert.equal("timeout: timed out after 0.2 seconds\nhello\nclosed\n", out)
    end)

    it("the README says how to run it", function()
      local h = assert(io.open("README.md"))
      local text = h:read("a")
      h:close()
      assert.matches("run it with `build/modal run tour.lua`", text, 1, true)
    end)
  end)

  describe("examples/echo/line.lua and a greeting", function()
    it("without greeting = true, a slow greeting is taken as the first reply (doc/policies.md)",
      function()
        local s = ss.server { mode = "echo", greeting = "+OK hello", slow_greeting = 0.05 }
        local c = ss.new(line_service(), { port = s.port })
        local got = ss.watch(c:echo("one"))
        assert.is_true(ss.wait(function() return got.fired end))
        assert.equal("+OK hello", got.value)
      end)

    it("with greeting = true, open waits for it and replies pair with their calls", function()
      local s = ss.server { mode = "echo", greeting = "+OK hello", slow_greeting = 0.05 }
      local c = ss.new(line_service(), { port = s.port, line = { greeting = true } })
      local one, two = ss.watch(c:echo("one")), ss.watch(c:echo("two"))
      assert.is_true(ss.wait(function() return two.fired end))
      assert.equal("one", one.value)
      assert.equal("two", two.value)
      assert.equal("+OK hello", c.data.conn.greeting)
    end)

    it("with greeting and a secret, authenticates after the greeting", function()
      local s = ss.server { mode = "echo", greeting = true, auth = "pw" }
      local c = ss.new(line_service(), { port = s.port, line = { greeting = true, secret = "pw" } })
      local one = ss.watch(c:echo("one"))
      assert.is_true(ss.wait(function() return one.fired end))
      assert.equal("one", one.value)
    end)
  end)

  describe("modal(7)", function()
    it("renders tostring(f) as kind: message", function()
      local status, out = sh("MANWIDTH=200 man -l man/modal.7", true)
      assert.equal(0, status)
      out = out:gsub(".\b", ""):gsub("%s+", " ")
      assert.matches("tostring(f) is kind: message, as in timeout: timed out after 0.2 seconds",
        out, 1, true)
      assert.is_nil(out:find('" kind', 1, true))
    end)
  end)
end)
