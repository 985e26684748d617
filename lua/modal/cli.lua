-- lua/modal/cli.lua — the host's `modal check FILE...` and `modal graph FILE [--format F]`
-- (DESIGN.md section 8), in plain Lua.
--
--   os.exit(require("modal.cli").main("check", { "conn.lua" }))
--
-- A definition file usually ends `return modal.machine { ... }`, which would raise on an
-- invalid definition; while the file runs, `machine` of the table `require "modal"` returns is
-- replaced by a function that captures its argument and returns it, so every problem is
-- reported by modal.check instead. Without the C module (plain Lua, no build) a stand-in
-- table plays `require "modal"` for the file. Exit status: 0 fine, 1 problems, 2 usage.
--
-- @module modal.cli

local check = require "modal.check"
local graph = require "modal.graph"

local type, tostring, pcall, xpcall, rawget, rawset = type, tostring, pcall, xpcall, rawget, rawset
local format = string.format

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
}

local function message_of(e)
  if type(e) == "string" then return e end
  local ok, s = pcall(tostring, e)
  return ok and type(s) == "string" and s or ("(a " .. type(e) .. " error value)")
end

--- Runs the definition file `file` with modal.machine capturing its argument. Returns true
-- and the definition (the table the file returned, else whatever it gave modal.machine), or
-- false and the reason it could not be loaded.
function cli.load(file)
  local chunk, why = loadfile(file, "t")
  if not chunk then return false, message_of(why) end

  local loaded = package.loaded
  local had, modal = pcall(require, "modal")
  local previous_loaded = loaded.modal
  if not had or type(modal) ~= "table" then
    modal = {}                          -- stand-in: the C module is not available here
    loaded.modal = modal
  end
  local saved = rawget(modal, "machine")
  local called, captured = false, nil
  rawset(modal, "machine", function(def)
    called, captured = true, def
    return def
  end)
  local ok, result = xpcall(chunk, message_of, file)
  rawset(modal, "machine", saved)
  loaded.modal = previous_loaded

  if not ok then return false, result end
  if type(result) == "table" then return true, result end
  if called then return true, captured end      -- not a table: check says what it is
  return false, format("the file returned %s, not a machine definition (a table)",
    result == nil and "nothing" or ("a " .. type(result)))
end

-- Writes a usage error; returns exit status 2.
local function usage_error(err, command, message)
  err:write(format("modal %s: %s\nusage: %s\ntry 'modal %s --help'\n", command, message,
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
    local ok, def = cli.load(file)
    if not ok then
      out:write(format("%s: cannot load: %s\n", file, def))
      status = 1
    else
      local errors, warnings = check.problems(def)
      out:write(check.format(errors, file))
      out:write(check.format(warnings, file, "warning"))
      if #errors > 0 then status = 1 end
      if #errors == 0 and #warnings == 0 then out:write(file .. ": ok\n") end
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
  local ok, def = cli.load(file)
  if not ok then
    err:write(format("%s: cannot load: %s\n", file, def))
    return 1
  end
  local errors = check.problems(def)
  if #errors > 0 then
    err:write(check.format(errors, file))
    err:write(format("modal graph: %s is not a valid definition (see modal check)\n", file))
    return 1
  end
  out:write(graph[fmt](def))
  return 0
end

local COMMANDS = { check = run_check, graph = run_graph }

--- Runs `modal <command> <args...>`: command is "check" or "graph", args a list of strings.
-- Writes to `out` (default: io.output() at the time of the call) and `err` (default
-- io.stderr), any objects with a :write method; returns the exit status (0, 1, or 2).
function cli.main(command, args, out, err)
  out, err = out or io.output(), err or io.stderr
  args = type(args) == "table" and args or {}
  local run = COMMANDS[command]
  if not run then
    err:write(format("modal: unknown command '%s' (check or graph)\n", message_of(command)))
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
