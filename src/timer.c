/*
** timer.c — modal's timers: one min-heap per state behind one libuv timer (plus an idle handle
** for timers due now and a check handle that ends a stop). The heap and the libuv glue only:
** no Deferreds, nothing Lua calls directly (call_later and sleep are in later.c).
**
** One libuv timer for all of modal keeps modal's handles on luv's loop to three, whatever the
** number of timers; arming and disarming are O(log n) in the heap.
**
** The three handles are luv's own (made by uv.new_timer, uv.new_idle, uv.new_check), driven
** with libuv's calls and modal's callbacks: uv.walk sees luv handles only, and luv's loop
** finalizer closes them as its own. Whoever closes them (the exit idiom that closes every
** walked handle) disarms every timer armed at that moment; the next timer armed gets new
** handles (doc/loop.md).
**
** A testing clock (clock.c, doc/testing.md) moves every timer to virtual time: deadlines then
** count nanoseconds of ctx->vnow, which moves only when the clock advances; the libuv timer
** rests, and the idle handle still runs timers due at the clock's current time.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <luv/lhandle.h>
#include "core.h"

enum { H_TIMER, H_IDLE, H_CHECK, NHANDLES };

static const char *const handle_type[NHANDLES] = {"uv_timer", "uv_idle", "uv_check"};
static const char *const handle_maker[NHANDLES] = {"new_timer", "new_idle", "new_check"};

/* The timer layer of one state: a userdata anchored in the registry. */
typedef struct timers {
  lua_State *L;                 /* the main thread */
  uv_loop_t *loop;
  modal_ctx *ctx;               /* vclock, vnow: the testing clock */
  uv_handle_t **ud[NHANDLES];   /* luv's userdata blocks (a pointer to the handle); NULL: none */
  int ref[NHANDLES];            /* registry refs pinning those userdatas */
  int make[NHANDLES];           /* registry refs: luv's constructors */
  modal_timer **heap;           /* min-heap on (due, seq) */
  int nheap, capheap;
  uint64_t seq;                 /* next arming sequence number */
  int processing;               /* inside a pass over due timers */
  int held;                     /* modal.stop(): no pass until the iteration ends */
  int closed;                   /* the context closed: nothing is armed any more */
} timers;

static const char timers_key = 't';     /* registry: the timers userdata */

static timers *timers_of(lua_State *L) {
  timers *T;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &timers_key);
  T = (timers *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return T;
}

/* ============================================================== the heap */

static int before(const modal_timer *a, const modal_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(timers *T, int i, modal_timer *t) {
  T->heap[i] = t;
  t->slot = i;
}

static void sift_up(timers *T, int i) {
  modal_timer *t = T->heap[i];
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (!before(t, T->heap[parent]))
      break;
    heap_set(T, i, T->heap[parent]);
    i = parent;
  }
  heap_set(T, i, t);
}

static void sift_down(timers *T, int i) {
  modal_timer *t = T->heap[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= T->nheap)
      break;
    if (c + 1 < T->nheap && before(T->heap[c + 1], T->heap[c]))
      c++;
    if (!before(T->heap[c], t))
      break;
    heap_set(T, i, T->heap[c]);
    i = c;
  }
  heap_set(T, i, t);
}

/* Room for one more timer; raises on memory exhaustion (before anything changed). */
static void heap_reserve(lua_State *L, timers *T) {
  if (T->nheap == T->capheap) {
    int cap = T->capheap ? T->capheap * 2 : 16;
    modal_timer **h = (modal_timer **)realloc(T->heap, (size_t)cap * sizeof(modal_timer *));
    if (!h) {
      luaL_error(L, "modal: out of memory arming a timer");
      return;
    }
    T->heap = h;
    T->capheap = cap;
  }
}

static void heap_insert(timers *T, modal_timer *t) {
  heap_set(T, T->nheap++, t);
  sift_up(T, t->slot);
}

static void heap_remove(timers *T, modal_timer *t) {
  int i = t->slot;
  modal_timer *last = T->heap[--T->nheap];
  t->slot = -1;
  if (last == t)
    return;
  heap_set(T, i, last);
  sift_up(T, i);
  sift_down(T, last->slot);
}

static void heapify(timers *T) {
  int i;
  for (i = T->nheap / 2 - 1; i >= 0; i--)
    sift_down(T, i);
}

/* Disarms every timer armed at or after sequence number `mark`: each owner is let go, nothing
** fires. O(n). */
static void drop_from(lua_State *L, timers *T, uint64_t mark) {
  int i, kept = 0;
  for (i = 0; i < T->nheap; i++) {
    modal_timer *t = T->heap[i];
    if (t->seq < mark) {
      heap_set(T, kept++, t);
      continue;
    }
    t->slot = -1;
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
  }
  T->nheap = kept;
  heapify(T);
}

