/*
** deferred.c — native Deferreds: links stored inline in the userdata's user values, one
** protected call per firing, pausing on returned Deferreds without recursion, cancellation,
** timeouts, and the report of failures nobody handled.
**
** Layout: user value 1 holds the current result (or, while paused, the inner Deferred);
** user values 2..4 hold the first three "entries" of the link list; more entries spill into a
** table kept in user value 4. An entry is a code (4 bits, in `codes` for inline entries) and a
** value: a callback, an errback, an extra argument, a canceller, or a continuation (an outer
** Deferred paused on this one). A link is one function entry followed by its argument entries.
*/
#include <string.h>
#include "core.h"

#define NUV       4        /* user values: the result + three inline entries */
#define NINLINE   3        /* inline entries while not spilled (2 once spilled) */

enum {                     /* entry codes */
  E_NONE,                  /* a link with no function (passes the result on) */
  E_CB,                    /* callback only */
  E_EB,                    /* errback only */
  E_BOTH,                  /* one function for both paths */
  E_PAIR,                  /* callback; the next entry is its errback */
  E_PAIR_EB,               /* errback of the preceding E_PAIR */
  E_ARG,                   /* an extra argument of the preceding link */
  E_CONT,                  /* continuation: the outer Deferred paused on this one */
  E_CANC                   /* the canceller (entry 0, never consumed as a link) */
};

enum {                     /* flags */
  DF_FIRED = 1 << 0,       /* callback or errback has been called */
  DF_FAILED = 1 << 1,      /* the current result is a failure */
  DF_RUNNING = 1 << 2,     /* its chain is being run */
  DF_PAUSED = 1 << 3,      /* waiting on an inner Deferred (user value 1) */
  DF_CANCELLED = 1 << 4,   /* cancel() found it pending: one late fire is ignored */
  DF_TIMEDOUT = 1 << 5,    /* add_timeout expired: cancel failures read "timeout" */
  DF_UNHANDLED = 1 << 6,   /* its chain ended on a failure that nobody took */
  DF_GCMT = 1 << 7,        /* carries the metatable with __gc */
  DF_SPILLED = 1 << 8,     /* entries from index 2 on live in the table in user value 4 */
  DF_HASCANC = 1 << 9,     /* entry 0 is the canceller */
  DF_TIMER = 1 << 10,      /* an add_timeout handle is armed (spill table, key 0) */
  DF_HANDLED = 1 << 11,    /* the current failure was passed on or observed: no report */
  DF_HANDOFF = 1 << 12     /* run_links returned an outer Deferred to run next */
};

typedef struct modal_deferred {
  uint16_t magic;          /* MAGIC: the cheap self check (see to_deferred) */
  uint16_t flags;
  uint16_t codes;          /* 4 bits per inline entry */
  uint16_t pad_;
  uint32_t aux;            /* free for the core: a postponed call's method and arguments */
  uint32_t head, tail;     /* entries [head, tail) are links still to run */
} modal_deferred;          /* 16 bytes: a Deferred is 120 bytes with its 4 user values */

/* Odd, so never the low bits of an aligned pointer (a luaL_Stream has the same size). */
#define MAGIC 0x4d31u

static const char mt_key = 'd';         /* registry: the Deferreds' metatable */
static const char gcmt_key = 'g';       /* registry: the same, with __gc */

#define FIRST(d)  (((d)->flags & DF_HASCANC) ? 1u : 0u)
#define SPILL_KEY(i, part)  ((lua_Integer)(2 * ((i) - 2) + (part)))

static void run_chain(lua_State *L, modal_deferred *d, int di, int vi);

/* ============================================================== type checks */

/* A Deferred is the only userdata of exactly this size starting with MAGIC: two API calls
** instead of four for a metatable comparison (W5 runs four self checks per operation). A
** light userdata has length 0; strings and tables make lua_touserdata return NULL. */
static modal_deferred *to_deferred(lua_State *L, int idx) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, idx);
  if (d && lua_rawlen(L, idx) == sizeof *d && d->magic == MAGIC)
    return d;
  return NULL;
}

int modal__is_deferred(lua_State *L, int idx) {
  return to_deferred(L, idx) != NULL;
}

static modal_deferred *check_self(lua_State *L) {
  modal_deferred *d = to_deferred(L, 1);
  if (!d)
    luaL_typeerror(L, 1, "modal.deferred");
  return d;
}

