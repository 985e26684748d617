/*
** clock.c — the testing clock's C side, the hidden table modal._clock that
** lua/modal/testing/clock.lua wraps (doc/testing.md): install and close, advance, next,
** pending, now, and what a walk uses to replay paths: restart (the clock jumps back to 0) and
** the mark/drop pair (nothing of a replay is left armed).
**
** While a clock is installed every timer modal owns (call_later, sleep, add_timeout, state
** timeouts, and so every policy's timers) counts virtual nanoseconds (ctx->vnow), which move
** only here; luv's own handles keep real time. Misuse raises at once instead of hanging.
*/
#include <math.h>
#include "core.h"

#define NS 1e9                           /* nanoseconds per second */
#define SAME_INSTANT_LIMIT 100000        /* timers armed and run at one instant in a row */

/* Seconds for virtual nanoseconds: exact for every time a test writes (0.3 is 0.3). */
static double seconds(uint64_t ns) {
  return (double)ns / NS;
}

static modal_ctx *installed(lua_State *L, const char *fname) {
  modal_ctx *ctx = modal__ctx(L);
  if (!ctx->vclock) {
    luaL_error(L, "%s: no testing clock is installed (it was closed)", fname);
    return NULL;
  }
  return ctx;
}

/* A number of seconds that moves the clock: finite, >= 0, inside the clock's range. */
static uint64_t check_step(lua_State *L, int idx, const char *fname, uint64_t from) {
  double s, ns;
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s: seconds must be a number, got %s", fname, luaL_typename(L, idx));
  s = lua_tonumber(L, idx);
  if (s != s || isinf(s))
    luaL_error(L, "%s: seconds must be a finite number, got %s", fname,
               modal__number_text(L, idx));
  if (s < 0)
    luaL_error(L, "%s: seconds must be >= 0 (virtual time never goes back), got %s", fname,
               lua_tostring(L, idx));
  ns = floor(s * NS + 0.5);
  if (ns >= (double)(MODAL_VTIME_END - from) || (uint64_t)ns >= MODAL_VTIME_END - from)
    luaL_error(L, "%s: %s seconds is past the clock's range (~146 years; it is at %f s)",
               fname, lua_tostring(L, idx), seconds(from));
  return (uint64_t)ns;
}

/* modal._clock.install([start]): virtual time from `start` seconds (default 0). */
static int clk_install(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  uint64_t start = lua_isnoneornil(L, 1) ? 0 : check_step(L, 1, "clock", 0);
  if (ctx->vclock)
    return luaL_error(L, "clock: a testing clock is already installed (one at a time: close "
                         "it first with clock:close())");
  if (modal__timers_rebase(L, 1, start) != 0)
    return luaL_error(L, "clock: modal's timers have closed (the Lua state is closing)");
  return 0;
}

/* modal._clock.close(): back to real time; armed timers keep the delay they have left. */
static int clk_close(lua_State *L) {
  modal_ctx *ctx = installed(L, "clock:close");
  if (ctx->vstepping)
    return luaL_error(L, "clock:close: called from a timer the clock is running (close it "
                         "after clock:advance returns)");
  if (ctx->vparked)
    return luaL_error(L, "clock:close: called while a walk runs on this clock (close it after "
                         "the walk returns)");
  if (modal__timers_rebase(L, 0, 0) != 0)
    ctx->vclock = 0;                     /* the timers closed: nothing is left to move */
  return 0;
}

/* modal._clock.restart(start): the clock jumps to `start` seconds, back or forth, and every
** armed timer keeps the delay it has left. A walk starts each replay at 0 this way. */
static int clk_restart(lua_State *L) {
  modal_ctx *ctx = installed(L, "clock:restart");
  uint64_t start = check_step(L, 1, "clock:restart", 0);
  if (ctx->vstepping)
    return luaL_error(L, "clock:restart: called from a timer the clock is running");
  modal__timers_rebase(L, 1, start);
  return 0;
}

/* modal._clock.park(), unpark(): a walk on the caller's clock sets the caller's timers and
** time aside, and brings them back (modal__timers_park). */
static int clk_park(lua_State *L) {
  installed(L, "walk");
  if (modal__ctx(L)->vparked)
    return luaL_error(L, "%s: called while another walk runs on this clock",
                      luaL_optstring(L, 1, "walk"));
  modal__timers_park(L, 1);
  return 0;
}

static int clk_unpark(lua_State *L) {
  installed(L, "walk");
  modal__timers_park(L, 0);
  return 0;
}

/* modal._clock.drain_limit(n) -> the previous limit: a drain stops after n transitions (0:
** never) and looped() -> the cycle of the last one stopped, or nil. The testing kit's: a
** definition that loops without waiting ends its search instead of hanging it. */
static int clk_drain_limit(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_pushinteger(L, (lua_Integer)ctx->drain_limit);
  ctx->drain_limit = n > 0 && n < 100000 ? (uint32_t)n : 0;
  return 1;
}

static int clk_looped(lua_State *L) {
  modal__drive_looped(L);
  return 1;
}

static int clk_stepping(lua_State *L) {
  lua_pushboolean(L, modal__ctx(L)->vstepping);
  return 1;
}

static int clk_installed(lua_State *L) {
  lua_pushboolean(L, modal__ctx(L)->vclock);
  return 1;
}