/* ============================================================== luv's handles */

/* The handle, or NULL when there is none or luv's finalizer already let it go. */
static uv_handle_t *handle(timers *T, int i) {
  return T->ud[i] ? *T->ud[i] : NULL;
}

static int gone(timers *T, int i) {
  uv_handle_t *h = handle(T, i);
  return T->ud[i] && (!h || uv_is_closing(h));
}

static void release(lua_State *L, timers *T, int i) {
  luaL_unref(L, LUA_REGISTRYINDEX, T->ref[i]);
  T->ref[i] = LUA_NOREF;
  T->ud[i] = NULL;
}

static void timers_close(lua_State *L, void *arg);

/* Notices handles closed from outside (uv.walk): a closed timer or idle handle disarms every
** timer armed on it; closed handles are let go (luv frees them) and made anew when needed.
** A handle whose userdata luv's finalizer already wiped means lua_close has begun (modal holds
** a ref on it, so nothing else collects it): the timers close now. */
static void notice(lua_State *L, timers *T) {
  int i;
  uv_handle_t **t = T->ud[H_TIMER], **idle = T->ud[H_IDLE];
  if (t && idle && *t && *idle && !uv_is_closing(*t) && !uv_is_closing(*idle))
    return;                              /* the usual case: both in service */
  for (i = 0; i < NHANDLES; i++)
    if (T->ud[i] && !*T->ud[i]) {
      timers_close(L, T);
      return;
    }
  if (gone(T, H_TIMER) || gone(T, H_IDLE))
    drop_from(L, T, 0);
  for (i = 0; i < NHANDLES; i++)
    if (gone(T, i))
      release(L, T, i);
}

/* Calls luv's constructor of handle `i` (protected): 1 when made, else 0 with the reason on
** top of the stack. */
static int make_handle(lua_State *L, timers *T, int i) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, T->make[i]);
  if (modal__call(L, 0, 1) != LUA_OK) {
    lua_getfield(L, -1, "message");
    lua_remove(L, -2);
    return 0;
  }
  if (!luaL_testudata(L, -1, handle_type[i]) || !*(uv_handle_t **)lua_touserdata(L, -1)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "uv.%s() made no handle", handle_maker[i]);
    return 0;
  }
  T->ud[i] = (uv_handle_t **)lua_touserdata(L, -1);
  T->ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
  if (i == H_CHECK)
    uv_unref(handle(T, i));              /* only ends a stop: never keeps the loop alive */
  return 1;
}

/* Makes the handles below `upto` that are missing; raises when luv cannot. */
static void ensure_handles(lua_State *L, timers *T, int upto) {
  int i;
  for (i = 0; i < upto; i++)
    if (!T->ud[i] && !make_handle(L, T, i))
      luaL_error(L, "modal: cannot make the loop's %s handle: %s", handle_type[i] + 3,
                 lua_tostring(L, -1));
}

/* ============================================================== libuv side */

static void process(lua_State *L, timers *T);
static void schedule(timers *T);

/* The timers of the state a handle belongs to: luv's handle data names its main thread. */
static timers *from_handle(uv_handle_t *h) {
  luv_handle_t *data = (luv_handle_t *)h->data;
  timers *T;
  if (!data || !data->ctx || !data->ctx->L)
    return NULL;
  T = timers_of(data->ctx->L);
  return T && !T->closed ? T : NULL;
}

static int process_protected(lua_State *L) {
  process(L, (timers *)lua_touserdata(L, 1));
  return 0;
}

/* libuv calls in here: everything that touches Lua runs protected, so not even a memory error
** can unwind through libuv's frames (each timer's function has its own pcall too). */
static void enter_from_libuv(timers *T) {
  lua_State *L = T->L;
  lua_pushcfunction(L, process_protected);
  lua_pushlightuserdata(L, T);
  if (modal__pcall(L, 1, 0) != LUA_OK) { /* reported as unhandled */
    T->processing = 0;
    notice(L, T);
    schedule(T);
    uv_stop(T->loop);                    /* it could not even start (the C stack is full, at
                                         ** a run entered that deep): run() returns instead
                                         ** of trying again for ever */
  }
}

static void on_timer(uv_timer_t *h) {
  timers *T = from_handle((uv_handle_t *)h);
  if (T)
    enter_from_libuv(T);
}

static void on_idle(uv_idle_t *h) {
  timers *T = from_handle((uv_handle_t *)h);
  if (T)
    enter_from_libuv(T);
}