static void check_fn(lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TFUNCTION && (t == LUA_TNIL || luaL_getmetafield(L, idx, "__call") == LUA_TNIL))
    luaL_typeerror(L, idx, "function");
  if (t != LUA_TFUNCTION)
    lua_pop(L, 1);
}

/* ============================================================== entries */

static void push_spill(lua_State *L, int di) {
  lua_getiuservalue(L, di, NUV);
}

static int is_inline(const modal_deferred *d, uint32_t i) {
  return i < 2 || (i == 2 && !(d->flags & DF_SPILLED));
}

static int get_code(lua_State *L, int di, const modal_deferred *d, uint32_t i) {
  int c;
  if (is_inline(d, i))
    return (d->codes >> (4 * i)) & 15;
  push_spill(L, di);
  lua_rawgeti(L, -1, SPILL_KEY(i, 1));
  c = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  return c;
}

static void push_value(lua_State *L, int di, const modal_deferred *d, uint32_t i) {
  if (is_inline(d, i)) {
    lua_getiuservalue(L, di, (int)i + 2);
  } else {
    push_spill(L, di);
    lua_rawgeti(L, -1, SPILL_KEY(i, 2));
    lua_remove(L, -2);
  }
}

/* Sets entry i to (code, value at vi), or clears it when vi is 0. */
static void set_entry(lua_State *L, int di, modal_deferred *d, uint32_t i, int code, int vi) {
  if (is_inline(d, i)) {
    d->codes = (uint16_t)((d->codes & ~(15u << (4 * i))) | ((unsigned)code << (4 * i)));
    if (vi)
      lua_pushvalue(L, vi);
    else
      lua_pushnil(L);
    lua_setiuservalue(L, di, (int)i + 2);
  } else {
    push_spill(L, di);
    if (vi) {
      lua_pushinteger(L, code);
      lua_rawseti(L, -2, SPILL_KEY(i, 1));
      lua_pushvalue(L, vi);
    } else {
      lua_pushnil(L);
      lua_rawseti(L, -2, SPILL_KEY(i, 1));
      lua_pushnil(L);
    }
    lua_rawseti(L, -2, SPILL_KEY(i, 2));
    lua_pop(L, 1);
  }
}

/* Moves entry 2 into a new table in user value 4 (once). */
static void ensure_spill(lua_State *L, int di, modal_deferred *d) {
  int code;
  if (d->flags & DF_SPILLED)
    return;
  code = (d->codes >> 8) & 15;
  lua_createtable(L, 8, 2);
  if (d->tail > 2) {
    lua_pushinteger(L, code);
    lua_rawseti(L, -2, SPILL_KEY(2, 1));
    lua_getiuservalue(L, di, NUV);
    lua_rawseti(L, -2, SPILL_KEY(2, 2));
  }
  lua_setiuservalue(L, di, NUV);
  d->codes &= 0xFF;
  d->flags |= DF_SPILLED;
}

static void append(lua_State *L, int di, modal_deferred *d, int code, int vi) {
  if (d->tail >= NINLINE && !(d->flags & DF_SPILLED))
    ensure_spill(L, di, d);
  if (d->tail == UINT32_MAX)
    luaL_error(L, "modal: too many links on one Deferred");
  set_entry(L, di, d, d->tail, code, vi);
  d->tail++;
}

/* ============================================================== results */

static void set_result(lua_State *L, int di, modal_deferred *d, int vi) {
  lua_pushvalue(L, vi);
  lua_setiuservalue(L, di, 1);
  if (modal__is_failure(L, vi))
    d->flags |= DF_FAILED;
  else
    d->flags &= (uint16_t)~DF_FAILED;
}

/* Pushes the failure a cancel produces: the stored timeout failure after a timeout. */
static void push_cancel_failure(lua_State *L, int di, modal_deferred *d) {
  if ((d->flags & DF_TIMEDOUT) && (d->flags & DF_SPILLED)) {
    push_spill(L, di);
    lua_rawgeti(L, -1, -1);
    lua_remove(L, -2);
    if (modal__is_failure(L, -1))
      return;
    lua_pop(L, 1);
  }
  if (d->flags & DF_TIMEDOUT)
    modal__failure_new(L, "timeout", "Deferred timed out", 0, 0);
  else
    modal__failure_new(L, "cancelled", "Deferred was cancelled", 0, 0);
}

