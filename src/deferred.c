/*
** deferred.c — the Deferreds' Lua face and the C API of modal.h: modal.deferred, succeed,
** fail, the methods (callback, errback, add_*, cancel, add_timeout, state), the report of a
** failure collected unhandled (doc/deferreds.md).
*/

/***
@module modal
*/

#include "deferred.h"

static inline modal_deferred *check_self(lua_State *L) {
  modal_deferred *d = modal__dget(L, 1);
  if (!d)
    luaL_typeerror(L, 1, "modal.deferred");
  return d;
}

static void check_fn(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TFUNCTION && (t == LUA_TNIL || luaL_getmetafield(L, idx, "__call") == LUA_TNIL))
    luaL_typeerror(L, idx, "function");
  if (t != LUA_TFUNCTION)
    lua_pop(L, 1);
}

/***
Makes a pending Deferred, as Twisted's `Deferred(canceller)`.
It fires once, with `d:callback(v)` or `d:errback(e)`; until then its links wait.
@function deferred
@tparam[opt] function canceller `canceller(d)` runs on `d:cancel()` while `d` is pending:
it stops the work that would have fired `d` (and may fire `d` itself)
@treturn Deferred a pending Deferred
@raise when `canceller` is neither nil nor callable
@usage local d = modal.deferred(function(d) socket:close() end)
d:add_callback(print)
d:callback("hello")            -- prints hello
@within Deferreds
*/
/* modal.deferred([canceller]) -> a pending Deferred (upvalue 1: the metatable) */
static int md_deferred(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    check_fn(L, 1);
    lua_settop(L, 1);
    modal__deferred_new(L, 1);
    return 1;
  }
  modal__dnew(L, lua_upvalueindex(1));
  return 1;
}

static int fire_method(lua_State *L, int failed) {
  check_self(L);
  lua_settop(L, 2);
  if (modal__fire(L, 1, 2, failed) < 0)
    return luaL_error(L, "modal: Deferred already called");
  return 0;
}

/***
A Deferred: a result that is not there yet (`doc/deferreds.md`). Every method of a
machine instance returns one; `modal.sleep`, `modal.all` and the rest make them too.
`tostring(d)` is `"modal.deferred (state): address"`.
@type Deferred
*/
/***
Succeeds with `v`: the links run now, on the callback path (a failure object as `v` makes
`d` fail instead).
@function Deferred:callback
@param v the result, any value
@raise `modal: Deferred already called` when `d` has fired; one late fire after a
`d:cancel()` that found `d` pending is ignored instead (the source may not know)
*/
/* d:callback(v) — the common case (pending, nothing in entry 0) runs the chain straight from
** the argument, without storing the result first. */
static int md_deferred_callback(lua_State *L) {
  modal_deferred *d = check_self(L);
  if ((d->flags & (DF_FIRED | DF_ENTRY0 | DF_PAUSED)) || lua_gettop(L) != 2)
    return fire_method(L, 0);
  d->flags |= DF_FIRED;
  if (lua_type(L, 2) == LUA_TTABLE && modal__is_failure(L, 2))
    d->flags |= DF_FAILED;
  if (d->head >= d->tail && !(d->flags & (DF_FAILED | DF_SPILLED))) {
    lua_setiuservalue(L, 1, 1);          /* nothing to run, nothing to stop */
    return 0;
  }
  modal__drun(L, 1, 2);
  return 0;
}

/***
Fails with `e`: the links run now, on the errback path.
@function Deferred:errback
@param e a failure (kept as it is), or any other error value, wrapped in a failure of
kind `"error"` whose `value` is `e`
@raise `modal: Deferred already called`, as `callback`
*/
static int md_deferred_errback(lua_State *L) {
  return fire_method(L, 1);
}

/***
Appends a link that runs on the callback path: `cb(result, ...)`.
What `cb` returns replaces the result (nothing: `nil`); returning a failure, or raising,
switches to the errback path (a raised non-failure becomes kind `"error"` with a
traceback); returning a Deferred pauses the chain until that one fires, and its outcome
goes on. On a fired Deferred the link runs at once.
@function Deferred:add_callback
@tparam function cb the callback
@param ... extra arguments, passed after the result (`nil`s keep their place)
@treturn Deferred `d`, so calls chain
*/
/* d:add_callback(cb, ...) — the common case (no extra arguments, room inline) is direct. */
static int md_deferred_add_callback(lua_State *L) {
  modal_deferred *d = check_self(L);
  int top = lua_gettop(L);
  if (top == 3 && d->tail + 1 < NINLINE && lua_type(L, 2) == LUA_TFUNCTION &&
      !(d->flags & DF_SPILLED) && !IS_FINAL(d)) {   /* cb and one argument, both inline */
    d->codes = (uint16_t)((d->codes & ~(0xffu << (4 * d->tail))) |
                          ((unsigned)E_CB << (4 * d->tail)) |
                          ((unsigned)E_ARG << (4 * (d->tail + 1))));
    lua_setiuservalue(L, 1, (int)d->tail + 3);     /* the argument, then the function */
    lua_setiuservalue(L, 1, (int)d->tail + 2);
    d->tail += 2;
    lua_settop(L, 1);
    return 1;
  }
  if (d->tail < NINLINE && top == 2 && lua_type(L, 2) == LUA_TFUNCTION &&
      !(d->flags & DF_SPILLED)) {
    if (IS_FINAL(d) && d->head >= d->tail) {
      modal__drun_now(L, d);
    } else {
      d->codes = (uint16_t)((d->codes & ~(15u << (4 * d->tail))) | (E_CB << (4 * d->tail)));
      lua_setiuservalue(L, 1, (int)d->tail + 2);
      d->tail++;
    }
    lua_settop(L, 1);
    return 1;
  }
  check_fn(L, 2);
  modal__add_link(L, 1, 2, 0, 0, lua_gettop(L) - 2);
  lua_settop(L, 1);
  return 1;
}

