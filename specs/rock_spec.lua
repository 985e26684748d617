-- specs/rock_spec.lua — the LuaRocks package (README.md, "Install"): `luarocks make`
-- of rockspec/modal-scm-1.rockspec builds and installs offline into a fresh tree, against the
-- system luv declared as provided, and the stock lua5.4 then runs modal from that tree.
--
-- The build runs once, in a copy of the repository in a temporary folder (luarocks make leaves
-- ./modal.so in its source folder), and every test looks at its result.

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Runs a shell command; returns its exit status (128 + signal when killed) and its output.
local function sh(cmd)
  local log = os.tmpname()
  local _, how, status = os.execute("(" .. cmd .. ") >" .. log .. " 2>&1 </dev/null")
  local output = read_file(log) or ""
  os.remove(log)
  if how == "signal" then status = 128 + status end
  return status, output
end

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

describe("the modal rock", function()
  local tmp, copy, tree
  local build_status, build_log

  lazy_setup(function()
    local status, out = sh("mktemp -d")
    assert(status == 0, out)
    tmp = out:gsub("%s+$", "")
    copy, tree = tmp .. "/modal", tmp .. "/tree"
    -- The repository as a fresh checkout would have it: no build output, no git metadata.
    status, out = sh(string.format(
      "mkdir %s && tar -cf - --exclude=./.git --exclude=./build --exclude=./build-asan " ..
      "--exclude=./modal.so . | tar -xf - -C %s", quote(copy), quote(copy)))
    assert(status == 0, out)
    write_file(tmp .. "/config.lua", string.format(
      "rocks_trees = { %q }\nrocks_provided = { luv = \"1.44.2-0\" }\n", tree))
    build_status, build_log = sh(string.format(
      "cd %s && LUAROCKS_CONFIG=%s timeout 300 luarocks --lua-version 5.4 --tree=%s " ..
      "make rockspec/modal-scm-1.rockspec",
      quote(copy), quote(tmp .. "/config.lua"), quote(tree)))
  end)

  lazy_teardown(function()
    if tmp and tmp:match("/tmp%.%w+$") then sh("rm -rf " .. quote(tmp)) end
  end)

  it("needs luarocks, which `make deps` installs", function()
    local status = sh("command -v luarocks")
    assert.equal(0, status, "luarocks is not installed: run `make deps`")
  end)

  it("builds and installs offline with the system luv declared provided", function()
    assert.equal(0, build_status, build_log)
    assert.truthy(build_log:find("modal scm-1 is now installed", 1, true), build_log)
  end)

  it("installs the C module into the tree's lib/lua/5.4", function()
    assert.equal(0, build_status, build_log)
    assert.equal(0, (sh("test -f " .. quote(tree .. "/lib/lua/5.4/modal.so"))))
  end)

  it("installs every Lua file of lua/modal/ under the tree's share/lua/5.4/modal/", function()
    assert.equal(0, build_status, build_log)
    local status, listing = sh("cd lua/modal 2>/dev/null && find . -name '*.lua' | sed 's|^\\./||'; true")
    assert.equal(0, status)
    for name in listing:gmatch("[^\n]+") do
      local installed = tree .. "/share/lua/5.4/modal/" .. name
      assert.equal(read_file("lua/modal/" .. name), read_file(installed), installed)
    end
  end)

  it("runs from the tree under the stock lua5.4: a Deferred fired by call_later", function()
    assert.equal(0, build_status, build_log)
    write_file(tmp .. "/use.lua", [[
      local modal = require "modal"
      local d = modal.deferred()
      local got
      d:add_callback(function(v) got = v * 2 end)
      modal.call_later(0.01, function() d:callback(21) end)
      modal.run()
      print("result=" .. tostring(got))
      print("state=" .. d:state())
      print("from=" .. (package.searchpath("modal", package.path)
                        or package.searchpath("modal", package.cpath)))
    ]])
    local share, lib = tree .. "/share/lua/5.4/", tree .. "/lib/lua/5.4/"
    -- From tmp, not from the repository: ./build and ./modal.so must not be found.
    local status, out = sh(string.format(
      "cd %s && env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LUA_PATH=%s LUA_CPATH=%s " ..
      "timeout 10 lua5.4 use.lua",
      quote(tmp), quote(share .. "?.lua;" .. share .. "?/init.lua;;"), quote(lib .. "?.so;;")))
    assert.equal(0, status, out)
    assert.truthy(out:find("result=42\n", 1, true), out)
    assert.truthy(out:find("state=succeeded\n", 1, true), out)
    local from = out:match("from=([^\n]*)")
    assert.truthy(from and from:sub(1, #tree) == tree, "modal was loaded from " .. tostring(from))
  end)
end)
