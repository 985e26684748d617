-- specs/deferred_limits_spec.lua — what must end: a cancel round a cycle of waits, and chains,
-- cancellers, timeouts and async calls fired near the C stack limit (LUAI_MAXCCALLS), which
-- fail cleanly (kind "error") instead of spinning or crashing (doc/deferreds.md).
--
-- Each scenario runs in a child lua5.4 under `timeout`: a regression that spins fails the
-- test instead of hanging the suite, and the C stack depth is the script's own, not busted's.

local function run_child(script, seconds)
  local file = os.tmpname()
  local fh = assert(io.open(file, "w"))
  fh:write(script)
  fh:close()
  local build = os.getenv("MODAL_BUILD") or "build"
  local cmd = ("LUA_CPATH='%s/?.so;;' timeout %d lua5.4 %s 2>&1; echo \"rc=$?\""):format(
    build, seconds or 30, file)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  os.remove(file)
  local fields = {}
  for k, v in out:gmatch("([%w_]+)=([^\n]*)") do fields[k] = v end
  return fields, out
end

-- Child-side helper: "state[:kind[:overflow]]" of each Deferred, read through a last link that
-- keeps the result. `tally` counts them: "failed:error:overflow*1,succeeded*98".
local PRELUDE = [[
local modal = require "modal"
OVERFLOWS = 0                          -- failures reported unhandled for lack of C stack
modal.on_unhandled(function(f)
  if f.message:find("stack overflow", 1, true) then OVERFLOWS = OVERFLOWS + 1 end
end)
local function describe_one(d)
  local state, r = d:state(), nil
  d:add_both(function(x) r = x; return x end)
  if not modal.is_failure(r) then return state end
  return state .. ":" .. r.kind .. (r.message:find("stack overflow", 1, true) and ":overflow" or "")
end
local function show(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = describe_one(select(i, ...)) end
  return table.concat(parts, ",")
end
local function tally(list)
  local counts, keys = {}, {}
  for _, d in ipairs(list) do
    local k = describe_one(d)
    if not counts[k] then counts[k] = 0; keys[#keys + 1] = k end
    counts[k] = counts[k] + 1
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "*" .. counts[k] end
  return table.concat(parts, ",")
end
-- a waits on b and b waits on a (each link returned the other, pending, Deferred)
local function pair()
  local a, b = modal.deferred(), modal.deferred()
  a:add_callback(function() return b end)
  b:add_callback(function() return a end)
  a:callback(1); b:callback(2)
  return a, b
end
]]

-- "kind*n,kind*n" -> { kind = n }
local function counts(s)
  local t = {}
  for k, n in (s or ""):gmatch("([%w:]+)%*(%d+)") do t[k] = tonumber(n) end
  return t
end

describe("Deferreds that must end", function()
  describe("a cancel round a cycle of waits", function()
    local got, out
    setup(function()
      got, out = run_child(PRELUDE .. [[
do local a, b = pair(); print("ab_states=" .. a:state() .. "," .. b:state()); a:cancel()
   print("two=" .. show(a, b)) end
do local a, b = pair(); b:cancel(); print("two_from_b=" .. show(a, b)) end
do
  local a, b, c = modal.deferred(), modal.deferred(), modal.deferred()
  a:add_callback(function() return b end)
  b:add_callback(function() return c end)
  c:add_callback(function() return a end)
  a:callback(); b:callback(); c:callback()
  a:cancel(); print("three=" .. show(a, b, c))
end
do
  local a, b = pair()
  local x = modal.succeed():add_callback(function() return a end)
  x:cancel(); print("tail=" .. show(x, a, b))
end
do
  local gate, caught, o = modal.deferred(), nil, nil
  o = modal.async(function()
    modal.await(gate)
    local x = modal.succeed():add_callback(function() return o end)   -- x waits on o
    local ok, f = pcall(modal.await, x)                               -- o waits on x
    caught = f.kind
    error(f)
  end)()
  gate:callback()
  print("async_before=" .. o:state())
  o:cancel()
  print("async_caught=" .. tostring(caught))
  print("async=" .. show(o))
end
do local a, b = pair(); a:add_timeout(0.01); modal.run(); print("timeout=" .. show(a, b)) end
do local a, b = pair(); a:cancel(); a:cancel(); b:cancel(); print("again=" .. show(a, b)) end
]])
    end)

    it("ends: the cancelled Deferred fails 'cancelled', the other handed its failure over", function()
      assert.matches("rc=0", out, 1, true)
      assert.equal("pending,pending", got.ab_states)
      assert.equal("failed:cancelled,succeeded", got.two)
    end)

    it("ends the same way whichever member of the cycle is cancelled", function()
      assert.equal("succeeded,failed:cancelled", got.two_from_b)
      assert.equal("failed:cancelled,succeeded,succeeded", got.three)
    end)

    it("ends a cancel that reaches a cycle through a Deferred outside it", function()
      assert.equal("failed:cancelled,succeeded,succeeded", got.tail)
    end)

    it("ends a cycle through an async call: its coroutine gets the cancel", function()
      assert.equal("pending", got.async_before)
      assert.equal("cancelled", got.async_caught)
      assert.equal("failed:cancelled", got.async)
    end)

    it("ends a cycle under add_timeout with kind 'timeout'", function()
      assert.equal("failed:timeout,succeeded", got.timeout)
    end)

    it("does nothing more when the members are cancelled again", function()
      assert.equal("failed:cancelled,succeeded", got.again)
    end)
  end)

  describe("near the C stack limit", function()
    local got, out
    setup(function()
      got, out = run_child(PRELUDE .. [[
local N = 400
do -- d:callback inside a callback inside ...
  local made = {}
  local function level(i)
    local d = modal.deferred()
    made[i] = d
    d:add_callback(function(v) if i < N then level(i + 1) end; return v end)
    d:add_errback(function(f) return f end)
    d:callback(i)
  end
  print("callbacks_ok=" .. tostring(pcall(level, 1)))
  print("callbacks=" .. tally(made))
end
do -- a link returns a Deferred fired inside a callback inside ...
  local outers = {}
  local function level(i)
    local inner = modal.deferred()
    local outer = modal.succeed(i):add_callback(function() return inner end)
    outers[i] = outer
    outer:add_callback(function(v) if i < N then level(i + 1) end; return v end)
    inner:callback(i)
  end
  pcall(level, 1)
  print("paused=" .. tally(outers))
end
do -- a canceller cancels the next Deferred, whose canceller cancels the next ...
  local ds = {}
  for i = 1, N do ds[i] = modal.deferred(function() if ds[i + 1] then ds[i + 1]:cancel() end end) end
  OVERFLOWS = 0
  print("cancellers_ok=" .. tostring(pcall(ds[1].cancel, ds[1])))
  print("cancellers_reported=" .. OVERFLOWS)
  print("cancellers=" .. tally(ds))
  for i = N, 1, -1 do ds[i]:cancel() end      -- the ones left, from the top level
  print("cancel_rest=" .. tally(ds))
end
do -- the same, reached by a timeout
  local ds = {}
  for i = 1, N do ds[i] = modal.deferred(function() if ds[i + 1] then ds[i + 1]:cancel() end end) end
  ds[1]:add_timeout(0)
  OVERFLOWS = 0
  modal.run()
  print("timeout_reported=" .. OVERFLOWS)
  print("timeout_first=" .. show(ds[1]))
  print("timeout=" .. tally(ds))
end
do -- async functions that call each other before any wait
  local f
  f = modal.async(function(i) if i < N then return modal.await(f(i + 1)) end; return i end)
  local ok, d = pcall(f, 1)
  print("async_ok=" .. tostring(ok))
  print("async=" .. show(d))
end
do -- and each one of N async calls awaiting the one before (no C recursion at all)
  local gate = modal.deferred()
  local prev = gate
  for _ = 1, 100000 do
    local p = prev
    prev = modal.async(function() return modal.await(p) + 1 end)()
  end
  gate:callback(0)
  local v; prev:add_callback(function(x) v = x end)
  print("awaits=" .. tostring(v))
end
print("finished=yes")
]])
    end)

    local function one_overflow(t)
      assert.equal(1, t["failed:error:overflow"], "exactly one Deferred failed for lack of C stack")
    end

    it("finishes without spinning or crashing", function()
      assert.matches("rc=0", out, 1, true)
      assert.equal("yes", got.finished)
    end)

    it("fails the chain whose links cannot be called with kind 'error'; the others succeed", function()
      assert.equal("true", got.callbacks_ok)
      local t = counts(got.callbacks)
      one_overflow(t)
      assert.is_nil(t.pending)
      assert.is_true((t.succeeded or 0) > 10)
    end)

    it("does the same for chains paused on Deferreds fired that deep", function()
      local t = counts(got.paused)
      one_overflow(t)
      assert.is_nil(t.pending)
    end)

    it("reports the canceller that cannot be called and fails its Deferred 'cancelled'; deeper ones "
      .. "stay pending", function()
      assert.equal("true", got.cancellers_ok)
      -- the canceller's error goes to the reporter, or, when no C stack is left to call that
      -- either, to the log ("on_unhandled reporter failed")
      assert.is_true(got.cancellers_reported == "1" or
        out:find("on_unhandled reporter failed", 1, true) ~= nil, out)
      local t = counts(got.cancellers)
      assert.is_nil(t["failed:error:overflow"])
      assert.is_true((t["failed:cancelled"] or 0) > 10)
      assert.is_true((t.pending or 0) > 0)
      local rest = counts(got.cancel_rest)
      assert.is_nil(rest.pending)
    end)

    it("does the same when a timeout starts the cancel", function()
      assert.equal("failed:timeout", got.timeout_first)
      assert.is_true(got.timeout_reported == "1" or
        out:find("on_unhandled reporter failed", 1, true) ~= nil, out)
      assert.is_nil(counts(got.timeout)["failed:error:overflow"])
    end)

    it("fails an async call that cannot start its coroutine with kind 'error'", function()
      assert.equal("true", got.async_ok)
      assert.equal("failed:error:overflow", got.async)
    end)

    it("resumes 100,000 async calls awaiting each other without recursion", function()
      assert.equal("100000", got.awaits)
    end)
  end)

  describe("the loop entered near the C stack limit", function()
    it("returns from modal.run() instead of retrying its due timers for ever; they run later", function()
      local got, out = run_child([[
        local modal = require "modal"
        modal.on_unhandled(function() end)
        local ran = 0
        local function nest(n)
          if n == 0 then return modal.run() end
          return select(2, pcall(nest, n - 1))
        end
        for _ = 1, 3 do
          modal.call_later(0, function() ran = ran + 1 end)
          nest(197)
        end
        io.write("deep=", ran, "\n")
        modal.run()
        io.write("after=", ran, "\n")
      ]], 20)
      assert.equal("0", got.rc, out)
      assert.equal("0", got.deep, out)
      assert.equal("3", got.after, out)
    end)
  end)
end)
