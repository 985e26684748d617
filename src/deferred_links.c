/*
** deferred_links.c — the Deferreds' storage: making one, its link entries (inline, then in
** the spill table), its current result, its timeout records, its two metatables.
**
** Every function here that allocates may run a finalizer, which is Lua code that may use this
** very Deferred: each allocates first and reads the Deferred's fields after (doc/deferreds.md).
*/
#include "deferred.h"

static const char mt_key = 'd';         /* registry: the Deferreds' metatable */
static const char gcmt_key = 'g';       /* registry: the same, with __gc */

void modal__dset_metatables(lua_State *L, int mt, int gcmt) {
  mt = lua_absindex(L, mt);
  gcmt = lua_absindex(L, gcmt);
  lua_pushvalue(L, mt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mt_key);
  lua_pushvalue(L, gcmt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &gcmt_key);
}

void modal__dset_gcmt(lua_State *L, int di) {
  di = lua_absindex(L, di);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &gcmt_key);
  lua_setmetatable(L, di);
}

void modal__push_deferred_mt(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &mt_key);
}

/* ============================================================== entries */

void modal__dset(lua_State *L, int di, modal_deferred *d, uint32_t i, int code, int vi) {
  if (di < 0)
    di = lua_absindex(L, di);
  if (vi < 0)
    vi = lua_absindex(L, vi);
  if (modal__dinline(d, i)) {
    d->codes = (uint16_t)((d->codes & ~(15u << (4 * i))) | ((unsigned)code << (4 * i)));
    if (vi)
      lua_pushvalue(L, vi);
    else
      lua_pushnil(L);
    lua_setiuservalue(L, di, (int)i + 2);
    return;
  }
  lua_getiuservalue(L, di, NUV);           /* raw sets into an existing table: no GC step */
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

void modal__dspill(lua_State *L, int di, modal_deferred *d) {
  int code;
  di = lua_absindex(L, di);
  if (d->flags & DF_SPILLED)
    return;
  lua_createtable(L, 8, 2);              /* may run a finalizer: read d after this */
  if (d->flags & DF_SPILLED) {
    lua_pop(L, 1);
    return;
  }
  code = (d->codes >> 8) & 15;
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

void modal__dreserve(lua_State *L, int di, modal_deferred *d, uint32_t n) {
  di = lua_absindex(L, di);
  if (d->tail > UINT32_MAX - n)
    luaL_error(L, "modal: too many links on one Deferred");
  while (!(d->flags & DF_SPILLED) && d->tail + n > NINLINE)
    modal__dspill(L, di, d);
}

void modal__dappend(lua_State *L, int di, modal_deferred *d, int code, int vi) {
  modal__dset(L, di, d, d->tail, code, vi);
  d->tail++;
}

/* ============================================================== results */

void modal__dset_result(lua_State *L, int di, modal_deferred *d, int vi) {
  int failed;
  di = lua_absindex(L, di);
  failed = modal__is_failure(L, vi);
  lua_pushvalue(L, vi);
  lua_setiuservalue(L, di, 1);
  if (failed)
    d->flags |= DF_FAILED;
  else
    CLEAR(d, DF_FAILED);
  CLEAR(d, DF_HANDLED);                  /* a new outcome: nobody has observed it yet */
}

int modal__dtimeout_failure(lua_State *L, int di, modal_deferred *d) {
  if (!(d->flags & DF_SPILLED))
    return 0;
  lua_getiuservalue(L, di, NUV);
  lua_rawgeti(L, -1, SPILL_TIMEOUT);
  lua_remove(L, -2);
  if (modal__is_failure(L, -1))
    return 1;
  lua_pop(L, 1);
  return 0;
}

void modal__dcancel_failure(lua_State *L, int di, modal_deferred *d) {
  if (!modal__dtimeout_failure(L, di, d))
    modal__failure_new(L, "cancelled", "Deferred was cancelled", 0, 0);
}

/* ============================================================== timeout records */

void modal__dstop_timers(lua_State *L, int di, modal_deferred *d) {
  int closed;
  if (!(d->flags & DF_SPILLED))
    return;
  di = lua_absindex(L, di);
  closed = modal__ctx(L)->closed;        /* its heap is gone: nothing is armed any more */
  lua_getiuservalue(L, di, NUV);
  if (lua_rawgeti(L, -1, SPILL_TIMER) == LUA_TNIL) {
    lua_pop(L, 2);
    return;
  }
  while (lua_type(L, -1) == LUA_TUSERDATA) {
    if (!closed)
      modal__timer_stop(L, &((modal_dtimeout *)lua_touserdata(L, -1))->t);
    lua_getiuservalue(L, -1, 2);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawseti(L, -2, SPILL_TIMER);
  lua_pop(L, 1);
}

/* ============================================================== the core's accessors */

int modal__is_deferred(lua_State *L, int idx) {
  return modal__dget(L, idx) != NULL;
}

uint32_t *modal__deferred_aux(lua_State *L, int di) {
  modal_deferred *d = modal__dget(L, di);
  return d ? &d->aux : NULL;
}

int modal__is_cancelling(lua_State *L, int di) {
  modal_deferred *d = modal__dget(L, di);
  return d && (d->flags & (DF_CANCELLED | DF_FIRED)) == DF_CANCELLED;
}

int modal__is_pending(lua_State *L, int di) {
  modal_deferred *d = modal__dget(L, di);
  return d && !(d->flags & DF_FIRED);
}

void modal__deferred_new(lua_State *L, int canceller) {
  modal_deferred *d;
  canceller = canceller ? lua_absindex(L, canceller) : 0;
  d = modal__dnew(L, 0);
  if (canceller) {
    lua_pushvalue(L, canceller);
    lua_setiuservalue(L, -2, 2);
    d->codes = E_CANC;
    d->head = d->tail = 1;
    d->flags = DF_ENTRY0;
  }
}

void modal__mark_handled(lua_State *L, int di) {
  modal_deferred *d = modal__dget(L, di);
  if (d)
    d->flags |= DF_HANDLED;
}
