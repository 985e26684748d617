/*
** context.c — the per-state context and its hooks: created once per lua_State after luv's
** loop, it is also the sentinel whose finalizer (run first by lua_close: it is armed last)
** calls what the layers above registered to close, and it keeps the hooks called when a run
** of the loop ends.
**
** The context names no layer: a layer that owns something registers a hook for it.
** Both lists run last registered first, so the layers above see theirs before the ones below.
*/
#include <stdlib.h>
#include <string.h>
#include "core.h"

struct modal_ctx_hook {
  union {
    modal_close_hook close;
    modal_run_end_hook run_end;
  } fn;
  void *arg;
};

static const char ctx_key = 'c';        /* registry: the context userdata */

modal_ctx *modal__ctx(lua_State *L) {
  modal_ctx *ctx;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  ctx = (modal_ctx *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

/* Appends a hook to a list (grown by doubling); raises on memory exhaustion. */
static modal_ctx_hook *append(lua_State *L, modal_ctx_hook **list, int *n, int *cap) {
  if (*n == *cap) {
    int grow = *cap ? *cap * 2 : 4;
    modal_ctx_hook *more = (modal_ctx_hook *)realloc(*list, (size_t)grow * sizeof *more);
    if (!more) {
      luaL_error(L, "modal: out of memory registering a hook");
      return NULL;
    }
    *list = more;
    *cap = grow;
  }
  return &(*list)[(*n)++];
}

void modal__ctx_on_close(lua_State *L, modal_close_hook fn, void *arg) {
  modal_ctx *ctx = modal__ctx(L);
  modal_ctx_hook *h;
  if (!ctx || ctx->closed)
    return;
  h = append(L, &ctx->close_hooks, &ctx->nclose, &ctx->capclose);
  h->fn.close = fn;
  h->arg = arg;
}

void modal__ctx_on_run_end(lua_State *L, modal_run_end_hook fn, void *arg) {
  modal_ctx *ctx = modal__ctx(L);
  modal_ctx_hook *h;
  if (!ctx || ctx->closed)
    return;
  h = append(L, &ctx->run_end_hooks, &ctx->nrun_end, &ctx->caprun_end);
  h->fn.run_end = fn;
  h->arg = arg;
}

/* A hook may register another: the list is read again at every step, and one registered
** meanwhile waits for the next run's end. */
void modal__ctx_run_end(lua_State *L, int exiting) {
  modal_ctx *ctx = modal__ctx(L);
  int i;
  if (!ctx || ctx->closed || ctx->ending)
    return;
  ctx->ending = 1;
  for (i = ctx->nrun_end - 1; i >= 0 && !ctx->closed; i--) {
    modal_ctx_hook h = ctx->run_end_hooks[i];
    h.fn.run_end(L, h.arg, exiting);
  }
  ctx->ending = 0;
}

/* Finalizer, run by lua_close before luv's loop finalizer (it was marked after it). */
static int ctx_gc(lua_State *L) {
  modal_ctx *ctx = (modal_ctx *)lua_touserdata(L, 1);
  int i;
  if (ctx->closed)
    return 0;
  ctx->closed = 1;
  for (i = ctx->nclose - 1; i >= 0; i--)
    ctx->close_hooks[i].fn.close(L, ctx->close_hooks[i].arg);
  free(ctx->close_hooks);
  free(ctx->run_end_hooks);
  ctx->close_hooks = ctx->run_end_hooks = NULL;
  ctx->nclose = ctx->nrun_end = ctx->capclose = ctx->caprun_end = 0;
  return 0;
}

/* The context starts without its finalizer: modal__ctx_arm sets it once the layers have
** made what they own, so that it runs before theirs. */
void modal__ctx_open(lua_State *L, uv_loop_t *loop) {
  modal_ctx *ctx = (modal_ctx *)lua_newuserdatauv(L, sizeof *ctx, 0);
  memset(ctx, 0, sizeof *ctx);           /* a consistent empty state first */
  ctx->loop = loop;
  ctx->log_level = MODAL_LOG_INFO;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);  /* whatever thread opens us */
  ctx->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}

void modal__ctx_arm(lua_State *L) {
  int top = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  if (lua_touserdata(L, -1) && !lua_getmetatable(L, -1)) {
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "modal.context");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
  }
  lua_settop(L, top);
}