/* The chain is exhausted (not paused): stop its timeout, compact, and note a failure left
** unhandled, switching to the metatable with __gc only now (most Deferreds never need it). */
static void finish(lua_State *L, int di, modal_deferred *d) {
  d->head = d->tail = FIRST(d);
  d->codes &= (d->flags & DF_HASCANC) ? 15 : 0;
  if (d->flags & DF_TIMER) {
    push_spill(L, di);
    lua_rawgeti(L, -1, 0);
    if (lua_touserdata(L, -1))
      modal__timer_stop(L, &((modal_handle *)lua_touserdata(L, -1))->t);
    lua_pop(L, 2);
  }
  if (d->flags & DF_SPILLED) {
    lua_pushnil(L);
    lua_setiuservalue(L, di, NUV);
  }
  d->flags &= (uint16_t)~(DF_SPILLED | DF_TIMER | DF_TIMEDOUT);
  if ((d->flags & (DF_FAILED | DF_HANDLED)) == DF_FAILED) {
    d->flags |= DF_UNHANDLED;
    if (!(d->flags & DF_GCMT)) {
      d->flags |= DF_GCMT;
      lua_rawgetp(L, LUA_REGISTRYINDEX, &gcmt_key);
      lua_setmetatable(L, di);
    }
  } else {
    d->flags &= (uint16_t)~DF_UNHANDLED;
  }
}

int modal__take_result(lua_State *L, int di) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  int failed;
  if ((d->flags & (DF_FIRED | DF_PAUSED | DF_RUNNING)) != DF_FIRED)
    return 0;
  failed = (d->flags & DF_FAILED) != 0;
  lua_getiuservalue(L, di, 1);
  d->flags = (uint16_t)((d->flags | DF_HANDLED) & ~DF_UNHANDLED);
  return failed ? 2 : 1;
}

void modal__mark_handled(lua_State *L, int di) {
  modal_deferred *d = to_deferred(L, di);
  if (d)
    d->flags = (uint16_t)((d->flags | DF_HANDLED) & ~DF_UNHANDLED);
}

/* ============================================================== running the chain */

/* The result (index 2) is a Deferred r returned by a link of d (index 1): take r's outcome
** if it has one, else pause d on r. Returns 1 when d paused. */
static int chain_onto(lua_State *L, modal_deferred *d) {
  modal_deferred *r = (modal_deferred *)lua_touserdata(L, 2);
  if (r == d) {
    modal__failure_new(L, "error", "a callback returned the Deferred it is attached to", 0, 0);
    lua_replace(L, 2);
    d->flags |= DF_FAILED;
    return 0;
  }
  if (modal__take_result(L, 2)) {
    lua_replace(L, 2);
    if (modal__is_failure(L, 2))
      d->flags |= DF_FAILED;
    else
      d->flags &= (uint16_t)~DF_FAILED;
    return 0;
  }
  d->flags = (uint16_t)((d->flags | DF_PAUSED) & ~DF_FAILED);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 1);            /* while paused, d's result is the inner one */
  append(L, 2, r, E_CONT, 1);
  return 1;
}

/* A continuation: hands d's result (index 2) to the outer Deferred (index 3). */
static void hand_over(lua_State *L, modal_deferred *d) {
  modal_deferred *o = (modal_deferred *)lua_touserdata(L, 3);
  o->flags &= (uint16_t)~DF_PAUSED;
  if ((o->flags & DF_TIMEDOUT) && modal__failure_is_kind(L, 2, "cancelled")) {
    push_cancel_failure(L, 3, o);       /* the outer one timed out: its chain sees "timeout" */
    lua_replace(L, 2);
  }
  set_result(L, 3, o, 2);
  lua_pushvalue(L, 2);                   /* d keeps its outcome; the outer one owns it now */
  lua_setiuservalue(L, 1, 1);
  d->flags = (uint16_t)((d->flags | DF_HANDLED) & ~DF_UNHANDLED);
}

