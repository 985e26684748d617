/*
** deferred_chain.c — running Deferreds: firing, the chain of links (one protected call per
** run of links, no C recursion however deep the nesting), pausing on a returned Deferred,
** following one, handing an outcome over, and the waits of modal.async calls.
**
** Hand-over rule (doc/deferreds.md): an outcome has one owner. A Deferred whose outcome goes
** on to another one's chain — returned by a link, followed — is left holding nil (state
** "succeeded"), as in Twisted, so a failure is reported at most once. modal.await only
** observes: the awaited Deferred keeps its outcome, counted as handled, so any number of
** coroutines may await it (as with promises and asyncio futures).
*/
#include "deferred.h"

/* ============================================================== handing over */

/* Pushes r's current result and leaves r (at ri, absolute) holding nil: the outcome is the
** caller's now. Returns 1, or 2 for a failure. */
static int take_over(lua_State *L, int ri, modal_deferred *r) {
  int failed = (r->flags & DF_FAILED) != 0;
  lua_getiuservalue(L, ri, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, ri, 1);
  CLEAR(r, DF_FAILED);
  return failed ? 2 : 1;
}

/* 1 when the value at oi is a Deferred waiting on the one at ii. A continuation whose outer
** Deferred no longer waits here (fired from outside, or its wait broken by a cancel that went
** round a cycle) is stale and skipped. */
static int waits_on(lua_State *L, int oi, int ii) {
  modal_deferred *o = modal__dget(L, oi);
  int r;
  if (!o || !(o->flags & DF_PAUSED))
    return 0;
  lua_getiuservalue(L, oi, 1);
  r = lua_rawequal(L, -1, ii);
  lua_pop(L, 1);
  return r;
}

/* The paused Deferred o (at oi) gets the value at vi: a fired one takes it as its result, an
** async call's coroutine is resumed with it. Returns 1 when o now holds a result whose chain
** is to run, 0 when its coroutine waits again (or o was fired from outside meanwhile). */
static int unpause(lua_State *L, int oi, int vi) {
  modal_deferred *o = (modal_deferred *)lua_touserdata(L, oi);
  int base = lua_gettop(L), top;
  luaL_checkstack(L, 8, "modal: no room to hand an outcome over");
  CLEAR(o, DF_PAUSED);
  if ((o->flags & DF_SPILLED) && modal__failure_is_kind(L, vi, "cancelled") &&
      modal__dtimeout_failure(L, oi, o)) /* the outer one timed out: it sees "timeout" */
    vi = lua_gettop(L);
  if (o->flags & DF_FIRED) {
    modal__dset_result(L, oi, o, vi);
    lua_settop(L, base);
    return 1;
  }
  lua_pushnil(L);                        /* an async call: no longer waiting */
  lua_setiuservalue(L, oi, 1);
  top = lua_gettop(L);
  lua_pushcfunction(L, modal__msgh);     /* top + 1 */
  lua_getiuservalue(L, oi, 2);           /* the resumer: (value) -> nothing, or the outcome */
  lua_pushvalue(L, vi);
  if (lua_pcall(L, 1, LUA_MULTRET, top + 1) != LUA_OK) {
    modal__to_failure(L, -1);            /* it could not run (no C stack left): o fails */
  } else if (lua_gettop(L) == top + 1) {
    lua_settop(L, base);                 /* the coroutine waits again */
    return 0;
  }
  lua_settop(L, top + 2);                /* top + 2: the coroutine's outcome */
  if (o->flags & DF_FIRED) {             /* fired from outside while its coroutine ran */
    if (modal__is_failure(L, top + 2))
      modal__report_unhandled(L, top + 2);
    lua_settop(L, base);
    return 0;
  }
  o->flags |= DF_FIRED;
  lua_pushnil(L);                        /* the resumer: no longer needed */
  lua_setiuservalue(L, oi, 2);
  modal__dset_result(L, oi, o, top + 2);
  lua_settop(L, base);
  return 1;
}

