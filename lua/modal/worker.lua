--- lua/modal/worker.lua — the worker side of modal.pool's default protocol (doc/policies.md,
-- "Pool"), for workers written in Lua: one request line in, one answer line out.
--
--   -- hasher.lua, started by modal.pool{ cmd = { "lua5.4", "hasher.lua" } }
--   require("modal.worker").serve(function(line) return hash_of(line) end)
--
-- serve reads stdin line by line and writes each answer as one line, flushed at once. It
-- returns — and the process ends — when stdin closes: the pool closed the pipe, or the host
-- died without a word (a crash, SIGKILL). That is how no worker outlives its host; a worker
-- written in anything else should do the same (read stdin until EOF, then exit).
--
-- A long handler does not read stdin, so it cannot see it close. While a handler runs, serve
-- checks every million Lua instructions that the host that started the worker is still its
-- parent (worker.parent_alive) and exits with status 1 when it is gone; a handler that waits in C
-- (a sleep, a blocking read) runs no instructions: it should call worker.parent_alive() itself
-- between steps (doc/policies.md, "Writing a worker").
--
-- An error raised by the handler is not answered: its message goes to stderr (one line, the
-- last one the pool quotes) and the worker exits with status 1, so the pool fails that call
-- with kind `worker` and starts another worker. Answer a line of your own (say "ERR ...") for
-- errors a caller should handle.
--
-- @module modal.worker

local worker = {}

local ok_uv, uv = pcall(require, "luv")
if not ok_uv then uv = nil end

-- The parent's pid now: luv's os_getppid, else /proc/self/stat (Linux); nil when neither tells.
local function ppid()
  if uv and uv.os_getppid then return math.tointeger(uv.os_getppid()) end
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  return math.tointeger(tonumber(stat:match("^%d+ %b() %a (%d+)")))
end

--- The pid of the process that started this worker (its host), as it was when modal.worker was
-- first required; nil when it cannot be told.
worker.parent_pid = ppid()

--- Whether the host that started this worker is still its parent: false once it died (the
-- worker was adopted by init or a subreaper). A cheap system call; true when it cannot be told.
function worker.parent_alive()
  local parent = worker.parent_pid
  if parent == nil then return true end
  local now = ppid()
  return now == nil or now == parent
end

local function exit_orphaned()
  io.stderr:write(string.format("modal.worker: the host (pid %s) is gone; exiting\n",
    tostring(worker.parent_pid)))
  io.stderr:flush()
  os.exit(1)
end

local CHECK_EVERY = 1000000               -- Lua instructions between checks in a long handler

local function check_parent()
  if not worker.parent_alive() then exit_orphaned() end
end

--- Serves requests until stdin closes. `handler(line) -> answer` (a string, or a value
-- tostring makes one of; it may not hold a newline). Never returns normally: exits 0 at EOF,
-- 1 when the handler raised or the host died while the handler ran. `opts.watch_parent = false`
-- leaves the debug hook alone (then the handler itself should call worker.parent_alive()).
function worker.serve(handler, opts)
  if type(handler) ~= "function" then
    error("modal.worker.serve: expected a handler function(line) -> answer, got " .. type(handler), 2)
  end
  local watch = not (type(opts) == "table" and opts.watch_parent == false)
  local sethook, gethook = debug.sethook, debug.gethook
  local stdout, stderr = io.stdout, io.stderr
  for line in io.stdin:lines() do
    local hooked = watch and gethook() == nil
    if hooked then sethook(check_parent, "", CHECK_EVERY) end
    local ok, answer = pcall(handler, line)
    if hooked then sethook() end
    if ok then
      answer = tostring(answer)
      if answer:find("\n", 1, true) then
        ok, answer = false, "modal.worker: an answer may not hold a newline: " .. string.format("%q", answer)
      end
    end
    if not ok then
      stderr:write(tostring(answer), "\n")
      stderr:flush()
      os.exit(1)
    end
    stdout:write(answer, "\n")
    stdout:flush()
  end
  os.exit(0)
end

return worker