/* End of the loop iteration in which modal.stop() was called: timers may run again. */
static void on_check(uv_check_t *h) {
  timers *T = from_handle((uv_handle_t *)h);
  uv_check_stop(h);
  if (T) {
    T->held = 0;
    notice(T->L, T);
    schedule(T);
  }
}

/* Points the libuv handles at the earliest timer: the idle handle when it is due now (it
** runs on the next iteration, after I/O is polled without blocking), else the timer. */
static void schedule(timers *T) {
  uv_timer_t *timer;
  uv_idle_t *idle;
  uint64_t now;
  modal_timer *first;
  if (T->processing || T->closed)
    return;
  if (T->held && (!T->ud[H_CHECK] || gone(T, H_CHECK)))
    T->held = 0;                         /* its on_check will never come to end the stop */
  timer = (uv_timer_t *)handle(T, H_TIMER);
  idle = (uv_idle_t *)handle(T, H_IDLE);
  if (!timer || !idle)                   /* none: nothing armed since they were closed */
    return;
  if (T->nheap == 0) {
    uv_timer_stop(timer);
    uv_idle_stop(idle);
    return;
  }
  first = T->heap[0];
  now = T->ctx->vclock ? T->ctx->vnow : uv_now(T->loop);
  if (first->due <= now) {
    uv_timer_stop(timer);
    if (T->held)                         /* not in the iteration that stopped: on_check */
      uv_idle_stop(idle);                /* reschedules once that iteration ends */
    else
      uv_idle_start(idle, on_idle);
  } else {
    uv_idle_stop(idle);
    if (T->ctx->vclock)                  /* a virtual deadline: only the clock gets there */
      uv_timer_stop(timer);
    else
      uv_timer_start(timer, on_timer, first->due - now, 0);
  }
}

/* Disarms the earliest timer `t` and calls its function with its owner, pinned while it runs. */
static void run_timer(lua_State *L, timers *T, modal_timer *t, int top) {
  heap_remove(T, t);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
  if (T->ctx->vclock && t->due > T->ctx->vnow)
    T->ctx->vnow = t->due;               /* a virtual timer sees its own deadline as now */
  t->fire(L, t);
  lua_settop(L, top);
}

/* Runs the timers due now, oldest first; timers armed during the pass wait for the next
** iteration (a zero delay never runs in the pass that armed it). A callback that closes
** modal's handles ends the pass: what was armed is disarmed. */
static void process(lua_State *L, timers *T) {
  int virt = T->ctx->vclock, top = lua_gettop(L);
  uint64_t now = virt ? T->ctx->vnow : uv_now(T->loop), limit = T->seq;
  notice(L, T);                          /* a luv callback of this iteration may have closed them */
  T->processing = 1;
  while (T->nheap > 0 && !T->held && !T->closed) {
    modal_timer *t = T->heap[0];
    if (t->due > now || t->seq >= limit || T->ctx->vclock != virt)
      break;                             /* (a clock installed or closed: another time base) */
    run_timer(L, T, t, top);
    notice(L, T);
  }
  T->processing = 0;
  schedule(T);
}

/* Close hook: every timer is disarmed and every ref let go. The handles are only stopped:
** luv's own finalizers close them (closing them here would have luv free a handle that is
** still closing). */
static void timers_close(lua_State *L, void *arg) {
  timers *T = (timers *)arg;
  int i;
  if (T->closed)
    return;
  T->closed = 1;
  drop_from(L, T, 0);
  free(T->heap);
  T->heap = NULL;
  T->capheap = 0;
  for (i = 0; i < NHANDLES; i++) {
    uv_handle_t *h = handle(T, i);
    if (h && !uv_is_closing(h)) {
      if (i == H_TIMER)
        uv_timer_stop((uv_timer_t *)h);
      else if (i == H_IDLE)
        uv_idle_stop((uv_idle_t *)h);
      else
        uv_check_stop((uv_check_t *)h);
    }
    if (T->ud[i])
      release(L, T, i);
    luaL_unref(L, LUA_REGISTRYINDEX, T->make[i]);
    T->make[i] = LUA_NOREF;
  }
}

int modal__timers_closed(lua_State *L) {
  timers *T = timers_of(L);
  return !T || T->closed;
}

void modal__timers_hold(lua_State *L) {
  timers *T = timers_of(L);
  if (!T || T->closed)
    return;
  notice(L, T);
  if (T->closed)
    return;
  if (gone(T, H_CHECK))
    release(L, T, H_CHECK);
  if (!T->ud[H_CHECK] && !make_handle(L, T, H_CHECK)) {
    lua_pop(L, 1);                       /* without a check handle, nothing would end a hold */
    return;
  }
  T->held = 1;
  uv_check_start((uv_check_t *)handle(T, H_CHECK), on_check);
}