/***
Appends a link that runs on the errback path: `eb(failure, ...)`.
An errback that returns normally recovers: the chain goes on, on the callback path, with
what it returned. One that raises (or returns a failure) stays on the errback path.
@function Deferred:add_errback
@tparam function eb the errback
@param ... extra arguments, passed after the failure
@treturn Deferred `d`
*/
static int md_deferred_add_errback(lua_State *L) {
  check_self(L);
  check_fn(L, 2);
  modal__add_link(L, 1, 0, 2, 0, lua_gettop(L) - 2);
  lua_settop(L, 1);
  return 1;
}

/***
Appends a link whose function runs on either path: `fn(result_or_failure, ...)`, as
Twisted's `addBoth` (a `finally` that may change the result).
@function Deferred:add_both
@tparam function fn the function
@param ... extra arguments, passed after the result
@treturn Deferred `d`
*/
static int md_deferred_add_both(lua_State *L) {
  check_self(L);
  check_fn(L, 2);
  modal__add_link(L, 1, 2, 0, 1, lua_gettop(L) - 2);
  lua_settop(L, 1);
  return 1;
}

/***
Appends one link with a function for each path: `cb(result, ...)` or `eb(failure, ...)`.
An error raised by `cb` goes to the *next* link's errback, not to this `eb` (as in Twisted).
@function Deferred:add_callbacks
@tparam ?function cb the callback, or nil
@tparam ?function eb the errback, or nil
@param ... extra arguments, passed after the result to whichever function runs
@treturn Deferred `d`
*/
static int md_deferred_add_callbacks(lua_State *L) {
  int cb, eb;
  check_self(L);
  if (lua_gettop(L) < 3)
    lua_settop(L, 3);
  cb = !lua_isnil(L, 2);
  eb = !lua_isnil(L, 3);
  if (cb)
    check_fn(L, 2);
  if (eb)
    check_fn(L, 3);
  modal__add_link(L, 1, cb ? 2 : 0, eb ? 3 : 0, 0, lua_gettop(L) - 3);
  lua_settop(L, 1);
  return 1;
}

/***
Cancels a pending Deferred: its canceller runs; if that did not fire `d`, `d` fails with
kind `"cancelled"`. A Deferred paused on another one (a link returned it) passes the
cancel inward, to the Deferred everything waits on. On a fired Deferred it does nothing.
@function Deferred:cancel
*/
static int md_deferred_cancel(lua_State *L) {
  check_self(L);
  modal__cancel(L, 1);
  return 0;
}

/***
Cancels `d` after `seconds` unless it fires first; its chain then sees kind `"timeout"`
(`timeout: timed out after 2.0 seconds`, the delay as Lua prints a float), for every link,
added before or after. A canceller that fires `d` itself decides the outcome. A Deferred that fires first stops the timer, so
nothing keeps the loop alive. On a fired Deferred it does nothing; called twice, the first
to expire wins. The timer is modal's (a testing clock moves it).
@function Deferred:add_timeout
@tparam number seconds a number >= 0, counted from the call
@treturn Deferred `d`
@raise when `seconds` is not a number, or is negative or NaN
@usage c:query("select 1"):add_timeout(2):add_errback(function(f) print(f.kind) end)
*/
/* d:add_timeout(seconds) -> d */
static int md_deferred_add_timeout(lua_State *L) {
  double s;
  check_self(L);
  if (lua_type(L, 2) != LUA_TNUMBER)     /* as call_later: a string is not seconds */
    return luaL_error(L, "bad argument #1 to 'add_timeout' (seconds expected, got %s)",
                      lua_isnone(L, 2) ? "no value" : luaL_typename(L, 2));
  s = lua_tonumber(L, 2);
  if (!(s >= 0))
    return luaL_error(L, "bad argument #1 to 'add_timeout' (seconds must be a number >= 0, "
                      "got %s)", modal__number_text(L, 2));
  lua_settop(L, 1);
  modal__dadd_timeout(L, 1, s);
  return 1;
}

static const char *state_name(const modal_deferred *d) {
  if (!(d->flags & DF_FIRED) || (d->flags & DF_PAUSED))
    return "pending";
  return (d->flags & DF_FAILED) ? "failed" : "succeeded";
}

