/*
** core.h — modal's internal C interface: the per-state context, timers, logging, failures,
** the protected-call path and the Deferred internals shared between the core's files.
*/
#ifndef MODAL_CORE_H
#define MODAL_CORE_H

#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>
#include "modal.h"

/* Shared between the core's files, invisible outside the module (LUAI_FUNC-style). */
#define MODAL__FUNC __attribute__((visibility("hidden"))) extern

/* Log levels, most severe first. */
enum { MODAL_LOG_ERROR, MODAL_LOG_WARN, MODAL_LOG_INFO, MODAL_LOG_DEBUG };

/* ---------------------------------------------------------------- context */

/* Called once when the context closes (lua_close began), last registered first. */
typedef void (*modal_close_hook)(lua_State *L, void *arg);
/* Called when a run of the loop has ended, last registered first: `exiting` is 0 when
** modal.run() returns (a later run may go on), 1 when the host is about to close the state. */
typedef void (*modal_run_end_hook)(lua_State *L, void *arg, int exiting);
/* Called when a Deferred the core keeps (a nonzero aux word; its canceller, at index `canc`,
** is its keeper) is fired by someone else: the keeper lets go of it. Must not raise or run
** Lua code. */
typedef void (*modal_kept_fired_hook)(lua_State *L, int d, int canc);

typedef struct modal_ctx_hook modal_ctx_hook;

/* The per-state context. It is also the sentinel created after luv's loop, so its finalizer
** runs first in lua_close: it marks the context closed and calls the close hooks. */
typedef struct modal_ctx {
  lua_State *L;          /* the main thread: every callback from libuv runs on it */
  uv_loop_t *loop;       /* luv's loop, borrowed */
  int closed;            /* lua_close began: what modal owns does nothing any more */
  int running;           /* modal.run() depth (0 or 1) */
  int log_level;         /* threshold of the default stderr sink */
  modal_ctx_hook *close_hooks, *run_end_hooks;   /* private */
  int nclose, capclose, nrun_end, caprun_end;     /* private */
  int ending;            /* inside the run-end hooks -- private */
  modal_kept_fired_hook kept_fired;   /* set by the instances' layer */
  /* What the machine driver is doing (doc/machines.md, rule 12): */
  int driving;           /* entries into the driver in progress: user code may run */
  int planning;          /* a reload lists, plans (migrate runs) and switches: M:new, fire and
                          ** calls raise */
  int reloading;         /* a reload runs (its file, its plan, its switch): another raises */
  int tracing;           /* modal.trace(true): every transition logged at info */
  /* The testing clock (doc/testing.md); the timer layer sets these: */
  int vclock;            /* installed: modal's timers and modal.now() run on virtual time */
  int vstepping;         /* clock:advance() is running due timers */
  uint64_t vnow;         /* the clock's time, in nanoseconds */
  int vparked;           /* a walk runs: the caller's timers are parked (timer.c) */
  uint32_t drain_limit;  /* the testing kit's: a drain stops after this many transitions
                         ** (0: never), its cycle kept for modal__drive_looped (drive.c) */
  uint64_t vparked_now;  /* the caller's time while they are */
  int stop_asked;        /* modal.stop() during the current run -- private to loop.c */
} modal_ctx;

/* The loop's time in milliseconds: libuv's, or the testing clock's while one is installed. */
static inline uint64_t modal__now_ms(const modal_ctx *ctx) {
  return ctx->vclock ? ctx->vnow / 1000000u : uv_now(ctx->loop);
}

/* Now in milliseconds, read from the clock (not the loop's cached time): the testing clock's
** while one is installed. For the trace's time in a state. */
static inline uint64_t modal__clock_ms(const modal_ctx *ctx) {
  return ctx->vclock ? ctx->vnow / 1000000u : uv_hrtime() / 1000000u;
}

MODAL__FUNC modal_ctx *modal__ctx(lua_State *L);
MODAL__FUNC void modal__ctx_open(lua_State *L, uv_loop_t *loop);
/* Sets the context's finalizer (once): called after the layers made their luv handles, so
** that lua_close runs it before theirs and before luv's loop's. */
MODAL__FUNC void modal__ctx_arm(lua_State *L);
/* Registers `fn(L, arg)` to run when the context closes; nothing once it has closed. */
MODAL__FUNC void modal__ctx_on_close(lua_State *L, modal_close_hook fn, void *arg);
/* Registers `fn(L, arg, exiting)` to run whenever a run of the loop ends. A hook must not
** raise: it calls Lua through modal__call / modal__pcall. */
MODAL__FUNC void modal__ctx_on_run_end(lua_State *L, modal_run_end_hook fn, void *arg);
/* Calls the run-end hooks (not again from inside one of them). */
MODAL__FUNC void modal__ctx_run_end(lua_State *L, int exiting);

