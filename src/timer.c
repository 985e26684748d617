/*
** timer.c — modal's timers: one min-heap per state behind a single libuv timer (plus an idle
** handle for timers due now and a check handle that ends a stop), call_later handles, sleep.
**
** One libuv timer for all of modal keeps foreign handles on luv's loop to three, whatever the
** number of timers; arming and disarming are O(log n) in the heap.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

static const char handle_key = 'h';     /* registry: call_later handles' metatable */

/* ============================================================== the heap */

static int before(const modal_timer *a, const modal_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(modal_ctx *ctx, int i, modal_timer *t) {
  ctx->heap[i] = t;
  t->slot = i;
}

static void sift_up(modal_ctx *ctx, int i) {
  modal_timer *t = ctx->heap[i];
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (!before(t, ctx->heap[parent]))
      break;
    heap_set(ctx, i, ctx->heap[parent]);
    i = parent;
  }
  heap_set(ctx, i, t);
}

static void sift_down(modal_ctx *ctx, int i) {
  modal_timer *t = ctx->heap[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= ctx->nheap)
      break;
    if (c + 1 < ctx->nheap && before(ctx->heap[c + 1], ctx->heap[c]))
      c++;
    if (!before(ctx->heap[c], t))
      break;
    heap_set(ctx, i, ctx->heap[c]);
    i = c;
  }
  heap_set(ctx, i, t);
}

static void heap_insert(lua_State *L, modal_ctx *ctx, modal_timer *t) {
  if (ctx->nheap == ctx->capheap) {
    int cap = ctx->capheap ? ctx->capheap * 2 : 16;
    modal_timer **h = (modal_timer **)realloc(ctx->heap, (size_t)cap * sizeof *h);
    if (!h) {
      luaL_error(L, "modal: out of memory arming a timer");
      return;
    }
    ctx->heap = h;
    ctx->capheap = cap;
  }
  heap_set(ctx, ctx->nheap++, t);
  sift_up(ctx, t->slot);
}

static void heap_remove(modal_ctx *ctx, modal_timer *t) {
  int i = t->slot;
  modal_timer *last = ctx->heap[--ctx->nheap];
  t->slot = -1;
  if (last == t)
    return;
  heap_set(ctx, i, last);
  sift_up(ctx, i);
  sift_down(ctx, last->slot);
}

/* ============================================================== libuv side */

static void process(modal_ctx *ctx);
static void schedule(modal_ctx *ctx);

static int process_protected(lua_State *L) {
  process((modal_ctx *)lua_touserdata(L, 1));
  return 0;
}

/* libuv calls in here: everything that touches Lua runs under a pcall, so not even a memory
** error can unwind through libuv's frames (each timer's function has its own pcall too). */
static void enter_from_libuv(modal_ctx *ctx) {
  lua_State *L = ctx->L;
  lua_pushcfunction(L, process_protected);
  lua_pushlightuserdata(L, ctx);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "modal: error running timers: %s\n",
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
    ctx->processing = 0;
    schedule(ctx);
  }
}

static void on_timer(uv_timer_t *h) {
  if (h->data)
    enter_from_libuv((modal_ctx *)h->data);
}

static void on_idle(uv_idle_t *h) {
  if (h->data)
    enter_from_libuv((modal_ctx *)h->data);
}

/* End of the loop iteration in which modal.stop() was called: timers may run again. */
static void on_check(uv_check_t *h) {
  modal_ctx *ctx = (modal_ctx *)h->data;
  uv_check_stop(h);
  if (ctx) {
    ctx->stop_requested = 0;
    schedule(ctx);
  }
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

static int ensure_handles(modal_ctx *ctx) {
  if (ctx->timer)
    return 1;
  ctx->timer = (uv_timer_t *)malloc(sizeof *ctx->timer);
  ctx->idle = (uv_idle_t *)malloc(sizeof *ctx->idle);
  ctx->check = (uv_check_t *)malloc(sizeof *ctx->check);
  if (!ctx->timer || !ctx->idle || !ctx->check) {
    free(ctx->timer);
    free(ctx->idle);
    free(ctx->check);
    ctx->timer = NULL;
    ctx->idle = NULL;
    ctx->check = NULL;
    return 0;
  }
  uv_timer_init(ctx->loop, ctx->timer);
  uv_idle_init(ctx->loop, ctx->idle);
  uv_check_init(ctx->loop, ctx->check);
  uv_unref((uv_handle_t *)ctx->check);   /* only ends a stop; never keeps the loop alive */
  ctx->timer->data = ctx;
  ctx->idle->data = ctx;
  ctx->check->data = ctx;
  return 1;
}

/* Points the libuv handles at the earliest timer: the idle handle when it is due now (it
** runs on the next iteration, after I/O is polled without blocking), else the timer. */
static void schedule(modal_ctx *ctx) {
  uint64_t now;
  modal_timer *first;
  if (ctx->processing || ctx->closed || !ctx->timer)
    return;
  if (ctx->nheap == 0) {
    uv_timer_stop(ctx->timer);
    uv_idle_stop(ctx->idle);
    return;
  }
  first = ctx->heap[0];
  now = uv_now(ctx->loop);
  if (first->due <= now) {
    uv_timer_stop(ctx->timer);
    if (ctx->stop_requested)             /* not in the iteration that stopped: on_check */
      uv_idle_stop(ctx->idle);           /* reschedules once that iteration ends */
    else
      uv_idle_start(ctx->idle, on_idle);
  } else {
    uv_idle_stop(ctx->idle);
    uv_timer_start(ctx->timer, on_timer, first->due - now, 0);
  }
}

/* Runs the timers due now, oldest first; timers armed during the pass wait for the next
** iteration (a zero delay never runs in the pass that armed it). */
static void process(modal_ctx *ctx) {
  lua_State *L = ctx->L;
  uint64_t now = uv_now(ctx->loop), limit = ctx->seq;
  int top = lua_gettop(L);
  ctx->processing = 1;
  while (ctx->nheap > 0 && !ctx->stop_requested && !ctx->closed) {
    modal_timer *t = ctx->heap[0];
    if (t->due > now || t->seq >= limit)
      break;
    heap_remove(ctx, t);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);      /* the owner stays pinned while it runs */
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
    t->fire(L, t);
    lua_settop(L, top);
  }
  ctx->processing = 0;
  schedule(ctx);
}

