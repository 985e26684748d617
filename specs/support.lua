-- specs/support.lua — spec helpers: a loop run with a safety net, and a call counter.
--
--   support.run_loop(max_seconds)  runs modal.run(); an unref'd luv timer stops the loop after
--                                  max_seconds (default 5) if it has not ended by itself.
--                                  Returns true when run() returned on its own.
--   support.counter([fn])          a counter: c.fn is a plain function that counts its calls
--                                  (c.n), keeps each call's arguments (c.args[i], packed) and
--                                  returns fn(...) when fn is given.
--   support.outcome(d)             the state and current result of a fired Deferred d (read
--                                  through a last link, so the chain ends handled).
--   support.defer(fn)              an undo step for the current test; support.run_undo (give it
--                                  to after_each) runs them last-in first-out (busted's finally()
--                                  keeps only one function per test).
--   support.quiet_unhandled()      silences unhandled-failure reports for the current test.
--   support.capture_log()          a capturing log sink for the current test; returns the list
--                                  of { level, message, fields } it fills.
--   support.reloaded(M, err)       what modal.reload returned, checked: the machine M (it
--                                  raises with err otherwise); returns M.
--   support.wait_for(pred, s)      runs the luv loop until pred() or s seconds; returns pred().
--   support.clock([start])      a testing clock (modal.testing) for the current test: the
--                                  timers armed under it dropped and the clock closed by
--                                  support.run_undo (give it to after_each).
--   support.read_file(path)        the whole content of a file.
--   support.write_file(path, text) writes a file; returns path.
--   support.tmpdir(tag)            a new folder /tmp/modal_<tag>.XXXXXX (remove it in teardown).
--   support.quote(s)               s quoted for sh.
--   support.SLACK                  the factor for real-time bounds' slack (ASan, valgrind).
--   support.modal_cmd(...)         runs MODAL_BUILD/modal ARGS to the end: status, stdout, stderr.
--   support.spawn_host(args[, cwd]) starts the modal host (MODAL_BUILD/modal) in the background;
--                                  the record collects out, err, code, signal; p.done(),
--                                  p.said(text), p.logged(text) (predicates), p.reap().
local modal = require "modal"
local uv = require "luv"

local support = {}

-- How much later than planned a real-time event may come in this run: 1 normally, 5 under
-- ASan (make asan), 25 under valgrind. Upper bounds' slack is multiplied by it; lower bounds
-- (a timer never fires early) are not.
support.SLACK = (os.getenv("MODAL_VALGRIND") == "1" and 25)
  or (os.getenv("MODAL_SANITIZE") == "1" and 5) or 1

function support.run_loop(max_seconds)
  local expired = false
  local net = uv.new_timer()
  uv.update_time()                -- the loop's clock is stale after a long stretch outside run()
  net:start(math.floor((max_seconds or 5) * 1000), 0, function()
    expired = true
    modal.stop()
  end)
  net:unref()                     -- the net alone must not keep the loop alive
  modal.run()
  net:stop()
  net:close()
  uv.run("nowait")                -- finish the close now: a handle still closing at exit crashes luv
  return not expired
end

function support.counter(fn)
  local c = { n = 0, args = {} }
  c.fn = function(...)
    c.n = c.n + 1
    c.args[c.n] = table.pack(...)
    if fn then return fn(...) end
  end
  return c
end

function support.outcome(d)
  local state, got, runs = d:state(), nil, 0
  d:add_both(function(r) got = r; runs = runs + 1 end)
  if runs ~= 1 then error("the Deferred has not fired", 2) end
  return state, got
end

function support.reloaded(M, err)
  if type(M) ~= "userdata" or not tostring(M):find("^modal%.machine") then
    error("modal.reload did not return the machine: " .. tostring(M) .. ", " .. tostring(err), 2)
  end
  return M
end

local undo = {}
function support.defer(fn) undo[#undo + 1] = fn end
function support.run_undo()
  for i = #undo, 1, -1 do undo[i]() end
  undo = {}
end

function support.quiet_unhandled()
  local previous = modal.on_unhandled(function() end)
  support.defer(function()
    collectgarbage()
    collectgarbage()
    support.run_loop(0.05)
    modal.on_unhandled(previous)
  end)
end

function support.clock(start)
  local clock = require("modal.testing").clock(start)
  support.defer(function()
    if not clock.closed then clock:drop() end
    clock:close()
  end)
  return clock
end

function support.capture_log()
  local lines = {}
  local previous = modal.on_log(function(level, message, fields)
    lines[#lines + 1] = { level = level, message = message, fields = fields or {} }
  end)
  support.defer(function() modal.on_log(previous) end)
  return lines
end

function support.wait_for(pred, seconds)
  local deadline = uv.hrtime() + seconds * 1e9
  local tick = uv.new_timer()
  tick:start(10, 10, function() end)      -- wakes uv.run("once") up to check the deadline
  while not pred() and uv.hrtime() < deadline do uv.run("once") end
  tick:close()
  uv.run("nowait")
  return pred()
end

--- The whole content of the file at `path`.
function support.read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

--- Writes `text` to the file at `path`; returns path.
function support.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- A new folder under /tmp, named after `tag`.
function support.tmpdir(tag)
  local p = assert(io.popen("mktemp -d /tmp/modal_" .. tag .. ".XXXXXX"))
  local dir = assert(p:read("l"))
  p:close()
  return dir
end

--- `s` quoted for sh.
function support.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Runs `MODAL_BUILD/modal ARGS...` to the end (10 s at most); returns its exit status
-- (128 + signal when killed), stdout and stderr.
function support.modal_cmd(...)
  local words = {}
  for i, a in ipairs({ ... }) do words[i] = support.quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local _, how, status = os.execute(string.format("timeout 10 %s/modal %s >%s 2>%s </dev/null",
    os.getenv("MODAL_BUILD") or "build", table.concat(words, " "), out, err))
  local stdout, stderr = support.read_file(out), support.read_file(err)
  os.remove(out); os.remove(err)
  if how == "signal" then status = 128 + status end
  return status, stdout, stderr
end

function support.spawn_host(args, cwd)
  local p = { out = "", err = "", open = 2 }
  local stdout, stderr = uv.new_pipe(false), uv.new_pipe(false)
  local exe = (os.getenv("MODAL_BUILD") or "build") .. "/modal"
  if cwd and exe:sub(1, 1) ~= "/" then exe = uv.cwd() .. "/" .. exe end
  local handle, pid = uv.spawn(exe,
    { args = args, stdio = { nil, stdout, stderr }, cwd = cwd },
    function(code, signal)
      p.code, p.signal, p.exited = code, signal, true
      p.handle:close()
    end)
  assert(handle, pid)
  p.handle, p.pid = handle, pid
  local function reader(pipe, field)
    pipe:read_start(function(_, data)
      if data then
        p[field] = p[field] .. data
      else
        pipe:close()
        p.open = p.open - 1
      end
    end)
  end
  reader(stdout, "out")
  reader(stderr, "err")
  function p.done() return p.exited == true and p.open == 0 end
  function p.said(text) return function() return p.out:find(text, 1, true) ~= nil end end
  function p.logged(text) return function() return p.err:find(text, 1, true) ~= nil end end
  function p.reap()                       -- kills a host a failed test left running
    if not p.exited then
      p.handle:kill("sigkill")
      support.wait_for(p.done, 2)
    end
  end
  return p
end

return support