/* Runs d's links (d at index 1, its current result at index 2) until the list is empty, d
** pauses, or a continuation hands the result to an outer Deferred (returned). Runs under one
** pcall: an error raised by a link unwinds to run_chain, which makes it d's result and calls
** this again. The result stays at index 2; a link's function is slid below it and called. */
static int run_links(lua_State *L) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, 1);
  while (d->head < d->tail) {
    uint32_t i = d->head, j, fi;
    int code = get_code(L, 1, d, i), failed = (d->flags & DF_FAILED) != 0, nargs;
    if (code == E_CONT) {
      push_value(L, 1, d, i);            /* 3: the outer Deferred */
      set_entry(L, 1, d, i, E_NONE, 0);  /* the inner one must not keep the outer alive */
      d->head = i + 1;
      hand_over(L, d);
      d->flags |= DF_HANDOFF;
      return 1;
    }
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
    while (j + (uint32_t)nargs < d->tail && get_code(L, 1, d, j + (uint32_t)nargs) == E_ARG)
      nargs++;
    d->head = j + (uint32_t)nargs;
    if (fi == UINT32_MAX)
      continue;
    push_value(L, 1, d, fi);
    lua_insert(L, 2);                    /* fn, result */
    d->flags &= (uint16_t)~DF_HANDLED;   /* a new result: the link may mark it handled */
    if (nargs) {
      int k;
      luaL_checkstack(L, nargs, "too many arguments to a link");
      for (k = 0; k < nargs; k++)
        push_value(L, 1, d, j + (uint32_t)k);
    }
    lua_call(L, 1 + nargs, 1);           /* 2: the new result */
    switch (lua_type(L, 2)) {
      case LUA_TUSERDATA:
        if (modal__is_deferred(L, 2)) {
          if (chain_onto(L, d))
            return 0;
          break;
        }
        d->flags &= (uint16_t)~DF_FAILED;
        break;
      case LUA_TTABLE:
        if (modal__is_failure(L, 2))
          d->flags |= DF_FAILED;
        else
          d->flags &= (uint16_t)~DF_FAILED;
        break;
      default:
        d->flags &= (uint16_t)~DF_FAILED;
        break;
    }
  }
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* Runs the chain of the fired Deferred d at di (its result at vi, or in user value 1 when vi
** is 0), and of every outer Deferred it resumes, with an explicit stack of Deferreds on the
** Lua stack: no C recursion however deep the nesting. `d` always caches the top's pointer. */
static void run_chain(lua_State *L, modal_deferred *d, int di, int vi) {
  int base = lua_gettop(L), top = base + 1;
  if (base > LUA_MINSTACK - 8)           /* callers have used few of their LUA_MINSTACK slots */
    luaL_checkstack(L, 8, "modal: chain too deep");
  lua_pushvalue(L, di);
  d->flags |= DF_RUNNING;
  for (;;) {
    if (d->head >= d->tail) {
      if (vi) {                          /* never ran: the result is still only at vi */
        lua_pushvalue(L, vi);
        lua_setiuservalue(L, top, 1);
        vi = 0;
      }
      d->flags &= (uint16_t)~DF_RUNNING;
      finish(L, top, d);
      goto pop;
    }
    lua_pushcfunction(L, modal__msgh);
    lua_pushcfunction(L, run_links);
    lua_pushvalue(L, top);
    if (vi) {
      lua_pushvalue(L, vi);
      vi = 0;
    } else {
      lua_getiuservalue(L, top, 1);
    }
    if (lua_pcall(L, 2, 1, top + 1) != LUA_OK) {
      modal__to_failure(L, -1);          /* a link raised: that is d's result now */
      lua_setiuservalue(L, top, 1);
      d->flags |= DF_FAILED;
      lua_settop(L, top);
      continue;
    }
    if (d->flags & DF_PAUSED) {
      d->flags &= (uint16_t)~DF_RUNNING;
      goto pop;
    }
    if (!(d->flags & DF_HANDOFF)) {      /* the links ran out */
      d->flags &= (uint16_t)~DF_RUNNING;
      finish(L, top, d);
      goto pop;
    }
    d->flags &= (uint16_t)~DF_HANDOFF;
    /* handed over: run the outer one, then come back to d if it has links left */
    lua_replace(L, top + 1);
    if (d->head >= d->tail) {
      d->flags &= (uint16_t)~DF_RUNNING;
      finish(L, top, d);
      lua_remove(L, top);
    } else {
      top++;
      luaL_checkstack(L, 8, "modal: chain too deep");
    }
    d = (modal_deferred *)lua_touserdata(L, top);
    d->flags |= DF_RUNNING;
    continue;
  pop:
    lua_settop(L, --top);
    if (top == base)
      return;
    d = (modal_deferred *)lua_touserdata(L, top);
  }
}

