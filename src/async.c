/*
** async.c — modal.async and modal.await: coroutines that wait on Deferreds.
**
** modal.async(fn) returns a function that runs fn in a new coroutine at once, up to its first
** wait, and returns the call's Deferred. modal.await(d) pauses that Deferred on d (so a cancel
** or a timeout of the call goes to d, as for a chain paused on d) and yields a marker; d's
** outcome reaches the call's resumer, which resumes the coroutine with (marker, ok, value).
** The call's Deferred fires when the coroutine ends (doc/deferreds.md).
*/

/***
@module modal
*/

#include "core.h"

static const char tasks_key = 't';      /* registry: weak-keyed {coroutine = its Deferred} */
static const char marker = 'm';         /* what await yields, and the resumer passes back */

/* (value, traceback) -> a failure of kind "error"; its message may run value's __tostring. */
static int make_failure(lua_State *L) {
  modal__failure_new(L, "error", NULL, 1, 2);
  return 1;
}

/* Runs co (nargs values on its stack) until it waits or ends. Returns 0 when it waits, else 1
** with its outcome pushed on L: the first value it returned, or the failure it raised. */
static int step(lua_State *L, lua_State *co, int nargs) {
  int nres = 0, status = lua_resume(co, L, nargs, &nres);
  luaL_checkstack(L, 3, NULL);
  if (status == LUA_YIELD) {
    if (nres == 1 && lua_touserdata(co, -1) == (void *)&marker) {
      lua_pop(co, 1);
      return 0;                          /* modal.await: its Deferred is paused on the awaited */
    }
    lua_pop(co, nres);                   /* the coroutine is abandoned */
    modal__failure_new(L, "error", "coroutine.yield inside modal.async: use modal.await", 0, 0);
    return 1;
  }
  if (status == LUA_OK) {
    if (nres > 0)
      lua_pushvalue(co, -nres);          /* the first result, as for any Lua call */
    else
      lua_pushnil(co);
    lua_xmove(co, L, 1);
    lua_settop(co, 0);
    return 1;
  }
  lua_xmove(co, L, 1);                   /* the error, with the coroutine's traceback */
  if (!modal__is_failure(L, -1)) {
    int v = lua_gettop(L);
    luaL_traceback(L, co, NULL, 0);      /* v + 1 */
    if (lua_type(L, v) == LUA_TSTRING) {
      modal__failure_new(L, "error", NULL, v, v + 1);
    } else {                             /* tostring may run Lua: protected */
      lua_pushcfunction(L, make_failure);
      lua_pushvalue(L, v);
      lua_pushvalue(L, v + 1);
      if (lua_pcall(L, 2, 1, 0) != LUA_OK) {   /* its __tostring raised, or no C stack */
        lua_pop(L, 1);
        modal__failure_new(L, "error", "a modal.async function raised a value that has no "
                                       "message", 0, v + 1);
        lua_pushvalue(L, v);
        lua_setfield(L, -2, "value");
      }
    }
    lua_replace(L, v);
    lua_settop(L, v);
  }
  return 1;
}

/* The resumer of a call (upvalue 1: its coroutine): (value) -> nothing while the coroutine
** waits again, else its outcome. */
static int resume_call(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  lua_settop(L, 1);
  if (lua_status(co) != LUA_YIELD) {     /* closed, or resumed by someone else and ended */
    modal__failure_new(L, "error", "the coroutine of this modal.async call is no longer "
                                   "waiting (resumed or closed from outside)", 0, 0);
    return 1;
  }
  if (!lua_checkstack(co, 3)) {
    modal__failure_new(L, "error", "modal.await: no stack left to resume the coroutine", 0, 0);
    return 1;
  }
  lua_pushlightuserdata(co, (void *)&marker);
  lua_pushboolean(co, !modal__is_failure(L, 1));
  lua_xmove(L, co, 1);
  return step(L, co, 3);
}

