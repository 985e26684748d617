/*
** deferred.h — the Deferreds' layout, shared by their files only: the userdata header, its
** flags, the codes of link entries, the timeout record, and the inline readers of the link
** list (deferred_links.c holds the rest of the storage; see doc/deferreds.md).
**
** A Deferred is a full userdata of NUV user values. User value 1 holds the current result;
** while the Deferred is paused it holds the Deferred it waits on instead, and while it is
** pending nothing of the Deferreds' (the core may keep its own value there). User values 2..4
** hold the first three entries of the link list; once more are needed, user value 4 holds a
** table (the "spill") with the entries from index 2 on, the timeout records and the timeout's
** failure. An entry is a code (4 bits, in `codes` while inline) and a value: a link's function,
** an extra argument, the canceller, an async call's resumer, or a continuation (an outer
** Deferred waiting on this one). A link is one function entry followed by its arguments.
**
** Files, each calling only the ones before it: deferred_links.c (storage) <- deferred_chain.c
** (fire, the chain, pause/follow/hand over, await) <- deferred_cancel.c (cancel, add_timeout)
** <- deferred.c (the Lua methods and the C API of modal.h).
*/
#ifndef MODAL_DEFERRED_H
#define MODAL_DEFERRED_H

#include <string.h>
#include "core.h"

#define NUV       4        /* user values: the result + three inline entries */
#define NINLINE   3        /* inline entries while not spilled (2 once spilled) */
#define DMAGIC    0xA7u    /* odd, so never the low byte of an aligned pointer */

enum {                     /* entry codes */
  E_NONE,                  /* a link with no function (passes the result on), or consumed */
  E_CB,                    /* callback only */
  E_EB,                    /* errback only */
  E_BOTH,                  /* one function for both paths */
  E_PAIR,                  /* callback; the next entry is its errback */
  E_PAIR_EB,               /* errback of the preceding E_PAIR */
  E_ARG,                   /* an extra argument of the preceding link */
  E_CONT,                  /* continuation: the outer Deferred waiting on this one */
  E_CANC,                  /* entry 0: the canceller (never run as a link) */
  E_RESUME                 /* entry 0: an async call's resumer (never run as a link) */
};

/* Flags. What is rarer is not stored, to keep the header at 16 bytes (a Deferred is then a
** 120-byte block; at 20 bytes malloc rounds it up to a 144-byte chunk, which W5 feels):
** - an async call's Deferred: DF_ENTRY0 and entry 0's code is E_RESUME (IS_ASYNC);
** - add_timeout records armed: the spill's key SPILL_TIMER is set;
** - timed out: the spill's key SPILL_TIMEOUT holds the timeout's failure;
** - unhandled: DF_FAILED without DF_HANDLED once the chain has ended (the __gc report);
** - the metatable with __gc: given when a chain ends unhandled, and kept. */
enum {
  DF_FIRED = 1 << 0,       /* callback or errback has been called (or it follows another) */
  DF_FAILED = 1 << 1,      /* the current result is a failure */
  DF_RUNNING = 1 << 2,     /* its chain is being run */
  DF_PAUSED = 1 << 3,      /* waits on the Deferred in user value 1: fired, its chain does;
                           ** not fired, its async call's coroutine does (modal__await) */
  DF_CANCELLED = 1 << 4,   /* cancel() found it pending: one late fire is ignored */
  DF_SPILLED = 1 << 5,     /* entries from index 2 on live in the spill (user value 4) */
  DF_ENTRY0 = 1 << 6,      /* entry 0 is the canceller or the resumer */
  DF_HANDLED = 1 << 7      /* the current failure was passed on or observed: no report */
};

typedef struct modal_deferred {
  uint8_t magic;           /* DMAGIC: the cheap self check (modal__dget) */
  uint8_t flags;
  uint16_t codes;          /* 4 bits per inline entry; the top 4 bits stay 0 */
  uint32_t aux;            /* free for the core: modal__deferred_aux */
  uint32_t head, tail;     /* entries [head, tail) are links still to run */
} modal_deferred;          /* 16 bytes: a Deferred is 120 bytes with its 4 user values */

/* A timeout of add_timeout, in a userdata of its own; user value 1 is its Deferred, 2 the
** record added before it (the spill's key SPILL_TIMER holds the newest). */
typedef struct modal_dtimeout {
  modal_timer t;
  double seconds;
} modal_dtimeout;

#define FIRST(d)  (((d)->flags & DF_ENTRY0) ? 1u : 0u)
#define SPILL_KEY(i, part)  ((lua_Integer)(2 * ((i) - 2) + (part)))
#define SPILL_TIMER     0  /* spill key: the newest timeout record */
#define SPILL_TIMEOUT (-1) /* spill key: the failure a timeout's cancel produces */
#define CLEAR(d, f)  ((d)->flags = (uint8_t)((d)->flags & ~(unsigned)(f)))

#define IS_ASYNC(d)  (((d)->flags & DF_ENTRY0) && ((d)->codes & 15) == E_RESUME)
/* Fired, not paused, not running: its current result is final (until a link is added). */
#define IS_FINAL(d)  (((d)->flags & (DF_FIRED | DF_PAUSED | DF_RUNNING)) == DF_FIRED)