int modal__fire(lua_State *L, int di, int vi, int failed) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  di = lua_absindex(L, di);
  vi = lua_absindex(L, vi);
  if (d->flags & DF_FIRED) {
    if (d->flags & DF_CANCELLED) {      /* the one late fire after a cancel */
      d->flags &= (uint16_t)~DF_CANCELLED;
      return 0;
    }
    return -1;
  }
  lua_pushvalue(L, vi);
  if (failed)
    modal__to_failure(L, -1);
  set_result(L, di, d, lua_gettop(L));
  lua_pop(L, 1);
  d->flags |= DF_FIRED;
  if (d->flags & DF_HASCANC) {           /* no longer needed: let it go */
    lua_pushnil(L);
    lua_setiuservalue(L, di, 2);
  }
  run_chain(L, d, di, 0);
  return 0;
}

void modal__add_link(lua_State *L, int di, int cb, int eb, int both, int nargs) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, di);
  int first = lua_gettop(L) - nargs + 1, i;
  di = lua_absindex(L, di);
  cb = cb ? lua_absindex(L, cb) : 0;
  eb = eb ? lua_absindex(L, eb) : 0;
  if (both)
    append(L, di, d, E_BOTH, cb);
  else if (cb && eb) {
    append(L, di, d, E_PAIR, cb);
    append(L, di, d, E_PAIR_EB, eb);
  } else if (cb)
    append(L, di, d, E_CB, cb);
  else if (eb)
    append(L, di, d, E_EB, eb);
  else
    append(L, di, d, E_NONE, 0);
  for (i = 0; i < nargs; i++)
    append(L, di, d, E_ARG, first + i);
  lua_pop(L, nargs);
  if ((d->flags & (DF_FIRED | DF_RUNNING | DF_PAUSED)) == DF_FIRED)
    run_chain(L, d, di, 0);
}

int modal__follow(lua_State *L, int di, int ri) {
  modal_deferred *d = to_deferred(L, di), *r = to_deferred(L, ri);
  int taken;
  di = lua_absindex(L, di);
  ri = lua_absindex(L, ri);
  if (!d || !r || (d->flags & DF_FIRED))
    return -1;
  if (r == d) {
    modal__failure_new(L, "error", "a Deferred cannot follow itself", 0, 0);
    modal__fire(L, di, -1, 1);
    lua_pop(L, 1);
    return 0;
  }
  if ((taken = modal__take_result(L, ri)) != 0) {
    modal__fire(L, di, -1, taken == 2);
    lua_pop(L, 1);
    return 0;
  }
  d->flags |= DF_FIRED | DF_PAUSED;      /* fired, but waiting on r: state() says pending */
  if (d->flags & DF_HASCANC) {
    lua_pushnil(L);
    lua_setiuservalue(L, di, 2);
  }
  lua_pushvalue(L, ri);
  lua_setiuservalue(L, di, 1);
  append(L, ri, r, E_CONT, di);
  return 0;
}

uint32_t *modal__deferred_aux(lua_State *L, int di) {
  modal_deferred *d = to_deferred(L, di);
  return d ? &d->aux : NULL;
}

int modal__is_cancelling(lua_State *L, int di) {
  modal_deferred *d = to_deferred(L, di);
  return d && (d->flags & (DF_CANCELLED | DF_FIRED)) == DF_CANCELLED;
}

int modal__is_pending(lua_State *L, int di) {
  modal_deferred *d = to_deferred(L, di);
  return d && !(d->flags & DF_FIRED);
}

void modal__cancel(lua_State *L, int di) {
  modal_deferred *d;
  int t;
  luaL_checkstack(L, 6, NULL);
  lua_pushvalue(L, di);
  d = (modal_deferred *)lua_touserdata(L, -1);
  while ((d->flags & (DF_FIRED | DF_PAUSED)) == (DF_FIRED | DF_PAUSED)) {
    lua_getiuservalue(L, -1, 1);         /* paused: the cancel goes inward */
    lua_remove(L, -2);
    d = (modal_deferred *)lua_touserdata(L, -1);
  }
  t = lua_gettop(L);
  if (!(d->flags & DF_FIRED)) {
    d->flags |= DF_CANCELLED;
    if (d->flags & DF_HASCANC) {
      lua_pushcfunction(L, modal__msgh);
      lua_getiuservalue(L, t, 2);
      lua_pushvalue(L, t);
      if (lua_pcall(L, 1, 0, t + 1) != LUA_OK) {
        modal__to_failure(L, -1);        /* a canceller that raised fails d with its error */
        if (!(d->flags & DF_FIRED))
          modal__fire(L, t, -1, 1);
        else
          modal__report_unhandled(L, -1);
      }
      lua_settop(L, t);
    }
    if (!(d->flags & DF_FIRED)) {
      push_cancel_failure(L, t, d);
      modal__fire(L, t, -1, 1);
    }
  }
  lua_settop(L, t - 1);
}