/* The function modal.async returns (upvalue 1: fn). */
static int async_call(lua_State *L) {
  int nargs = lua_gettop(L), o;
  lua_State *co;
  luaL_checkstack(L, 6, NULL);
  co = lua_newthread(L);                 /* nargs + 1 */
  if (!lua_checkstack(co, nargs + 1))
    return luaL_error(L, "modal.async: too many arguments (%d)", nargs);
  lua_pushvalue(L, nargs + 1);
  lua_pushcclosure(L, resume_call, 1);   /* nargs + 2 */
  modal__deferred_new_async(L, nargs + 2);   /* nargs + 3 */
  o = nargs + 3;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushvalue(L, nargs + 1);
  lua_pushvalue(L, o);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_xmove(L, co, 1);
  lua_rotate(L, 1, -nargs);              /* the arguments to the top */
  o -= nargs;
  lua_xmove(L, co, nargs);
  if (step(L, co, nargs) && modal__fire(L, o, -1, modal__is_failure(L, -1)) < 0 &&
      modal__is_failure(L, -1))
    modal__report_unhandled(L, -1);      /* it was fired from outside: nobody else sees it */
  lua_settop(L, o);
  return 1;
}

/***
Wraps `fn` so that it runs as a coroutine that can wait on Deferreds with `modal.await`
(Python's `async def`, Twisted's `inlineCallbacks`). Each call of the returned function
runs `fn(...)` at once in a new coroutine, up to its first wait, and returns a Deferred of
its result: the first value `fn` returns, or the failure it raises (a non-failure error as
kind `"error"`). Cancelling that Deferred while it waits cancels the awaited Deferred; the
call fires when the coroutine ends. Under `add_timeout`, `await` raises kind `"timeout"`.
@function async
@tparam function fn the body; any number of arguments pass in
@treturn function `function(...) -> Deferred`
@usage local fetch = modal.async(function(name)
  modal.await(modal.sleep(0.1))
  return "hello " .. name
end)
fetch("world"):add_callback(print)
@within Coroutines
*/
/* modal.async(fn) -> function(...) -> Deferred */
static int md_async(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushcclosure(L, async_call, 1);
  return 1;
}

/* Resumed by the resumer with (marker, ok, value) in place of the yielded marker: the stack is
** md_await's (1 the awaited, 2 the tasks, 3 this call's Deferred) and those three. */
static int await_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  (void)k;
  if (lua_gettop(L) < 6 || lua_touserdata(L, 4) != (void *)&marker) {
    modal__unwait(L, 3);                 /* 3: this call's Deferred (see md_await) */
    return luaL_error(L, "modal.await: the coroutine was resumed by something other than modal");
  }
  lua_settop(L, 6);
  if (lua_toboolean(L, 5))
    return 1;
  return lua_error(L);                   /* the failure object itself */
}

/***
Suspends the running `modal.async` coroutine until `d` fires. An awaited Deferred keeps its
outcome (counted as handled), so any number of coroutines may await it.
@function await
@param d a Deferred (any other value is returned at once)
@return the value `d` succeeded with
@raise the failure `d` failed with, the object itself; or an error when called outside a
`modal.async` function (`modal.await called outside a modal.async function`)
@within Coroutines
*/
/* modal.await(d) -> the value, or raises the failure */
static int md_await(lua_State *L) {
  int r;
  lua_settop(L, 1);
  if (lua_pushthread(L))
    return luaL_error(L, "modal.await called outside a modal.async function");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_insert(L, -2);
  lua_rawget(L, -2);                     /* 3: this call's Deferred */
  if (!modal__is_deferred(L, 3))
    return luaL_error(L, "modal.await called outside a modal.async function "
                         "(this coroutine was not started by modal.async)");
  if (!modal__is_deferred(L, 1)) {
    lua_settop(L, 1);
    return 1;                            /* a plain value is its own result */
  }
  r = modal__await(L, 3, 1, lua_isyieldable(L));
  if (r == 1)
    return 1;
  if (r == 2)
    return lua_error(L);
  if (r < 0)
    return luaL_error(L, "modal.await: cannot wait here (a C function or metamethod is on the "
                         "coroutine's stack)");
  lua_pushlightuserdata(L, (void *)&marker);
  return lua_yieldk(L, 1, 0, await_k);
}

void modal__open_async(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushcfunction(L, md_async);
  lua_setfield(L, -2, "async");
  lua_pushcfunction(L, md_await);
  lua_setfield(L, -2, "await");
}