/* Pushes d's current result for an async call awaiting it: d keeps it, counted as handled
** (its failure went to the coroutine), so every coroutine awaiting d gets it. */
static int observe(lua_State *L, int di, modal_deferred *d) {
  lua_getiuservalue(L, di, 1);
  d->flags |= DF_HANDLED;
  return (d->flags & DF_FAILED) ? 2 : 1;
}

/* The entry at d's head is a continuation: d (at di) hands its outcome to the outer Deferred
** and is left holding nil (an awaiting async call only observes it). Returns 1 with the outer
** one pushed when its chain is to run. */
static int hand_over(lua_State *L, int di, modal_deferred *d) {
  int oi;
  modal__dpush(L, di, d, d->head);       /* the outer one */
  modal__dset(L, di, d, d->head, E_NONE, 0);   /* the inner one must not keep it alive */
  d->head++;
  oi = lua_gettop(L);
  if (!waits_on(L, oi, di)) {
    lua_pop(L, 1);
    return 0;
  }
  if (((modal_deferred *)lua_touserdata(L, oi))->flags & DF_FIRED)
    take_over(L, di, d);                 /* oi + 1 */
  else
    observe(L, di, d);
  if (!unpause(L, oi, oi + 1)) {
    lua_settop(L, oi - 1);
    return 0;
  }
  lua_settop(L, oi);
  return 1;
}

/* ============================================================== running the chain */

/* The result (index 2) is a Deferred r returned by a link of d (index 1): take r's outcome
** if it is final, else pause d on r. Returns 1 when d paused. */
static int chain_onto(lua_State *L, modal_deferred *d) {
  modal_deferred *r = (modal_deferred *)lua_touserdata(L, 2);
  if (r == d) {
    modal__failure_new(L, "error", "a callback returned the Deferred it is attached to", 0, 0);
    lua_replace(L, 2);
    d->flags |= DF_FAILED;
    return 0;
  }
  if (!IS_FINAL(r))
    modal__dreserve(L, 2, r, 1);         /* may run a finalizer: look at r again */
  if (IS_FINAL(r)) {
    int failed = take_over(L, 2, r) == 2;
    lua_replace(L, 2);
    if (failed)
      d->flags |= DF_FAILED;
    else
      CLEAR(d, DF_FAILED);
    return 0;
  }
  modal__dappend(L, 2, r, E_CONT, 1);    /* first: should it raise, d is not left paused */
  d->flags = (uint8_t)((d->flags | DF_PAUSED) & ~DF_FAILED);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 1);            /* while paused, d's result is the inner one */
  return 1;
}

/* Sets DF_FAILED from a link's result at index 2 (pausing on a returned Deferred). Returns 1
** when d paused. */
static int took(lua_State *L, modal_deferred *d) {
  switch (lua_type(L, 2)) {
    case LUA_TUSERDATA:
      if (modal__dget(L, 2))
        return chain_onto(L, d);
      break;
    case LUA_TTABLE:
      if (modal__is_failure(L, 2)) {
        d->flags |= DF_FAILED;
        return 0;
      }
      break;
    default:
      break;
  }
  CLEAR(d, DF_FAILED);
  return 0;
}

