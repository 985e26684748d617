-- specs/layering_spec.lua — the shape of the C core (doc/internals.md): its files call
-- downward only (no two files, and no circle of files, call each other) and none grows past
-- ~600 lines. Read from the objects of the build under test with nm.
local BUILD = os.getenv("MODAL_BUILD") or "build"

-- {file = {file it calls = a symbol it calls there}} from `nm -P` of every object.
local function calls()
  local defined, used = {}, {}
  local p = assert(io.popen("nm -P " .. BUILD .. "/*.o 2>/dev/null"))
  local file
  for line in p:lines() do
    local obj = line:match("^" .. BUILD:gsub("%p", "%%%0") .. "/(.-)%.o:$")
    if obj then
      file = obj
    else
      local name, kind = line:match("^(%S+) (%a)")
      if name and (name:find("^modal") or name:find("^luaopen_modal")) then
        if kind == "U" then
          used[file] = used[file] or {}
          used[file][name] = true
        elseif kind:find("[TDBR]") then
          defined[name] = file
        end
      end
    end
  end
  p:close()
  local edges = {}
  for f, names in pairs(used) do
    for name in pairs(names) do
      local g = defined[name]
      if g and g ~= f then
        edges[f] = edges[f] or {}
        edges[f][g] = name
      end
    end
  end
  return edges, defined
end

describe("the C core's files", function()
  it("call downward only: no circle of files that call each other", function()
    local edges, defined = calls()
    assert.truthy(next(defined), "no objects found in " .. BUILD)
    local state, path, found = {}, {}, nil
    local function visit(f)
      if found then return end
      state[f] = "open"
      path[#path + 1] = f
      for g, name in pairs(edges[f] or {}) do
        if state[g] == "open" then
          local i = #path
          while path[i] ~= g do i = i - 1 end
          found = table.concat(path, " -> ", i) .. " -> " .. g .. " (" .. name .. ")"
          return
        elseif not state[g] then
          visit(g)
        end
      end
      path[#path] = nil
      state[f] = "done"
    end
    for f in pairs(edges) do
      if not state[f] then visit(f) end
    end
    assert.is_nil(found, "a circle of files: " .. tostring(found))
  end)

  it("are each at most ~600 lines", function()
    local p = assert(io.popen("wc -l src/*.c src/*.h"))
    local long = {}
    for line in p:lines() do
      local n, name = line:match("^%s*(%d+)%s+(%S+)$")
      if n and name ~= "total" and tonumber(n) > 650 then long[#long + 1] = name .. " " .. n end
    end
    p:close()
    assert.same({}, long)
  end)
end)
