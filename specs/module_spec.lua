-- specs/module_spec.lua — loading modal as a module: the libuv check against luv, SIGPIPE.
local function lua_child(code)
  local cmd = string.format("LUA_CPATH='./%s/?.so;;' lua5.4 -e %q 2>&1; echo \"rc=$?\"",
    os.getenv("MODAL_BUILD") or "build", code)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

describe("require 'modal'", function()
  it("refuses to load when luv's libuv is not the one modal was built against", function()
    local out = lua_child([[
      package.preload.luv = function() return { version = function() return 0x010100 end } end
      local ok, err = pcall(require, "modal")
      print(ok, err)]])
    assert.matches("false", out, 1, true)
    assert.matches("luv uses libuv 1.1.0 but modal was built against libuv", out, 1, true)
  end)

  it("refuses to load when 'luv' is not a luv module", function()
    local out = lua_child([[
      package.preload.luv = function() return {} end
      print(pcall(require, "modal"))]])
    assert.matches("false", out, 1, true)
    assert.matches("no version() function", out, 1, true)
  end)

  it("ignores SIGPIPE, so a write to a reset peer cannot kill the process", function()
    local out = lua_child([[
      require "modal"
      local uv = require "luv"
      local fds = uv.pipe()
      uv.fs_close(fds.read)
      print(uv.fs_write(fds.write, "x"))
      print("alive")]])
    assert.matches("EPIPE", out, 1, true)
    assert.matches("alive", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("survives a test runner unloading luv and modal between files", function()
    local out = lua_child([[
      require "modal"
      package.loaded.modal, package.loaded.luv = nil, nil
      collectgarbage(); collectgarbage()
      local uv = require "luv"
      local pipe = uv.new_pipe(false)
      local modal = require "modal"
      local ran = false
      modal.call_later(0, function() ran = true end)
      modal.run()
      pipe:close()
      uv.run("nowait")
      print("alive", ran)]])
    assert.matches("alive\ttrue", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("shares luv's loop: the same module table comes back from a second require", function()
    local out = lua_child([[
      local a = require "modal"
      package.loaded.modal = nil
      local b = require "modal"
      local n = 0
      a.call_later(0, function() n = n + 1 end)
      b.call_later(0, function() n = n + 1 end)
      require("luv").run()
      print("ran", n)]])
    assert.matches("ran\t2", out, 1, true)
  end)
end)
