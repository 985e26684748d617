-- lua/modal/worker.lua — the worker side of modal.pool's default protocol (doc/policies.md,
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
-- An error raised by the handler is not answered: its message goes to stderr (one line, the
-- last one the pool quotes) and the worker exits with status 1, so the pool fails that call
-- with kind `worker` and starts another worker. Answer a line of your own (say "ERR ...") for
-- errors a caller should handle.
--
-- @module modal.worker

local worker = {}

--- Serves requests until stdin closes. `handler(line) -> answer` (a string, or a value
-- tostring makes one of; it may not hold a newline). Never returns normally: exits 0 at EOF,
-- 1 when the handler raised.
function worker.serve(handler)
  local stdout, stderr = io.stdout, io.stderr
  for line in io.stdin:lines() do
    local ok, answer = pcall(handler, line)
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