/* A Deferred is the only userdata of exactly this size starting with DMAGIC (and whose other
** fields are in their ranges): two API calls instead of four for a metatable comparison (W5
** runs four self checks per operation). A luaL_Stream, also 16 bytes, starts with a pointer.
** A light userdata has length 0; strings and tables make lua_touserdata return NULL. */
static inline modal_deferred *modal__dget(lua_State *L, int idx) {
  modal_deferred *d = (modal_deferred *)lua_touserdata(L, idx);
  if (d && lua_rawlen(L, idx) == sizeof *d && d->magic == DMAGIC && d->codes < 0x1000 &&
      d->head <= d->tail)
    return d;
  return NULL;
}

static inline int modal__dinline(const modal_deferred *d, uint32_t i) {
  return i < 2 || (i == 2 && !(d->flags & DF_SPILLED));
}

/* The code of entry i of the Deferred d at index di. */
static inline int modal__dcode(lua_State *L, int di, const modal_deferred *d, uint32_t i) {
  int c;
  if (modal__dinline(d, i))
    return (d->codes >> (4 * i)) & 15;
  lua_getiuservalue(L, di, NUV);
  lua_rawgeti(L, -1, SPILL_KEY(i, 1));
  c = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  return c;
}

/* Pushes the value of entry i. */
static inline void modal__dpush(lua_State *L, int di, const modal_deferred *d, uint32_t i) {
  if (modal__dinline(d, i)) {
    lua_getiuservalue(L, di, (int)i + 2);
  } else {
    lua_getiuservalue(L, di, NUV);
    lua_rawgeti(L, -1, SPILL_KEY(i, 2));
    lua_remove(L, -2);
  }
}

/* Empties the link list (entry 0 stays) and drops the spill. */
static inline void modal__dreset(lua_State *L, int di, modal_deferred *d) {
  d->head = d->tail = FIRST(d);
  d->codes &= (d->flags & DF_ENTRY0) ? 15 : 0;
  if (d->flags & DF_SPILLED) {
    lua_pushnil(L);
    lua_setiuservalue(L, di, NUV);
    CLEAR(d, DF_SPILLED);
  }
}

/* Pushes a new pending Deferred with the metatable at `mt` (an absolute or pseudo-index; 0:
** the plain one from the registry). */
static inline modal_deferred *modal__dnew(lua_State *L, int mt) {
  modal_deferred *d = (modal_deferred *)lua_newuserdatauv(L, sizeof *d, NUV);
  memset(d, 0, sizeof *d);
  d->magic = DMAGIC;
  if (mt)
    lua_pushvalue(L, mt);
  else
    modal__push_deferred_mt(L);
  lua_setmetatable(L, -2);
  return d;
}

/* ---------------------------------------------------------------- deferred_links.c */
/* Sets entry i to (code, value at vi), or clears it when vi is 0. */
MODAL__FUNC void modal__dset(lua_State *L, int di, modal_deferred *d, uint32_t i, int code,
                             int vi);
/* Moves the entries from index 2 on into a new spill table (once). */
MODAL__FUNC void modal__dspill(lua_State *L, int di, modal_deferred *d);
/* Makes room for `n` more entries: appending them then allocates nothing that can run a
** finalizer (a finalizer is Lua code: it may add links to this very Deferred). */
MODAL__FUNC void modal__dreserve(lua_State *L, int di, modal_deferred *d, uint32_t n);
/* Appends an entry; call modal__dreserve first. */
MODAL__FUNC void modal__dappend(lua_State *L, int di, modal_deferred *d, int code, int vi);
/* Sets the current result to the value at vi; DF_FAILED follows it, DF_HANDLED is cleared. */
MODAL__FUNC void modal__dset_result(lua_State *L, int di, modal_deferred *d, int vi);
/* Pushes the failure a cancel of d produces: the stored timeout failure after a timeout. */
MODAL__FUNC void modal__dcancel_failure(lua_State *L, int di, modal_deferred *d);
/* After a timeout of d, pushes the timeout's failure and returns 1; else 0. */
MODAL__FUNC int modal__dtimeout_failure(lua_State *L, int di, modal_deferred *d);
/* Stops and forgets every timeout record of d. */
MODAL__FUNC void modal__dstop_timers(lua_State *L, int di, modal_deferred *d);
/* Registers the plain metatable and the one with __gc (at mt and gcmt). */
MODAL__FUNC void modal__dset_metatables(lua_State *L, int mt, int gcmt);
/* Gives d the metatable with __gc (the report of a failure left unhandled). */
MODAL__FUNC void modal__dset_gcmt(lua_State *L, int di);

/* ---------------------------------------------------------------- deferred_chain.c */

/* Runs the chain of the fired Deferred at di (its result at vi, or in user value 1 when vi is
** 0), and of every outer Deferred its outcome is handed to, without C recursion. */
MODAL__FUNC void modal__drun(lua_State *L, int di, int vi);
/* Hands the value at vi to the Deferred at oi, which is paused (a continuation, or a cancel
** that came back round a cycle), and runs what that lets run. */
MODAL__FUNC void modal__dresume(lua_State *L, int oi, int vi);
/* add_callback(fn) on a final Deferred with nothing left to run (1: d, 2: fn). */
MODAL__FUNC void modal__drun_now(lua_State *L, modal_deferred *d);

/* ---------------------------------------------------------------- deferred_cancel.c */

/* d:add_timeout(seconds) on the Deferred at di. */
MODAL__FUNC void modal__dadd_timeout(lua_State *L, int di, double seconds);

#endif
