--- fuzz/admin.lua — the admin-socket harness (doc/fuzzing.md): the input is what a client
-- writes to a live host's admin socket (doc/host.md: one request per line, one JSON reply
-- line each). The host side is lua/modal/host.lua started as `modal run --admin` starts it,
-- with one definition loaded from a file (so `reload` has work) and one instance of it; the
-- client is a luv pipe on the same loop that writes the request bytes in chunks of a
-- fuzz-chosen size, then either shuts its side down or waits for every reply.
--
-- What must hold, or the input is a finding:
--   * every complete request line gets exactly one reply, in order, up to the first line
--     longer than host.MAX_LINE, which gets "request line too long" and ends the connection
--     (a partial last line is never run);
--   * every reply is one JSON object with a boolean `ok`, and a string `error` when not ok;
--   * `status` is ok with a `machines` table and `trace` as the last `trace on|off` set it;
--     `trace on|off` is ok; an empty line, an unknown command or bad arguments are not ok
--     and say which; `reload NAME` of an unknown name is not ok;
--   * the host never raises out of a luv callback (the runner aborts on that) and stops
--     cleanly.
--
-- The first input byte chooses the chunk size and whether the client shuts down its side;
-- the rest are the bytes written.
--
-- @module admin

local modal = require "modal"
local host = require "modal.host"
local uv = require "luv"
local cjson = require "cjson"

local format, concat = string.format, table.concat

local MAX_LINE = 48                  -- lowered so that short inputs reach the long-line path
local CHUNKS = { 1, 2, 3, 5, 8, 13, 64, 1 / 0 }
local WAIT_MS = 3000                 -- a reply missing this long is a finding

local DEFINITION = [[
return {
  name = "fuzzed_admin", version = 1, initial = "idle", methods = { "ping" },
  states = {
    idle = { ping = function() return "pong" end, on = { go = "busy" } },
    busy = { timeout = 5, ping = "postpone", on = { timeout = "idle" } },
  },
}
]]

-- The folder of this input's socket and definition file, removed at its end (one per
-- process: inputs run one after another).
local function workdir()
  local base = os.getenv("TMPDIR") or "/tmp"
  local dir = format("%s/modal-fuzz-admin-%d", base, uv.os_getpid())
  if not uv.fs_stat(dir) then assert(uv.fs_mkdir(dir, tonumber("700", 8))) end
  local path = dir .. "/def.lua"
  local f = assert(io.open(path, "w"))
  f:write(DEFINITION)
  f:close()
  return dir, path
end

local function fail(fmt, ...)
  error("admin fuzz: " .. format(fmt, ...), 0)
end

