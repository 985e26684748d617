-- specs/install_spec.lua — `make install PREFIX=...` (doc/host.md): the host it installs finds
-- its Lua half under that prefix, whatever prefix the build before it used, and the module and
-- every Lua file land where lua5.4 finds them. Builds into a folder of its own (-O0, quick).
describe("make install PREFIX=...", function()
  local dir
  setup(function()
    local p = assert(io.popen("mktemp -d /tmp/modal_install.XXXXXX"))
    dir = assert(p:read("l"))
    p:close()
  end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("installs a host that runs a script and its tools from a clean environment", function()
    local b, prefix = dir .. "/build", dir .. "/prefix"
    local first = os.execute(("make -s BUILD=%s OPT=-O0 all >%s/make1.log 2>&1"):format(b, dir))
    assert.is_true(first, "the first build failed")
    local ok = os.execute(("make -s BUILD=%s OPT=-O0 PREFIX=%s install >%s/make2.log 2>&1")
      :format(b, prefix, dir))
    assert.is_true(ok, "make install failed")
    local script = dir .. "/hello.lua"
    local f = assert(io.open(script, "w"))
    f:write('local modal = require "modal"\n' ..
      'require "modal.host"\n' ..
      'require "modal.testing"          -- lua/modal/testing/init.lua: ?/init.lua is searched\n' ..
      'modal.call_later(0, function() print("hello from " .. modal._VERSION) end)\n')
    f:close()
    local p = assert(io.popen(("cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 " ..
      "%s/bin/modal run %s 2>&1; echo rc=$?"):format(prefix, script)))
    local out = p:read("a")
    p:close()
    assert.matches("hello from ", out, 1, true)
    assert.matches("rc=0", out, 1, true)
    local lua_files = io.popen("cd lua && find modal -name '*.lua' | sort"):read("a")
    for path in lua_files:gmatch("[^\n]+") do
      assert.is_truthy(io.open(prefix .. "/share/lua/5.4/" .. path), "not installed: " .. path)
    end
    assert.is_truthy(io.open(prefix .. "/lib/lua/5.4/modal.so"), "the module is not installed")
    assert.is_truthy(io.open(prefix .. "/share/man/man1/modal.1"), "modal(1) is not installed")
    assert.is_truthy(io.open(prefix .. "/share/man/man7/modal.7"), "modal(7) is not installed")
    -- uninstall removes every file and the folders install made, and keeps what is not ours
    assert.is_true(os.execute(("mkdir -p %s/share/lua/5.4/other && touch %s/share/lua/5.4/other/x.lua")
      :format(prefix, prefix)))
    assert.is_true(os.execute(("make -s BUILD=%s PREFIX=%s uninstall >%s/make3.log 2>&1")
      :format(b, prefix, dir)), "make uninstall failed")
    local left = io.popen("cd " .. prefix .. " && find . | sort"):read("a")
    assert.equal(".\n./share\n./share/lua\n./share/lua/5.4\n./share/lua/5.4/other\n" ..
      "./share/lua/5.4/other/x.lua\n", left)
  end)
end)