void modal__deferred_new(lua_State *L, int canceller) {
  modal_deferred *d;
  canceller = canceller ? lua_absindex(L, canceller) : 0;
  d = (modal_deferred *)lua_newuserdatauv(L, sizeof *d, NUV);
  memset(d, 0, sizeof *d);
  d->magic = MAGIC;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_key);
  lua_setmetatable(L, -2);
  if (canceller) {
    lua_pushvalue(L, canceller);
    lua_setiuservalue(L, -2, 2);
    d->codes = E_CANC;
    d->head = d->tail = 1;
    d->flags = DF_HASCANC;
  }
}

/* ============================================================== Lua methods */

/* modal.deferred([canceller]) -> a pending Deferred */
static int md_deferred(lua_State *L) {
  modal_deferred *d;
  if (!lua_isnoneornil(L, 1)) {
    check_fn(L, 1);
    lua_settop(L, 1);
    modal__deferred_new(L, 1);
    return 1;
  }
  d = (modal_deferred *)lua_newuserdatauv(L, sizeof *d, NUV);
  memset(d, 0, sizeof *d);
  d->magic = MAGIC;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setmetatable(L, -2);
  return 1;
}

static int fire_method(lua_State *L, int failed) {
  check_self(L);
  lua_settop(L, 2);
  if (modal__fire(L, 1, 2, failed) < 0)
    return luaL_error(L, "modal: Deferred already called");
  return 0;
}

/* d:callback(v) — the common case (pending, no canceller) runs the chain straight from the
** argument, without storing the result first. */
static int md_deferred_callback(lua_State *L) {
  modal_deferred *d = check_self(L);
  if ((d->flags & (DF_FIRED | DF_HASCANC)) || lua_gettop(L) != 2)
    return fire_method(L, 0);
  d->flags |= DF_FIRED;
  if (lua_type(L, 2) == LUA_TTABLE && modal__is_failure(L, 2))
    d->flags |= DF_FAILED;
  if (d->head >= d->tail && !(d->flags & (DF_FAILED | DF_TIMER))) {
    lua_setiuservalue(L, 1, 1);          /* nothing to run, nothing to stop */
    return 0;
  }
  run_chain(L, d, 1, 2);
  return 0;
}

static int md_deferred_errback(lua_State *L) {
  return fire_method(L, 1);
}

/* d:add_callback(cb, ...) — the common case (no extra arguments, room inline) is direct. */
/* add_callback(fn) on a fired Deferred with nothing left to run: the link runs here, under
** one pcall, without being stored (stack: 1 d, 2 fn). */
static void run_now(lua_State *L, modal_deferred *d) {
  int status;
  if (d->flags & DF_FAILED)
    return;                              /* a callback is skipped on the errback path */
  lua_pushcfunction(L, modal__msgh);     /* 3 */
  lua_pushvalue(L, 2);
  lua_getiuservalue(L, 1, 1);
  d->flags = (uint16_t)((d->flags | DF_RUNNING) & ~DF_HANDLED);
  status = lua_pcall(L, 1, 1, 3);        /* 4: the new result */
  d->flags &= (uint16_t)~DF_RUNNING;
  lua_replace(L, 2);
  lua_settop(L, 2);
  if (status != LUA_OK) {
    modal__to_failure(L, 2);
    d->flags |= DF_FAILED;
  } else if (lua_type(L, 2) == LUA_TUSERDATA && to_deferred(L, 2)) {
    if (chain_onto(L, d))
      return;                            /* paused on it */
  } else if (lua_type(L, 2) == LUA_TTABLE && modal__is_failure(L, 2)) {
    d->flags |= DF_FAILED;
  } else {
    d->flags &= (uint16_t)~DF_FAILED;
  }
  lua_setiuservalue(L, 1, 1);
  if (d->head < d->tail)                 /* the callback added links meanwhile */
    run_chain(L, d, 1, 0);
  else
    finish(L, 1, d);
}

