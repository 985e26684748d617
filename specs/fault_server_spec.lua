-- specs/fault_server_spec.lua — the testing kit's fault server (doc/policies.md, "The fault
-- server"), driven by raw luv clients on 127.0.0.1: every mode, the greeting and auth options,
-- set/stop/start/close, the counters, and clear errors for bad options.
local uv = require "luv"
local testing = require "modal.testing"
local support = require "support"

local server = testing.server
local wait_for = support.wait_for

-- A raw client: what it saw, as fields (connected, err, data, eof, reset).
-- read_after (seconds): start reading that long after connecting, as a busy client would.
local function dial(port, read_after)
  local c = { data = "", sock = uv.new_tcp() }
  local function read()
    c.sock:read_start(function(rerr, chunk)
      if rerr then
        c.reset = rerr
        if not c.sock:is_closing() then c.sock:close() end
      elseif not chunk then
        c.eof = true
        -- Linux reports a reset that arrives while data is still unread as a plain end of
        -- file; the reset then shows on the next write (ECONNRESET or EPIPE), where a
        -- peer's orderly close (FIN) lets the write through.
        local ok, werr = c.sock:try_write("x")
        if not ok and werr then c.reset_after_eof = werr end
        if not c.sock:is_closing() then c.sock:close() end
      else
        c.data = c.data .. chunk
      end
    end)
  end
  c.sock:connect("127.0.0.1", port, function(err)
    if err then c.err = err; c.sock:close(); return end
    c.connected = true
    if not read_after then return read() end
    local t = uv.new_timer()
    t:start(math.floor(read_after * 1000), 0, function()
      t:close()
      if not c.sock:is_closing() then read() end
    end)
  end)
  function c.send(text) c.sock:write(text) end
  function c.close() if not c.sock:is_closing() then c.sock:close() end end
  function c.ended() return (c.eof or c.reset or c.err) and true or false end
  -- How the connection was reset, however the kernel told it; nil after an orderly close.
  function c.reset_by_peer()
    local why = c.reset or c.reset_after_eof
    return why and (why:match("ECONNRESET") or why:match("EPIPE"))
  end
  return c
end