/* Runs d's links (d at index 1, its current result at index 2) until the list is empty, d
** pauses, or the next entry is a continuation (modal__drun hands over). Runs under one pcall:
** an error raised by a link unwinds to modal__drun, which makes it d's result and calls this
** again. The result stays at index 2; a link's function is slid below it and called.
** NOLINTNEXTLINE(readability-function-cognitive-complexity): one loop, no C recursion */
static int run_links(lua_State *L) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, 1);
  while (d->head < d->tail) {
    uint32_t i = d->head, j, fi;
    int code = modal__dcode(L, 1, d, i), failed = (d->flags & DF_FAILED) != 0, nargs;
    if (code == E_CONT)
      break;
    switch (code) {                      /* the entry of the function to run, if any */
      case E_CB:   fi = failed ? UINT32_MAX : i; break;
      case E_EB:   fi = failed ? i : UINT32_MAX; break;
      case E_BOTH: fi = i; break;
      case E_PAIR: fi = failed ? i + 1 : i; break;
      default:     fi = UINT32_MAX; break;
    }
    /* Consumed entries are not cleared one by one: finish() resets the list, and later
    ** links overwrite the slots (a fired Deferred keeps its old callbacks until then). */
    j = code == E_PAIR ? i + 2 : i + 1;
    nargs = 0;
    while (j + (uint32_t)nargs < d->tail && modal__dcode(L, 1, d, j + (uint32_t)nargs) == E_ARG)
      nargs++;
    d->head = j + (uint32_t)nargs;
    if (fi == UINT32_MAX)
      continue;
    modal__dpush(L, 1, d, fi);
    lua_insert(L, 2);                    /* fn, result */
    CLEAR(d, DF_HANDLED);   /* a new result: the link may mark it handled */
    if (nargs) {
      int k;
      luaL_checkstack(L, nargs, "too many arguments to a link");
      for (k = 0; k < nargs; k++)
        modal__dpush(L, 1, d, j + (uint32_t)k);
    }
    lua_call(L, 1 + nargs, 1);           /* 2: the new result */
    switch (lua_type(L, 2)) {            /* (took(), spelled out: this loop is the hot path) */
      case LUA_TUSERDATA:
        if (modal__dget(L, 2)) {
          if (chain_onto(L, d))
            return 0;
          break;
        }
        CLEAR(d, DF_FAILED);
        break;
      case LUA_TTABLE:
        if (modal__is_failure(L, 2))
          d->flags |= DF_FAILED;
        else
          CLEAR(d, DF_FAILED);
        break;
      default:
        CLEAR(d, DF_FAILED);
        break;
    }
  }
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* Consumes the link at d's head as if its function had raised: it could not even be called. */
static void skip_link(lua_State *L, int di, modal_deferred *d) {
  uint32_t j = d->head + (modal__dcode(L, di, d, d->head) == E_PAIR ? 2u : 1u);
  while (j < d->tail && modal__dcode(L, di, d, j) == E_ARG)
    j++;
  d->head = j;
}

/* The chain is exhausted (not paused): stop its timeouts, compact, and note a failure left
** unhandled, switching to the metatable with __gc only now (most Deferreds never need it). */
static void finish(lua_State *L, int di, modal_deferred *d) {
  if (d->flags & DF_SPILLED)
    modal__dstop_timers(L, di, d);
  modal__dreset(L, di, d);               /* (the timeout's failure goes with the spill) */
  if ((d->flags & (DF_FAILED | DF_HANDLED)) == DF_FAILED)
    modal__dset_gcmt(L, di);             /* reported if collected so */
}

/* The Lua stack is full (a million slots): the Deferreds on the explicit stack stop running,
** each left fired with its links not run (a link added later runs them), and the caller gets
** a clear error rather than a Deferred stuck "running". */
static void too_deep(lua_State *L, int base, int top) {
  int i;
  for (i = base + 1; i <= top; i++)
    CLEAR(((modal_deferred *)lua_touserdata(L, i)), DF_RUNNING);
  luaL_error(L, "modal: Deferreds nested too deep to run their chains (the Lua stack is full)");
}

