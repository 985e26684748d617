-- specs/service_host_spec.lua — a service is a machine for the host's tools too
-- (doc/policies.md, doc/host.md): `modal check` and `modal graph` read a file returning
-- modal.service{...}, `modal run --trace` logs its transitions, `modal ctl status` counts its
-- instances per state. The host runs as a child process on specs/fixtures/service/.
local cjson = require "cjson"
local support = require "support"

local BUILD = os.getenv("MODAL_BUILD") or "build"
local HOST = BUILD .. "/modal"
local FIXTURES = "specs/fixtures/service/"

local read_file = require("support").read_file

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs `modal ARGS...` to the end; returns status, stdout, stderr.
local function modal_cmd(...)
  local words = {}
  for i, a in ipairs({ ... }) do words[i] = quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local _, how, status = os.execute(string.format("timeout 10 %s %s >%s 2>%s </dev/null",
    HOST, table.concat(words, " "), out, err))
  local stdout, stderr = read_file(out), read_file(err)
  os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

describe("a service file in the host's tools", function()
  it("modal check reports the bad options of a service file, naming each", function()
    local status, stdout, stderr = modal_cmd("check", FIXTURES .. "bad_option.lua")
    local text = stdout .. stderr
    assert.equal(1, status, text)
    assert.matches("conect_timeout: unknown option (did you mean 'connect_timeout'?)", text, 1, true)
    assert.matches("backoff.initial: expected a number of seconds >= 0, got -1", text, 1, true)
  end)

  it("modal check validates a service file", function()
    local status, stdout, stderr = modal_cmd("check", FIXTURES .. "echo.lua")
    assert.equal(0, status, stdout .. stderr)
  end)

  it("modal graph draws the service's states and transitions", function()
    local status, stdout, stderr = modal_cmd("graph", FIXTURES .. "echo.lua")
    assert.equal(0, status, stderr)
    for _, state in ipairs { "idle", "connecting", "ready", "backoff", "failed", "closing", "closed" } do
      assert.matches(state, stdout, 1, true)
    end
    assert.matches('"connecting" -> "ready" [label="done"]', stdout, 1, true)
    assert.matches('"connecting" -> "failed" [label="error [guard]"]', stdout, 1, true)
    assert.matches('"backoff" -> "connecting" [label="timeout"]', stdout, 1, true)
    status, stdout = modal_cmd("graph", FIXTURES .. "echo.lua", "--format", "mermaid")
    assert.equal(0, status)
    assert.matches("ready --> backoff : lost [guard]", stdout, 1, true)
  end)

  it("runs README's service tour as written", function()
    local readme = read_file("README.md")
    local code = readme:match("### A service that comes and goes\n.-```lua\n(.-)\n```")
    assert.is_string(code, "README.md has no service tour")
    local path = os.tmpname() .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write(code)
    f:close()
    local status, stdout, stderr = modal_cmd("run", path)
    os.remove(path)
    assert.equal(0, status, stdout .. stderr)
    assert.equal("timeout: timed out after 0.2 seconds\nhello\nclosed\n", stdout)
  end)

  it("runs examples/echo/main.lua to the end by one command", function()
    local status, stdout, stderr = modal_cmd("run", "examples/echo/main.lua")
    assert.equal(0, status, stdout .. stderr)
    for _, text in ipairs { 'call "hello" -> "hello"', 'call "during the outage" -> "during the outage"',
      "keepalive: no answer to a ping", "that client is failed", 'with the right one: "open sesame"',
      "done: " } do
      assert.matches(text, stdout, 1, true)
    end
  end)

  it("modal run --trace logs its transitions; ctl status counts its instances and waiting calls", function()
    local dir = os.tmpname()
    os.remove(dir)
    local socket = dir .. ".sock"
    local p = support.spawn_host { "run", "--trace", "--admin", socket, FIXTURES .. "run.lua", "1.5" }
    finally(function() p.reap(); os.remove(socket) end)
    assert.is_true(support.wait_for(p.said("waiting\n"), 5), p.out .. p.err)
    assert.is_true(support.wait_for(p.logged("backoff -> connecting"), 5), p.err)
    local status, stdout = modal_cmd("ctl", socket, "status")
    assert.equal(0, status)
    local reply = cjson.decode(stdout)
    local m = reply.machines.echo_fixture
    assert.is_table(m, stdout)
    assert.equal(1, m.version)
    assert.equal(1, m.instances)
    assert.equal(1, m.postponed)
    assert.equal(1, (m.states.backoff or 0) + (m.states.connecting or 0))
    assert.is_true(support.wait_for(p.done, 10), p.out .. p.err)
    assert.equal(0, p.code, p.err)
    assert.matches("answer: hello\nclosed\n", p.out, 1, true)
    for _, t in ipairs { "echo_fixture#1 idle -> connecting on 'connect'", "connecting -> backoff on 'error'",
      "connecting -> ready on 'done'", "ready -> closing on 'close'", "closing -> closed on 'done'" } do
      assert.matches(t, p.err, 1, true)
    end
  end)
end)
