/*
** deferred_cancel.c — cancelling Deferreds (inward through pauses and awaits, ending on
** cycles) and d:add_timeout on the low-level timers of timer.c (doc/deferreds.md).
*/
#include "deferred.h"

/* ============================================================== cancel */

/* Cancels the pending Deferred e at ei: its canceller runs; if that did not fire e, e fails
** with kind "cancelled" (or "timeout"). A canceller that raised is reported as an unhandled
** failure, as an error in any callback modal runs is; the cancel goes on all the same. */
static void cancel_pending(lua_State *L, int ei, modal_deferred *e) {
  int top = lua_gettop(L);
  e->flags |= DF_CANCELLED;
  if (e->flags & DF_ENTRY0) {
    lua_pushcfunction(L, modal__msgh);
    lua_getiuservalue(L, ei, 2);
    lua_pushvalue(L, ei);
    if (lua_pcall(L, 1, 0, top + 1) != LUA_OK) {
      modal__to_failure(L, -1);
      modal__report_unhandled(L, -1);
    }
    lua_settop(L, top);
  }
  if (!(e->flags & DF_FIRED)) {
    modal__dcancel_failure(L, ei, e);    /* may run a finalizer: look at e again */
    if (!(e->flags & DF_FIRED))
      modal__fire(L, ei, -1, 1);
    lua_settop(L, top);
  }
}

/* Replaces the Deferred at idx with the one it waits on; returns that one, or NULL (and
** leaves idx alone) when it waits on nothing. */
static modal_deferred *inward(lua_State *L, int idx) {
  modal_deferred *n;
  if (!(((modal_deferred *)lua_touserdata(L, idx))->flags & DF_PAUSED))
    return NULL;
  lua_getiuservalue(L, idx, 1);
  if ((n = modal__dget(L, -1)) == NULL) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_replace(L, idx);
  return n;
}

/* Pushes the Deferred where a cancel of the one at di ends: following the waits (a paused
** chain, an awaiting coroutine) inward to the one everything waits on. Waits can form a cycle
** (a waits on b, b on a: nothing can ever fire them); then it is the last one before the walk
** comes back round, and 1 is returned. Brent's cycle finding: O(length), no marks, no
** allocation, no Lua code run. */
static int push_innermost(lua_State *L, int di) {
  int t = lua_gettop(L) + 1, h = t + 1;
  modal_deferred *tp, *hp;
  unsigned long power = 1, lam = 1, i;
  lua_pushvalue(L, di);                  /* t: the tortoise */
  lua_pushvalue(L, di);                  /* h: the hare */
  tp = (modal_deferred *)lua_touserdata(L, t);
  if ((hp = inward(L, h)) == NULL) {
    lua_settop(L, t);
    return 0;                            /* it waits on nothing: the cancel ends here */
  }
  while (hp != tp) {
    if (power == lam) {
      lua_pushvalue(L, h);
      lua_replace(L, t);
      tp = hp;
      power *= 2;
      lam = 0;
    }
    if ((hp = inward(L, h)) == NULL) {
      lua_replace(L, t);                 /* the hare waits on nothing: the innermost */
      return 0;
    }
    lam++;
  }
  /* A cycle of length lam: the hare goes lam ahead, then both step until they meet at the
  ** cycle's first Deferred; the one lam - 1 after it comes just before it round the cycle. */
  lua_pushvalue(L, di);
  lua_replace(L, t);
  lua_pushvalue(L, di);
  lua_replace(L, h);
  for (i = 0; i < lam; i++)
    inward(L, h);
  while (lua_touserdata(L, t) != lua_touserdata(L, h)) {
    inward(L, t);
    inward(L, h);
  }
  for (i = 1; i < lam; i++)
    inward(L, t);
  lua_settop(L, t);
  return 1;
}

