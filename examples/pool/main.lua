-- examples/pool/main.lua — `build/modal run examples/pool/main.lua`: a pool of three worker
-- processes (hasher.lua, SHA-256 in Lua) hashes every Lua file of the project, one call per
-- file. One input is a folder, on which a worker crashes: that call fails with the diagnosis
-- (pid, exit status, restart count, the worker's last stderr line), the pool starts another
-- worker after its backoff, and every other call is answered. The answers are checked against
-- sha256sum. Exits by itself.
local modal = require "modal"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local root = here:gsub("/?examples/pool$", "")
if root == "" then root = "." end
local files = {}
for path in io.popen("find " .. root .. "/lua " .. root .. "/examples -name '*.lua' | sort"):lines() do
  files[#files + 1] = path:gsub("^%./", "")
end
table.insert(files, #files // 2, here)   -- a folder, halfway: the worker that gets it crashes

local p = modal.pool {
  name = "hashers",
  cmd = { "lua5.4", here .. "/hasher.lua" },
  size = 3,
  backoff = { initial = 0.2, multiplier = 2, max = 5 },
}

local main = modal.async(function()
  local calls = {}
  for i, path in ipairs(files) do calls[i] = p:call(path) end   -- all at once: they queue
  local results = modal.await(modal.settled(calls))
  local hashed, failed = {}, 0
  for i, r in ipairs(results) do
    if r.ok then
      hashed[#hashed + 1] = r.value
    else
      failed = failed + 1
      print("failed: " .. files[i])
      print("  " .. tostring(r.failure))
    end
  end
  print(string.format("%d files hashed by %d workers, %d call failed, %d restart",
    #hashed, 3, failed, modal.pool.status(p).restarts_total))
  for i = 1, 3 do print("  " .. hashed[i]) end
  print("  ...")

  -- Check every answer against sha256sum.
  local expected = {}
  local list = {}
  for _, line in ipairs(hashed) do list[#list + 1] = "'" .. line:match("  (.*)$") .. "'" end
  for line in io.popen("sha256sum " .. table.concat(list, " ")):lines() do expected[line] = true end
  local mismatches = 0
  for _, line in ipairs(hashed) do if not expected[line] then mismatches = mismatches + 1 end end
  print(mismatches == 0 and "every hash matches sha256sum" or mismatches .. " hashes differ from sha256sum")

  print("the pool still answers: " .. modal.await(p:call(files[1])):sub(1, 16) .. "...")
  modal.await(p:close())
  print("closed: " .. p.state .. ", workers left: " .. #modal.pool.pids(p))
end)

main():add_errback(function(f)
  print("the example failed: " .. tostring(f))
  os.exit(1)
end)