/* An explicit stack of Deferreds on the Lua stack, [base + 1, top], instead of C recursion:
** a hand-over pushes the outer Deferred (or replaces the inner one when it has nothing left to
** run) and runs it first; the inner one goes on when it is back on top. `d` caches the top.
** NOLINTNEXTLINE(readability-function-cognitive-complexity): the recursion it replaces */
void modal__drun(lua_State *L, int di, int vi) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  int base, top;
  if (di < 0)
    di = lua_absindex(L, di);
  if (vi < 0)
    vi = lua_absindex(L, vi);
  base = lua_gettop(L);
  if (base > LUA_MINSTACK - 8)           /* callers have used few of their LUA_MINSTACK slots */
    luaL_checkstack(L, 8, "modal: no room to run a Deferred's chain");
  top = base + 1;
  lua_pushvalue(L, di);
  d->flags |= DF_RUNNING;
  for (;;) {
    if (d->head < d->tail && modal__dcode(L, top, d, d->head) != E_CONT) {
      uint32_t h0 = d->head;
      lua_pushcfunction(L, modal__msgh);
      lua_pushcfunction(L, run_links);
      lua_pushvalue(L, top);
      if (vi) {
        lua_pushvalue(L, vi);
        vi = 0;
      } else {
        lua_getiuservalue(L, top, 1);
      }
      if (lua_pcall(L, 2, 0, top + 1) != LUA_OK) {
        /* cppcheck-suppress knownConditionTrueFalse ; run_links moves d->head under lua_pcall */
        if (d->head == h0)               /* no progress: run_links was never entered */
          skip_link(L, top, d);
        modal__to_failure(L, -1);        /* a link raised: that is d's result now */
        lua_setiuservalue(L, top, 1);
        d->flags = (uint8_t)((d->flags | DF_FAILED) & ~(DF_PAUSED | DF_HANDLED));
        lua_settop(L, top);
        continue;
      }
      lua_settop(L, top);
      if (!(d->flags & DF_PAUSED))
        continue;                        /* at a continuation, or the links ran out */
      CLEAR(d, DF_RUNNING); /* paused: the inner one will hand over */
    } else {
      if (vi) {                          /* never ran: the result is still only at vi */
        lua_pushvalue(L, vi);
        lua_setiuservalue(L, top, 1);
        vi = 0;
      }
      if (d->head < d->tail) {           /* a continuation */
        if (hand_over(L, top, d)) {      /* top + 1: the outer one, to run first */
          if (d->head >= d->tail) {
            CLEAR(d, DF_RUNNING);
            finish(L, top, d);
            lua_replace(L, top);
          } else if (!lua_checkstack(L, 8)) {
            too_deep(L, base, top + 1);
          } else {
            top++;
          }
          d = (modal_deferred *)lua_touserdata(L, top);
          d->flags |= DF_RUNNING;
        }
        continue;
      }
      CLEAR(d, DF_RUNNING);
      finish(L, top, d);
    }
    lua_settop(L, --top);
    if (top == base)
      return;
    d = (modal_deferred *)lua_touserdata(L, top);
  }
}

void modal__dresume(lua_State *L, int oi, int vi) {
  oi = lua_absindex(L, oi);
  vi = lua_absindex(L, vi);
  if (unpause(L, oi, vi))
    modal__drun(L, oi, 0);
}

/* add_callback(fn) on a final Deferred with nothing left to run: the link runs here, under
** one pcall, without being stored (stack: 1 d, 2 fn). */
void modal__drun_now(lua_State *L, modal_deferred *d) {
  int status;
  if (d->flags & DF_FAILED)
    return;                              /* a callback is skipped on the errback path */
  lua_pushcfunction(L, modal__msgh);     /* 3 */
  lua_pushvalue(L, 2);
  lua_getiuservalue(L, 1, 1);
  d->flags = (uint8_t)((d->flags | DF_RUNNING) & ~DF_HANDLED);
  status = lua_pcall(L, 1, 1, 3);        /* 4: the new result */
  CLEAR(d, DF_RUNNING);
  lua_replace(L, 2);
  lua_settop(L, 2);
  if (status != LUA_OK) {
    modal__to_failure(L, 2);
    d->flags |= DF_FAILED;
  } else if (took(L, d)) {
    return;                              /* paused on it */
  }
  lua_setiuservalue(L, 1, 1);
  if (d->head < d->tail)                 /* the callback added links meanwhile */
    modal__drun(L, 1, 0);
  else
    finish(L, 1, d);
}

