-- specs/host_spec.lua — the host program (doc/host.md): --help, --version, `modal run`
-- (arguments, preloaded modules, the loop after the main chunk, errors, exit status) and the
-- SIGTERM/SIGINT stop sequence. The host runs as a child process; fixtures live in
-- specs/fixtures/host/.
local uv = require "luv"
local support = require "support"

local BUILD = os.getenv("MODAL_BUILD") or "build"
local HOST = BUILD .. "/modal"
local FIXTURES = "specs/fixtures/host/"

local read_file = require("support").read_file

-- Runs the host with `args` (a shell-quoted string) and optional `env` assignments; returns
-- exit status (128 + signal when killed), stdout, stderr. `timeout` keeps a hung host from
-- hanging the suite (status 124).
local function host(args, env)
  local out, err = os.tmpname(), os.tmpname()
  local _, how, status = os.execute(string.format("%s timeout 10 %s %s >%s 2>%s </dev/null",
    env or "", HOST, args, out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

local wait_for = support.wait_for

local spawn = support.spawn_host

local function since(t0)
  return (uv.hrtime() - t0) / 1e9
end

describe("modal host", function()
  it("exists and is executable", function()
    assert.is_true(os.execute("test -x " .. HOST) == true, HOST .. " is not an executable")
  end)

  describe("options", function()
    -- A usage message, or (GNU style) one line naming the culprit and pointing to --help.
    local function assert_usage_error(word)
      local status, stdout, stderr = host(word)
      local text = stdout .. stderr
      assert.are_not.equal(0, status)
      assert.are_not.equal(124, status)
      assert.truthy(stderr:find(word, 1, true), "the message does not name " .. word .. ": " .. text)
      assert.truthy(text:lower():find("usage", 1, true) or text:find("--help", 1, true), text)
    end

    it("rejects an unknown option with a non-zero status and a usage message", function()
      assert_usage_error("--no-such-option")
    end)

    it("rejects an unknown command with a non-zero status and a usage message", function()
      assert_usage_error("frobnicate")
    end)

    it("rejects `run` without a script", function()
      local status, stdout, stderr = host("run")
      assert.are_not.equal(0, status)
      assert.are_not.equal(124, status)
      assert.is_true(#(stdout .. stderr) > 0, "no message at all")
    end)

    it("--help prints the usage, mentioning run, and exits 0", function()
      local status, stdout, stderr = host("--help")
      assert.equal(0, status, stderr)
      assert.truthy(stdout:lower():find("usage", 1, true), stdout)
      assert.truthy(stdout:find("run", 1, true), stdout)
    end)

    it("`run --help` prints run's own help: its options, exit status and signals", function()
      local status, stdout, stderr = host("run --help")
      assert.equal(0, status, stderr)
      assert.truthy(stdout:find("^usage: modal run %[options%]"), stdout)
      for _, option in ipairs({ "--watch", "--admin PATH", "--trace", "--log-level LEVEL",
                                "Exit status", "SIGHUP" }) do
        assert.truthy(stdout:find(option, 1, true), option .. " missing from:\n" .. stdout)
      end
      assert.falsy(stdout:find("commands:", 1, true), "the general help, not run's:\n" .. stdout)
      local _, short = host("run -h")
      assert.equal(stdout, short)
    end)

    it("--version prints `modal ` and the version, and exits 0", function()
      local status, stdout, stderr = host("--version")
      assert.equal(0, status, stderr)
      assert.truthy(stdout:match("^modal %d+%.%d+"), stdout)
    end)
  end)

  describe("run SCRIPT", function()
    it("fails with status 1 and a clear message when the script is missing", function()
      local missing = FIXTURES .. "no_such_script.lua"
      local status, _, stderr = host("run " .. missing)
      assert.equal(1, status)
      assert.truthy(stderr:find(missing, 1, true), stderr)
    end)

    it("exits 1 with the error message and a traceback when the script raises", function()
      local status, _, stderr = host("run " .. FIXTURES .. "raise.lua")
      assert.equal(1, status)
      assert.truthy(stderr:find("fixture exploded", 1, true), stderr)
      assert.truthy(stderr:find("traceback", 1, true), stderr)
      assert.truthy(stderr:find("inner_function_that_fails", 1, true), stderr)
    end)

    it("exits with the status given to os.exit() in the main chunk", function()
      local status, stdout = host("run " .. FIXTURES .. "exit3.lua")
      assert.equal(3, status)
      assert.equal("exiting\n", stdout)
    end)

    it("exits with the status given to os.exit() in a timer callback", function()
      local t0 = uv.hrtime()
      local status, stdout = host("run " .. FIXTURES .. "exit_in_timer.lua")
      assert.equal(4, status)
      assert.equal("exiting from a timer\n", stdout)
      assert.is_true(since(t0) < 2)
    end)

    it("gives the script arg[0], arg[1..] and ... as lua5.4 does", function()
      local script = FIXTURES .. "args.lua"
      local status, stdout, stderr = host("run " .. script .. " a b")
      assert.equal(0, status, stderr)
      assert.equal(table.concat({
        "arg0=" .. script, "arg1=a", "arg2=b", "argn=2", "varargs=2:a,b", "" }, "\n"), stdout)
    end)

    it("preloads luv and modal: they load with no C search path", function()
      local status, stdout, stderr = host("run " .. FIXTURES .. "preload.lua",
        "env -u LUA_CPATH_5_4 LUA_CPATH='/nonexistent/?.so'")
      assert.equal(0, status, stderr)
      assert.equal("luv=function\nmodal=function\nsame=true\n", stdout)
    end)

    it("runs the loop after the main chunk: modal and luv timers fire, then it exits 0", function()
      local t0 = uv.hrtime()
      local status, stdout, stderr = host("run " .. FIXTURES .. "loop.lua")
      assert.equal(0, status, stderr)
      assert.equal("main chunk done\nluv timer fired\nmodal timer fired\n", stdout)
      assert.is_true(since(t0) < 2)
    end)

    it("reports an error raised in a callback and goes on", function()
      local status, stdout, stderr = host("run " .. FIXTURES .. "callback_error.lua")
      assert.are_not.equal(124, status)
      assert.equal("later timer ran\n", stdout)
      assert.truthy(stderr:find("callback boom", 1, true), stderr)
    end)
  end)

  describe("a luv callback that raises", function()
    local sock
    before_each(function()
      sock = os.tmpname()
      os.remove(sock)
    end)
    after_each(function() os.remove(sock) end)

    it("ends the host through the exit path: on_stop, run-end hooks, admin socket gone, status 1", function()
      local t0 = uv.hrtime()
      local status, stdout, stderr = host("run --admin " .. sock .. " " .. FIXTURES .. "luv_error.lua")
      assert.equal(1, status, stderr)
      assert.is_true(since(t0) < 2)
      assert.equal("on_stop ran\nrun ended\ttrue\n", stdout)
      assert.truthy(stderr:find("luv boom", 1, true), stderr)
      assert.truthy(stderr:find("uncaught error in a luv callback", 1, true), stderr)
      assert.truthy(stderr:find("traceback", 1, true), stderr)
      assert.truthy(stderr:find("admin socket listening on " .. sock, 1, true), stderr)
      assert.is_nil(uv.fs_stat(sock), "the admin socket file is still there")
    end)

    it("inside the script's own uv.run(): that run ends, the host runs no loop and exits 1", function()
      local t0 = uv.hrtime()
      local status, stdout, stderr = host("run " .. FIXTURES .. "luv_error_nested.lua")
      assert.equal(1, status, stderr)
      assert.is_true(since(t0) < 2)
      assert.equal("uv.run returned\non_stop ran\nrun ended\ttrue\n", stdout)
      assert.truthy(stderr:find("nested boom", 1, true), stderr)
    end)
  end)

  describe("run-end hooks", function()
    it("run once, exiting, when the loop has no work left", function()
      local status, stdout, stderr = host("run " .. FIXTURES .. "run_end.lua")
      assert.equal(0, status, stderr)
      assert.equal("timer ran\nrun ended\ttrue\n", stdout)
    end)

    it("run once, exiting, when modal.stop() ended the host's run; what was pending never runs", function()
      local status, stdout, stderr = host("run " .. FIXTURES .. "run_end.lua stop")
      assert.equal(0, status, stderr)
      assert.equal("timer ran\nrun ended\ttrue\n", stdout)
    end)

    it("run, exiting, when the main chunk raised (status 1)", function()
      local status, stdout, stderr = host("run " .. FIXTURES .. "run_end.lua raise")
      assert.equal(1, status, stderr)
      assert.equal("run ended\ttrue\n", stdout)
      assert.truthy(stderr:find("main chunk raised", 1, true), stderr)
    end)
  end)

  describe("signals", function()
    local p
    after_each(function()
      if p then p.reap() end
      p = nil
    end)

    it("a second SIGTERM ends a host whose loop cannot drain, at once", function()
      p = spawn({ "run", FIXTURES .. "stop_stuck.lua" })
      assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
      p.handle:kill("sigterm")
      assert.is_true(wait_for(p.said("on_stop ran\n"), 1), "on_stop did not run: " .. p.err)
      assert.is_false(wait_for(p.done, 0.3), "the host exited with a timer pending")
      local t0 = uv.hrtime()
      p.handle:kill("sigterm")
      assert.is_true(wait_for(p.done, 1), "the second SIGTERM did not end the host")
      assert.is_true(since(t0) < 1)
      assert.falsy(p.out:find("timer fired", 1, true))
    end)

    it("a second signal ends a host busy in Lua code (the loop never runs), naming it", function()
      for _, signals in ipairs { { "sigint", "sigterm" }, { "sigterm", "sigint" } } do
        p = spawn({ "run", FIXTURES .. "busy_lua.lua" })
        assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
        p.handle:kill(signals[1])
        assert.is_false(wait_for(p.done, 0.3), "the first signal ended a busy host")
        p.handle:kill(signals[2])
        assert.is_true(wait_for(p.done, 1), "the second signal did not end the busy host")
        assert.equal(signals[2] == "sigint" and 130 or 143, p.code or (128 + (p.signal or 0)))
        assert.truthy(p.err:find("second stop signal (" .. signals[2]:upper() .. "): exiting now", 1,
          true), p.err)
        p = nil
      end
    end)

    it("a second signal's exit removes the admin socket too, even with Lua busy", function()
      local sock = os.tmpname()
      os.remove(sock)
      p = spawn({ "run", "--admin", sock, FIXTURES .. "busy_lua.lua" })
      assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
      assert.equal("socket", (uv.fs_stat(sock) or {}).type)
      p.handle:kill("sigint")
      assert.is_false(wait_for(p.done, 0.2), "the first signal ended a busy host")
      p.handle:kill("sigint")
      assert.is_true(wait_for(p.done, 1), "the second signal did not end the busy host")
      assert.equal(130, p.code or (128 + (p.signal or 0)))
      assert.is_nil(uv.fs_stat(sock), "the admin socket file is still there")
    end)

    it("SIGTERM runs the on_stop handlers, then the host drains and exits 0", function()
      p = spawn({ "run", FIXTURES .. "stop_cancels.lua" })
      assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
      local t0 = uv.hrtime()
      p.handle:kill("sigterm")
      assert.is_true(wait_for(p.done, 2), "the host did not exit after SIGTERM")
      assert.is_true(since(t0) < 2)
      assert.equal(0, p.code, p.err)
      assert.equal(0, p.signal)
      assert.equal("ready\non_stop ran\n", p.out)
    end)

    it("SIGTERM: once the loop drained, the run-end hooks run, exiting", function()
      p = spawn({ "run", FIXTURES .. "run_end.lua", "signal" })
      assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
      p.handle:kill("sigterm")
      assert.is_true(wait_for(p.done, 2), "the host did not exit after SIGTERM")
      assert.equal(0, p.code, p.err)
      assert.equal("ready\nrun ended\ttrue\n", p.out)
    end)

    it("a SIGHUP while the host drains is ignored: the work in flight finishes, exit 0", function()
      p = spawn({ "run", FIXTURES .. "stop_drains.lua" })
      assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
      p.handle:kill("sigterm")
      assert.is_true(wait_for(p.said("on_stop ran\n"), 1), "on_stop did not run: " .. p.err)
      p.handle:kill("sighup")
      assert.is_true(wait_for(p.done, 3), "the host did not exit: " .. p.err)
      assert.equal(0, p.code, p.err)
      assert.equal(0, p.signal)
      assert.equal("ready\non_stop ran\nin-flight work finished\n", p.out)
      assert.truthy(wait_for(p.logged("SIGHUP received while the host stops: ignored"), 1), p.err)
    end)

    it("SIGINT does the same as SIGTERM", function()
      p = spawn({ "run", FIXTURES .. "stop_cancels.lua" })
      assert.is_true(wait_for(p.said("ready\n"), 2), "no ready line: " .. p.err)
      p.handle:kill("sigint")
      assert.is_true(wait_for(p.done, 2), "the host did not exit after SIGINT")
      assert.equal(0, p.code, p.err)
      assert.equal(0, p.signal)
      assert.equal("ready\non_stop ran\n", p.out)
    end)
  end)
end)
