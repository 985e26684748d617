/*
** context.c — the per-state context: created once per lua_State after luv's loop, it is also
** the sentinel whose finalizer closes modal's libuv handles before luv's loop is collected.
*/
#include <stdlib.h>
#include <string.h>
#include "core.h"

static const char ctx_key = 'c';        /* registry: the context userdata */

modal_ctx *modal__ctx(lua_State *L) {
  modal_ctx *ctx;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  ctx = (modal_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

/* Finalizer, run by lua_close before luv's loop finalizer (it was marked after it). */
static int ctx_gc(lua_State *L) {
  modal_ctx *ctx = (modal_ctx *)lua_touserdata(L, 1);
  if (!ctx->closed) {
    ctx->closed = 1;
    modal__timers_close(ctx);
  }
  return 0;
}

void modal__ctx_open(lua_State *L, uv_loop_t *loop) {
  modal_ctx *ctx = (modal_ctx *)lua_newuserdatauv(L, sizeof *ctx, 0);
  memset(ctx, 0, sizeof *ctx);           /* a consistent "closed-over" state first */
  ctx->loop = loop;
  ctx->log_level = MODAL_LOG_INFO;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);  /* whatever thread opens us */
  ctx->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "modal.context");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}
