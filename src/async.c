/*
** async.c — modal.async and modal.await: coroutines that wait on Deferreds.
**
** modal.async(fn) returns a function that runs fn in a new coroutine at once, up to its first
** wait, and returns a Deferred of its result. modal.await(d) yields (a marker, d) to the
** driver, which resumes the coroutine from a link on d with (ok, value).
*/
#include "core.h"

static const char tasks_key = 't';      /* registry: weak-keyed {coroutine = task} */
static const char marker = 'm';         /* what await yields first */

/* A task: user value 1 the outer Deferred, 2 the Deferred being awaited (or nil). */

static void push_task(lua_State *L, lua_State *co) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

static void step(lua_State *L, lua_State *co, int task, int nargs);

/* The link on an awaited Deferred: (result, coroutine, task). Resumes with (ok, value). */
static int resume_link(lua_State *L) {
  lua_State *co = lua_tothread(L, 2);
  int failed = modal__is_failure(L, 1);
  lua_settop(L, 3);
  lua_getiuservalue(L, 3, 2);            /* 4: the awaited Deferred: its failure is handled */
  modal__mark_handled(L, 4);
  lua_pushnil(L);
  lua_setiuservalue(L, 3, 2);
  lua_pushboolean(L, !failed);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 2);
  step(L, co, 3, 2);
  lua_settop(L, 1);
  return 1;                              /* the awaited Deferred keeps its outcome */
}

/* Runs co until it waits or ends; fires the task's Deferred when it ends. */
static void step(lua_State *L, lua_State *co, int task, int nargs) {
  int nres = 0, status;
  task = lua_absindex(L, task);
  status = lua_resume(co, L, nargs, &nres);
  if (status == LUA_YIELD) {
    if (nres == 2 && lua_touserdata(co, -2) == &marker && modal__is_deferred(co, -1)) {
      lua_xmove(co, L, 1);               /* the awaited Deferred */
      lua_pop(co, 1);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, task, 2);
      lua_pushcfunction(L, resume_link);
      lua_pushthread(co);
      lua_xmove(co, L, 1);
      lua_pushvalue(L, task);
      modal__add_link(L, -4, -3, 0, 1, 2);
      lua_pop(L, 2);
      return;
    }
    lua_pop(co, nres);
    lua_getiuservalue(L, task, 1);
    modal__failure_new(L, "error", "coroutine.yield inside modal.async: use modal.await", 0, 0);
    modal__fire(L, -2, -1, 1);
    lua_pop(L, 2);
    return;
  }
  lua_getiuservalue(L, task, 1);         /* the outer Deferred */
  if (status == LUA_OK) {
    if (nres > 0)
      lua_xmove(co, L, 1);               /* the first result */
    else
      lua_pushnil(L);
    modal__fire(L, -2, -1, 0);
  } else {
    lua_xmove(co, L, 1);                 /* the error, with the coroutine's traceback */
    if (!modal__is_failure(L, -1)) {
      luaL_traceback(L, co, NULL, 0);
      modal__failure_new(L, "error", NULL, -2, -1);
      lua_replace(L, -3);
      lua_pop(L, 1);
    }
    modal__fire(L, -2, -1, 1);
  }
  lua_pop(L, 2);
}

/* The outer Deferred's canceller: cancels the Deferred being awaited (upvalue 1: task). */
static int cancel_task(lua_State *L) {
  lua_getiuservalue(L, lua_upvalueindex(1), 2);
  if (modal__is_deferred(L, -1))
    modal__cancel(L, -1);
  return 0;
}

/* The function modal.async returns (upvalue 1: fn). */
static int async_call(lua_State *L) {
  int nargs = lua_gettop(L);
  lua_State *co = lua_newthread(L);      /* nargs+1 */
  int th = lua_gettop(L);
  lua_newuserdatauv(L, 1, 2);            /* th+1: task */
  lua_pushvalue(L, th + 1);
  lua_pushcclosure(L, cancel_task, 1);
  modal__deferred_new(L, -1);            /* th+3: outer (th+2: canceller) */
  lua_setiuservalue(L, th + 1, 1);
  lua_pop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushvalue(L, th);
  lua_pushvalue(L, th + 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_xmove(L, co, 1);
  lua_rotate(L, 1, -nargs);              /* the arguments to the top */
  lua_xmove(L, co, nargs);
  step(L, co, -1, nargs);
  lua_getiuservalue(L, -1, 1);
  return 1;
}

/* modal.async(fn) -> function(...) -> Deferred */
static int md_async(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushcclosure(L, async_call, 1);
  return 1;
}

static int await_k(lua_State *L, int status, lua_KContext k) {
  (void)status;
  (void)k;
  if (lua_toboolean(L, -2))
    return 1;
  lua_pushvalue(L, -1);
  return lua_error(L);                   /* the failure object itself */
}

/* modal.await(d) -> the value, or raises the failure */
static int md_await(lua_State *L) {
  int taken;
  if (lua_pushthread(L)) {
    lua_pop(L, 1);
    return luaL_error(L, "modal.await called outside a modal.async function");
  }
  lua_pop(L, 1);
  push_task(L, L);
  if (lua_isnil(L, -1))
    return luaL_error(L, "modal.await called outside a modal.async function "
                         "(this coroutine was not started by modal.async)");
  lua_pop(L, 1);
  lua_settop(L, 1);
  if (!modal__is_deferred(L, 1))
    return 1;                            /* a plain value is its own result */
  taken = modal__take_result(L, 1);
  if (taken == 1)
    return 1;
  if (taken == 2)
    return lua_error(L);
  lua_pushlightuserdata(L, (void *)&marker);
  lua_pushvalue(L, 1);
  return lua_yieldk(L, 2, 0, await_k);
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