/* ---------------------------------------------------------------- timers */

typedef struct modal_timer modal_timer;
typedef void (*modal_timer_fn)(lua_State *L, modal_timer *t);

/* A timer in the state's heap; embedded in the object that owns it (a userdata). */
struct modal_timer {
  uint64_t due;          /* loop time (ms) at which it fires  -- private */
  uint64_t seq;          /* arming order: FIFO among equal due times -- private */
  int slot;              /* index in the heap; -1 when not armed -- private */
  int ref;               /* registry ref pinning the owner while armed -- private */
  modal_timer_fn fire;   /* called once when due, after the timer is disarmed, with the
                         ** owner on top of the stack */
};

/* Opens the timer layer once per state; `luv` is the index of luv's module table. */
MODAL__FUNC void modal__timers_open(lua_State *L, int luv);
MODAL__FUNC void modal__timer_init(modal_timer *t, modal_timer_fn fire);
/* Arms (or re-arms) `t` to fire after `seconds`; the owner is the value at `owner`. Does
** nothing once the context has closed. */
MODAL__FUNC void modal__timer_start(lua_State *L, modal_timer *t, int owner, double seconds);
/* Disarms `t`; a no-op when it is not armed or the context has closed. */
MODAL__FUNC void modal__timer_stop(lua_State *L, modal_timer *t);
/* 1 while `t` is armed. Notices first whether modal's handles were closed from outside
** (uv.walk), which disarms every timer. */
MODAL__FUNC int modal__timer_armed(lua_State *L, modal_timer *t);
/* 1 once the timers have closed: the context closed, or lua_close was seen to begin. */
MODAL__FUNC int modal__timers_closed(lua_State *L);
/* modal.stop(): no timer runs again until the current loop iteration ends. */
MODAL__FUNC void modal__timers_hold(lua_State *L);

/* The testing clock's use of the timer layer (clock.c; doc/testing.md). Virtual time counts
** nanoseconds in ctx->vnow; real time, libuv's milliseconds. The clock's range ends at
** MODAL_VTIME_END (2^62 ns, ~146 years), which the clock never reaches: a deadline past it
** is kept at it, armed but never due. */
#define MODAL_VTIME_END ((uint64_t)1 << 62)
/* Moves every armed timer to virtual time starting at `start` ns (`to_virtual`; from virtual
** time, the clock jumps to `start`), or back to real time; each keeps its remaining delay.
** Returns 0, or -1 when the timers have closed. */
MODAL__FUNC int modal__timers_rebase(lua_State *L, int to_virtual, uint64_t start);
/* A walk on the caller's clock (paths.lua): parks every armed timer, which then never comes
** due and keeps its place through restarts, and keeps the clock's time; unparking brings both
** back (what the walk armed must be dropped first). Parking what is parked does nothing (the
** clock's park refuses a second walk). */
MODAL__FUNC void modal__timers_park(lua_State *L, int park);
/* Pushes the cycle of the last drain the testing kit's limit stopped (a string), or nil; it
** is forgotten. */
MODAL__FUNC void modal__drive_looped(lua_State *L);
/* The number of armed timers; the earliest deadline in *first when there is one. */
MODAL__FUNC int modal__timers_pending(lua_State *L, uint64_t *first);
/* Runs the earliest timer if its deadline is at or before `upto` (virtual time only): the
** clock's time becomes its deadline first. Returns 1 when one ran (its seq in *seq), else 0. */
MODAL__FUNC int modal__timers_run_first(lua_State *L, uint64_t upto, uint64_t *seq);
/* Pushes the deadlines of the armed timers, in the order they will run, as a list of seconds. */
MODAL__FUNC void modal__timers_push_deadlines(lua_State *L);
/* The arming sequence number the next timer will get. */
MODAL__FUNC uint64_t modal__timers_seq(lua_State *L);
/* Disarms every timer armed at or after sequence number `mark` (as closing modal's handles
** does: nothing fires, owners are let go). */
MODAL__FUNC void modal__timers_drop_from(lua_State *L, uint64_t mark);
/* Points libuv's handles at the earliest timer again (after the clock moved). */
MODAL__FUNC void modal__timers_reschedule(lua_State *L);
MODAL__FUNC void modal__open_clock(lua_State *L);