static int md_deferred_add_callback(lua_State *L) {
  modal_deferred *d = check_self(L);
  if (d->tail < NINLINE && lua_gettop(L) == 2 && lua_type(L, 2) == LUA_TFUNCTION &&
      !(d->flags & DF_SPILLED)) {
    if ((d->flags & (DF_FIRED | DF_RUNNING | DF_PAUSED)) == DF_FIRED && d->head >= d->tail) {
      run_now(L, d);
    } else {
      d->codes = (uint16_t)((d->codes & ~(15u << (4 * d->tail))) | (E_CB << (4 * d->tail)));
      lua_setiuservalue(L, 1, (int)d->tail + 2);
      d->tail++;
    }
    lua_settop(L, 1);
    return 1;
  }
  check_fn(L, 2);
  modal__add_link(L, 1, 2, 0, 0, lua_gettop(L) - 2);
  lua_settop(L, 1);
  return 1;
}

static int md_deferred_add_errback(lua_State *L) {
  check_self(L);
  check_fn(L, 2);
  modal__add_link(L, 1, 0, 2, 0, lua_gettop(L) - 2);
  lua_settop(L, 1);
  return 1;
}

static int md_deferred_add_both(lua_State *L) {
  check_self(L);
  check_fn(L, 2);
  modal__add_link(L, 1, 2, 0, 1, lua_gettop(L) - 2);
  lua_settop(L, 1);
  return 1;
}

static int md_deferred_add_callbacks(lua_State *L) {
  int cb, eb;
  check_self(L);
  if (lua_gettop(L) < 3)
    lua_settop(L, 3);
  cb = !lua_isnil(L, 2);
  eb = !lua_isnil(L, 3);
  if (cb)
    check_fn(L, 2);
  if (eb)
    check_fn(L, 3);
  modal__add_link(L, 1, cb ? 2 : 0, eb ? 3 : 0, 0, lua_gettop(L) - 3);
  lua_settop(L, 1);
  return 1;
}

static int md_deferred_cancel(lua_State *L) {
  check_self(L);
  modal__cancel(L, 1);
  return 0;
}

/* The add_timeout handle's function: (d, seconds). */
static int timeout_fire(lua_State *L) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, 1);
  if (!(d->flags & DF_TIMER))
    return 0;
  d->flags &= (uint16_t)~DF_TIMER;
  if ((d->flags & (DF_FIRED | DF_PAUSED)) == DF_FIRED)
    return 0;
  d->flags |= DF_TIMEDOUT;
  push_spill(L, 1);                      /* keep the failure every link will see */
  lua_pushnil(L);
  lua_rawseti(L, -2, 0);
  lua_pushfstring(L, "timed out after %s seconds", luaL_tolstring(L, 2, NULL));
  modal__failure_new(L, "timeout", lua_tostring(L, -1), 0, 0);
  lua_rawseti(L, -4, -1);
  lua_settop(L, 2);
  modal__cancel(L, 1);
  return 0;
}

/* d:add_timeout(seconds) -> d */
static int md_deferred_add_timeout(lua_State *L) {
  modal_deferred *d = check_self(L);
  double s = luaL_checknumber(L, 2);
  modal_handle *h;
  luaL_argcheck(L, s >= 0, 2, "timeout must be >= 0");
  lua_settop(L, 2);
  if ((d->flags & (DF_FIRED | DF_PAUSED)) == DF_FIRED)
    return 1;
  if (d->flags & DF_TIMER) {             /* twice: the first to expire wins */
    push_spill(L, 1);
    lua_rawgeti(L, -1, 0);
    h = (modal_handle *)lua_touserdata(L, -1);
    if ((double)(uv_now(modal__ctx(L)->loop)) + s * 1000.0 < (double)h->t.due) {
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, -2, 3);
      modal__timer_start(L, &h->t, -1, s);
    }
    lua_settop(L, 1);
    return 1;
  }
  ensure_spill(L, 1, d);
  lua_pushcfunction(L, timeout_fire);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  h = modal__handle_new(L, 2);
  modal__timer_start(L, &h->t, -1, s);
  push_spill(L, 1);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, 0);
  d->flags |= DF_TIMER;
  lua_settop(L, 1);
  return 1;
}

static const char *state_name(const modal_deferred *d) {
  if (!(d->flags & DF_FIRED) || (d->flags & DF_PAUSED))
    return "pending";
  return (d->flags & DF_FAILED) ? "failed" : "succeeded";
}

static int md_deferred_state(lua_State *L) {
  lua_pushstring(L, state_name(check_self(L)));
  return 1;
}

static int md_deferred_tostring(lua_State *L) {
  modal_deferred *d = check_self(L);
  lua_pushfstring(L, "modal.deferred (%s): %p", state_name(d), (void *)d);
  return 1;
}