/* ============================================================== firing, following */

int modal__fire(lua_State *L, int di, int vi, int failed) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  int top;
  di = lua_absindex(L, di);
  vi = lua_absindex(L, vi);
  top = lua_gettop(L);
  if (failed && !modal__is_failure(L, vi)) {   /* allocate first: a finalizer may fire d */
    lua_pushvalue(L, vi);
    modal__to_failure(L, -1);
    vi = lua_gettop(L);
  }
  if (d->flags & DF_FIRED) {
    lua_settop(L, top);
    if (d->flags & DF_CANCELLED) {       /* the one late fire after a cancel */
      CLEAR(d, DF_CANCELLED);
      return 0;
    }
    return -1;
  }
  if (d->aux && (d->flags & DF_ENTRY0) && (d->codes & 15) == E_CANC) {
    modal_ctx *ctx = modal__ctx(L);     /* a kept Deferred (a postponed call, a when() */
    if (ctx && ctx->kept_fired) {        /* waiter) fired by whoever holds it */
      lua_getiuservalue(L, di, 2);
      ctx->kept_fired(L, di, lua_gettop(L));
      lua_settop(L, top);
    }
  }
  /* An async call fired from outside stops waiting: its coroutine's outcome goes nowhere. */
  d->flags = (uint8_t)((d->flags | DF_FIRED) & ~DF_PAUSED);
  if (d->flags & DF_ENTRY0) {            /* the canceller or resumer: no longer needed */
    lua_pushnil(L);
    lua_setiuservalue(L, di, 2);
  }
  modal__dset_result(L, di, d, vi);
  lua_settop(L, top);
  modal__drun(L, di, 0);
  return 0;
}

void modal__add_both_arg(lua_State *L, int di, int fi) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  di = lua_absindex(L, di);
  fi = lua_absindex(L, fi);
  if (d->tail + 1 < NINLINE && !(d->flags & DF_SPILLED) && !IS_FINAL(d)) {
    d->codes = (uint16_t)((d->codes & ~(0xffu << (4 * d->tail))) |
                          ((unsigned)E_BOTH << (4 * d->tail)) |
                          ((unsigned)E_ARG << (4 * (d->tail + 1))));
    lua_setiuservalue(L, di, (int)d->tail + 3);    /* the argument, then the function */
    lua_pushvalue(L, fi);
    lua_setiuservalue(L, di, (int)d->tail + 2);
    d->tail += 2;
    return;
  }
  modal__add_link(L, di, fi, 0, 1, 1);
}

void modal__add_link(lua_State *L, int di, int cb, int eb, int both, int nargs) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  int first = lua_gettop(L) - nargs + 1, i;
  di = lua_absindex(L, di);
  cb = cb ? lua_absindex(L, cb) : 0;
  eb = eb ? lua_absindex(L, eb) : 0;
  modal__dreserve(L, di, d, (uint32_t)((cb && eb && !both) ? 2 : 1) + (uint32_t)nargs);
  if (both)
    modal__dappend(L, di, d, E_BOTH, cb);
  else if (cb && eb) {
    modal__dappend(L, di, d, E_PAIR, cb);
    modal__dappend(L, di, d, E_PAIR_EB, eb);
  } else if (cb)
    modal__dappend(L, di, d, E_CB, cb);
  else if (eb)
    modal__dappend(L, di, d, E_EB, eb);
  else
    modal__dappend(L, di, d, E_NONE, 0);
  for (i = 0; i < nargs; i++)
    modal__dappend(L, di, d, E_ARG, first + i);
  lua_pop(L, nargs);
  if (IS_FINAL(d))
    modal__drun(L, di, 0);
}