/* A call_later handle: a timer with a function and its arguments in its user values. */
typedef struct modal_handle {
  modal_timer t;
  int nargs;
} modal_handle;

/* Replaces the function and `nargs` arguments on top with a new (unarmed) handle. The machine
** driver arms state timeouts with it; deferred.c's add_timeout still does too (a call upward,
** until it embeds a modal_timer of its own). */
MODAL__FUNC modal_handle *modal__handle_new(lua_State *L, int nargs);
MODAL__FUNC void modal__open_later(lua_State *L);

/* ---------------------------------------------------------------- loop */

/* Runs the loop until no work is left or a stop; returns 1 when work is left. Calls no
** run-end hook (the host's final run ends with modal__run_end(L, 1)). */
MODAL__FUNC int modal__loop_run(lua_State *L);
/* What modal.stop() does: the loop returns after the current callback. */
MODAL__FUNC void modal__loop_stop(lua_State *L);
/* Calls the run-end hooks, protected (a hook that raises is reported as unhandled). */
MODAL__FUNC void modal__run_end(lua_State *L, int exiting);
/* Runs every modal.on_stop handler once (host: first SIGINT/SIGTERM, or a luv callback's
** error). */
MODAL__FUNC void modal__run_stop_handlers(lua_State *L);
MODAL__FUNC void modal__open_loop(lua_State *L);

/* ---------------------------------------------------------------- protected calls */

/* The message handler: turns any error into a failure (kind "error", with traceback);
** a failure raised as the error value is kept as it is. */
MODAL__FUNC int modal__msgh(lua_State *L);
/* Calls the function below `nargs` arguments protected: LUA_OK with `nres` results, or an
** error status with the failure on top. The one protected-call path of C into Lua. */
MODAL__FUNC int modal__call(lua_State *L, int nargs, int nres);
/* Calls the function below `nargs` arguments protected; on error, reports the failure as
** unhandled and returns non-zero with nothing pushed. On success, leaves `nres` results. */
MODAL__FUNC int modal__pcall(lua_State *L, int nargs, int nres);

/* ---------------------------------------------------------------- messages */

/* Pushes and returns the number at idx as an error message shows it: NaN, inf, -inf (never
** the C library's "-nan"), else as Lua writes it. */
MODAL__FUNC const char *modal__number_text(lua_State *L, int idx);

/* ---------------------------------------------------------------- logging */

MODAL__FUNC void modal__log(lua_State *L, int level, int fields, const char *fmt, ...);
MODAL__FUNC const char *modal__level_name(int level);
MODAL__FUNC int modal__level_parse(const char *name);
MODAL__FUNC int modal__on_log(lua_State *L);
/* Sets the handler in the registry at `key` to the function at 1 (nil: `fallback`) and
** returns the previous one: modal.on_log and modal.on_unhandled. */
MODAL__FUNC int modal__swap_handler(lua_State *L, const void *key, lua_CFunction fallback);
MODAL__FUNC void modal__open_log(lua_State *L);

/* ---------------------------------------------------------------- failures */

MODAL__FUNC void modal__failure_new(lua_State *L, const char *kind, const char *message,
                                    int value, int traceback);
MODAL__FUNC int modal__is_failure(lua_State *L, int idx);
/* Pushes tostring(value at idx) and returns it; never raises: a __tostring that raises or
** returns no string gives a message saying so. */
MODAL__FUNC const char *modal__tostring(lua_State *L, int idx);
/* Replaces the value at `idx` with a failure of kind "error" unless it is one already. */
MODAL__FUNC void modal__to_failure(lua_State *L, int idx);
MODAL__FUNC int modal__failure_is_kind(lua_State *L, int idx, const char *kind);
MODAL__FUNC void modal__report_unhandled(lua_State *L, int idx);
MODAL__FUNC void modal__open_failure(lua_State *L);

/* ---------------------------------------------------------------- deferreds */
/* doc/deferreds.md; the layout is private to src/deferred*.c (src/deferred.h). */

