/*
** loop.c — running the loop shared with luv: modal.run, modal.stop, modal.now, the
** modal.on_stop handlers the host runs when asked to stop, and the end of a run (the run-end
** hooks; modal._on_run_end lets Lua code register one) (doc/loop.md).
*/

/***
@module modal
*/

#include <luv/luv.h>
#include "core.h"

static const char stop_key = 'o';       /* registry: list of on_stop handlers */
static const char run_end_key = 'e';    /* registry: list of Lua run-end functions */

/* The loop ran dry with a testing clock installed: a timer still armed on it would never
** fire by waiting (doc/testing.md), so the run raises instead of returning as if done. */
static void virtual_only(lua_State *L) {
  uint64_t first;
  int n = modal__timers_pending(L, &first);
  if (n > 0)
    luaL_error(L, "modal.run: only the testing clock's timers are left (%d armed, the next at "
                  "%f s of virtual time): virtual time passes only with clock:advance() or "
                  "clock:next()", n, (double)first / 1e9);
}

int modal__loop_run(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  luv_ctx_t *lctx = luv_context(L);
  int alive;
  if (ctx->running || lctx->mode != -1)
    return luaL_error(L, "modal.run: the loop is already running");
  if (ctx->closed)
    return luaL_error(L, "modal.run: the state is closing");
  ctx->running = 1;
  ctx->stop_asked = 0;
  lctx->mode = UV_RUN_DEFAULT;           /* uv.loop_mode() answers inside callbacks, and */
  alive = uv_run(ctx->loop, UV_RUN_DEFAULT);   /* both libraries refuse a nested run */
  lctx->mode = -1;
  ctx->running = 0;
  if (!alive && ctx->vclock) {
    uint64_t first;
    if (!ctx->stop_asked)
      virtual_only(L);
    alive = modal__timers_pending(L, &first);  /* stopped: the clock's timers are work left */
  }
  return alive != 0;
}

void modal__loop_stop(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  if (ctx->running || luv_context(L)->mode != -1) {
    ctx->stop_asked = 1;
    modal__timers_hold(L);
    uv_stop(ctx->loop);
  }
}

static int run_end_protected(lua_State *L) {
  modal__ctx_run_end(L, lua_toboolean(L, 1));
  return 0;
}

void modal__run_end(lua_State *L, int exiting) {
  lua_pushcfunction(L, run_end_protected);
  lua_pushboolean(L, exiting);
  modal__pcall(L, 1, 0);
}

/***
Runs the loop shared with luv until no work is left (no active timer, job, handle or
request) or `modal.stop()`. When it returns with postponed calls or `when()` waiters
nobody can answer, it logs a warning per machine and state and leaves them waiting (a later
run may answer them); the host instead fails them with kind `"stopped"` when it ends.
@function run
@treturn boolean true when work is left (after `modal.stop()`)
@raise when the loop is already running (a nested run, or inside luv's `uv.run()`), or
when only a testing clock's timers are left (virtual time never passes by waiting)
@within Timers and the loop
*/
/* modal.run(): runs the loop until no work is left or modal.stop(); then the run-end hooks
** run (exiting = false: a later run() may go on). Returns true when work is left. */
static int md_run(lua_State *L) {
  int alive = modal__loop_run(L);
  modal__run_end(L, 0);
  lua_pushboolean(L, alive);
  return 1;
}

/***
Makes `modal.run()` return after the current callback; pending handles stay and a later
`run()` goes on. Outside `run()` it does nothing.
@function stop
@within Timers and the loop
*/
/* modal.stop(): run() returns after the current callback; outside run() it does nothing. */
static int md_stop(lua_State *L) {
  modal__loop_stop(L);
  return 0;
}

/***
The loop's monotonic time (libuv's, updated once per iteration), or the testing clock's
while one is installed.
@function now
@treturn number seconds
@within Timers and the loop
*/
/* modal.now() -> the loop's time in seconds (libuv's, updated every iteration), or the
** testing clock's while one is installed. */
static int md_now(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  if (ctx->vclock)
    lua_pushnumber(L, (double)ctx->vnow / 1e9);
  else
    lua_pushnumber(L, (double)uv_now(ctx->loop) / 1000.0);
  return 1;
}

/* Pushes the list at registry `key`, made when missing. */
static void push_list(lua_State *L, const void *key) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
}

/***
Registers a handler for the host's first SIGINT or SIGTERM (`man modal`): the handlers
run once each, in the order registered, then the loop drains. Close what keeps the loop
busy here (`c:close()` on a service). Under plain `lua5.4` nothing calls them.
@function on_stop
@tparam function fn `fn()`, run protected
@within Timers and the loop
*/
/* modal.on_stop(fn): fn runs once when the host is asked to stop (SIGINT/SIGTERM). */
static int md_on_stop(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  push_list(L, &stop_key);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

void modal__run_stop_handlers(lua_State *L) {
  lua_Integer i, n;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &stop_key) == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);                        /* handlers run once: take the list */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &stop_key);
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    modal__pcall(L, 0, 0);
  }
  lua_pop(L, 1);
}

/* The run-end hook of Lua functions: each runs as fn(exiting), protected, last registered
** first, from a copy of the list (one may remove itself or add another). */
static void lua_run_end(lua_State *L, void *arg, int exiting) {
  lua_Integer i, n;
  (void)arg;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &run_end_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "n");
  n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_createtable(L, (int)n, 0);
  lua_pushnil(L);
  while (lua_next(L, -3)) {              /* {[fn] = seq}: copy as {[seq] = fn} */
    if (lua_type(L, -2) == LUA_TFUNCTION) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, -4, lua_tointeger(L, -2));
    }
    lua_pop(L, 1);
  }
  for (i = n; i >= 1; i--) {
    if (lua_rawgeti(L, -1, i) == LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushboolean(L, exiting);
    modal__pcall(L, 1, 0);
  }
  lua_pop(L, 2);
}

/* The function modal._on_run_end returns: takes its fn (upvalue 1) out of the list. */
static int md_run_end_remove(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &run_end_key) == LUA_TTABLE) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  return 0;
}

/* modal._on_run_end(fn) -> remove: fn(exiting) runs whenever a run of the loop ends
** (exiting is false when modal.run() returns, true when the host ends). For the Lua half and
** the specs; C layers use modal__ctx_on_run_end. */
static int md_on_run_end(lua_State *L) {
  lua_Integer seq;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  push_list(L, &run_end_key);
  lua_getfield(L, -1, "n");              /* a sequence number keeps the order of registration */
  seq = lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  lua_pushinteger(L, seq);
  lua_setfield(L, -2, "n");
  lua_pushvalue(L, 1);
  lua_pushinteger(L, seq);
  lua_rawset(L, -3);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, md_run_end_remove, 1);
  return 1;
}

void modal__open_loop(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"run", md_run},
    {"stop", md_stop},
    {"now", md_now},
    {"on_stop", md_on_stop},
    {"_on_run_end", md_on_run_end},
    {NULL, NULL}
  };
  static const char registered = 'r';   /* registry: the Lua run-end hook is registered */
  luaL_setfuncs(L, funcs, 0);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &registered) == LUA_TNIL) {
    modal__ctx_on_run_end(L, lua_run_end, NULL);
    lua_pushboolean(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &registered);
  }
  lua_pop(L, 1);
}
