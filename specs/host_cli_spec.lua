-- specs/host_cli_spec.lua — the host's command line and what it says when a script fails
-- (doc/host.md): each bad option of `modal run` is named, with status 2 and a pointer to
-- --help, before any script runs; `--` ends the options; a main chunk that raises a value that
-- is not a string (a failure object, a table with __tostring) is still reported readably, with
-- status 1; callbacks that keep making calls while the host fails the stranded ones cannot
-- keep it from exiting; output that cannot be written (stdout on /dev/full) fails with status 1.
-- The host runs as a child process; scripts are written to a temp folder.
local BUILD = os.getenv("MODAL_BUILD") or "build"
local HOST = BUILD .. "/modal"

local read_file = require("support").read_file

local dir
do
  local p = assert(io.popen("mktemp -d /tmp/modal_host_cli.XXXXXX"))
  dir = assert(p:read("l"))
  p:close()
end

local function script(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Runs the host with `args` (a shell-quoted string) from folder `cwd` (default: here);
-- returns exit status (128 + signal when killed), stdout, stderr.
local function host(args, cwd)
  local out, err = os.tmpname(), os.tmpname()
  local exe = HOST:sub(1, 1) == "/" and HOST or os.getenv("PWD") .. "/" .. HOST
  local _, how, status = os.execute(string.format("cd '%s' && timeout 20 %s %s >%s 2>%s </dev/null",
    cwd or ".", exe, args, out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

-- Runs the host with `args` and its stdout on /dev/full (every write fails with ENOSPC);
-- returns exit status and stderr.
local function host_to_full(args)
  local err = os.tmpname()
  local exe = HOST:sub(1, 1) == "/" and HOST or os.getenv("PWD") .. "/" .. HOST
  local _, _, status = os.execute(string.format("timeout 20 %s %s >/dev/full 2>%s </dev/null",
    exe, args, err))
  local stderr = read_file(err)
  os.remove(err)
  return status, stderr
end

describe("the host's command line", function()
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe("output that cannot be written is an error (exit 1), not a silent success", function()
    local cases = {
      { "--help", "modal --help" },
      { "--version", "modal --version" },
      { "run --help", "modal run --help" },
      { "graph specs/fixtures/valid/six_states.lua", "modal graph" },
      { "check specs/fixtures/valid/six_states.lua", "modal check" },
    }
    for _, case in ipairs(cases) do
      it("`modal " .. case[1] .. " > /dev/full` exits 1 and says why", function()
        local status, stderr = host_to_full(case[1])
        assert.equal(1, status, stderr)
        assert.equal(case[2] .. ": cannot write the output: No space left on device\n", stderr)
      end)
    end
  end)

  describe("modal run refuses a bad option before running anything", function()
    local never = script("never.lua", 'print("the script ran")\n')
    local cases = {
      { "--log-level with no level", "run --log-level",
        "modal run: --log-level needs a level (error, warn, info, debug)" },
      { "an unknown log level", "run --log-level verbose " .. never,
        "modal run: unknown log level 'verbose' (use error, warn, info or debug)" },
      { "--admin with no socket path", "run --admin",
        "modal run: --admin needs the path of a unix socket" },
      { "an option run does not know", "run --wacth " .. never,
        "modal run: unknown option '--wacth'" },
      { "an unknown log level given with =", "run --log-level=verbose " .. never,
        "modal run: unknown log level 'verbose' (use error, warn, info or debug)" },
      { "a value given to a flag", "run --watch=yes " .. never,
        "modal run: option '--watch' takes no value" },
      { "no script", "run --trace",
        "modal run: no script given (usage: modal run [options] SCRIPT [ARGS...])" },
      { "--admin= with no socket path", "run --admin= " .. never,
        "modal run: --admin needs the path of a unix socket" },
      { "an option that only starts like one run knows", "run --admin-socket=x " .. never,
        "modal run: unknown option '--admin-socket=x'" },
    }
    for _, case in ipairs(cases) do
      it("names " .. case[1] .. ", exits 2 and points to --help", function()
        local status, stdout, stderr = host(case[2])
        assert.equal(2, status, stderr)
        assert.equal("", stdout)
        assert.equal(case[3] .. "\nTry 'modal run --help'.\n", stderr)
      end)
    end

    it("`modal help COMMAND` prints that command's own help, as `modal COMMAND --help` does", function()
      for _, command in ipairs { "run", "check", "graph", "test", "ctl" } do
        local status, stdout, stderr = host("help " .. command)
        local status2, stdout2 = host(command .. " --help")
        assert.equal(0, status, stderr)
        assert.equal(0, status2)
        assert.truthy(stdout:find("usage: modal " .. command, 1, true), stdout)
        assert.equal(stdout2, stdout)
      end
      local status, stdout, stderr = host("help bogus")
      assert.equal(2, status)
      assert.equal("", stdout)
      assert.equal("modal: no help on 'bogus': not a command (run, check, graph, test, ctl)\n" ..
                   "Try 'modal --help'.\n", stderr)
    end)

    it("takes --log-level=LEVEL and --admin=PATH as well as their two-argument forms", function()
      local s = script("levels.lua", 'print(require("modal").log_level())\n')
      local status, stdout, stderr = host("run --log-level=debug " .. s)
      assert.equal(0, status, stderr)
      assert.equal("debug\n", stdout)
    end)

    it("--help after run prints run's own usage on stdout and exits 0 without running a script", function()
      local status, stdout, stderr = host("run --help " .. never)
      assert.equal(0, status, stderr)
      assert.truthy(stdout:find("usage: modal run [options]", 1, true), stdout)
      assert.falsy(stdout:find("the script ran", 1, true), stdout)
    end)
  end)

  it("prints the usage on stderr and exits 2 when given no command at all", function()
    local status, stdout, stderr = host("")
    assert.equal(2, status)
    assert.equal("", stdout)
    assert.truthy(stderr:find("usage: modal <command>", 1, true), stderr)
  end)

  it("takes what follows -- as the script, even a name that starts with a dash", function()
    script("-dash.lua", 'print("dash ran with " .. select("#", ...) .. " args: " .. ...)\n')
    local status, stdout, stderr = host("run -- -dash.lua --watch", dir)
    assert.equal(0, status, stderr)
    assert.equal("dash ran with 1 args: --watch\n", stdout)
  end)

  describe("a main chunk that raises a value that is not a string", function()
    it("a failure object: says its kind and message, and exits 1", function()
      local path = script("raise_failure.lua",
        'error(require("modal").failure("auth", "bad password for user ann"))\n')
      local status, stdout, stderr = host("run " .. path)
      assert.equal(1, status, stderr)
      assert.equal("", stdout)
      assert.equal("modal: auth: bad password for user ann\n", stderr)
    end)

    it("a table with __tostring: says what __tostring says, with a traceback, and exits 1", function()
      local path = script("raise_object.lua",
        'error(setmetatable({}, { __tostring = function() return "quota exceeded (7 > 5)" end }))\n')
      local status, _, stderr = host("run " .. path)
      assert.equal(1, status, stderr)
      assert.truthy(stderr:find("^modal: quota exceeded %(7 > 5%)\nstack traceback:"), stderr)
      assert.truthy(stderr:find("raise_object.lua:1:", 1, true), stderr)
    end)
  end)

  it("exits when callbacks keep making calls while the host fails the stranded ones, and says so", function()
    local path = script("stranded_forever.lua", [[
local modal = require "modal"
local M = modal.machine { name = "stuck", initial = "down", methods = { "get" },
  states = { down = { get = "postpone", on = { up = "up" } },
             up = { get = function(_, x) return x end } } }
local c = M:new()
local function call()
  c:get():add_errback(call)      -- every failed call makes the call again
end
call()
modal.call_later(0, function() print("loop ran") end)
]])
    local status, stdout, stderr = host("run " .. path)
    assert.equal(0, status, stderr)
    assert.equal("loop ran\n", stdout)
    assert.truthy(stderr:find("calls still stranded after 100 passes: callbacks keep making calls "
      .. "while the host fails them; 1 instance(s) left waiting", 1, true), stderr)
    assert.truthy(stderr:find("postponed call(s) and 0 when() waiter(s) in state 'down' failed "
      .. "with kind 'stopped'", 1, true), stderr)
  end)
end)
