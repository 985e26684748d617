-- lua/modal/policy.lua — what modal.service, modal.breaker and modal.pool share (doc/policies.md):
-- how their messages write seconds, instances and bad values, the number checks of their
-- options, and the default names that tell two instances of a policy apart. Internal.
local format, floor, huge = string.format, math.floor, math.huge

local policy = {}

--- Seconds as a message shows them: "12", "1.5", "0.25".
function policy.secs(x)
  if x >= 9.95 then return format("%.0f", x) end
  if x >= 0.995 then return format("%.1f", x) end
  return format("%.2f", x)
end

--- "name#id" of instance m; `default` when it has no machine.
function policy.who(m, default)
  local M = m.machine
  return format("%s#%s", M and M.name or default, tostring(m.id))
end

--- The fields of a log line about instance m.
function policy.fields(m)
  local M = m.machine
  return { machine = M and M.name, id = m.id, state = m.state }
end

--- A bad option's value in a message: a number, boolean or quoted string as written, else its type.
function policy.describe(v)
  if type(v) == "number" or type(v) == "boolean" then return tostring(v) end
  if type(v) == "string" then return format("%q", v) end
  return type(v)
end

--- Whether x is a number that is neither NaN nor infinite.
function policy.finite(x) return type(x) == "number" and x == x and x > -huge and x < huge end

--- Whether x is a finite whole number.
function policy.whole(x) return policy.finite(x) and x == floor(x) end

--- Raises unless x is an instance of a machine one of `policies` (definition -> options) made:
-- "bad argument #1 to '<fname>' (a <kind> instance expected, got <what x is>)" at the caller's
-- caller: its type, an instance of another machine, or a machine itself. Returns x's options.
function policy.check_instance(x, policies, fname, kind)
  local mt = type(x) == "userdata" and getmetatable(x)
  local P
  local instance = type(mt) == "table" and mt.__name == "modal.instance"
  if instance then
    local M = x.machine
    P = M and policies[M.definition]
  end
  if P == nil then
    local got = type(x)
    if instance then
      got = format("an instance of machine '%s', not of a %s", tostring(x.machine and x.machine.name),
        kind:match("[^.]+$"))
    elseif type(mt) == "table" and mt.__name == "modal.machine" then
      got = tostring(x) .. ", not an instance of it"
    end
    error(format("bad argument #1 to '%s' (a %s instance expected, got %s)", fname, kind, got), 3)
  end
  return P
end

local default_names = {}                       -- default name -> instances given it so far

--- Options P made without a `name`: the first keeps P.name, the next get P.name .. "_2", "_3",
-- ... (per process), as each is instance #1 of its own machine.
function policy.take_default_name(P)
  local n = (default_names[P.name] or 0) + 1
  default_names[P.name] = n
  if n > 1 then P.name = P.name .. "_" .. n end
end

return policy
