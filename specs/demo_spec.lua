-- specs/demo_spec.lua — `make demo`, the main job (README.md): examples/demo/main.lua runs to
-- the end by itself in about ten seconds, shows each part of its timeline, answers every call
-- exactly once, and writes the state diagram.
local BUILD = os.getenv("MODAL_BUILD") or "build"

describe("make demo (examples/demo/main.lua)", function()
  it("runs through its timeline to the end, every call answered once, and writes the diagram", function()
    local p = assert(io.popen("mktemp -d /tmp/modal_demo.XXXXXX"))
    local out = p:read("l")
    p:close()
    local cmd = ("timeout 60 %s/modal run examples/demo/main.lua %s 2>&1; echo rc=$?"):format(BUILD, out)
    local h = assert(io.popen(cmd))
    local text = h:read("a")
    h:close()
    local dot = io.open(out .. "/echo.dot")
    local diagram = dot and dot:read("a")
    if dot then dot:close() end
    os.execute("rm -rf '" .. out .. "'")
    assert.matches("rc=0", text, 1, true)
    for _, part in ipairs {
      "outage 1: down",
      "ready -> backoff (lost:",
      "connecting -> backoff (error): attempt 1 failed (unavailable: connect: ECONNREFUSED)",
      "outage 2: down",
      "policy version 2 loaded",
      "[f.value: state backoff, 3 attempts",
      "half-open",
      "keepalive: no answer to a ping",
      "connecting -> failed (error)",
      "failed: auth: -ERR auth",
      "made after close() failed: stopped:",
      "every call answered exactly once: yes",
      "diagram",
    } do
      assert.matches(part, text, 1, true)
    end
    assert.truthy(diagram and diagram:find("digraph", 1, true), "no diagram written")
  end)
end)