/* Only Deferreds whose chain ended on a failure carry this finalizer. */
static int md_deferred_gc(lua_State *L) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, 1);
  if ((d->flags & (DF_UNHANDLED | DF_FAILED)) == (DF_UNHANDLED | DF_FAILED)) {
    d->flags &= (uint16_t)~DF_UNHANDLED;
    lua_getiuservalue(L, 1, 1);
    modal__report_unhandled(L, -1);
  }
  return 0;
}

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
  d = (modal_deferred *)lua_newuserdatauv(L, sizeof *d, NUV);
  memset(d, 0, sizeof *d);
  d->magic = MAGIC;
  d->flags = DF_FIRED;
  if (mt)
    lua_pushvalue(L, mt);
  else
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_key);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, vi);
  lua_setiuservalue(L, -2, 1);
}

void modal__push_deferred_mt(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_key);
}

/* modal.succeed(v) */
static int md_succeed(lua_State *L) {
  lua_settop(L, 1);
  modal__deferred_fired_mt(L, 1, 0, lua_upvalueindex(1));
  return 1;
}

/* modal.fail(e) or modal.fail(kind, message) */
static int md_fail(lua_State *L) {
  if (lua_gettop(L) >= 2 && lua_type(L, 1) == LUA_TSTRING && lua_type(L, 2) == LUA_TSTRING) {
    modal__failure_new(L, lua_tostring(L, 1), lua_tostring(L, 2), 0, 0);
    lua_replace(L, 1);
  }
  lua_settop(L, 1);
  modal__deferred_new(L, 0);
  modal__fire(L, 2, 1, 1);
  return 1;
}

/* ============================================================== C API */

void modal_new_deferred(lua_State *L) {
  modal__deferred_new(L, 0);
}

int modal_is_deferred(lua_State *L, int idx) {
  return modal__is_deferred(L, idx);
}

static int c_fire(lua_State *L, int idx, int failed) {
  int r;
  idx = lua_absindex(L, idx);
  if (!modal__is_deferred(L, idx)) {
    lua_pop(L, 1);
    return -1;
  }
  r = modal__fire(L, idx, -1, failed);
  lua_pop(L, 1);
  return r;
}

int modal_callback(lua_State *L, int idx) {
  return c_fire(L, idx, 0);
}

int modal_errback(lua_State *L, int idx) {
  return c_fire(L, idx, 1);
}

void modal__open_deferred(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"callback", md_deferred_callback},
    {"errback", md_deferred_errback},
    {"add_callback", md_deferred_add_callback},
    {"add_errback", md_deferred_add_errback},
    {"add_both", md_deferred_add_both},
    {"add_callbacks", md_deferred_add_callbacks},
    {"cancel", md_deferred_cancel},
    {"add_timeout", md_deferred_add_timeout},
    {"state", md_deferred_state},
    {"__tostring", md_deferred_tostring},
    {NULL, NULL}
  };
  int mod = lua_gettop(L), mt, gcmt;
  lua_createtable(L, 0, 4);
  mt = lua_gettop(L);
  lua_createtable(L, 0, 5);
  gcmt = lua_gettop(L);
  lua_createtable(L, 0, 10);             /* the methods, shared by both metatables */
  lua_pushvalue(L, mt);
  lua_pushvalue(L, gcmt);
  luaL_setfuncs(L, methods, 2);
  lua_getfield(L, -1, "__tostring");
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__tostring");
  lua_setfield(L, gcmt, "__tostring");
  lua_pushnil(L);
  lua_setfield(L, -2, "__tostring");
  lua_pushvalue(L, -1);
  lua_setfield(L, mt, "__index");
  lua_setfield(L, gcmt, "__index");
  lua_pushliteral(L, "modal.deferred");
  lua_setfield(L, mt, "__name");
  lua_pushliteral(L, "modal.deferred");
  lua_setfield(L, gcmt, "__name");
  lua_pushcfunction(L, md_deferred_gc);
  lua_setfield(L, gcmt, "__gc");
  lua_pushvalue(L, mt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mt_key);
  lua_pushvalue(L, gcmt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &gcmt_key);
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, md_deferred, 1);
  lua_setfield(L, mod, "deferred");
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, md_succeed, 1);
  lua_setfield(L, mod, "succeed");
  lua_pushcfunction(L, md_fail);
  lua_setfield(L, mod, "fail");
  lua_settop(L, mod);
}