/* Opens the layer once per state and makes luv's handles: made before the context's sentinel
** is armed, their finalizers run after it (the context closes first). */
void modal__timers_open(lua_State *L, int luv) {
  timers *T = timers_of(L);
  if (!T) {
    int i;
    luv = lua_absindex(L, luv);
    T = (timers *)lua_newuserdatauv(L, sizeof *T, 0);
    memset(T, 0, sizeof *T);
    for (i = 0; i < NHANDLES; i++)
      T->ref[i] = T->make[i] = LUA_NOREF;
    T->ctx = modal__ctx(L);
    T->L = T->ctx->L;
    T->loop = T->ctx->loop;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &timers_key);
    for (i = 0; i < NHANDLES; i++) {
      if (lua_getfield(L, luv, handle_maker[i]) != LUA_TFUNCTION)
        luaL_error(L, "modal: the loaded 'luv' module has no %s() function", handle_maker[i]);
      T->make[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    modal__ctx_on_close(L, timers_close, T);
  }
  if (!T->closed)
    notice(L, T);
  if (!T->closed)
    ensure_handles(L, T, NHANDLES);
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
  if (!(ms > 0))
    return 0;
  if (ms > 1e15)
    ms = 1e15;
  return (uint64_t)ms;
}

#define MAX_VDELAY 1000000000000000000u  /* ns: ~31 years, the longest virtual delay */

/* Nanoseconds for a delay in seconds, to the nearest: virtual time never wakes up late, and
** 0.1 + 0.2 seconds of delays is 0.3 seconds of advance. */
static uint64_t delay_ns(double seconds) {
  double ns = floor(seconds * 1e9 + 0.5);
  if (!(ns > 0))
    return 0;
  if (ns > (double)MAX_VDELAY)
    return MAX_VDELAY;
  return (uint64_t)ns;
}

/* A virtual deadline: `delay` ns after `from`, at the end of the clock's range at the latest,
** which the clock never reaches (both are within it, so the sum cannot wrap). */
static uint64_t vdue(uint64_t from, uint64_t delay) {
  return from + delay > MODAL_VTIME_END ? MODAL_VTIME_END : from + delay;
}

void modal__timer_start(lua_State *L, modal_timer *t, int owner, double seconds) {
  timers *T = timers_of(L);
  if (!T || T->closed)
    return;
  owner = lua_absindex(L, owner);
  notice(L, T);
  if (T->closed)
    return;
  heap_reserve(L, T);                    /* may raise: before anything changed */
  ensure_handles(L, T, H_CHECK);         /* the timer and the idle handle */
  if (t->slot >= 0) {
    heap_remove(T, t);
  } else {
    lua_pushvalue(L, owner);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (T->ctx->vclock) {
    t->due = vdue(T->ctx->vnow, delay_ns(seconds));
  } else {
    uv_update_time(T->loop);             /* count from the call, not from the loop's last turn */
    t->due = uv_now(T->loop) + delay_ms(seconds);
  }
  t->seq = T->seq++;
  heap_insert(T, t);
  schedule(T);
}

void modal__timer_stop(lua_State *L, modal_timer *t) {
  timers *T;
  if (t->slot < 0)
    return;
  T = timers_of(L);
  if (!T || T->closed)
    return;
  notice(L, T);
  /* cppcheck-suppress knownConditionTrueFalse ; notice() can disarm t (drop_from) */
  if (t->slot < 0)                       /* disarmed by notice() */
    return;
  heap_remove(T, t);
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
  schedule(T);
}

int modal__timer_armed(lua_State *L, modal_timer *t) {
  timers *T;
  if (t->slot < 0)
    return 0;
  T = timers_of(L);
  if (!T || T->closed)
    return 0;
  notice(L, T);
  /* cppcheck-suppress knownConditionTrueFalse ; notice() can disarm t (drop_from) */
  return t->slot >= 0;
}

/* ============================================================== the testing clock */

/* The timers of a state whose timer layer is open (NULL once closed), handles checked. */
static timers *open_timers(lua_State *L) {
  timers *T = timers_of(L);
  if (!T || T->closed)
    return NULL;
  notice(L, T);
  return T->closed ? NULL : T;
}

/* A parked deadline has its top bit set: virtual deadlines are below 2^62 ns, so parked ones
** sort after every other, in their own order, and are never due. */
#define PARKED ((uint64_t)1 << 63)

void modal__timers_park(lua_State *L, int park) {
  timers *T = open_timers(L);
  modal_ctx *ctx = modal__ctx(L);
  if (!T || !ctx->vclock || (!park) == (!ctx->vparked))   /* nothing to move, or done */
    return;
  for (int i = 0; i < T->nheap; i++)
    T->heap[i]->due = park ? T->heap[i]->due | PARKED : T->heap[i]->due & ~PARKED;
  if (park)
    ctx->vparked_now = ctx->vnow;
  else
    ctx->vnow = ctx->vparked_now;
  ctx->vparked = park;
  heapify(T);
  schedule(T);
}

/* Every deadline but a parked one moves to the other time base with the delay it has left;
** the order stays (ties that appear are resolved by arming order: the heap is rebuilt). */
int modal__timers_rebase(lua_State *L, int to_virtual, uint64_t start) {
  timers *T = open_timers(L);
  uint64_t now;
  int i;
  if (!T)
    return -1;
  uv_update_time(T->loop);
  now = uv_now(T->loop);
  for (i = 0; i < T->nheap; i++) {
    modal_timer *t = T->heap[i];
    if (t->due & PARKED)
      continue;
    if (to_virtual && T->ctx->vclock) {                     /* a jump of the clock */
      t->due = vdue(start, t->due > T->ctx->vnow ? t->due - T->ctx->vnow : 0);
    } else if (to_virtual) {
      uint64_t left = t->due > now ? t->due - now : 0;     /* ms */
      t->due = vdue(start, left > MAX_VDELAY / 1000000u ? MAX_VDELAY : left * 1000000u);
    } else {
      uint64_t left = t->due > T->ctx->vnow ? t->due - T->ctx->vnow : 0;   /* ns */
      t->due = now + (left + 999999u) / 1000000u;  /* rounded up: never early */
    }
  }
  heapify(T);
  T->ctx->vclock = to_virtual;
  if (to_virtual)
    T->ctx->vnow = start;
  schedule(T);
  return 0;
}

int modal__timers_pending(lua_State *L, uint64_t *first) {
  timers *T = open_timers(L);
  if (!T || T->nheap == 0)
    return 0;
  *first = T->heap[0]->due;
  return T->nheap;
}

int modal__timers_run_first(lua_State *L, uint64_t upto, uint64_t *seq) {
  timers *T = open_timers(L);
  modal_timer *t;
  int top = lua_gettop(L);
  /* The analyzer forgets T->closed across timers_close's calls; an open T with nheap > 0 has
  ** its heap. NOLINTNEXTLINE(clang-analyzer-core.NullDereference) */
  if (!T || T->nheap == 0 || !T->ctx->vclock || T->heap[0]->due > upto)
    return 0;
  t = T->heap[0];
  *seq = t->seq;
  run_timer(L, T, t, top);
  return 1;
}

static int by_deadline(const void *a, const void *b) {
  const modal_timer *x = *(modal_timer *const *)a, *y = *(modal_timer *const *)b;
  return before(x, y) ? -1 : before(y, x) ? 1 : 0;
}

void modal__timers_push_deadlines(lua_State *L) {
  timers *T = open_timers(L);
  modal_timer **sorted;
  int i, n = T ? T->nheap : 0;
  double unit = T && T->ctx->vclock ? 1e9 : 1e3;
  lua_createtable(L, n, 0);
  if (n == 0)
    return;
  sorted = (modal_timer **)lua_newuserdatauv(L, (size_t)n * sizeof(modal_timer *), 0);
  /* As in modal__timers_run_first. NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
  memcpy(sorted, T->heap, (size_t)n * sizeof(modal_timer *));
  qsort(sorted, (size_t)n, sizeof(modal_timer *), by_deadline);    /* O(n log n) */
  while (n > 0 && (sorted[n - 1]->due & PARKED))   /* a walk's caller's: set aside */
    n--;
  for (i = 0; i < n; i++) {
    lua_pushnumber(L, (double)sorted[i]->due / unit);
    lua_rawseti(L, -3, i + 1);
  }
  lua_pop(L, 1);
}

uint64_t modal__timers_seq(lua_State *L) {
  timers *T = timers_of(L);
  return T ? T->seq : 0;
}

void modal__timers_drop_from(lua_State *L, uint64_t mark) {
  timers *T = open_timers(L);
  if (T) {
    drop_from(L, T, mark);
    schedule(T);
  }
}

void modal__timers_reschedule(lua_State *L) {
  timers *T = open_timers(L);
  if (T)
    schedule(T);
}