int modal__follow(lua_State *L, int di, int ri) {
  modal_deferred *d = modal__dget(L, di), *r = modal__dget(L, ri);
  di = lua_absindex(L, di);
  ri = lua_absindex(L, ri);
  if (!d || !r || (d->flags & (DF_FIRED | DF_PAUSED)))
    return -1;
  if (r == d) {
    modal__failure_new(L, "error", "a Deferred cannot follow itself", 0, 0);
    modal__fire(L, di, -1, 1);
    lua_pop(L, 1);
    return 0;
  }
  if (!IS_FINAL(r))
    modal__dreserve(L, ri, r, 1);        /* may run a finalizer: look at both again */
  if (d->flags & (DF_FIRED | DF_PAUSED))
    return -1;
  if (IS_FINAL(r)) {
    int failed = take_over(L, ri, r) == 2;
    modal__fire(L, di, -1, failed);
    lua_pop(L, 1);
    return 0;
  }
  modal__dappend(L, ri, r, E_CONT, di);  /* first: should it raise, d is not left paused */
  d->flags |= DF_FIRED | DF_PAUSED;      /* fired, but waiting on r: state() says pending */
  if (d->flags & DF_ENTRY0) {
    lua_pushnil(L);
    lua_setiuservalue(L, di, 2);
  }
  lua_pushvalue(L, ri);
  lua_setiuservalue(L, di, 1);
  return 0;
}

/* ============================================================== modal.async's waits */

void modal__deferred_new_async(lua_State *L, int resumer) {
  modal_deferred *d;
  modal__deferred_new(L, resumer);
  d = (modal_deferred *)lua_touserdata(L, -1);
  d->codes = E_RESUME;                   /* IS_ASYNC */
}

int modal__await(lua_State *L, int oi, int wi, int may_wait) {
  modal_deferred *o = modal__dget(L, oi), *w = modal__dget(L, wi);
  oi = lua_absindex(L, oi);
  wi = lua_absindex(L, wi);
  if (w == o) {
    modal__failure_new(L, "error", "a modal.async function awaited its own Deferred", 0, 0);
    return 2;
  }
  if (may_wait && !IS_FINAL(w))
    modal__dreserve(L, wi, w, 1);        /* may run a finalizer: look at both again */
  if (!o || !IS_ASYNC(o) || (o->flags & (DF_FIRED | DF_PAUSED))) {
    modal__failure_new(L, "error", "modal.await: the Deferred of this modal.async call has "
                                   "already fired", 0, 0);
    return 2;
  }
  if (IS_FINAL(w))
    return observe(L, wi, w);
  if (!may_wait)
    return -1;
  modal__dappend(L, wi, w, E_CONT, oi);  /* first: should it raise, o is not left waiting */
  o->flags |= DF_PAUSED;
  lua_pushvalue(L, wi);
  lua_setiuservalue(L, oi, 1);
  return 0;
}

void modal__unwait(lua_State *L, int oi) {
  modal_deferred *o = modal__dget(L, oi);
  oi = lua_absindex(L, oi);
  if (o && IS_ASYNC(o) && (o->flags & (DF_FIRED | DF_PAUSED)) == DF_PAUSED) {
    CLEAR(o, DF_PAUSED);                 /* the continuation left on the awaited one is stale */
    lua_pushnil(L);
    lua_setiuservalue(L, oi, 1);
  }
}

/* ============================================================== fired Deferreds */

void modal__deferred_fired(lua_State *L, int vi, int failed) {
  modal__deferred_fired_mt(L, vi, failed, 0);
}

void modal__deferred_fired_mt(lua_State *L, int vi, int failed, int mt) {
  modal_deferred *d;
  vi = lua_absindex(L, vi);
  if (failed || lua_type(L, vi) == LUA_TTABLE || lua_type(L, vi) == LUA_TUSERDATA) {
    modal__deferred_new(L, 0);           /* failures, and values that might be: the full path */
    modal__fire(L, -1, vi, failed);
    return;
  }
  d = modal__dnew(L, mt);
  d->flags = DF_FIRED;
  lua_pushvalue(L, vi);
  lua_setiuservalue(L, -2, 1);
}
