--- lua/modal/host.lua — the live host's reload triggers (doc/reload.md, doc/host.md): SIGHUP
-- reloads every loaded definition, `--watch` reloads a loaded file when it changes on disk,
-- and `--admin PATH` serves `status`, `reload [NAME]` and `trace on|off` on a unix socket.
--
--   local host = require "modal.host"
--   host.start { watch = true, admin = "/run/app.sock", trace = false }
--   ... modal.run() ...
--   host.stop()
--
-- The C host calls start() before the script and stop() after the loop ends; a plain lua5.4
-- program may do the same. Every handle is luv's and unref'd, so none keeps the loop alive;
-- stop() (also run by modal.on_stop) closes them all and removes the admin socket.
--
-- Watching: the folder of each file loaded through modal.load is watched (a file watch goes
-- silent after an editor's rename-over save, doc/reload.md). Events naming a loaded file
-- start a ~100 ms debounce per file; when it fires, the file is stat'ed and reloaded only when
-- its inode, size or mtime (to the nanosecond) changed. A file missing at that moment is
-- looked for again for about a second (editors delete and re-create). Editor temp and backup
-- files never match a loaded file's name, so their events are dropped.
--
-- Admin protocol: one request per line, one JSON line per reply, several requests per
-- connection. A line longer than 64 KiB closes the connection; a line cut off by the client's
-- disconnect is never run.
--
-- @module modal.host

local modal = require "modal"
local uv = require "luv"

local type, pairs, ipairs, pcall, tostring = type, pairs, ipairs, pcall, tostring
local format, concat, sort = string.format, table.concat, table.sort

local host = {}

--- Tunables (milliseconds and bytes); specs may lower them.
host.DEBOUNCE_MS = 100          -- quiet time after the last event before a reload
host.REWATCH_MS = 500           -- how often watched folders are checked for being made anew
host.MISSING_TRIES = 10         -- looks for a missing file, DEBOUNCE_MS apart (~1 s)
host.MAX_LINE = 64 * 1024       -- longest admin request line
host.MAX_CLIENTS = 64           -- admin connections open at once (a new one closes the oldest)
host.IDLE_MS = 60 * 1000        -- an admin connection silent this long is closed
host.MAX_PENDING = 1024 * 1024  -- bytes of replies a client may leave unread

local S                         -- the running host's state, nil when stopped

-- {============ logging

-- Writes one line through the current modal.on_log sink; never raises.
local function log(level, message)
  pcall(modal.log, level, message)
end
host._log = log

-- A short, printable echo of client bytes for an error message.
local function printable(s, max)
  s = s:gsub("[^\32-\126]", "?")
  if #s > max then s = s:sub(1, max) .. "..." end
  return s
end

-- }============ logging

-- {============ reloading

-- Reloads one definition (a name or path); returns true or nil, err. Never raises.
local function reload_one(what, via)
  local ok, res, err = pcall(modal.reload, what)
  if not ok then res, err = nil, tostring(res) end
  if res then
    local version
    pcall(function()                  -- loading a loaded path again returns its M, no rerun
      local loaded = modal.loaded()
      local path = loaded[what]
      for _, p in pairs(loaded) do
        if p == what then path = p end
      end
      if path then version = modal.load(path).version end
    end)
    log("info", format("reloaded '%s'%s (%s)", what,
      version ~= nil and (" to version " .. tostring(version)) or "", via))
    return true
  end
  err = err ~= nil and tostring(err) or "reload failed"          -- modal.reload logged it
  local got, loaded = pcall(modal.loaded)       -- the reply names the file when err does not
  local path = got and type(loaded) == "table" and loaded[what]
  if type(path) == "string" and not err:find(path, 1, true) then err = path .. ": " .. err end
  return nil, err
end

-- The loaded definitions' names, sorted.
local function loaded_names()
  local names = {}
  local ok, loaded = pcall(modal.loaded)
  if ok and type(loaded) == "table" then
    for name in pairs(loaded) do names[#names + 1] = name end
  end
  sort(names, function(a, b) return tostring(a) < tostring(b) end)
  return names
end

--- Reloads every loaded definition; returns the number reloaded and a list of "name: error"
-- for those that failed.
function host.reload_all(via)
  local n, failed = 0, {}
  for _, name in ipairs(loaded_names()) do
    local ok, err = reload_one(name, via or "reload all")
    if ok then n = n + 1 else failed[#failed + 1] = format("%s: %s", name, err) end
  end
  return n, failed
end

-- }============ reloading

-- {============ handles

-- Registers a luv handle with the running host (unref'd) and returns it.
local stopped_sighup                    -- after host.stop(): the SIGHUP handle, ignoring

local function own(h)
  h:unref()
  S.handles[h] = true
  return h
end

local function close(h)
  if h and S and S.handles[h] then S.handles[h] = nil end
  if h and not h:is_closing() then h:close() end
end

-- }============ handles

-- {============ watching

-- Editor temp and backup files: never reloaded, even if a loaded file were named so.
local function is_temp(name)
  return name:sub(-1) == "~" or name:sub(-4) == ".swp" or name:sub(-4) == ".swx"
    or name:sub(1, 2) == ".#" or name == "4913"
end
host._is_temp = is_temp

local function split(path)
  local dir, base = path:match("^(.*)/([^/]*)$")
  if not dir then return ".", path end
  if dir == "" then dir = "/" end
  return dir, base
end

-- What tells a changed file from an untouched one.
local function signature(path)
  local st = uv.fs_stat(path)
  if not st then return nil end
  return format("%s:%s:%s.%09d", tostring(st.ino), tostring(st.size),
    tostring(st.mtime and st.mtime.sec), st.mtime and st.mtime.nsec or 0)
end

local schedule                        -- forward

local function on_debounce(rec)
  if not S then return end
  local sig = signature(rec.path)
  if not sig then
    rec.tries = rec.tries + 1
    if rec.tries < host.MISSING_TRIES then
      rec.timer:start(host.DEBOUNCE_MS, 0, function() on_debounce(rec) end)
    else
      rec.tries = 0
      log("warn", format("'%s': %s is missing; the loaded definition keeps serving",
        rec.name or rec.path, rec.path))
    end
    return
  end
  rec.tries = 0
  if sig == rec.sig then return end   -- a spurious event: the file did not change
  rec.sig = sig
  reload_one(rec.name or rec.path, "watch: " .. rec.path)
end

schedule = function(rec)
  rec.tries = 0
  rec.timer:stop()
  rec.timer:start(host.DEBOUNCE_MS, 0, function() on_debounce(rec) end)
end

local function on_fs_event(dir, err, filename)
  if not S then return end
  if err then
    log("warn", format("watching %s: %s", dir.path, tostring(err)))
    return
  end
  if filename == nil then             -- no name given: look at every file of the folder
    for _, rec in pairs(dir.files) do schedule(rec) end
    return
  end
  if filename == dir.base then        -- about the folder itself (deleted, moved): its handle
    dir.dead = true                   -- sees nothing more; rewatch() starts a new one
  end
  local rec = dir.files[filename]
  if rec and not is_temp(filename) then schedule(rec) end
end

-- Starts (or starts again) the folder's fs_event handle; returns true, or nil and why not.
local function watch_folder(dir)
  local h, err = uv.new_fs_event()
  if not h then return nil, err end
  local ok, e = h:start(dir.path, {}, function(ferr, filename) on_fs_event(dir, ferr, filename) end)
  if not ok then
    h:close()
    return nil, e
  end
  if dir.handle then close(dir.handle) end
  dir.handle = own(h)
  local st = uv.fs_stat(dir.path)
  dir.ino, dir.dead = st and st.ino, false
  return true
end

-- A watched folder that was deleted and made again is a new folder: its old handle sees
-- nothing any more. Every REWATCH_MS the folders are looked at, and one whose inode changed is
-- watched again and its files checked (reloaded if they changed meanwhile).
local function rewatch()
  if not S then return end
  for _, dir in pairs(S.dirs) do
    local st = uv.fs_stat(dir.path)
    if not st then
      dir.ino = nil
    elseif st.ino ~= dir.ino or dir.dead then   -- an inode may be reused at once
      local ok, err = watch_folder(dir)
      if ok then
        log("info", format("watching %s again (it was made anew)", dir.path))
        for _, rec in pairs(dir.files) do schedule(rec) end
      else
        log("warn", format("cannot watch %s again: %s", dir.path, tostring(err)))
      end
    end
  end
end

--- Watches the file at `path` (registered as `name`) for changes.
function host.watch(path, name)
  if not (S and S.watch) or type(path) ~= "string" then return end
  if S.watched[path] then return end
  local dirname, base = split(path)
  local key = uv.fs_realpath(dirname) or dirname
  local dir = S.dirs[key]
  if not dir then
    dir = { path = dirname, base = select(2, split(dirname)), files = {} }
    local ok, err = watch_folder(dir)
    if not ok then
      log("warn", format("cannot watch %s: %s", dirname, tostring(err)))
      return
    end
    S.dirs[key] = dir
    if not S.rewatch then
      S.rewatch = own(uv.new_timer())
      S.rewatch:start(host.REWATCH_MS, host.REWATCH_MS, rewatch)
      S.rewatch:unref()               -- the folders' own handles keep the host alive
    end
  end
  local rec = { path = path, name = name, tries = 0, sig = signature(path),
                timer = own(uv.new_timer()) }
  dir.files[base] = rec
  S.watched[path] = rec
  log("debug", format("watching %s for changes to '%s'", dirname, tostring(name or path)))
end

-- }============ watching

-- {============ admin socket

local cjson_ok, cjson = pcall(require, "cjson")

local function encode(t)
  if not cjson_ok then
    return '{"ok":false,"error":"lua-cjson is not installed"}'
  end
  local ok, s = pcall(cjson.encode, t)
  if not ok then
    ok, s = pcall(cjson.encode, { ok = false, error = "cannot encode the reply: " .. tostring(s) })
    if not ok then return '{"ok":false,"error":"cannot encode the reply"}' end
  end
  return (s:gsub("\\/", "/"))         -- cjson escapes every '/'; paths read better without
end

local USAGE = "use status, reload [NAME], trace on|off"
local TOO_LONG = string.format("request line too long (at most %d bytes)", host.MAX_LINE)

--- Runs one admin request line; returns the reply table.
function host.command(line)
  local words = {}
  for w in line:gmatch("%S+") do words[#words + 1] = w end
  local cmd = words[1]
  if cmd == "status" and #words == 1 then
    local ok, stats = pcall(modal.stats)
    if not ok or type(stats) ~= "table" then
      return { ok = false, error = "modal.stats failed: " .. tostring(stats) }
    end
    stats.ok = true
    local got, tracing = pcall(modal.trace)           -- no argument: reads the switch
    stats.trace = got and tracing == true
    if type(stats.machines) ~= "table" then stats.machines = {} end
    return stats
  elseif cmd == "reload" and #words <= 2 then
    if words[2] then
      local ok, err = reload_one(words[2], "admin")
      if ok then return { ok = true, reloaded = 1 } end
      return { ok = false, error = err }
    end
    local n, failed = host.reload_all("admin")
    if #failed == 0 then return { ok = true, reloaded = n } end
    return { ok = false, reloaded = n, error = concat(failed, "; ") }
  elseif cmd == "trace" and #words == 2 and (words[2] == "on" or words[2] == "off") then
    local on = words[2] == "on"
    local ok, err = pcall(modal.trace, on)
    if not ok then return { ok = false, error = "modal.trace failed: " .. tostring(err) } end
    log("info", "trace " .. words[2] .. " (admin)")
    return { ok = true, trace = on }
  end
  if cmd == "status" or cmd == "reload" or cmd == "trace" then
    return { ok = false, error = format("bad arguments to '%s' (%s)", cmd, USAGE) }
  end
  return { ok = false, error = format("unknown command '%s' (%s)", printable(line, 80), USAGE) }
end

-- Forgets a client. With `flush`, replies already written are sent first (shutdown waits for
-- them), then the connection closes.
local function drop_client(c, flush)
  if c.gone then return end
  c.gone = true
  if S then
    S.clients = S.clients - 1
    S.conns[c] = nil
  end
  close(c.idle)
  if flush and not c.pipe:is_closing() then
    pcall(c.pipe.read_stop, c.pipe)
    local ok = pcall(c.pipe.shutdown, c.pipe, function() close(c.pipe) end)
    if ok then return end
  end
  close(c.pipe)
end

local function reply(c, t)
  if c.gone or c.pipe:is_closing() then return end
  if c.pipe:get_write_queue_size() > host.MAX_PENDING then return drop_client(c) end
  local ok = pcall(c.pipe.write, c.pipe, encode(t) .. "\n")
  if not ok then drop_client(c) end
end

local function on_client_data(c, err, data)
  if c.gone or not S then return end
  if err then return drop_client(c) end
  if data == nil then                 -- EOF: a partial last line is never run (it may be cut
    if c.buf:find("%S") then          -- short: `reload app` read as `reload`), but answered
      reply(c, { ok = false, error = "request not ended by a newline: not run" })
      return drop_client(c, true)
    end
    return drop_client(c)
  end
  c.idle:again()
  c.last = uv.now()
  local buf, at = c.buf .. data, 1
  while not c.gone do
    local nl = buf:find("\n", at, true)
    if not nl then break end
    if nl - at > host.MAX_LINE then
      reply(c, { ok = false, error = TOO_LONG })
      return drop_client(c, true)
    end
    local line = buf:sub(at, nl - 1):gsub("\r$", "")
    at = nl + 1
    local ok, res
    if line:find("%S") then
      ok, res = pcall(host.command, line)
      if not ok then res = { ok = false, error = "internal error: " .. tostring(res) } end
    else
      res = { ok = false, error = "empty request (" .. USAGE .. ")" }
    end
    reply(c, res)
  end
  if c.gone then return end
  c.buf = buf:sub(at)
  if #c.buf > host.MAX_LINE then
    reply(c, { ok = false, error = TOO_LONG })
    drop_client(c, true)
  end
end

-- Only this process's own user and root may talk to the admin socket (the socket's 0600 mode
-- says the same; this also holds when its folder or mode lets others connect). Returns true,
-- or false and who was refused.
local function peer_allowed(pipe)
  local fd = pipe:fileno()
  local uid, _, pid = modal._peercred(fd)
  if not uid then return false, "its credentials cannot be read (" .. tostring(_) .. ")" end
  if uid == 0 or uid == modal._uid() then return true end
  return false, format("uid %d (pid %d) is neither this host's user (uid %d) nor root", uid,
    pid or -1, modal._uid())
end

local function on_connection(server, err)
  if not S then return end
  if err then
    log("warn", "admin socket: " .. tostring(err))
    return
  end
  local pipe = uv.new_pipe(false)
  if not pipe then return end
  if not server:accept(pipe) then
    pipe:close()
    return
  end
  local allowed, who = peer_allowed(pipe)
  if not allowed then
    log("warn", "admin socket: refused a client: " .. who)
    pcall(pipe.write, pipe, encode({ ok = false, error = "refused: " .. who }) .. "\n")
    pcall(pipe.shutdown, pipe, function() if not pipe:is_closing() then pipe:close() end end)
    return
  end
  if S.clients >= host.MAX_CLIENTS then  -- the one silent longest makes room: forgotten
    local oldest                          -- connections never lock the next `modal ctl` out
    for other in pairs(S.conns) do
      if not oldest or other.last < oldest.last then oldest = other end
    end
    log("warn", format("admin socket: %d connections open: closed the one silent longest "
      .. "(%.1f s)", host.MAX_CLIENTS, (uv.now() - oldest.last) / 1000))
    drop_client(oldest)
  end
  S.clients = S.clients + 1
  local c = { pipe = own(pipe), buf = "", last = uv.now() }
  S.conns[c] = true
  c.idle = own(uv.new_timer())
  c.idle:start(host.IDLE_MS, host.IDLE_MS, function() drop_client(c) end)
  pipe:read_start(function(rerr, data) on_client_data(c, rerr, data) end)
end

local function listen(path)
  local server = uv.new_pipe(false)
  local ok, err = server:bind(path)
  if not ok then
    server:close()
    return nil, err
  end
  S.admin_path = path                 -- ours now: stop() removes it, if still the same file
  local bound = uv.fs_lstat(path)
  S.admin_ino = bound and bound.ino
  local chmod_ok, cerr = uv.fs_chmod(path, tonumber("600", 8))   -- before anyone can connect
  if chmod_ok then
    ok, err = server:listen(16, function(lerr) on_connection(server, lerr) end)
  else
    ok, err = nil, "chmod: " .. tostring(cerr)
  end
  if not ok then
    server:close()                    -- closing a bound pipe removes its file
    S.admin_path = nil
    return nil, err
  end
  S.server = own(server)
  log("info", "admin socket listening on " .. path)
  return true
end

-- Serves the admin socket at `path`; returns true, or nil and why not. A socket file that
-- another process listens on is left alone (an error); one nobody listens on is replaced.
local function serve_admin(path)
  if #path > 107 then return nil, "the path is longer than 107 bytes" end
  if path:sub(1, 1) ~= "/" then          -- absolute: the script may change its directory
    local cwd = uv.cwd()
    if cwd and #cwd + 1 + #path <= 107 then path = cwd .. "/" .. path end
  end
  local folder = split(path)
  local fst = uv.fs_stat(folder)
  if not fst then return nil, format("its folder %s does not exist", folder) end
  if fst.type ~= "directory" then return nil, format("%s is not a folder", folder) end
  if not uv.fs_access(folder, "W") then
    return nil, format("its folder %s is not writable by this process", folder)
  end
  local st = uv.fs_stat(path)
  if not st then return listen(path) end
  if st.type ~= "socket" then return nil, "the file exists and is not a socket" end
  -- A unix socket connects at once when someone listens (Linux), so the probe answers now;
  -- a refused probe is confirmed by its callback before the stale file is removed.
  local probe = own(uv.new_pipe(false))
  probe:connect(path, function(cerr)
    close(probe)
    if not S or S.server then return end
    if cerr == "ECONNREFUSED" or cerr == "ENOENT" then
      uv.fs_unlink(path)              -- stale: nothing listens there
      local ok, err = listen(path)
      if not ok then log("error", format("cannot serve the admin socket %s: %s", path, err)) end
    elseif cerr ~= "ECANCELED" then
      log("error", format("cannot serve the admin socket %s: %s", path,
        cerr and tostring(cerr) or "another process listens on it"))
    end
  end)
  if probe:getpeername() then
    close(probe)
    return nil, "another process listens on it"
  end
  return true
end

-- }============ admin socket

--- Starts the host side: SIGHUP always, folder watches when opts.watch, the admin socket
-- when opts.admin (a path), transition tracing when opts.trace. Starting again restarts.
-- Raises when the admin socket cannot be served (another process listens on it, the path
-- is not a socket, bind fails), with nothing left open.
function host.start(opts)
  opts = type(opts) == "table" and opts or {}
  if S then host.stop() end
  S = { handles = {}, dirs = {}, watched = {}, clients = 0, conns = {},
        watch = opts.watch and true or false }

  if opts.trace and type(modal.trace) == "function" then pcall(modal.trace, true) end

  local sig = uv.new_signal()
  if sig then
    sig:unref()
    S.sighup = sig
    sig:start("sighup", function()
      log("info", "SIGHUP received: reloading every loaded definition")
      host.reload_all("SIGHUP")
    end)
  end
  if stopped_sighup then                  -- the last stop's, ignoring: this one serves now
    stopped_sighup:close()
    stopped_sighup = nil
  end

  if S.watch then
    S.previous_on_load = rawget(modal, "_on_load")
    local mine
    mine = function(path, name)
      if S and S.on_load == mine then host.watch(path, name) end
      local prev = S and S.previous_on_load
      if prev then prev(path, name) end
    end
    S.on_load = mine
    modal._on_load = mine
    local ok, loaded = pcall(modal.loaded)    -- files loaded before start()
    if ok and type(loaded) == "table" then
      for name, path in pairs(loaded) do host.watch(path, name) end
    end
  end

  if type(opts.admin) == "string" and opts.admin ~= "" then
    local ok, err = serve_admin(opts.admin)
    if not ok then
      host.stop()
      error(format("cannot serve the admin socket %s: %s", opts.admin, tostring(err)), 0)
    end
  end

  local this = S
  modal.on_stop(function()
    if S == this then host.stop() end
  end)
  return true
end

--- Closes every handle the host opened, removes the admin socket, and unhooks modal.load.
-- Safe to call more than once, and when start() was never called.
function host.stop()
  local s = S
  if not s then return end
  S = nil
  for h in pairs(s.handles) do
    if not h:is_closing() then h:close() end
  end
  -- SIGHUP stays caught, ignored: closing its handle would give it back its default action,
  -- which ends the process (a log rotation's `kill -HUP` while the host drains).
  local sig = s.sighup
  if sig and not sig:is_closing() then
    if stopped_sighup then stopped_sighup:close() end
    stopped_sighup = sig
    sig:start("sighup", function()
      log("info", "SIGHUP received while the host stops: ignored (nothing is reloaded)")
    end)
  end
  s.handles = {}
  if s.admin_path then                  -- unless something else took its name meanwhile
    local st = uv.fs_lstat(s.admin_path)
    if st and st.type == "socket" and st.ino == s.admin_ino then uv.fs_unlink(s.admin_path) end
  end
  if s.on_load and rawget(modal, "_on_load") == s.on_load then
    modal._on_load = s.previous_on_load
  end
end

--- True while the host side is started.
function host.running()
  return S ~= nil
end

return host
