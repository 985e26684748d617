-- specs/pool_host_spec.lua — a pool in the host (doc/policies.md, "Pool"; doc/host.md): no
-- worker outlives the host, whether it is asked to stop (SIGTERM: its pools close, every
-- worker is killed and reaped, then the host exits) or dies without a word (SIGKILL: each
-- worker sees its stdin close and exits); and a pool is a machine for the host's tools:
-- modal check, modal graph, --trace, ctl status. The host runs as a child process.
local cjson = require "cjson"
local uv = require "luv"
local support = require "support"
local ps = require "pool_support"

local FIXTURES = "specs/fixtures/pool/"

local modal_cmd = support.modal_cmd

local function pids_of(p)
  local list = {}
  for pid in (p.out:match("pids: ([%d ]+)\n") or ""):gmatch("%d+") do list[#list + 1] = tonumber(pid) end
  return list
end

describe("a pool in the host", function()
  it("SIGTERM: the pools close, every worker is killed and reaped, and the host exits 0", function()
    local p = support.spawn_host { "run", FIXTURES .. "host.lua" }
    finally(p.reap)
    assert.is_true(support.wait_for(p.said("pids: "), 5), p.out .. p.err)
    local pids = pids_of(p)
    assert.equal(3, #pids, p.out)
    for _, pid in ipairs(pids) do assert.is_true(ps.running(pid)) end
    uv.kill(p.pid, "sigterm")
    assert.is_true(support.wait_for(p.done, 5), p.out .. p.err)
    assert.equal(0, p.code, p.err)
    assert.matches("stopping\nhung call: stopped\nhung call: stopped\n", p.out, 1, true)
    for _, pid in ipairs(pids) do assert.is_true(ps.gone(pid), "worker " .. pid .. " is left") end
  end)

  it("the end of a lua5.4 program (no host): every worker still running gets SIGTERM", function()
    local dir = assert(io.popen("mktemp -d /tmp/modal_pool_end.XXXXXX")):read("l")
    finally(function() os.execute("rm -rf " .. support.quote(dir)) end)
    local log, pidfile = dir .. "/exit.log", dir .. "/pid"
    local worker = dir .. "/worker.sh"          -- answers one line, then ignores its stdin
    local f = assert(io.open(worker, "w"))
    f:write("#!/bin/sh\necho $$ > " .. support.quote(pidfile) .. "\n" ..
      "trap 'echo TERM >> " .. support.quote(log) .. "; exit 0' TERM\n" ..
      "read -r line; echo \"got:$line\"\nwhile :; do sleep 0.05; done\n")
    f:close()
    assert(os.execute("chmod +x " .. support.quote(worker)))
    local script = dir .. "/main.lua"
    f = assert(io.open(script, "w"))
    f:write("local modal = require 'modal'\n" ..
      "local p = modal.pool { cmd = { " .. string.format("%q", worker) .. " }, size = 1 }\n" ..
      "p:call('a'):add_callback(print)\nmodal.run()\nprint('the end')\n")
    f:close()
    local out = assert(io.popen(("env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 " ..
      "LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' timeout 10 lua5.4 %s 2>&1")
      :format(os.getenv("MODAL_BUILD") or "build", support.quote(script)))):read("a")
    assert.equal("got:a\nthe end\n", out)
    local pid = tonumber(support.read_file(pidfile):match("%d+"))
    assert.is_true(support.wait_for(function()
      local l = io.open(log)
      if l then l:close() end
      return l ~= nil and not ps.running(pid)
    end, 5), "the worker was not told to go")
    assert.equal("TERM\n", support.read_file(log))
  end)

  it("a host crash (SIGKILL): every worker sees its stdin close and exits", function()
    local p = support.spawn_host { "run", FIXTURES .. "host.lua" }
    finally(p.reap)
    assert.is_true(support.wait_for(p.said("pids: "), 5), p.out .. p.err)
    local pids = pids_of(p)
    assert.equal(3, #pids, p.out)
    uv.kill(p.pid, "sigkill")
    assert.is_true(support.wait_for(p.done, 5))
    -- orphans now: whoever adopted them reaps them, so a zombie counts as gone
    assert.is_true(support.wait_for(function()
      for _, pid in ipairs(pids) do if ps.running(pid) then return false end end
      return true
    end, 3), "a worker outlived its host")
  end)

  it("runs examples/pool/main.lua by one command: a worker crashes, the pool keeps answering", function()
    local p = support.spawn_host { "run", "examples/pool/main.lua" }
    finally(p.reap)
    assert.is_true(support.wait_for(p.done, 30), p.out .. p.err)
    assert.equal(0, p.code, p.out .. p.err)
    for _, text in ipairs { "failed: examples/pool\n", "worker: hashers#1 worker pid ",
      " exited with status 1; restart 1 (at most 5 within 30 s)", "last stderr: examples/pool/hasher.lua:",
      "Is a directory", "1 call failed, 1 restart", "every hash matches sha256sum",
      "the pool still answers: ", "closed: closed, workers left: 0" } do
      assert.matches(text, p.out, 1, true)
    end
    local pid = tonumber(p.out:match("worker pid (%d+)"))
    assert.is_true(ps.gone(pid))
  end)

  it("modal check and modal graph read a file returning modal.pool.machine{...}", function()
    local status, stdout, stderr = modal_cmd("check", FIXTURES .. "pool.lua")
    assert.equal(0, status, stdout .. stderr)
    status, stdout = modal_cmd("graph", FIXTURES .. "pool.lua")
    assert.equal(0, status)
    for _, edge in ipairs { '"idle" -> "running" [label="start"]', '"running" -> "failed" [label="fail"]',
      '"failed" -> "idle" [label="reset"]', '"running" -> "idle" [label="idle"]',
      '"closing" -> "closed" [label="done"]' } do
      assert.matches(edge, stdout, 1, true)
    end
  end)

  it("modal run --trace logs its transitions; ctl status counts it per state", function()
    local dir = os.tmpname()
    os.remove(dir)
    local socket = dir .. ".sock"
    local p = support.spawn_host { "run", "--trace", "--admin", socket, FIXTURES .. "run.lua", "1.5" }
    finally(function() p.reap(); os.remove(socket) end)
    assert.is_true(support.wait_for(p.said("one\n"), 5), p.out .. p.err)
    local status, stdout = modal_cmd("ctl", socket, "status")
    assert.equal(0, status, stdout)
    local m = cjson.decode(stdout).machines.workers
    assert.is_table(m, stdout)
    assert.equal(1, m.instances)
    assert.equal(1, m.states.running)
    assert.is_true(support.wait_for(p.done, 10), p.out .. p.err)
    assert.equal(0, p.code, p.err)
    assert.matches("started\none\ntwo\nclosed\n", p.out, 1, true)
    for _, t in ipairs { "workers#1 idle -> running on 'start'", "running -> closing on 'close'",
      "closing -> closed on 'done'" } do
      assert.matches(t, p.err, 1, true)
    end
  end)
end)
