--- lua/modal/cli.lua — the host's `modal check FILE...`, `modal graph FILE`,
-- `modal test FILE...` and `modal ctl SOCKET COMMAND` (doc/host.md, doc/testing.md), in plain
-- Lua.
--
--   os.exit(require("modal.cli").main("check", { "conn.lua" }))
--
-- A definition file usually ends `return modal.machine { ... }`, which would raise on an
-- invalid definition; while the file runs, `machine` of the table `require "modal"` returns is
-- replaced by a function that captures its argument and returns a stand-in, so every problem
-- is reported by modal.check instead. A program (a file that goes on to use a machine it
-- defined: `M:new()`) is stopped at that first use, and every machine defined before it is
-- checked. Without the C module (plain Lua, no build) a stand-in
-- table plays `require "modal"` for the file. Exit status: 0 fine, 1 problems, 2 usage.
--
-- @module modal.cli

local check = require "modal.check"
local graph = require "modal.graph"

local type, tostring, pcall, xpcall, rawget, rawset = type, tostring, pcall, xpcall, rawget, rawset
local setmetatable, ipairs, error = setmetatable, ipairs, error
local format, concat = string.format, table.concat

local cli = {}

--- The --help text of each command.
cli.USAGE = {
  check = [[
usage: modal check FILE...

Validates machine definition files. Each FILE is a Lua file returning a definition table,
usually `return modal.machine { ... }`. Prints every problem, one per line:
  FILE: PATH: MESSAGE             an error
  FILE: PATH: warning: MESSAGE    a warning (an unreachable state, ...)
  FILE: ok                        no problem at all
A program that defines machines and then uses them is run up to its first use of one
(`M:new()`, ...) and every machine defined by then is checked, each as `FILE (machine NAME)`
when there are several, after a `FILE: note:` line saying where it stopped.
Exit status: 0 when no file has errors (warnings allowed), 1 otherwise, 2 on a usage error.
]],
  graph = [[
usage: modal graph FILE [--format dot|mermaid]

Prints the state diagram of the machine defined in FILE: Graphviz dot (the default; render
with `dot -Tpng -o machine.png`) or Mermaid (stateDiagram-v2). Final states, the initial
state, guarded and internal transitions, postponed methods and timeouts are marked.
Exit status: 0 printed, 1 when FILE does not load or has errors (listed on stderr), 2 on a
usage error.
]],
  test = [[
usage: modal test [--options LUAFILE] [--max-depth N] [--steps] FILE...

Generates the shortest paths from the initial state that together take every transition of
the machine defined in FILE (modal.testing.paths), then walks each one on a fresh instance
under a virtual clock, each `run` job replaced by a Deferred the path settles
(modal.testing.walk). Prints one line per path and the coverage:
  FILE: path N: ok: idle -connect-> connecting -job done-> ready
  FILE: path N: FAILED: walk: step 2 of 3 (go, from 'a'): the instance is in 'c', the path says 'b'
  FILE: note: MESSAGE            a line logged at level error meanwhile (a hook raised)
  FILE: LOOPS: after steps ...: the definition loops without waiting (cycle: a -> b -> a)
                                 a run to completion that took 10,000 transitions
  FILE: 9/10 transitions taken   then one `not taken: PATH` line per transition missed
  --options LUAFILE  a Lua file returning the options of paths and walk: data (an instance's
                     data, or a function making it), args ({ [input] = { {args...}, ... } },
                     the arguments to try; `done`/`error` for a job's outcome), max_depth,
                     max_nodes
  --max-depth N      the longest path searched (default 10)
  --steps            print each step with the transition it takes
Exit status: 0 when every walk matched, 1 on a mismatch, a definition that loops without
waiting, or a FILE that does not load or is not valid; 2 on a usage error.
]],
  ctl = [[
usage: modal ctl SOCKET status|reload [NAME]|trace on|off

Talks to a host started with `modal run --admin SOCKET`:
  status          prints the host's state as one JSON line: machines, versions, instances
                  per state, postponed calls, transitions, reloads and the last reload's result
  reload [NAME]   reloads the definition NAME, or every loaded definition
  trace on|off    turns transition tracing on or off
Prints the host's reply (one JSON line). Exit status: 0 when the reply says ok, 1 when it does
not or the host cannot be reached, 2 on a usage error.
]],
}

local function message_of(e)
  if type(e) == "string" then return e end
  local ok, s = pcall(tostring, e)
  return ok and type(s) == "string" and s or ("(a " .. type(e) .. " error value)")
end

local STOP = {}                                  -- the error value that stops the file

-- A function that stops the file where it is called, saying `what` the program did there
-- ("uses a machine") and how many machines it had defined by then.
local function stopper(defs, what)
  return function()
    local info = debug.getinfo(2, "Sl")
    error({ [STOP] = true, line = info and info.currentline or -1, count = #defs, what = what }, 0)
  end
end

-- What a machine is while a file runs under `modal check`: a stand-in whose first use (M:new,
-- any field, a call) stops the file, as that is where a program goes on past its definitions.
-- Running the loop (modal.run, luv's run) or leaving (os.exit) stops it too (cli.load_all):
-- checking never runs a loop nor ends the checker.
local function stand_in(defs)
  local used = stopper(defs, "uses a machine")
  return setmetatable({}, { __index = used, __newindex = used, __call = used,
    __tostring = function() return "modal.machine (stand-in of modal check)" end })
end

--- Runs the file `file` with modal.machine capturing every definition it is given. Returns
-- true, the list of definitions (in order; the table the file returned when it gave
-- modal.machine none) and a note, or false and the reason nothing could be checked.
-- The note is nil for a definition file; for a program (a file that goes on to use a machine
-- it defined) it says where the file was stopped: `{ line = 12, count = 2 }`, `count` machines
-- having been defined before that line. A file that raises after defining machines returns
-- them with `note.error` set to the message.
function cli.load_all(file)
  local chunk, why = loadfile(file, "t")
  if not chunk then return false, message_of(why) end

  local loaded = package.loaded
  local had, modal = pcall(require, "modal")
  local previous_loaded = loaded.modal
  if not had or type(modal) ~= "table" then
    modal = {}                          -- stand-in: the C module is not available here
    loaded.modal = modal
  end
  local saved, saved_load, saved_arg = rawget(modal, "machine"), rawget(modal, "load"), rawget(_G, "arg")
  local defs = {}
  rawset(modal, "machine", function(def)
    defs[#defs + 1] = def
    return stand_in(defs)
  end)
  -- modal.load of a definition file: the file runs here too (a modal.service in it reaches the
  -- stand-in modal.machine); a file that returns a plain table is that definition.
  rawset(modal, "load", function(path)
    if type(path) ~= "string" then
      error(format("bad argument #1 to 'load' (a file path expected, got %s)", type(path)), 2)
    end
    local def_chunk, def_why = loadfile(path, "t")
    if not def_chunk then error("modal.load: " .. message_of(def_why), 2) end
    local before = #defs
    local def = def_chunk()
    if #defs > before then return def end
    if type(def) ~= "table" then
      error(format("modal.load: %s returned %s, not a machine definition (a table)", path,
        def == nil and "nothing" or ("a " .. type(def))), 2)
    end
    defs[#defs + 1] = def
    return stand_in(defs)
  end)
  rawset(_G, "arg", { [0] = file })      -- as `modal run` gives a script (no arguments)
  local uv_ok, uv = pcall(require, "luv")
  if not uv_ok or type(uv) ~= "table" then uv = {} end
  local saved_run, saved_uv_run, saved_exit = rawget(modal, "run"), rawget(uv, "run"), os.exit
  rawset(modal, "run", stopper(defs, "runs the event loop"))
  rawset(uv, "run", stopper(defs, "runs the event loop"))
  rawset(os, "exit", stopper(defs, "exits"))
  local clock = rawget(modal, "_clock")            -- the timers the file arms never run
  local mark, had_clock = clock and clock.mark(), clock and clock.installed()
  local ok, result = xpcall(chunk, function(e)
    if type(e) == "table" and rawget(e, STOP) then return e end
    return message_of(e)
  end, file)
  if clock then
    clock.drop(mark)
    if clock.installed() and not had_clock then   -- and its clock goes, as clock:close() does
      local current = package.loaded["modal.testing.clock"]
      current = type(current) == "table" and current.current_clock()
      if current then pcall(current.close, current) else pcall(clock.close) end
    end
  end
  rawset(modal, "machine", saved)
  rawset(modal, "load", saved_load)
  rawset(modal, "run", saved_run)
  rawset(uv, "run", saved_uv_run)
  rawset(os, "exit", saved_exit)
  rawset(_G, "arg", saved_arg)
  loaded.modal = previous_loaded

  if #defs > 0 then
    if ok then return true, defs end
    if type(result) == "table" then
      return true, defs, { line = result.line, count = result.count, what = result.what }
    end
    return true, defs, { error = result, count = #defs }
  end
  if not ok then
    if type(result) == "table" then
      return false, format("the file %s at line %d, where it had defined no machine (modal "
        .. "stops a file there: it reads definitions, it runs no program)", result.what, result.line)
    end
    return false, result
  end
  if type(result) == "table" then return true, { result } end
  return false, format("the file returned %s, not a machine definition (a table)",
    result == nil and "nothing" or ("a " .. type(result)))
end

--- The one definition of `file`, for the commands that take one (`graph`, `test`): true and
-- the definition, or false and why not (it does not load, raises, or defines several).
function cli.load(file)
  local ok, defs, note = cli.load_all(file)
  if not ok then return false, defs end
  if note and note.error then return false, note.error end
  if #defs > 1 then
    local names = {}
    for i, d in ipairs(defs) do
      names[i] = type(d) == "table" and type(rawget(d, "name")) == "string" and d.name or "?"
    end
    return false, format("the file defines %d machines (%s); give a file with one",
      #defs, concat(names, ", "))
  end
  return true, defs[1]
end

-- The one valid definition of `file` (graph, test), or nil once why not is written to `w`:
-- "FILE: cannot load: ...", or every problem and then `not_valid`.
local function load_valid(file, w, not_valid)
  local ok, def = cli.load(file)
  if not ok then
    w:write(format("%s: cannot load: %s\n", file, def))
    return nil
  end
  local errors = check.problems(def)
  if #errors > 0 then
    w:write(check.format(errors, file))
    w:write(not_valid)
    return nil
  end
  return def
end

-- Writes a usage error; returns exit status 2.
local function usage_error(err, command, message)
  err:write(format("modal %s: %s\nusage: %s\nTry 'modal %s --help'.\n", command, message,
    cli.USAGE[command]:match("^usage: ([^\n]*)"), command))
  return 2
end

-- modal check FILE...
local function run_check(args, out, err)
  local files, options = {}, true
  for _, a in ipairs(args) do
    if options and a == "--" then
      options = false
    elseif options and (a == "-h" or a == "--help") then
      out:write(cli.USAGE.check)
      return 0
    elseif options and a:sub(1, 1) == "-" and a ~= "-" then
      return usage_error(err, "check", format("unknown option '%s'", a))
    else
      files[#files + 1] = a
    end
  end
  if #files == 0 then return usage_error(err, "check", "no FILE given") end

  local status = 0
  for _, file in ipairs(files) do
    local ok, defs, note = cli.load_all(file)
    if not ok then
      out:write(format("%s: cannot load: %s\n", file, defs))
      status = 1
    else
      if note and note.error then
        out:write(format("%s: cannot load: %s\n", file, note.error))
        status = 1
      elseif note then
        out:write(format("%s: note: a program, not a definition file: it %s at "
          .. "line %d, where modal check stopped it; checked the %d machine%s defined before "
          .. "(a definition file ends `return modal.machine { ... }`)\n", file,
          note.what, note.line, note.count, note.count == 1 and "" or "s"))
      end
      for _, def in ipairs(defs) do
        local label = file
        if #defs > 1 then
          local name = type(def) == "table" and rawget(def, "name")
          label = format("%s (machine %s)", file, type(name) == "string" and name or "?")
        end
        local errors, warnings = check.problems(def)
        out:write(check.format(errors, label))
        out:write(check.format(warnings, label, "warning"))
        if #errors > 0 then status = 1 end
        if #errors == 0 and #warnings == 0 then out:write(label .. ": ok\n") end
      end
    end
  end
  return status
end

-- modal graph FILE [--format dot|mermaid]
local function run_graph(args, out, err)
  local files, fmt, options = {}, "dot", true
  local i = 1
  while i <= #args do
    local a = args[i]
    if options and a == "--" then
      options = false
    elseif options and (a == "-h" or a == "--help") then
      out:write(cli.USAGE.graph)
      return 0
    elseif options and (a == "--format" or a == "-f") then
      fmt = args[i + 1]
      if fmt == nil then return usage_error(err, "graph", "--format needs a value") end
      i = i + 1
    elseif options and a:find("^%-%-format=") then
      fmt = a:sub(#"--format=" + 1)
    elseif options and a:sub(1, 1) == "-" and a ~= "-" then
      return usage_error(err, "graph", format("unknown option '%s'", a))
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if fmt ~= "dot" and fmt ~= "mermaid" then
    return usage_error(err, "graph", format("unknown format '%s' (dot or mermaid)", fmt))
  end
  if #files ~= 1 then
    return usage_error(err, "graph", #files == 0 and "no FILE given" or "one FILE only")
  end

  local file = files[1]
  local def = load_valid(file, err, format("modal graph: %s is not a valid definition (see "
    .. "modal check)\n", file))
  if not def then return 1 end
  out:write(graph[fmt](def))
  return 0
end

-- luv's callbacks report an error by its name only: the usual ones, spelled out.
local ERRNO_TEXT = {
  ENOENT = "no such file or directory", ECONNREFUSED = "connection refused",
  EACCES = "permission denied", ENOTSOCK = "not a socket", EPERM = "operation not permitted",
  ENOTDIR = "not a directory", ECONNRESET = "connection reset by peer", EPIPE = "broken pipe",
  ENAMETOOLONG = "file name too long", EPROTOTYPE = "wrong type of socket",
}

local function errno_text(e)
  e = tostring(e)
  local text = ERRNO_TEXT[e]
  return text and (e .. ": " .. text) or e
end

-- Sends one request line to the admin socket at `path`; returns the reply line, or nil and
-- what went wrong ("connect" or "reply") and the error.
local function request(path, line, seconds)
  local uv = require "luv"
  local pipe = uv.new_pipe(false)
  local timer = uv.new_timer()
  local buf, reply, stage, failure = "", nil, "connect", nil
  local function finish(err)
    if err and not failure then failure = err end
    timer:stop()
    if not pipe:is_closing() then pipe:close() end
    if not timer:is_closing() then timer:close() end
  end
  timer:start(math.floor(seconds * 1000), 0, function()
    finish("no reply within " .. seconds .. " seconds")
  end)
  pipe:connect(path, function(err)
    if err then return finish(errno_text(err)) end
    stage = "reply"
    pipe:write(line .. "\n", function(werr)
      if werr then finish(errno_text(werr)) end
    end)
    pipe:read_start(function(rerr, data)
      if rerr then return finish(errno_text(rerr)) end
      if data == nil then
        return finish(#buf > 0 and "the reply was cut off" or "the host closed the connection")
      end
      buf = buf .. data
      local nl = buf:find("\n", 1, true)
      if nl then
        reply = buf:sub(1, nl - 1)
        finish()
      end
    end)
  end)
  uv.run("default")
  if reply then return reply end
  return nil, stage, failure or "no reply"
end

-- modal ctl SOCKET status|reload [NAME]|trace on|off
local function run_ctl(args, out, err)
  local words = {}
  for i, a in ipairs(args) do
    if a == "-h" or a == "--help" then
      out:write(cli.USAGE.ctl)
      return 0
    elseif a == "--" and #words == 0 then
      for j = i + 1, #args do words[#words + 1] = args[j] end
      break
    elseif a:sub(1, 1) == "-" and #words == 0 then
      return usage_error(err, "ctl", format("unknown option '%s'", a))
    end
    words[#words + 1] = a
  end
  local socket, cmd = words[1], words[2]
  if not socket or socket == "" then return usage_error(err, "ctl", "no SOCKET given") end
  if #socket > 107 then                  -- the kernel would cut it: another host's socket
    return usage_error(err, "ctl", format("SOCKET is longer than 107 bytes (%d): a unix "
      .. "socket's path is at most 107", #socket))
  end
  if not cmd then return usage_error(err, "ctl", "no command given (status, reload, trace)") end
  local n = #words - 2
  if cmd == "status" then
    if n ~= 0 then return usage_error(err, "ctl", "status takes no argument") end
  elseif cmd == "reload" then
    if n > 1 then return usage_error(err, "ctl", "reload takes at most one NAME") end
    if n == 1 and (words[3] == "" or words[3]:find("[%s%c]")) then
      return usage_error(err, "ctl", format("bad NAME '%s'", words[3]))
    end
  elseif cmd == "trace" then
    if n ~= 1 or (words[3] ~= "on" and words[3] ~= "off") then
      return usage_error(err, "ctl", "trace takes on or off")
    end
  else
    return usage_error(err, "ctl", format("unknown command '%s' (status, reload, trace)", cmd))
  end

  local line = table.concat(words, " ", 2)
  local reply, stage, why = request(socket, line, 10)
  if not reply then
    if stage == "connect" then
      err:write(format("modal ctl: cannot connect to %s: %s\n", socket, why))
    else
      err:write(format("modal ctl: %s: %s\n", socket, why))
    end
    return 1
  end
  out:write(reply, "\n")
  local has_json, cjson = pcall(require, "cjson")
  if not has_json then
    return reply:find('^%s*{%s*"ok"%s*:%s*true') and 0 or 1
  end
  local decoded, t = pcall(cjson.decode, reply)
  if not decoded or type(t) ~= "table" then
    err:write(format("modal ctl: the reply is not JSON: %s\n", reply))
    return 1
  end
  if t.ok == true then return 0 end
  err:write(format("modal ctl: %s\n", type(t.error) == "string" and t.error or "request failed"))
  return 1
end

-- Seconds as the shortest text that reads back as the same number.
local function seconds_text(v)
  local s = format("%.15g", v)
  if tonumber(s) ~= v then s = format("%.17g", v) end
  return s
end

-- A step as it reads in a path line: input name, `advance 1.5`, `job done`.
local function step_text(step)
  if type(step) == "table" and type(step.advance) == "number" then
    return "advance " .. seconds_text(step.advance)
  end
  return require("modal.testing.paths").describe(step)
end

-- Reads --options LUAFILE: the table it returns.
local function load_options(file)
  local chunk, why = loadfile(file, "t")
  if not chunk then return nil, message_of(why) end
  local ok, t = xpcall(chunk, message_of)
  if not ok then return nil, t end
  if type(t) ~= "table" then
    return nil, format("it returned %s, not a table of options", type(t))
  end
  return t
end

-- One FILE of `modal test`: its paths walked; returns 0 or 1.
local function test_file(file, opts, steps, out)
  local def = load_valid(file, out, format("%s: not a valid definition (see modal check)\n", file))
  if not def then return 1 end
  local modal = require "modal"
  local testing = require "modal.testing.paths"
  local found, paths, coverage = pcall(testing.paths, def, opts)
  if not found then
    out:write(format("%s: cannot search for paths: %s\n", file, message_of(paths)))
    return 1
  end
  for _, note in ipairs(coverage.notes) do out:write(format("%s: note: options: %s\n", file, note)) end
  local transitions = testing.transitions(def)
  local status, taken, noted, logged, failed = 0, {}, {}, {}, {}
  local previous = modal.on_log(function(level, message)
    if level == "error" then logged[#logged + 1] = message end
  end)
  for n, path in ipairs(paths) do
    local walked, states, ids = pcall(testing.walk, def, path, opts)
    if walked then
      local line = { states[1] }
      for k, step in ipairs(path) do
        line[#line + 1] = format("-%s-> %s", step_text(step), states[k + 1])
      end
      out:write(format("%s: path %d: ok: %s\n", file, n, concat(line, " ")))
      for _, id in ipairs(ids) do taken[id] = true end
    else
      status = 1
      failed[n] = true
      local v = modal.is_failure(states) and states.value
      if type(v) == "table" and type(v.edges) == "table" then   -- taken before the mismatch
        for _, id in ipairs(v.edges) do taken[id] = true end
      end
      out:write(format("%s: path %d: FAILED: %s\n", file, n, message_of(states)))
    end
    if steps then
      for k, step in ipairs(path) do
        out:write(format("%s: path %d: step %d: %s (%s) -> %s\n", file, n, k, step_text(step),
          tostring(step.edge or "no transition"), tostring(step.to)))
      end
    end
    for _, message in ipairs(logged) do
      if not noted[message] then
        noted[message] = true
        out:write(format("%s: note: %s\n", file, message))
      end
    end
    logged = {}
  end
  modal.on_log(previous)
  for _, message in ipairs(coverage.loops) do   -- a replay that never waits: a defect
    status = 1
    out:write(format("%s: LOOPS: %s\n", file, message))
  end
  -- A transition the search found on a path whose walk then failed is not "not taken": it
  -- is reported with that path, and a guard that raised with what it raised.
  local count, missed, unwalked = 0, {}, 0
  for k, e in ipairs(transitions) do
    if taken[e.id] then
      count = count + 1
    else
      local seen = coverage.edges[k]
      local on = seen and seen.path and failed[seen.path] and seen.path
      if on then unwalked = unwalked + 1 end
      missed[#missed + 1] = { e = e, on = on, guard_error = seen and seen.guard_error }
    end
  end
  out:write(format("%s: %d/%d transitions taken%s\n", file, count, #transitions, unwalked > 0
    and format(" (%d more found by the search on a path whose walk failed)", unwalked) or ""))
  for _, m in ipairs(missed) do
    if m.on then
      out:write(format("%s: not walked: %s (found on path %d, whose walk failed)\n", file,
        m.e.id, m.on))
    elseif m.guard_error then
      out:write(format("%s: not taken: %s (guarded: its guard raised: %s)\n", file, m.e.id,
        m.guard_error))
    else
      out:write(format("%s: not taken: %s%s\n", file, m.e.id, m.e.guarded
        and " (guarded: no argument tried passed its guard; give some in --options args)"
        or coverage.cut == "max_depth" and format(" (the search stopped at --max-depth %d: a "
          .. "longer path may take it)", opts.max_depth or 10)
        or coverage.cut == "max_nodes" and format(" (the search stopped at max_nodes %d: "
          .. "raise it in --options)", opts.max_nodes or 2000) or ""))
    end
  end
  return status
end

-- modal test [--options LUAFILE] [--max-depth N] [--steps] FILE...
local function run_test(args, out, err)
  local files, opts, steps, options, loaded = {}, {}, false, true, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if options and a == "--" then
      options = false
    elseif options and (a == "-h" or a == "--help") then
      out:write(cli.USAGE.test)
      return 0
    elseif options and (a == "--options" or a == "--max-depth" or a:find("^%-%-options=")
                        or a:find("^%-%-max%-depth=")) then
      local v
      local eq = a:find("=", 1, true)
      if eq then
        a, v = a:sub(1, eq - 1), a:sub(eq + 1)
        i = i - 1                       -- the value was in this argument
      else
        v = args[i + 1]
      end
      if v == nil or v == "" then return usage_error(err, "test", a .. " needs a value") end
      if a == "--options" then
        local t, why = load_options(v)
        if not t then return usage_error(err, "test", format("--options %s: %s", v, why)) end
        for k, x in pairs(t) do opts[k] = x end
        loaded[#loaded + 1] = { file = v, options = t }
      else
        local n = math.tointeger(tonumber(v))
        if not n or n < 1 then
          return usage_error(err, "test", format("--max-depth takes a whole number >= 1, got '%s'", v))
        end
        opts.max_depth = n
      end
      i = i + 1
    elseif options and a == "--steps" then
      steps = true
    elseif options and a:sub(1, 1) == "-" and a ~= "-" then
      return usage_error(err, "test", format("unknown option '%s'", a))
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files == 0 then return usage_error(err, "test", "no FILE given") end
  local has_modal = pcall(require, "modal")
  if not has_modal then
    err:write("modal test: needs the modal C module (run it as `modal test`, or build it)\n")
    return 1
  end
  local option_problems = require("modal.testing.paths")._option_problems
  for _, o in ipairs(loaded) do           -- a misspelt option is refused, not ignored
    local problems = option_problems(o.options)
    if #problems > 0 then
      return usage_error(err, "test", format("--options %s: %s", o.file, concat(problems, "; ")))
    end
  end
  local status = 0
  for _, file in ipairs(files) do
    if test_file(file, opts, steps, out) ~= 0 then status = 1 end
  end
  return status
end

local COMMANDS = { check = run_check, graph = run_graph, test = run_test, ctl = run_ctl }

--- Runs `modal <command> <args...>`: command is "check", "graph", "test" or "ctl", args a
-- list of strings.
-- Writes to `out` (default: io.output() at the time of the call) and `err` (default
-- io.stderr), any objects with a :write method; returns the exit status (0, 1, or 2).
function cli.main(command, args, out, err)
  out, err = out or io.output(), err or io.stderr
  args = type(args) == "table" and args or {}
  local run = COMMANDS[command]
  if not run then
    err:write(format("modal: unknown command '%s' (check, graph, test or ctl)\n",
      message_of(command)))
    return 2
  end
  for i = 1, #args do
    if type(args[i]) ~= "string" then
      return usage_error(err, command, format("argument %d is not a string", i))
    end
  end
  return run(args, out, err)
end

return cli