void modal__timers_close(modal_ctx *ctx) {
  if (ctx->timer) {
    ctx->timer->data = NULL;
    ctx->idle->data = NULL;
    ctx->check->data = NULL;
    uv_close((uv_handle_t *)ctx->timer, free_handle);
    uv_close((uv_handle_t *)ctx->idle, free_handle);
    uv_close((uv_handle_t *)ctx->check, free_handle);
    ctx->timer = NULL;
    ctx->idle = NULL;
    ctx->check = NULL;
  }
  free(ctx->heap);
  ctx->heap = NULL;
  ctx->nheap = ctx->capheap = 0;
}

void modal__stop_requested(modal_ctx *ctx) {
  ctx->stop_requested = 1;
  if (ensure_handles(ctx))
    uv_check_start(ctx->check, on_check);
}

/* ============================================================== timers */

void modal__timer_init(modal_timer *t, modal_timer_fn fire) {
  t->due = 0;
  t->seq = 0;
  t->slot = -1;
  t->ref = LUA_NOREF;
  t->fire = fire;
}

/* Milliseconds for a delay in seconds, rounded up: a timer never fires early. */
static uint64_t delay_ms(double seconds) {
  double ms = ceil(seconds * 1000.0);
  if (ms > 1e15)
    ms = 1e15;
  return (uint64_t)ms;
}

void modal__timer_start(lua_State *L, modal_timer *t, int owner, double seconds) {
  modal_ctx *ctx = modal__ctx(L);
  if (ctx->closed)
    return;
  if (!ensure_handles(ctx)) {
    luaL_error(L, "modal: out of memory creating the loop's timer");
    return;
  }
  if (t->slot >= 0) {
    heap_remove(ctx, t);
  } else {
    lua_pushvalue(L, owner);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  uv_update_time(ctx->loop);             /* count from the call, not from the loop's last turn */
  t->due = uv_now(ctx->loop) + delay_ms(seconds);
  t->seq = ctx->seq++;
  heap_insert(L, ctx, t);
  schedule(ctx);
}

void modal__timer_stop(lua_State *L, modal_timer *t) {
  modal_ctx *ctx;
  if (t->slot < 0)
    return;
  ctx = modal__ctx(L);
  heap_remove(ctx, t);
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
  schedule(ctx);
}

/* ============================================================== call_later handles */

/* Runs the handle's function with its arguments (user values 1..n+1), protected. */
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

static double check_delay(lua_State *L, int idx, const char *fname) {
  double d;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "bad argument #%d to '%s' (delay must be a number of seconds, got %s)", idx,
               fname, luaL_typename(L, idx));
  d = lua_tonumber(L, idx);
  if (!(d >= 0))                         /* negative or NaN */
    luaL_error(L, "bad argument #%d to '%s' (delay must be >= 0, got %f)", idx, fname, d);
  return d;
}

/* modal.call_later(delay, fn, ...) -> handle */
int modal__call_later(lua_State *L) {
  double delay = check_delay(L, 1, "call_later");
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

/* handle:cancel(): a no-op once run or cancelled */
static int md_handle_cancel(lua_State *L) {
  modal__timer_stop(L, &check_handle(L)->t);
  return 0;
}

/* handle:reset(delay): counts from now; raises once run or cancelled */
static int md_handle_reset(lua_State *L) {
  modal_handle *h = check_handle(L);
  double delay = check_delay(L, 2, "reset");
  if (h->t.slot < 0)
    return luaL_error(L, "modal: cannot reset a timer that has already run or was cancelled");
  modal__timer_start(L, &h->t, 1, delay);
  lua_settop(L, 1);
  return 1;
}

static int md_handle_active(lua_State *L) {
  lua_pushboolean(L, check_handle(L)->t.slot >= 0);
  return 1;
}

static int md_handle_tostring(lua_State *L) {
  modal_handle *h = check_handle(L);
  lua_pushfstring(L, "modal.timer (%s): %p", h->t.slot >= 0 ? "active" : "inactive", (void *)h);
  return 1;
}

/* ============================================================== sleep */

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

/* modal.sleep(delay) -> Deferred succeeding with nil */
int modal__sleep(lua_State *L) {
  double delay = check_delay(L, 1, "sleep");
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

void modal__open_timer(lua_State *L) {
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
  lua_pushcfunction(L, modal__call_later);
  lua_setfield(L, -2, "call_later");
  lua_pushcfunction(L, modal__sleep);
  lua_setfield(L, -2, "sleep");
}
