-- examples/pool/hasher.lua — the pool's worker: one file path per line in, "<sha256>  <path>"
-- out (sha256sum's format). It serves through modal.worker, so it exits when its stdin closes
-- (the pool closed it, or the host died). It has a bug on purpose: given a folder, the read
-- fails, the error is not caught, and the worker crashes (its last stderr line says why).
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local sha256 = dofile(here .. "/sha256.lua")

require("modal.worker").serve(function(path)
  local f = assert(io.open(path, "rb"))
  local bytes = assert(f:read("a"))      -- a folder opens, but reading it raises: the crash
  f:close()
  return sha256(bytes) .. "  " .. path
end)
