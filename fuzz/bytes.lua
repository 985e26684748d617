--- fuzz/bytes.lua — reads a libFuzzer input as a stream of choices (as LLVM's
-- FuzzedDataProvider does): each harness turns the bytes into decisions with these readers.
-- Past the end every reader answers 0 (the first choice), so any input is a complete program
-- and short inputs are small ones.
--
--   local bytes = require "bytes"
--   local r = bytes.reader(input)
--   if r:bool() then ... end
--   local k = r:int(5)                -- 0..4
--   local v = r:pick { "a", "b" }
--
-- @module bytes

local byte = string.byte

local Reader = {}
Reader.__index = Reader

--- The next byte (0..255); 0 once the input is used up.
function Reader:byte()
  local i = self.i
  if i > self.n then
    self.over = true
    return 0
  end
  self.i = i + 1
  return byte(self.s, i)
end

--- A whole number in 0..n-1 (one byte, two when n > 256).
function Reader:int(n)
  if n <= 1 then return 0 end
  if n <= 256 then return self:byte() % n end
  return (self:byte() * 256 + self:byte()) % n
end

--- True or false.
function Reader:bool()
  return self:byte() % 2 == 1
end

--- One of the values of a list.
function Reader:pick(list)
  return list[self:int(#list) + 1]
end

--- True when every byte has been read.
function Reader:done()
  return self.i > self.n
end

--- Up to `max` raw bytes as a string (its length read first).
function Reader:str(max)
  local len = self:int(max + 1)
  local from = self.i
  local s = self.s:sub(from, from + len - 1)
  self.i = from + #s
  return s
end

local M = {}

--- A reader over the string `s`.
function M.reader(s)
  return setmetatable({ s = s, i = 1, n = #s, over = false }, Reader)
end

return M