local servers = {}
local function make(opts)
  local s = server(opts)
  servers[#servers + 1] = s
  return s
end

local function pause(seconds)
  local t0 = uv.hrtime()
  wait_for(function() return uv.hrtime() - t0 > seconds * 1e9 end, seconds + 1)
end

describe("modal.testing.server", function()
  after_each(function()
    for _, s in ipairs(servers) do s:close() end
    servers = {}
    uv.run("nowait")
  end)

  describe("bad options (first)", function()
    it("names an unknown mode and lists the modes", function()
      local ok, err = pcall(server, { mode = "flaky" })
      assert.is_false(ok)
      assert.matches("mode: expected one of echo, refuse, blackhole, accept_close, silent, "
        .. "reset_mid_reply", err, 1, true)
    end)

    it("names unknown options, bad ports, greetings and secrets at once", function()
      local ok, err = pcall(server, { moed = "echo", port = -1, slow_greeting = "soon", auth = 7 })
      assert.is_false(ok)
      assert.matches("moed: unknown option", err, 1, true)
      assert.matches("port: expected a port number", err, 1, true)
      assert.matches("slow_greeting: expected a number of seconds", err, 1, true)
      assert.matches("auth: expected the secret", err, 1, true)
    end)

    it("says when the port is taken", function()
      local s = make()
      local ok, err = pcall(server, { port = s.port })
      assert.is_false(ok)
      assert.matches("127.0.0.1:" .. s.port .. ": EADDRINUSE", err, 1, true)
    end)

    it("refuses a port change after creation, and a start after close", function()
      local s = make()
      assert.has_error(function() s:set { port = 1 } end)
      s:close()
      assert.has_error(function() s:start() end)
    end)
  end)

  describe("refuse", function()
    it("keeps the port reserved while nothing listens: a connect is refused", function()
      local s = make { mode = "refuse" }
      assert.is_true(s.port > 0)
      local c = dial(s.port)
      assert.is_true(wait_for(c.ended, 2))
      assert.matches("ECONNREFUSED", tostring(c.err))
      assert.equal(0, s.accepts)
    end)

    it("drops the clients connected when it is set", function()
      local s = make()
      local c = dial(s.port)
      assert.is_true(wait_for(function() return s.open == 1 end, 2))
      s:set("refuse")
      assert.is_true(wait_for(c.ended, 2))
      assert.equal(0, s.open)
      local d = dial(s.port)
      assert.is_true(wait_for(d.ended, 2))
      assert.matches("ECONNREFUSED", tostring(d.err))
    end)
  end)

  describe("blackhole", function()
    it("accepts and never reads, nor answers", function()
      local s = make { mode = "blackhole" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected and s.open == 1 end, 2))
      c.send("hello\n")
      pause(0.1)
      assert.equal("", c.data)
      assert.equal(0, s.lines)
      assert.is_false(c.ended())
      c.close()
    end)

    it("turns connected clients half-open (no more replies) and back", function()
      local s = make()
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("one\n")
      assert.is_true(wait_for(function() return c.data == "one\n" end, 2))
      s:set("blackhole")
      c.send("two\n")
      pause(0.1)
      assert.equal("one\n", c.data)
      s:set("echo")                                     -- reading again: "two" comes back
      assert.is_true(wait_for(function() return c.data == "one\ntwo\n" end, 2))
      c.close()
    end)
  end)

  describe("accept_close", function()
    it("accepts and closes at once, counting the accept", function()
      local s = make { mode = "accept_close" }
      local c = dial(s.port)
      assert.is_true(wait_for(c.ended, 2))
      assert.is_true(c.connected)
      assert.is_nil(c.reset_by_peer())                  -- an orderly close, not a reset
      assert.equal(1, s.accepts)
      assert.equal(0, s.open)
    end)
  end)

  describe("silent", function()
    it("reads and counts lines, never answers", function()
      local s = make { mode = "silent" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("a\nb\nc\n")
      assert.is_true(wait_for(function() return s.lines == 3 end, 2))
      pause(0.05)
      assert.equal("", c.data)
      c.close()
    end)
  end)

  describe("reset_mid_reply", function()
    it("answers half a line, then resets the connection", function()
      local s = make { mode = "reset_mid_reply" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("abcdefgh\n")
      assert.is_true(wait_for(c.ended, 2))
      assert.equal("abcd", c.data)
      assert.is_truthy(c.reset_by_peer(), "no reset seen: " .. tostring(c.reset or c.reset_after_eof))
      assert.is_true(wait_for(function() return s.open == 0 end, 2))
    end)

    it("is a reset still when the client reads the half and the reset together", function()
      -- The client is busy for 0.2 s: the half and the reset wait in its socket together,
      -- which Linux reports as the end of the file; the reset shows on the next write.
      local s = make { mode = "reset_mid_reply" }
      local c = dial(s.port, 0.2)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("abcdefgh\n")
      assert.is_true(wait_for(function() return s.open == 0 end, 2))
      assert.is_true(wait_for(c.ended, 2))
      assert.equal("abcd", c.data)
      assert.is_truthy(c.reset_by_peer(), "no reset seen: " .. tostring(c.reset or c.reset_after_eof))
    end)
  end)

  describe("echo", function()
    it("answers each line, in order, and counts them", function()
      local s = make { mode = "echo" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("a\nbb\r\nccc")
      c.send("\n")
      assert.is_true(wait_for(function() return c.data == "a\nbb\nccc\n" end, 2))
      assert.equal(3, s.lines)
      local big = {}
      for i = 1, 5000 do big[i] = "line " .. i end
      c.send(table.concat(big, "\n") .. "\n")
      assert.is_true(wait_for(function() return s.lines == 5003 end, 5))
      assert.is_true(wait_for(function() return #c.data == 9 + #table.concat(big, "\n") + 1 end, 5))
      c.close()
      assert.is_true(wait_for(function() return s.open == 0 end, 2))
      assert.equal(1, s.accepts)
    end)

    it("greets when asked to", function()
      local s = make { greeting = "HELLO" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.data == "HELLO\n" end, 2))
      c.close()
    end)
  end)

  describe("at the end of a program that never turns the loop again", function()
    -- luv frees a handle still closing when the Lua state closes while libuv still lists it:
    -- the server lets libuv finish its own closes then, so the program exits cleanly.
    local cases = {
      { "after set()", 's = server { mode = "refuse" }; s:set("echo")' },
      { "after stop()", "s = server {}; s:stop()" },
      { "after close()", "s = server {}; s:close()" },
      { "after a run, then close()", "s = server {}; modal.run(); s:close()" },
    }
    for _, case in ipairs(cases) do
      it("exits 0 " .. case[1], function()
        local file = os.tmpname()
        local f = assert(io.open(file, "w"))
        f:write('local modal = require "modal"\nlocal server = require("modal.testing").server\n'
          .. "local s\n" .. case[2] .. '\nprint("end")\n')
        f:close()
        local p = io.popen(("LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./%s/?.so;;' "
          .. "lua5.4 %s 2>&1; echo \"rc=$?\""):format(os.getenv("MODAL_BUILD") or "build", file))
        local out = p:read("a")
        p:close()
        os.remove(file)
        assert.equal("end\nrc=0\n", out)
      end)
    end
  end)

  describe("slow_greeting", function()
    it("greets after that many seconds; lines wait for the greeting", function()
      local s = make { slow_greeting = 0.2 }
      local t0 = uv.hrtime()
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("early\n")
      pause(0.1)
      assert.equal("", c.data)
      assert.equal(0, s.lines)
      assert.is_true(wait_for(function() return c.data == "+OK modal.testing\nearly\n" end, 2))
      assert.is_true((uv.hrtime() - t0) / 1e9 >= 0.19)
      c.close()
    end)

    it("takes math.huge (a greeting that never comes) and names NaN", function()
      for _, forever in ipairs { math.huge, 1e300 } do
        local s = make { slow_greeting = forever }
        local c = dial(s.port)
        assert.is_true(wait_for(function() return c.connected end, 2))
        c.send("early\n")
        pause(0.1)
        assert.equal("", c.data)
        c.close()
      end
      local ok, err = pcall(server, { slow_greeting = 0 / 0 })
      assert.is_false(ok)
      assert.matches("slow_greeting: expected a number of seconds >= 0 (or false), got NaN", err, 1,
        true)
    end)
  end)

  describe("auth", function()
    it("takes the right secret, then echoes", function()
      local s = make { auth = "secret" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("AUTH secret\nhi\n")
      assert.is_true(wait_for(function() return c.data == "+OK\nhi\n" end, 2))
      c.close()
    end)

    it("answers a wrong secret with -ERR auth and closes", function()
      local s = make { auth = "secret" }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.connected end, 2))
      c.send("AUTH guess\nhi\n")
      assert.is_true(wait_for(c.ended, 2))
      assert.equal("-ERR auth\n", c.data)
      assert.is_true(wait_for(function() return s.open == 0 end, 2))
    end)

    it("combines with a greeting", function()
      local s = make { auth = "pw", greeting = true }
      local c = dial(s.port)
      assert.is_true(wait_for(function() return c.data == "+OK modal.testing\n" end, 2))
      c.send("AUTH pw\nx\n")
      assert.is_true(wait_for(function() return c.data == "+OK modal.testing\n+OK\nx\n" end, 2))
      c.close()
    end)
  end)

  describe("stop, start, drop, close", function()
    it("stop() drops the clients and refuses; start() listens again on the same port", function()
      local s = make()
      local port = s.port
      local c = dial(port)
      assert.is_true(wait_for(function() return s.open == 1 end, 2))
      s:stop()
      assert.is_true(wait_for(c.ended, 2))
      assert.equal(0, s.open)
      local d = dial(port)
      assert.is_true(wait_for(d.ended, 2))
      assert.matches("ECONNREFUSED", tostring(d.err))
      s:start()
      assert.equal(port, s.port)
      local e = dial(port)
      assert.is_true(wait_for(function() return e.connected end, 2))
      e.send("back\n")
      assert.is_true(wait_for(function() return e.data == "back\n" end, 2))
      e.close()
      assert.equal(2, s.accepts)
    end)

    it("drop() resets the clients and keeps listening", function()
      local s = make()
      local c = dial(s.port)
      assert.is_true(wait_for(function() return s.open == 1 end, 2))
      s:drop()
      assert.is_true(wait_for(c.ended, 2))
      assert.is_truthy(c.reset_by_peer(), "no reset seen: " .. tostring(c.reset or c.reset_after_eof))
      local d = dial(s.port)
      assert.is_true(wait_for(function() return d.connected end, 2))
      d.close()
    end)

    it("close() frees the port", function()
      local s = make()
      local port = s.port
      s:close()
      uv.run("nowait")
      local again = make { port = port }
      assert.equal(port, again.port)
    end)

    it("never keeps the loop alive by itself (unless ref = true)", function()
      make()
      local modal = require "modal"
      local t0 = uv.hrtime()
      assert.is_true(support.run_loop(2))
      assert.is_true((uv.hrtime() - t0) / 1e9 < 1)
      local s = make { ref = true }
      modal.call_later(0.05, function() s:close() end)
      assert.is_true(support.run_loop(2))
    end)

    it("prints where it stands", function()
      local s = make { mode = "silent" }
      assert.matches("modal.testing.server(127.0.0.1:" .. s.port .. ", silent; accepts=0 open=0 lines=0)",
        tostring(s), 1, true)
    end)
  end)
end)