-- The replies the host owes: one expectation per line it runs, and, when the client ends its
-- side (`shut`), one refusal for a last request left without its newline.
local function expectations(body, shut)
  local want, at = {}, 1
  while true do
    local nl = body:find("\n", at, true)
    if not nl then
      if #body - at + 1 > MAX_LINE then
        want[#want + 1] = { too_long = true }
      elseif shut and body:sub(at):find("%S") then
        want[#want + 1] = { unterminated = true, line = body:sub(at) }
      end
      break
    end
    local line = body:sub(at, nl - 1)
    if #line > MAX_LINE then
      want[#want + 1] = { too_long = true }
      break
    end
    line = line:gsub("\r$", "")
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    want[#want + 1] = { line = line, words = words }
    at = nl + 1
  end
  return want
end

-- Checks reply i against what its request owes; `tracing` is the trace switch so far.
local function check_reply(i, text, w, state)
  local ok, reply = pcall(cjson.decode, text)
  if not ok or type(reply) ~= "table" then fail("reply %d is not a JSON object: %q", i, text) end
  if type(reply.ok) ~= "boolean" then fail("reply %d has no boolean ok: %s", i, text) end
  if not reply.ok and (type(reply.error) ~= "string" or reply.error == "") then
    fail("reply %d fails without saying why: %s", i, text)
  end
  local function expect(cond, what)
    if not cond then fail("reply %d to %q: %s, got %s", i, w.line or "(long line)", what, text) end
  end
  if w.too_long then
    return expect(not reply.ok and reply.error:find("^request line too long"), "'too long' expected")
  end
  if w.unterminated then
    return expect(not reply.ok and reply.error == "request not ended by a newline: not run",
      "'not ended by a newline' expected")
  end
  local words, cmd = w.words, w.words[1]
  if #words == 0 then
    expect(not reply.ok and reply.error:find("^empty request"), "'empty request' expected")
  elseif cmd == "status" and #words == 1 then
    expect(reply.ok and type(reply.machines) == "table", "a status expected")
    expect(reply.trace == state.tracing, "trace " .. tostring(state.tracing) .. " expected")
    expect(type(reply.machines.fuzzed_admin) == "table", "the loaded machine expected")
  elseif cmd == "trace" and #words == 2 and (words[2] == "on" or words[2] == "off") then
    state.tracing = words[2] == "on"
    expect(reply.ok and reply.trace == state.tracing, "the switch set expected")
  elseif cmd == "reload" and #words <= 2 then
    local known = words[2] == nil or words[2] == "fuzzed_admin" or words[2] == state.path
    if not known then expect(not reply.ok, "an unknown name refused") end
    if known then expect(reply.ok, "the reload done") end
  elseif cmd == "status" or cmd == "trace" or cmd == "reload" then
    expect(not reply.ok and reply.error:find("^bad arguments to '" .. cmd .. "'"),
           "'bad arguments' expected")
  else
    expect(not reply.ok and reply.error:find("^unknown command '"), "'unknown command' expected")
  end
end

return function(input)
  local flags = input:byte(1) or 0
  local body = input:sub(2)
  local chunk = CHUNKS[(flags >> 1) % #CHUNKS + 1]
  local shut = flags % 2 == 1
  local dir, path = workdir()
  local sock = dir .. "/admin.sock"
  local previous_log = modal.on_log(function() end)
  host.MAX_LINE = MAX_LINE
  if uv.fs_stat(sock) then uv.fs_unlink(sock) end   -- left by an input that failed
  host.start { admin = sock }
  local M = modal.load(path)
  local instance = M:new()
  instance:fire("go")

  local want = expectations(body, shut)
  local state = { tracing = false, path = path }
  local got, buf, eof, err_seen = {}, "", false, nil
  local client = uv.new_pipe(false)
  local connected = false
  client:connect(sock, function(err)
    if err then err_seen = "connect: " .. err return end
    connected = true
    client:read_start(function(rerr, data)
      if rerr then err_seen = "read: " .. rerr return end
      if not data then eof = true return end
      buf = buf .. data
      for line in buf:gmatch("([^\n]*)\n") do got[#got + 1] = line end
      buf = buf:match("[^\n]*$")
    end)
  end)
  local deadline = uv.new_timer()
  local timed_out = false
  deadline:start(WAIT_MS, 0, function() timed_out = true end)
  while not connected and not err_seen and not timed_out do uv.run("once") end
  if err_seen then fail("%s", err_seen) end
  local at = 1
  while at <= #body and not eof and not err_seen do
    local piece = body:sub(at, chunk == 1 / 0 and #body or at + chunk - 1)
    at = at + #piece
    local ok, werr = pcall(client.write, client, piece)
    if not ok then break end              -- the host closed on a long line: its reply counts
    if werr == nil then break end
    uv.run("nowait")
  end
  if shut and not eof then pcall(client.shutdown, client) end
  -- Until every reply came, and the end of the connection when the host owes one (a long
  -- line) or the client shut down (so that an extra reply would be seen too).
  local ends = shut or (want[#want] and want[#want].too_long)
  while not timed_out and not err_seen and not eof do
    if #got >= #want and not ends then break end
    uv.run("once")
  end
  if err_seen then fail("%s", err_seen) end
  if #got ~= #want then
    local lines = {}
    for i, w in ipairs(want) do lines[i] = w.too_long and "(too long)" or format("%q", w.line) end
    fail("%d replies for %d requests (%s)%s: %s", #got, #want, concat(lines, ", "),
         timed_out and " after waiting" or "", concat(got, " | "))
  end
  for i, w in ipairs(want) do check_reply(i, got[i], w, state) end
  if buf ~= "" then fail("a reply cut off: %q", buf) end
  deadline:close()
  if not client:is_closing() then client:close() end
  host.stop()
  uv.run("nowait")
  modal.on_log(previous_log)
  if uv.fs_stat(sock) then fail("the admin socket file is left after host.stop()") end
  os.remove(path)
  assert(uv.fs_rmdir(dir))
end