static int clk_now(lua_State *L) {
  lua_pushnumber(L, seconds(installed(L, "clock:now")->vnow));
  return 1;
}

/* Runs the due timers up to the target (argument 1, ns), in deadline order, ties in arming
** order; a timer armed meanwhile whose deadline falls inside the step runs in it too. Returns
** how many ran, and an error message when timers armed at one instant never stop coming. */
static int step_protected(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  uint64_t target = (uint64_t)lua_tointeger(L, 1), first = ctx->vnow, seq, instant = ctx->vnow;
  const char *fname = lua_tostring(L, 2);
  uint64_t mark = modal__timers_seq(L);
  lua_Integer ran = 0, same = 0;
  while (modal__timers_run_first(L, target, &seq)) {
    ran++;
    if (seq < mark || ctx->vnow != instant) {
      instant = ctx->vnow;
      same = 0;
    } else if (++same >= SAME_INSTANT_LIMIT) {
      lua_pushinteger(L, ran);
      lua_pushfstring(L, "%s: %d timers in a row were armed and ran at %f s (from %f s): a "
                         "timer that re-arms itself with delay 0 never lets time pass", fname,
                      SAME_INSTANT_LIMIT, seconds(ctx->vnow), seconds(first));
      return 2;
    }
    if (!ctx->vclock)                    /* closed from a timer (refused) or the state closing */
      break;
  }
  if (ctx->vclock && target > ctx->vnow)
    ctx->vnow = target;
  lua_pushinteger(L, ran);
  return 1;
}

/* Raises when called from a timer the clock is running (advance, next: even with nothing
** armed, so the mistake shows the first time). */
static void refuse_stepping(lua_State *L, modal_ctx *ctx, const char *fname) {
  if (ctx->vstepping)
    luaL_error(L, "%s: called from a timer the clock is running (the clock is already "
                  "advancing)", fname);
}

/* Moves the clock to `target` ns; returns how many timers ran. */
static lua_Integer step_to(lua_State *L, modal_ctx *ctx, uint64_t target, const char *fname) {
  int status, top = lua_gettop(L);
  lua_Integer ran;
  refuse_stepping(L, ctx, fname);
  ctx->vstepping = 1;
  lua_pushcfunction(L, step_protected);
  lua_pushinteger(L, (lua_Integer)target);
  lua_pushstring(L, fname);
  status = modal__call(L, 2, 2);
  ctx->vstepping = 0;
  modal__timers_reschedule(L);
  if (status != LUA_OK)
    lua_error(L);                        /* out of memory, or a C stack overflow: as it came */
  if (!lua_isnil(L, -1))
    lua_error(L);                        /* the message of a zero-delay loop */
  ran = lua_tointeger(L, -2);
  lua_settop(L, top);
  return ran;
}

/* modal._clock.advance(seconds) -> number of timers run */
static int clk_advance(lua_State *L) {
  modal_ctx *ctx = installed(L, "clock:advance");
  uint64_t by = check_step(L, 1, "clock:advance", ctx->vnow);
  lua_pushinteger(L, step_to(L, ctx, ctx->vnow + by, "clock:advance"));
  return 1;
}

/* modal._clock.next() -> the time reached (seconds) and the number of timers run, or nil when
** no timer is armed. */
static int clk_next(lua_State *L) {
  modal_ctx *ctx = installed(L, "clock:next");
  uint64_t first;
  lua_Integer ran;
  refuse_stepping(L, ctx, "clock:next");
  if (!modal__timers_pending(L, &first)) {
    lua_pushnil(L);
    return 1;
  }
  if (first >= MODAL_VTIME_END)          /* armed past the range: the clock cannot get there */
    return luaL_error(L, "clock:next: the next deadline is past the clock's range (~146 years; "
                         "it is at %f s): no timer armed can run on this clock",
                      seconds(ctx->vnow));
  ran = step_to(L, ctx, first > ctx->vnow ? first : ctx->vnow, "clock:next");
  lua_pushnumber(L, seconds(ctx->vnow));
  lua_pushinteger(L, ran);
  return 2;
}

/* modal._clock.pending() -> { deadline, ... } in seconds, in the order they will run */
static int clk_pending(lua_State *L) {
  installed(L, "clock:pending");
  modal__timers_push_deadlines(L);
  return 1;
}

/* modal._clock.mark() -> the arming number of the next timer; drop(mark) disarms every timer
** armed since (nothing fires). A walk leaves no timer of its instances behind this way. */
static int clk_mark(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)modal__timers_seq(L));
  return 1;
}

static int clk_drop(lua_State *L) {
  lua_Integer mark = luaL_checkinteger(L, 1);
  modal__timers_drop_from(L, mark < 0 ? 0 : (uint64_t)mark);
  return 0;
}

void modal__open_clock(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"install", clk_install},
    {"close", clk_close},
    {"restart", clk_restart},
    {"installed", clk_installed},
    {"park", clk_park},
    {"stepping", clk_stepping},
    {"drain_limit", clk_drain_limit},
    {"looped", clk_looped},
    {"unpark", clk_unpark},
    {"now", clk_now},
    {"advance", clk_advance},
    {"next", clk_next},
    {"pending", clk_pending},
    {"mark", clk_mark},
    {"drop", clk_drop},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "_clock");
}