/* A cancel goes inward to the Deferred everything waits on. There a pending one is cancelled;
** one that has fired (its chain running or done), an async call whose coroutine is running,
** or one whose canceller is running is left alone. On a cycle, the last Deferred before the
** walk comes back round is treated as the innermost: it gets the cancel failure, which goes
** outward by the usual hand-overs (doc/deferreds.md). */
void modal__cancel(lua_State *L, int di) {
  modal_deferred *e;
  int base, cycle;
  luaL_checkstack(L, 8, NULL);
  di = lua_absindex(L, di);
  base = lua_gettop(L);
  cycle = push_innermost(L, di);         /* base + 1 */
  e = (modal_deferred *)lua_touserdata(L, base + 1);
  if (cycle) {
    modal__dcancel_failure(L, base + 1, e);
    if (e->flags & DF_PAUSED)            /* (a finalizer may have changed it meanwhile) */
      modal__dresume(L, base + 1, base + 2);
  } else if (!(e->flags & (DF_FIRED | DF_CANCELLED)) && !IS_ASYNC(e)) {
    cancel_pending(L, base + 1, e);
  }
  lua_settop(L, base);
}

/* ============================================================== add_timeout */

/* A timeout record expired (it is at ri): its Deferred, still pending or paused, is cancelled
** with the timeout's failure. This calls no Lua directly (the canceller and the chains run
** protected inside modal__cancel), so it works even with no C stack left for a protected call
** around it: there the Deferred fails with kind "error" rather than never. */
static void expire(lua_State *L, int ri) {
  modal_dtimeout *rec = (modal_dtimeout *)lua_touserdata(L, ri);
  modal_deferred *d;
  int top = lua_gettop(L);
  lua_getiuservalue(L, ri, 1);           /* top + 1: the Deferred */
  lua_pushfstring(L, "timed out after %f seconds", (lua_Number)rec->seconds);
  modal__failure_new(L, "timeout", lua_tostring(L, -1), 0, 0);   /* top + 3 */
  d = modal__dget(L, top + 1);           /* (read after allocating: a finalizer may fire d) */
  if (d && (d->flags & DF_SPILLED) && (d->flags & (DF_FIRED | DF_PAUSED)) != DF_FIRED) {
    lua_getiuservalue(L, top + 1, NUV);  /* top + 4 */
    if (lua_rawgeti(L, top + 4, SPILL_TIMER) != LUA_TNIL) {   /* else: stopped meanwhile */
      modal__dstop_timers(L, top + 1, d);   /* the first to expire wins */
      lua_pushvalue(L, top + 3);
      lua_rawseti(L, top + 4, SPILL_TIMEOUT);   /* the failure every link of d will see */
      modal__cancel(L, top + 1);
    }
  }
  lua_settop(L, top);
}

/* The timer's function: the record is on top. */
static void timeout_fire(lua_State *L, modal_timer *t) {
  (void)t;
  expire(L, lua_gettop(L));
}

void modal__dadd_timeout(lua_State *L, int di, double seconds) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  modal_dtimeout *rec;
  int ri;
  di = lua_absindex(L, di);
  if ((d->flags & (DF_FIRED | DF_PAUSED)) == DF_FIRED)
    return;                              /* fired: nothing to time out */
  rec = (modal_dtimeout *)lua_newuserdatauv(L, sizeof *rec, 2);
  ri = lua_gettop(L);
  modal__timer_init(&rec->t, timeout_fire);
  rec->seconds = seconds;
  lua_pushvalue(L, di);
  lua_setiuservalue(L, ri, 1);
  modal__dspill(L, di, d);               /* the records live in the spill */
  if ((d->flags & (DF_FIRED | DF_PAUSED)) == DF_FIRED || !(d->flags & DF_SPILLED)) {
    lua_settop(L, ri - 1);               /* a finalizer fired it meanwhile */
    return;
  }
  lua_getiuservalue(L, di, NUV);
  lua_rawgeti(L, -1, SPILL_TIMER);       /* the records before this one */
  lua_setiuservalue(L, ri, 2);
  lua_pushvalue(L, ri);
  lua_rawseti(L, -2, SPILL_TIMER);
  modal__timer_start(L, &rec->t, ri, seconds);
  lua_settop(L, ri - 1);
}