/***
Where `d` stands.
@function Deferred:state
@treturn string `"pending"` (not fired yet, or paused on another Deferred), `"succeeded"`
or `"failed"` (after the chain's current result)
*/
/* d:state() — upvalues: the three names, interned once. */
static int md_deferred_state(lua_State *L) {
  modal_deferred *d = check_self(L);
  lua_pushvalue(L, lua_upvalueindex(!(d->flags & DF_FIRED) || (d->flags & DF_PAUSED) ? 1 :
                                    (d->flags & DF_FAILED) ? 3 : 2));
  return 1;
}

static int md_deferred_tostring(lua_State *L) {
  modal_deferred *d = check_self(L);
  lua_pushfstring(L, "modal.deferred (%s): %p", state_name(d), (void *)d);
  return 1;
}

/* Only Deferreds whose chain ended on a failure carry this finalizer. */
static int md_deferred_gc(lua_State *L) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, 1);
  if ((d->flags & (DF_FAILED | DF_HANDLED | DF_RUNNING | DF_PAUSED)) == DF_FAILED) {
    d->flags |= DF_HANDLED;
    lua_getiuservalue(L, 1, 1);
    modal__report_unhandled(L, -1);
  }
  return 0;
}

/***
A Deferred that has succeeded with `v` (Twisted's `succeed`).
@function succeed
@param v the result
@treturn Deferred fired
@within Deferreds
*/
/* modal.succeed(v) */
static int md_succeed(lua_State *L) {
  lua_settop(L, 1);
  modal__deferred_fired_mt(L, 1, 0, lua_upvalueindex(1));
  return 1;
}

/***
A Deferred that has failed (Twisted's `fail`): `modal.fail(e)` fails as `d:errback(e)`
does; `modal.fail(kind, message)`, two strings, with a new failure of that kind.
@function fail
@param e_or_kind a failure or error value; or the kind, a string
@tparam[opt] string message with a kind: the failure's message
@treturn Deferred fired, failed (reported if nobody handles it)
@usage return modal.fail("stopped", "connection closed")
@within Deferreds
*/
/* modal.fail(e) or modal.fail(kind, message) */
static int md_fail(lua_State *L) {
  if (lua_gettop(L) >= 2 && lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TSTRING) {
    modal__failure_new(L, lua_tostring(L, 1), lua_tostring(L, 2), 0, 0);
    lua_replace(L, 1);
  }
  lua_settop(L, 1);
  modal__deferred_new(L, 0);
  modal__fire(L, 2, 1, 1);
  return 1;
}

/* ============================================================== C API (modal.h) */

void modal_new_deferred(lua_State *L) {
  modal__deferred_new(L, 0);
}

int modal_is_deferred(lua_State *L, int idx) {
  return modal__is_deferred(L, idx);
}

static int c_fire(lua_State *L, int idx, int failed) {
  int r;
  idx = lua_absindex(L, idx);
  if (!modal__is_deferred(L, idx)) {
    lua_pop(L, 1);
    return -1;
  }
  r = modal__fire(L, idx, -1, failed);
  lua_pop(L, 1);
  return r;
}

int modal_callback(lua_State *L, int idx) {
  return c_fire(L, idx, 0);
}

int modal_errback(lua_State *L, int idx) {
  return c_fire(L, idx, 1);
}

void modal__open_deferred(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"callback", md_deferred_callback},
    {"errback", md_deferred_errback},
    {"add_callback", md_deferred_add_callback},
    {"add_errback", md_deferred_add_errback},
    {"add_both", md_deferred_add_both},
    {"add_callbacks", md_deferred_add_callbacks},
    {"cancel", md_deferred_cancel},
    {"add_timeout", md_deferred_add_timeout},
    {"state", md_deferred_state},        /* replaced by a closure over the names */
    {NULL, NULL}
  };
  int mod = lua_gettop(L), mt, gcmt;
  lua_createtable(L, 0, 4);
  mt = lua_gettop(L);
  lua_createtable(L, 0, 5);
  gcmt = lua_gettop(L);
  luaL_newlib(L, methods);               /* shared by both metatables */
  lua_pushliteral(L, "pending");
  lua_pushliteral(L, "succeeded");
  lua_pushliteral(L, "failed");
  lua_pushcclosure(L, md_deferred_state, 3);
  lua_setfield(L, -2, "state");
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__index");
  lua_setfield(L, gcmt, "__index");
  lua_pushcfunction(L, md_deferred_tostring);
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__tostring");
  lua_setfield(L, gcmt, "__tostring");
  lua_pushliteral(L, "modal.deferred");
  lua_setfield(L, mt, "__name");
  lua_pushliteral(L, "modal.deferred");
  lua_setfield(L, gcmt, "__name");
  lua_pushcfunction(L, md_deferred_gc);
  lua_setfield(L, gcmt, "__gc");
  modal__dset_metatables(L, mt, gcmt);
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, md_deferred, 1);
  lua_setfield(L, mod, "deferred");
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, md_succeed, 1);
  lua_setfield(L, mod, "succeed");
  lua_pushcfunction(L, md_fail);
  lua_setfield(L, mod, "fail");
  lua_settop(L, mod);
}
