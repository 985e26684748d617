/*
** loop.c — running the loop shared with luv: modal.run, modal.stop, modal.now, and the
** modal.on_stop handlers the host runs on the first SIGINT/SIGTERM.
*/
#include <luv/luv.h>
#include "core.h"

static const char stop_key = 'o';       /* registry: list of on_stop handlers */

/* modal.run(): runs the loop until no work is left or modal.stop(). Sets luv's mode, so
** uv.loop_mode() answers inside callbacks and a nested run is refused by both libraries. */
int modal__run(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  luv_ctx_t *lctx = luv_context(L);
  int alive;
  if (ctx->running || lctx->mode != -1)
    return luaL_error(L, "modal.run: the loop is already running");
  if (ctx->closed)
    return luaL_error(L, "modal.run: the state is closing");
  ctx->running = 1;
  lctx->mode = UV_RUN_DEFAULT;
  alive = uv_run(ctx->loop, UV_RUN_DEFAULT);
  lctx->mode = -1;
  ctx->running = 0;
  lua_pushboolean(L, alive);
  return 1;
}

/* modal.stop(): run() returns after the current callback; outside run() it does nothing. */
int modal__stop(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  if (ctx->running || luv_context(L)->mode != -1) {
    modal__stop_requested(ctx);
    uv_stop(ctx->loop);
  }
  return 0;
}

/* modal.now() -> the loop's time in seconds (libuv's, updated every iteration). */
int modal__now(lua_State *L) {
  lua_pushnumber(L, (double)uv_now(modal__ctx(L)->loop) / 1000.0);
  return 1;
}

/* modal.on_stop(fn): fn runs once when the host is asked to stop (SIGINT/SIGTERM). */
int modal__on_stop(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &stop_key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &stop_key);
  }
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

void modal__run_stop_handlers(lua_State *L) {
  lua_Integer i, n;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &stop_key);
  if (lua_isnil(L, -1)) {
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
