--- lua/modal/testing/clock.lua — the virtual clock of the testing kit (doc/testing.md): while
-- it is installed, every timer modal owns (call_later, sleep, add_timeout, state timeouts, and
-- so every policy's timers) runs on virtual time that moves only when the test says so.
--
--   local clock = require("modal.testing").clock()   -- modal.now() is 0 from here
--   modal.call_later(1.5, fn)
--   clock:advance(2)          -- fn runs, seeing modal.now() == 1.5; now() is 2 after
--   clock:close()             -- back to real time (armed timers keep the delay left)
--
-- The work is done in C (src/clock.c, the hidden table modal._clock); this file makes the
-- object and points misuse errors at the caller's line.
--
-- @module modal.testing.clock

local modal = require "modal"

local C = modal._clock
local type, pcall, error, setmetatable = type, pcall, error, setmetatable
local format = string.format

local M = {}

local current                           -- the clock installed (kept: a lost one can be closed)

local Clock = {}
Clock.__index = Clock
Clock.__name = "modal.testing.clock"

-- Calls the C function `fn`; an error it raises (a string: misuse) is raised again at the
-- line of the test that called the method.
local function call(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if not ok then error(a, type(a) == "string" and 3 or 0) end
  return a, b
end

-- Raises when a method was called with a dot (no clock as self), at the line of the test
-- `level` levels up; `args` is what its call shows between the parentheses.
local function as_method(self, method, args, level)
  if getmetatable(self) ~= Clock then
    error(format("clock:%s: call it as a method, clock:%s(%s), not clock.%s(%s)", method,
      method, args, method, args), level + 1)
  end
end

local function open(self, method)
  as_method(self, method, "...", 3)
  if self.closed then
    error(format("clock:%s: this clock was closed", method), 3)
  end
end

--- Moves virtual time forward by `seconds` (a finite number >= 0), running the timers due on
-- the way in deadline order (ties in arming order). Each sees modal.now() equal to its own
-- deadline, and a timer armed meanwhile that falls inside the step runs in it too. Returns
-- the number of timers run.
function Clock:advance(seconds)
  open(self, "advance")
  return (call(C.advance, seconds))
end

--- Jumps to the next deadline and runs the timers due there. Returns the time reached and
-- the number of timers run, or nil when no timer is armed.
function Clock:next()
  open(self, "next")
  return call(C.next)
end

--- The deadlines of every armed timer, in seconds of virtual time, in the order they will
-- run.
function Clock:pending()
  open(self, "pending")
  return (call(C.pending))
end

--- The clock's time in seconds (what modal.now() returns while it is installed).
function Clock:now()
  open(self, "now")
  return (call(C.now))
end

--- Disarms every timer armed since the clock was installed, as closing modal's handles does:
-- nothing of them fires (a call_later handle turns inactive, a sleep or add_timeout never
-- fires, a state timeout never expires). Timers armed before the clock keep running. For
-- tests that end with timers armed: `clock:drop(); clock:close()` leaves nothing behind.
function Clock:drop()
  open(self, "drop")
  call(C.drop, self.mark)
end

--- Returns modal's timers to real time; each armed timer keeps the delay it had left. Closing
-- a closed clock does nothing.
function Clock:close()
  as_method(self, "close", "", 2)
  if self.closed then return end
  call(C.close)
  self.closed = true
  if current == self then current = nil end
end

Clock.__close = Clock.close

function Clock:__tostring()
  if self.closed then return "modal.testing.clock (closed)" end
  return format("modal.testing.clock (%g s, %d armed)", C.now(), #C.pending())
end

--- Installs the clock: modal's timers run on virtual time, starting at `start` seconds
-- (default 0). One clock at a time: a second one raises until the first is closed.
-- After Twisted's `task.Clock`, but for every timer modal owns (call_later, sleep,
-- add_timeout, state timeouts, and so every policy's timers); luv's handles keep real time.
function M.clock(start)
  local ok, err = pcall(C.install, start)
  if not ok then
    if current and type(err) == "string" and err:find("already installed", 1, true) then
      err = err .. "; testing.current_clock() returns it"
    end
    error(err, 2)
  end
  current = setmetatable({ closed = false, mark = C.mark() }, Clock)
  return current
end

--- True while a clock is installed.
function M.installed()
  return C.installed()
end

--- The clock installed with testing.clock(), or nil: a test that lost its clock (a failed
-- test without after_each) closes it with `testing.current_clock():close()`.
function M.current_clock()
  return current
end

return setmetatable(M, { __call = function(_, ...) return M.clock(...) end })