MODAL__FUNC void modal__open_deferred(lua_State *L);
MODAL__FUNC int modal__is_deferred(lua_State *L, int idx);
/* Fires the Deferred at `d` with the value at `v` (a failure when `failed`) and runs its chain;
** -1 if it had fired (0, ignored, for the one late fire after a cancel that found it pending).
** Firing the Deferred of a modal.async call from outside abandons its coroutine. */
MODAL__FUNC int modal__fire(lua_State *L, int d, int v, int failed);
/* Appends a link: `cb`/`eb` stack indices or 0, `both` when one function serves both, and
** `nargs` extra arguments on top of the stack (popped). Runs it at once if `d` has fired. */
MODAL__FUNC void modal__add_link(lua_State *L, int d, int cb, int eb, int both, int nargs);
/* The same for a link of one function for both paths (at `fn`) and one argument on top. */
MODAL__FUNC void modal__add_both_arg(lua_State *L, int d, int fn);
/* Cancels the Deferred at `d`: inward through pauses and awaits to the Deferred everything
** waits on, whose canceller runs; a cycle of waits ends (doc/deferreds.md). */
MODAL__FUNC void modal__cancel(lua_State *L, int d);
/* Marks the current outcome of the Deferred at `d` as handled (a link observed it). */
MODAL__FUNC void modal__mark_handled(lua_State *L, int d);
/* Fires the pending Deferred at `d` by following the Deferred at `r`: r's outcome becomes
** d's (at once if r has one; else d waits, paused, and a cancel of d goes to r). r hands its
** outcome over: it is left holding nil, state "succeeded". -1 if either is not a Deferred
** or d has fired. */
MODAL__FUNC int modal__follow(lua_State *L, int d, int r);
/* A 32-bit field of the Deferred at `d` free for the core's own use (NULL if not one). */
MODAL__FUNC uint32_t *modal__deferred_aux(lua_State *L, int d);
/* 1 when the value at `d` is a pending Deferred whose canceller is running. */
MODAL__FUNC int modal__is_cancelling(lua_State *L, int d);
/* 1 when the value at `d` is a Deferred that has not fired. */
MODAL__FUNC int modal__is_pending(lua_State *L, int d);
/* Pushes a new Deferred already fired with the value at `v` (a failure when `failed`). */
MODAL__FUNC void modal__deferred_fired(lua_State *L, int v, int failed);
/* The same, with the Deferreds' metatable at index `mt` (0: from the registry). */
MODAL__FUNC void modal__deferred_fired_mt(lua_State *L, int v, int failed, int mt);
MODAL__FUNC void modal__push_deferred_mt(lua_State *L);
/* Pushes a new pending Deferred whose canceller is the function at `canceller` (or 0). */
MODAL__FUNC void modal__deferred_new(lua_State *L, int canceller);
/* Pushes the new pending Deferred of a modal.async call. While its coroutine awaits, the
** Deferred is paused on the awaited one (a cancel goes there); the awaited outcome goes to
** `resumer(value)`, the function at that index, which returns nothing when the coroutine
** waits again, else the coroutine's outcome (one value; a failure fails the Deferred). */
MODAL__FUNC void modal__deferred_new_async(lua_State *L, int resumer);
/* From inside the coroutine of the async call whose Deferred is at `o`: waits on the
** Deferred at `w`, which keeps its outcome (counted as handled: it went to the coroutine). A
** final outcome is pushed at once, returning 1, or 2 for a failure (also pushed for a misuse:
** awaiting `o` itself, or an `o` fired from outside). Else, when `may_wait`, `o` pauses on `w`
** and 0 is returned: yield, and w's outcome reaches the resumer. Else -1, nothing pushed. */
MODAL__FUNC int modal__await(lua_State *L, int o, int w, int may_wait);
/* The coroutine of the async call whose Deferred is at `o` was resumed by something else
** while it waited: `o` stops waiting (what it awaited no longer reaches the coroutine). */
MODAL__FUNC void modal__unwait(lua_State *L, int o);

MODAL__FUNC void modal__open_combine(lua_State *L);
MODAL__FUNC void modal__open_compile(lua_State *L);
MODAL__FUNC void modal__open_machine(lua_State *L);
MODAL__FUNC void modal__open_stats(lua_State *L);
MODAL__FUNC void modal__open_peer(lua_State *L);
MODAL__FUNC void modal__open_relay(lua_State *L);
/* modal.breaker's closed handler in C (src/relay.c), and its fast path: with the handler at
** `fi` and the instance at `ai` followed by its nargs arguments, pushes the call's Deferred and
** returns 1, or pushes nothing and returns 0 when the handler must run as any other. */
MODAL__FUNC int modal__relay_closed(lua_State *L);
MODAL__FUNC int modal__relay_try(lua_State *L, int fi, int ai, int nargs);
MODAL__FUNC void modal__open_reload(lua_State *L);
MODAL__FUNC void modal__open_async(lua_State *L);

#endif
