/*
** later.c — the timers Lua sees: modal.call_later handles (cancel, reset, active) and
** modal.sleep, built on the low-level timers (timer.c) and the Deferreds (doc/loop.md).
**
** Once the context has closed (lua_close began), every operation here does nothing and raises
** nothing: a finalizer may still hold a handle or a sleep's Deferred.
*/

/***
@module modal
*/

#include <math.h>
#include "core.h"

static const char handle_key = 'h';     /* registry: call_later handles' metatable */

/* Runs the handle's function with its arguments (user values 1..n+1), protected: an error is
** reported as an unhandled failure and the loop goes on. */
static void handle_fire(lua_State *L, modal_timer *t) {
  modal_handle *h = (modal_handle *)t;
  int owner = lua_gettop(L), i;
  luaL_checkstack(L, h->nargs + 2, NULL);
  for (i = 1; i <= h->nargs + 1; i++)
    lua_getiuservalue(L, owner, i);
  modal__pcall(L, h->nargs, 0);
}

modal_handle *modal__handle_new(lua_State *L, int nargs) {
  int first = lua_gettop(L) - nargs;     /* the function */
  modal_handle *h = (modal_handle *)lua_newuserdatauv(L, sizeof *h, nargs + 1);
  int i;
  modal__timer_init(&h->t, handle_fire);
  h->nargs = nargs;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &handle_key);
  lua_setmetatable(L, -2);
  for (i = 0; i <= nargs; i++) {
    lua_pushvalue(L, first + i);
    lua_setiuservalue(L, -2, i + 1);
  }
  lua_replace(L, first);
  lua_settop(L, first);
  return h;
}

const char *modal__number_text(lua_State *L, int idx) {
  double v = lua_tonumber(L, idx);
  if (v != v)
    return lua_pushliteral(L, "NaN");
  if (isinf(v))
    return lua_pushstring(L, v > 0 ? "inf" : "-inf");
  lua_pushvalue(L, idx);
  return luaL_tolstring(L, -1, NULL);
}

/* The delay at stack index idx; errors count arguments as the caller sees them (a method's
** `self` not counted: t:reset(-1) is argument #1, as d:add_timeout(-1) is). */
static double check_delay(lua_State *L, int idx, const char *fname, int shown) {
  double d;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "bad argument #%d to '%s' (delay must be a number of seconds >= 0, got %s)",
               shown, fname, lua_isnone(L, idx) ? "no value" : luaL_typename(L, idx));
  d = lua_tonumber(L, idx);
  if (!(d >= 0))                         /* negative or NaN */
    luaL_error(L, "bad argument #%d to '%s' (delay must be a number of seconds >= 0, got %s)",
               shown, fname, modal__number_text(L, idx));
  return d;
}

/***
Runs `fn(...)` once after `delay` seconds, on the loop (Twisted's `reactor.callLater`). A
delay of 0 runs on the next loop iteration, never in the pass that armed it; timers due
at the same time run in the order they were armed. An error `fn` raises is reported as an
unhandled failure and never stops the loop. Under a testing clock the delay is virtual
time.
@function call_later
@tparam number delay seconds, >= 0
@tparam function fn the callback
@param ... its arguments, `nil`s included
@treturn Handle to cancel or reset it
@raise when `delay` is not a number, or is negative or NaN; when `fn` is not a function
@usage local h = modal.call_later(0.5, print, "half a second later")
@within Timers and the loop
*/
/* modal.call_later(delay, fn, ...) -> handle */
static int md_call_later(lua_State *L) {
  double delay = check_delay(L, 1, "call_later", 1);
  int nargs = lua_gettop(L) - 2;
  modal_handle *h;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  h = modal__handle_new(L, nargs);       /* replaces fn and args */
  modal__timer_start(L, &h->t, -1, delay);
  return 1;
}

static modal_handle *check_handle(lua_State *L) {
  return (modal_handle *)luaL_checkudata(L, 1, "modal.timer");
}

/***
A timer armed by `modal.call_later`. `tostring(h)` says whether it is active.
@type Handle
*/
/***
The callback will not run; a no-op once it has run or was cancelled.
@function Handle:cancel
*/
/* handle:cancel(): a no-op once run or cancelled */
static int md_handle_cancel(lua_State *L) {
  modal__timer_stop(L, &check_handle(L)->t);
  return 0;
}

/***
Arms the timer again, `delay` seconds from now.
@function Handle:reset
@tparam number delay seconds, >= 0
@treturn Handle `h`
@raise once the callback has run (inside its own callback too) or was cancelled
*/
/* handle:reset(delay): counts from now; raises once run or cancelled */
static int md_handle_reset(lua_State *L) {
  modal_handle *h = check_handle(L);
  double delay = check_delay(L, 2, "reset", 1);
  lua_settop(L, 1);
  if (!modal__timer_armed(L, &h->t) && !modal__timers_closed(L))
    return luaL_error(L, "modal: cannot reset a timer that has already run or was cancelled");
  modal__timer_start(L, &h->t, 1, delay);    /* nothing once the timers closed */
  return 1;
}

/***
Whether the callback is still to run.
@function Handle:active
@treturn boolean
*/
static int md_handle_active(lua_State *L) {
  lua_pushboolean(L, modal__timer_armed(L, &check_handle(L)->t));
  return 1;
}

static int md_handle_tostring(lua_State *L) {
  modal_handle *h = check_handle(L);
  lua_pushfstring(L, "modal.timer (%s): %p", modal__timer_armed(L, &h->t) ? "active" : "inactive",
                  (void *)h);
  return 1;
}

/* A sleep is a handle whose function fires its Deferred (user value 2) with nil. */
static int sleep_fire(lua_State *L) {
  if (modal__is_deferred(L, 1)) {
    lua_pushnil(L);
    modal__fire(L, 1, 2, 0);
  }
  return 0;
}

/* The canceller of a sleep: stops its timer (upvalue 1). */
static int sleep_cancel(lua_State *L) {
  modal_handle *h = (modal_handle *)lua_touserdata(L, lua_upvalueindex(1));
  modal__timer_stop(L, &h->t);
  return 0;
}

/***
A Deferred that succeeds with nil after `delay` seconds (Twisted's `deferLater` with no
function). Cancelling it stops its timer (it fails with kind `"cancelled"`).
@function sleep
@tparam number delay seconds, >= 0
@treturn Deferred
@raise as `call_later`
@usage modal.await(modal.sleep(0.1))    -- inside modal.async
@within Timers and the loop
*/
/* modal.sleep(delay) -> Deferred succeeding with nil */
static int md_sleep(lua_State *L) {
  double delay = check_delay(L, 1, "sleep", 1);
  modal_handle *h;
  lua_settop(L, 0);
  lua_pushcfunction(L, sleep_fire);
  lua_pushnil(L);                        /* the Deferred, set below */
  h = modal__handle_new(L, 1);           /* 1: handle */
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, sleep_cancel, 1);  /* 2: canceller */
  modal__deferred_new(L, 2);             /* 3: the Deferred */
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, 2);
  modal__timer_start(L, &h->t, 1, delay);
  return 1;
}

void modal__open_later(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"cancel", md_handle_cancel},
    {"reset", md_handle_reset},
    {"active", md_handle_active},
    {NULL, NULL}
  };
  luaL_newmetatable(L, "modal.timer");
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, md_handle_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &handle_key);
  lua_pushcfunction(L, md_call_later);
  lua_setfield(L, -2, "call_later");
  lua_pushcfunction(L, md_sleep);
  lua_setfield(L, -2, "sleep");
}
