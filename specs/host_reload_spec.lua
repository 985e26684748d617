-- specs/host_reload_spec.lua — the live host (doc/reload.md, doc/host.md): `modal run --watch`
-- reloads a loaded file once per save whatever way an editor saves it, SIGHUP reloads every
-- definition, `--admin PATH` serves status/reload/trace on a 0600 unix socket that no client
-- can disturb, and `modal ctl` talks to it. The host runs as a child process on fixtures from
-- specs/fixtures/reload/; each test writes its definition files in a fresh temp folder.
local uv = require "luv"
local support = require "support"
local cjson = require "cjson"

local FIXTURES = "specs/fixtures/reload/"
local APP = FIXTURES .. "watch_app.lua"

-- {============ helpers

local read_file = require("support").read_file

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- A valid definition of machine "policy"; every version has the same size (a same-size
-- in-place write must still reload). With `as_machine`, the file returns
-- `modal.machine { ... }` (as README's examples do) instead of the plain table.
local function definition(version, as_machine)
  return string.format([[
return %s{
  name = "policy", version = %d, initial = "idle",
  methods = { "query" },
  states = {
    idle = { query = "postpone", on = { connect = "ready" } },
    ready = { query = function() return "ok" end, on = { lost = "idle" } },
  },
}
]], as_machine and 'require("modal").machine ' or "", version)
end

local BAD = 'return { name = "policy", version = 99, initial = "nowhere", methods = {}, ' ..
  'states = { idle = {} } }\n'

local function mktemp_dir()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("l")
  p:close()
  assert(dir and dir:find("^/"), "mktemp -d failed")
  return dir
end

local wait_for = support.wait_for

local function sleep(seconds)
  wait_for(function() return false end, seconds)
end

local spawn = support.spawn_host

-- Runs `modal ARGS...` to the end (arguments shell-quoted here); returns status, stdout, stderr.
local quote, modal_cmd = support.quote, support.modal_cmd

-- `modal ctl SOCKET ...`: status, the decoded reply (or nil), stdout, stderr.
local function ctl(socket, ...)
  local status, stdout, stderr = modal_cmd("ctl", socket, ...)
  local ok, reply = pcall(cjson.decode, stdout)
  return status, ok and reply or nil, stdout, stderr
end

local function count(haystack, needle)
  local n, at = 0, 1
  while true do
    local s, e = haystack:find(needle, at, true)
    if not s then return n end
    n, at = n + 1, e + 1
  end
end

-- A raw admin client: sends `chunks` (strings, in order) and optionally closes or half-closes;
-- collects what the host sends back until EOF or `seconds`.
local function raw_client(socket, chunks, how, seconds)
  local c = { got = "", eof = false }
  local pipe = uv.new_pipe(false)
  pipe:connect(socket, function(err)
    c.connected = not err
    c.error = err
    if err then return end
    pipe:read_start(function(rerr, data)
      if rerr or not data then
        c.eof = true
        if not pipe:is_closing() then pipe:read_stop() end
      else
        c.got = c.got .. data
      end
    end)
    for _, chunk in ipairs(chunks) do pipe:write(chunk) end
    if how == "close" then pipe:close() end
    if how == "shutdown" then pipe:shutdown() end      -- ends what it sends, still reads
  end)
  wait_for(function() return c.eof or c.error ~= nil or (how == "close" and c.connected) end,
    seconds or 0.5)
  if not pipe:is_closing() then pipe:close() end
  uv.run("nowait")
  return c
end

-- }============ helpers

describe("the live host", function()
  local dir, file, p

  before_each(function()
    dir = mktemp_dir()
    file = dir .. "/policy.lua"
    write_file(file, definition(1))
  end)

  after_each(function()
    if p then p.reap() end
    p = nil
    os.execute("rm -rf " .. quote(dir))
  end)

  -- Starts the watch app on `file` with host options `opts` (a list) and waits for "ready".
  local function start(opts, app_args)
    local args = { "run" }
    for _, o in ipairs(opts or {}) do args[#args + 1] = o end
    args[#args + 1] = APP
    args[#args + 1] = file
    for _, a in ipairs(app_args or {}) do args[#args + 1] = a end
    p = spawn(args)
    assert.is_true(wait_for(p.said("ready\n"), 2), "the app did not start: " .. p.out .. p.err)
    assert.truthy(p.out:find("loaded version 1\n", 1, true), p.out)
  end

  -- The app reports reload n with version v, and no other reload within `quiet` seconds.
  local function assert_reloaded_once(n, version, quiet)
    local line = string.format("reload %d version %d\n", n, version)
    assert.is_true(wait_for(p.said(line), 1.5), "no '" .. line .. "': " .. p.out .. p.err)
    sleep(quiet or 0.4)
    assert.falsy(p.out:find(string.format("reload %d ", n + 1), 1, true),
      "reloaded more than once: " .. p.out)
    assert.equal(0, count(p.err, "failed"), p.err)
  end

  local function assert_no_reload(seconds)
    sleep(seconds)
    assert.falsy(p.out:find("reload ", 1, true), "reloaded: " .. p.out .. p.err)
  end

  -- Stops the host with SIGTERM; it must exit 0 (its watchers and socket never hold it).
  local function stop_host()
    p.handle:kill("sigterm")
    assert.is_true(wait_for(p.done, 2), "the host did not exit after SIGTERM: " .. p.err)
    assert.equal(0, p.code, p.err)
  end

  describe("modal run --watch", function()
    it("reloads once after an in-place write of the same size", function()
      start({ "--watch" })
      write_file(file, definition(2))
      assert_reloaded_once(1, 2)
      assert.truthy(p.err:find("reloaded 'policy' to version 2", 1, true), p.err)
      stop_host()
    end)

    it("reloads once after a write to a temp file renamed over the file", function()
      start({ "--watch" })
      write_file(dir .. "/.policy.lua.tmp", definition(2))
      assert(os.rename(dir .. "/.policy.lua.tmp", file))
      assert_reloaded_once(1, 2)
      stop_host()
    end)

    it("reloads once after a vim-style save (backup rename, new file, backup unlinked)", function()
      start({ "--watch" })
      write_file(dir .. "/.policy.lua.swp", "swap")          -- vim's swap file while editing
      write_file(dir .. "/4913", "")                         -- vim's can-I-write probe
      os.remove(dir .. "/4913")
      assert(os.rename(file, file .. "~"))
      write_file(file, definition(2))
      os.remove(file .. "~")
      os.remove(dir .. "/.policy.lua.swp")
      assert_reloaded_once(1, 2)
      stop_host()
    end)

    it("reloads once after a delete then a re-create 300 ms later", function()
      start({ "--watch" })
      os.remove(file)
      sleep(0.3)
      write_file(file, definition(2))
      assert_reloaded_once(1, 2)
      assert.falsy(p.err:find("missing", 1, true), p.err)
      stop_host()
    end)

    it("keeps watching a folder that was deleted and made again", function()
      start({ "--watch" })
      os.execute("rm -rf " .. quote(dir))
      sleep(0.3)
      assert(os.execute("mkdir " .. quote(dir)))
      write_file(file, definition(2))
      assert_reloaded_once(1, 2, 0.6)
      write_file(file, definition(3))               -- and later saves are seen as well
      assert_reloaded_once(2, 3)
      stop_host()
    end)

    it("reloads each of two saves apart once", function()
      start({ "--watch" })
      write_file(file, definition(2))
      assert_reloaded_once(1, 2, 0.2)
      write_file(file, definition(3))
      assert_reloaded_once(2, 3)
    end)

    it("does not reload for an event that changed nothing, nor for other files", function()
      start({ "--watch" })
      os.execute("chmod 0600 " .. quote(file))              -- an attribute event only
      write_file(dir .. "/other.lua", "return 1\n")
      write_file(dir .. "/policy.lua~", definition(5))
      assert_no_reload(0.5)
    end)

    it("keeps the old definition after a bad save, then reloads the fixed one", function()
      start({ "--watch" })
      write_file(file, BAD)
      assert.is_true(wait_for(p.logged("failed"), 1.5), "no failure logged: " .. p.err)
      sleep(0.2)
      assert.falsy(p.out:find("reload ", 1, true), p.out)
      assert.truthy(p.err:find("policy", 1, true), p.err)
      write_file(file, definition(3))
      assert.is_true(wait_for(p.said("reload 1 version 3\n"), 1.5), p.out .. p.err)
      stop_host()
    end)

    it("gives up quietly on a file that stays missing, and reloads it when it is back", function()
      start({ "--watch" })
      os.remove(file)
      assert.is_true(wait_for(p.logged("missing"), 2), "no 'missing' warning: " .. p.err)
      assert.falsy(p.out:find("reload ", 1, true), p.out)
      write_file(file, definition(2))
      assert.is_true(wait_for(p.said("reload 1 version 2\n"), 1), p.out .. p.err)
    end)

    it("is off without the flag: a change on disk reloads nothing", function()
      start({})
      write_file(file, definition(2))
      assert_no_reload(0.4)
      stop_host()
    end)
  end)

  describe("SIGHUP", function()
    it("reloads every loaded definition", function()
      start({})
      write_file(file, definition(2))
      p.handle:kill("sighup")
      assert_reloaded_once(1, 2, 0.2)
      assert.truthy(p.err:find("SIGHUP", 1, true), p.err)
      p.handle:kill("sighup")                                -- unchanged file: reloads again
      assert.is_true(wait_for(p.said("reload 2 version 2\n"), 1), p.out .. p.err)
      stop_host()
    end)

    it("with a bad file, logs the failure and the host goes on", function()
      start({})
      write_file(file, BAD)
      p.handle:kill("sighup")
      assert.is_true(wait_for(p.logged("failed"), 1), "no failure logged: " .. p.err)
      write_file(file, definition(2))
      p.handle:kill("sighup")
      assert.is_true(wait_for(p.said("reload 1 version 2\n"), 1), p.out .. p.err)
      stop_host()
    end)
  end)

  describe("--admin SOCKET", function()
    local socket
    before_each(function() socket = dir .. "/admin.sock" end)

    it("is a socket of mode 0600, removed when the host stops", function()
      start({ "--admin", socket })
      local st = assert(uv.fs_stat(socket))
      assert.equal("socket", st.type)
      assert.equal(tonumber("600", 8), st.mode & tonumber("777", 8))
      stop_host()
      assert.is_nil(uv.fs_stat(socket))
    end)

    it("ctl status reports machines, versions, instances per state and reloads", function()
      start({ "--admin", socket }, { "instances" })
      local status, r, out, err = ctl(socket, "status")
      assert.equal(0, status, out .. err)
      assert.equal(1, count(out, "\n"), out)                   -- one JSON line
      assert.is_table(r, out)
      assert.is_true(r.ok)
      assert.is_false(r.trace)
      local m = r.machines.policy
      assert.is_table(m, out)
      assert.equal("policy", m.name)
      assert.equal(1, m.version)
      assert.equal(file, m.path)
      assert.equal(3, m.instances)
      assert.same({ idle = 1, ready = 2 }, m.states)
      assert.equal(1, m.postponed)
      assert.equal(2, m.transitions)
      assert.equal(0, m.reloads)

      write_file(file, definition(2))
      status, r, out, err = ctl(socket, "reload", "policy")
      assert.equal(0, status, out .. err)
      assert.is_true(r.ok)
      status, r = ctl(socket, "status")
      assert.equal(0, status)
      m = r.machines.policy
      assert.equal(2, m.version)
      assert.equal(1, m.reloads)
      assert.is_true(m.last_reload.ok)
      assert.equal(3, m.instances)
      assert.same({ idle = 1, ready = 2 }, m.states)
      assert.equal(1, m.postponed)                             -- retried, still waiting in idle

      write_file(file, BAD)
      status, r, out, err = ctl(socket, "reload")              -- every definition
      assert.equal(1, status, out .. err)
      assert.is_false(r.ok)
      assert.truthy(r.error:find("policy: " .. file, 1, true), r.error)   -- the name and the file
      assert.truthy(err:find("modal ctl: ", 1, true), err)
      status, r = ctl(socket, "status")
      assert.equal(0, status)
      m = r.machines.policy
      assert.equal(2, m.version)                               -- nothing changed
      assert.equal(1, m.reloads)
      assert.is_false(m.last_reload.ok)
      assert.is_string(m.last_reload.error)
      assert.same({ idle = 1, ready = 2 }, m.states)

      status, r, out = ctl(socket, "reload", "no_such_machine")
      assert.equal(1, status, out)
      assert.is_false(r.ok)
      assert.truthy(r.error:find("no_such_machine", 1, true), out)
      stop_host()
    end)

    it("ctl status after reloads of a file that returns modal.machine { ... }", function()
      write_file(file, definition(1, true))
      start({ "--admin", socket }, { "instances" })
      for v = 2, 3 do
        write_file(file, definition(v, true))
        local status, r, out, err = ctl(socket, "reload", "policy")
        assert.equal(0, status, out .. err)
        assert.is_true(r.ok)
      end
      local status, r, out = ctl(socket, "status")
      assert.equal(0, status, out)
      local m = r.machines.policy
      assert.equal(3, m.version, out)
      assert.equal(2, m.reloads, out)
      assert.equal(file, m.path, out)
      assert.equal(3, m.instances, out)
      assert.same({ idle = 1, ready = 2 }, m.states)
      stop_host()
    end)

    it("ctl trace on|off switches tracing and status shows it", function()
      start({ "--admin", socket })
      local status, r = ctl(socket, "trace", "on")
      assert.equal(0, status)
      assert.is_true(r.ok)
      status, r = ctl(socket, "status")
      assert.equal(0, status)
      assert.is_true(r.trace)
      status, r = ctl(socket, "trace", "off")
      assert.equal(0, status)
      assert.is_true(r.ok)
      status, r = ctl(socket, "status")
      assert.equal(0, status)
      assert.is_false(r.trace)
      stop_host()
    end)

    it("--trace starts with tracing on", function()
      start({ "--trace", "--admin", socket })
      local status, r = ctl(socket, "status")
      assert.equal(0, status)
      assert.is_true(r.trace)
    end)

    it("answers an unknown command with a clear error and serves the next line", function()
      start({ "--admin", socket })
      local c = raw_client(socket, { "frobnicate now\nstatus\n" }, nil, 0.3)
      local first, second = c.got:match("^([^\n]*)\n([^\n]*)\n$")
      assert.truthy(first, c.got)
      local r1, r2 = cjson.decode(first), cjson.decode(second)
      assert.is_false(r1.ok)
      assert.equal("unknown command 'frobnicate now' (use status, reload [NAME], trace on|off)",
        r1.error)
      assert.is_true(r2.ok)
      stop_host()
    end)

    it("is not disturbed by garbage, silence, a huge line or a client that leaves", function()
      start({ "--admin", socket }, { "instances" })
      raw_client(socket, {}, "close")                                 -- says nothing
      local g = raw_client(socket, { "\0\1\2\255garbage\r\n\n\n" }, nil, 0.3)
      local r = cjson.decode(g.got:match("^[^\n]*"))
      assert.is_false(r.ok)
      assert.truthy(r.error:find("unknown command", 1, true), g.got)
      local huge = raw_client(socket, { string.rep("x", 70 * 1024) }, nil, 1)
      assert.is_true(huge.eof, "the host kept a 70 KiB line open")
      assert.truthy(huge.got:find("request line too long (at most 65536 bytes)", 1, true), huge.got)
      local blank = raw_client(socket, { "\n  \r\n\nstatus\n" }, nil, 0.3)
      assert.equal(4, count(blank.got, "\n"), blank.got)              -- each line a reply
      assert.equal(3, count(blank.got, "empty request (use status, reload [NAME], trace on|off)"),
        blank.got)
      assert.is_true(cjson.decode(blank.got:match("([^\n]*)\n$")).ok)
      local lines = raw_client(socket, { "a\nb\r\nc\n" }, nil, 0.3)
      assert.equal(3, count(lines.got, "unknown command"), lines.got)
      raw_client(socket, { "reload" }, "close")                       -- cut off: never run
      local ended = raw_client(socket, { "reload" }, "shutdown", 1)  -- ended without a newline
      assert.is_true(ended.eof)
      assert.equal("request not ended by a newline: not run",
        cjson.decode(ended.got:match("^([^\n]*)\n$")).error)
      raw_client(socket, { "stat" }, "close")
      raw_client(socket, { "status\n" }, "close")                     -- leaves before the reply
      sleep(0.1)

      local status, s, out, err = ctl(socket, "status")
      assert.equal(0, status, out .. err)
      assert.equal(0, s.machines.policy.reloads)
      assert.equal(3, s.machines.policy.instances)
      assert.is_false(p.exited == true, p.err)
      assert.equal("loaded version 1\nready\n", p.out)
      stop_host()
    end)

    it("a 65th connection closes the one silent longest: forgotten clients never lock ctl out",
      function()
      start({ "--admin", socket })
      local idle = {}
      while #idle < 70 do              -- one at a time; a full listen backlog (a host slow to
        local done                     -- accept, under ASan) refuses with EAGAIN: try again
        local c = uv.new_pipe(false)
        c:connect(socket, function(cerr) done = cerr or true end)
        assert.is_true(wait_for(function() return done ~= nil end, 2 * support.SLACK))
        if done == true then
          idle[#idle + 1] = c
        else
          assert.equal("EAGAIN", done)
          c:close()
          sleep(0.05)
        end
      end
      assert.is_true(wait_for(p.logged("admin socket: 64 connections open: closed the one "
        .. "silent longest"), 2 * support.SLACK), p.err)
      local status, r, out, err = ctl(socket, "status")
      assert.equal(0, status, out .. err)
      assert.is_true(r.ok)
      for _, c in ipairs(idle) do if not c:is_closing() then c:close() end end
      stop_host()
    end)

    it("a relative path is the host's socket even after the script changes directory", function()
      local sub = dir .. "/sub"
      assert(uv.fs_mkdir(sub, tonumber("755", 8)))
      write_file(sub .. "/rel.sock", "precious\n")             -- same name, another folder
      local script = dir .. "/chdir.lua"
      write_file(script, "require('luv').chdir(" .. string.format("%q", sub) .. ")\n"
        .. "require('modal').call_later(0.3, function() print('done') end)\n")
      p = spawn({ "run", "--admin", "rel.sock", script }, dir)
      assert.is_true(wait_for(p.done, 3), "the host did not exit: " .. p.err)
      assert.equal(0, p.code, p.err)
      assert.equal("done\n", p.out)
      assert.is_nil(uv.fs_stat(dir .. "/rel.sock"))            -- its own socket: removed
      assert.equal("precious\n", read_file(sub .. "/rel.sock"))  -- the other file: untouched
    end)

    it("replaces a stale socket file nobody listens on", function()
      -- A process that binds and exits without closing leaves the file behind (closing a
      -- bound pipe would remove it).
      assert.is_true(os.execute("lua5.4 -e " .. quote(
        "local p = require('luv').new_pipe(false); assert(p:bind(" .. string.format("%q", socket) ..
        ")); os.exit(0)")))
      assert.equal("socket", uv.fs_stat(socket).type)
      start({ "--admin", socket })
      assert.is_true(wait_for(function()
        return uv.fs_stat(socket) and uv.fs_stat(socket).mode & tonumber("777", 8) ==
          tonumber("600", 8)
      end, 1))
      local status, r = ctl(socket, "status")
      assert.equal(0, status)
      assert.is_true(r.ok)
      stop_host()
    end)

    it("a second host on a socket another one serves exits 1 and leaves it alone", function()
      start({ "--admin", socket })
      local status, stdout, stderr = modal_cmd("run", "--admin", socket,
        FIXTURES .. "quick_app.lua", file)
      assert.equal(1, status, stdout .. stderr)
      assert.truthy(stderr:find("cannot serve the admin socket " .. socket .. ": another process "
        .. "listens on it", 1, true), stderr)
      local ctl_status, r = ctl(socket, "status")             -- the first one still serves
      assert.equal(0, ctl_status)
      assert.is_true(r.ok)
      stop_host()
    end)

    it("refuses a client of another user (not root), with a reply and a log line", function()
      local uid_p = io.popen("id -u")
      local me = uid_p:read("n")
      uid_p:close()
      if me ~= 0 then
        pending("needs root, to run a client as a throwaway user")
        return
      end
      local user = "modalpeer" .. (uv.os_getpid() % 100000)
      local made = os.execute("useradd --system --no-create-home --shell /usr/sbin/nologin " ..
        user .. " >/dev/null 2>&1")
      local uid
      if made then
        local q = io.popen("id -u " .. user)
        uid = q:read("n")
        q:close()
      else
        uid = 65534                                  -- nobody, if useradd is not there
      end
      local ok, err = pcall(function()
        start({ "--admin", socket })
        os.execute("chmod 755 " .. quote(dir) .. " && chmod 666 " .. quote(socket))
        local client = ([[
          local uv = require "luv"
          local pipe, got = uv.new_pipe(false), ""
          pipe:connect(%q, function(e)
            if e then io.write("connect error ", e); return end
            pipe:read_start(function(_, data) if data then got = got .. data else pipe:close() end end)
            pipe:write("status\n")
          end)
          local t = uv.new_timer()
          t:start(1000, 0, function() if not pipe:is_closing() then pipe:close() end end)
          t:unref()
          uv.run()
          io.write(got)
        ]]):format(socket)
        local q = io.popen(("setpriv --reuid=%d --regid=%d --clear-groups lua5.4 -e %s 2>&1")
          :format(uid, uid, quote(client)))
        local out = q:read("a")
        q:close()
        local okj, reply = pcall(cjson.decode, out:match("[^\n]+") or "null")
        assert(okj and type(reply) == "table", "the client got: " .. out)
        assert.is_false(reply.ok)
        assert.matches("refused: uid " .. uid, reply.error, 1, true)
        assert.is_true(wait_for(function() return p.err:find("admin socket: refused a client: uid "
          .. uid, 1, true) ~= nil end, 1), p.err)
        local status, r = ctl(socket, "status")       -- root (this user) is still served
        assert.equal(0, status)
        assert.is_true(r.ok)
        stop_host()
      end)
      if made then os.execute("userdel " .. user .. " >/dev/null 2>&1") end
      assert(ok, err)
    end)

    it("a path in a folder that does not exist: the host exits 1 and says so", function()
      local missing = dir .. "/no/such/folder/admin.sock"
      local status, _, stderr = modal_cmd("run", "--admin", missing, FIXTURES .. "quick_app.lua", file)
      assert.equal(1, status, stderr)
      assert.truthy(stderr:find("cannot serve the admin socket " .. missing .. ": its folder " ..
        dir .. "/no/such/folder does not exist", 1, true), stderr)
    end)

    it("a path that is not a socket: the host exits 1 and the file stays", function()
      local status, _, stderr = modal_cmd("run", "--admin", file, FIXTURES .. "quick_app.lua", file)
      assert.equal(1, status, stderr)
      assert.truthy(stderr:find("cannot serve the admin socket " .. file .. ": the file exists "
        .. "and is not a socket", 1, true), stderr)
      assert.equal(definition(1), read_file(file))
    end)
  end)

  describe("handles", function()
    it("--watch, --admin and SIGHUP never keep a host with nothing to do alive", function()
      local socket = dir .. "/admin.sock"
      local t0 = uv.hrtime()
      local status, stdout, stderr = modal_cmd("run", "--watch", "--admin", socket,
        FIXTURES .. "quick_app.lua", file)
      assert.equal(0, status, stderr)
      assert.equal("loaded version 1\n", stdout)
      assert.is_true((uv.hrtime() - t0) / 1e9 < 2)
      assert.is_nil(uv.fs_stat(socket), "the admin socket was left behind")
    end)
  end)

  describe("modal ctl", function()
    it("against a socket that does not exist: a clear error and exit 1", function()
      local missing = dir .. "/no.sock"
      local status, _, out, err = ctl(missing, "status")
      assert.equal(1, status)
      assert.equal("", out)
      assert.truthy(err:find("modal ctl: cannot connect to " .. missing .. ": ", 1, true), err)
      assert.truthy(err:find("no such file", 1, true), err)
    end)

    it("against a file that is not a socket: a clear error and exit 1", function()
      local status, _, _, err = ctl(file, "status")
      assert.equal(1, status)
      assert.truthy(err:find("modal ctl: cannot connect to " .. file .. ": ", 1, true), err)
    end)

    it("refuses a SOCKET over 107 bytes, which the kernel would cut to another path", function()
      local long = "/tmp/" .. string.rep("s", 110)
      local status, _, out, err = ctl(long, "status")
      assert.equal(2, status, out .. err)
      assert.truthy(err:find("SOCKET is longer than 107 bytes (115)", 1, true), err)
    end)

    it("rejects a bad command line with exit 2 before connecting", function()
      for _, args in ipairs({ {}, { "/nonexistent.sock" }, { "/nonexistent.sock", "frob" },
                              { "/nonexistent.sock", "trace" },
                              { "/nonexistent.sock", "trace", "maybe" },
                              { "/nonexistent.sock", "status", "extra" },
                              { "/nonexistent.sock", "reload", "a", "b" } }) do
        local status, stdout, stderr = modal_cmd("ctl", table.unpack(args))
        assert.equal(2, status, table.concat(args, " ") .. ": " .. stdout .. stderr)
        assert.truthy(stderr:find("usage", 1, true), stderr)
      end
    end)

    it("--help prints the usage and exits 0", function()
      local status, stdout = modal_cmd("ctl", "--help")
      assert.equal(0, status)
      assert.truthy(stdout:find("usage: modal ctl SOCKET", 1, true), stdout)
    end)
  end)
end)
