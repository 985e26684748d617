/*
** relay.c — the hot path of modal.breaker's `closed` state in C (doc/policies.md, "Breaker";
** W8 in bench/README.md): a call passed on to the target instance, and the link that counts
** its outcome. Each is built over the Lua function that does the same in every case
** (breaker.lua's closed handler and outcome link); the C path takes only the common case and
** hands everything else to Lua.
**
** What the C path reads of a breaker instance's record (breaker.lua keeps these slots in step
** with its named fields): r[1] the options (P) it works with, r[2] the target's bound
** methods (false when the target is a plain object, not an instance), r[3] the target, r[4]
** what the outcome link carries for the current period — a tally for a count window, else the
** period's table.
**
** A tally counts the successes of a clean count window (no failure, no slow call in it: a
** success then only adds to the window's count, up to its size) without calling Lua;
** breaker.lua takes the count (modal._relay_take) before it reads or changes the window.
*/
#include <stdint.h>
#include "core.h"

/* The handler's upvalues: the records (instance -> record), the options the record must carry,
** the method's name, the Lua handler (every other case), the outcome link. */
enum { UP_RECORDS = 1, UP_P, UP_NAME, UP_FALLBACK, UP_OUTCOME };
enum { R_P = 1, R_FNS, R_TARGET, R_LINK };

#define TALLY_MAGIC 0x7a11u

typedef struct relay_tally {
  uint32_t magic;
  int clean;                             /* successes are counted here, not in Lua */
  lua_Integer k;                         /* successes not yet taken by breaker.lua */
} relay_tally;

static relay_tally *to_tally(lua_State *L, int idx) {
  relay_tally *t = (relay_tally *)lua_touserdata(L, idx);
  if (t && lua_rawlen(L, idx) == sizeof *t && t->magic == TALLY_MAGIC)
    return t;
  return NULL;
}

/* The fast path: with the instance at `ai` and its nargs arguments after it, and the
** handler's upvalues at records..outcome on the stack. Pushes the target's Deferred with the
** outcome link added and returns 1, or pushes nothing and returns 0 (the Lua handler's case:
** no record yet or one made for other options, a plain target, a method not bound yet). The
** target's method is called unprotected, as the Lua handler does: an instance's method answers
** with a Deferred, never a raise. The caller made room for TRY_SLOTS + nargs values. */
#define TRY_SLOTS 8

static int try_fast(lua_State *L, int records, int P, int name, int outcome, int ai, int nargs) {
  int top = lua_gettop(L), r = top + 1, link = top + 2, i;
  lua_pushvalue(L, ai);
  if (lua_rawget(L, records) != LUA_TTABLE)
    goto no;
  lua_rawgeti(L, r, R_P);
  if (!lua_rawequal(L, -1, P))
    goto no;
  lua_pop(L, 1);
  lua_rawgeti(L, r, R_LINK);             /* link: the call belongs to this period */
  lua_pushvalue(L, outcome);             /* link + 1 */
  if (lua_rawgeti(L, r, R_FNS) != LUA_TTABLE)
    goto no;                             /* not bound yet, or a plain target (false) */
  lua_pushvalue(L, name);
  if (lua_rawget(L, -2) == LUA_TNIL)
    goto no;
  lua_remove(L, -2);                     /* fn, target, args... */
  lua_rawgeti(L, r, R_TARGET);
  for (i = 1; i <= nargs; i++)
    lua_pushvalue(L, ai + i);
  lua_call(L, nargs + 1, 1);             /* link + 2: the answer */
  if (modal__is_deferred(L, -1)) {
    lua_pushvalue(L, link);
    modal__add_both_arg(L, link + 2, link + 1);
  }
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return 1;
no:
  lua_settop(L, top);
  return 0;
}

int modal__relay_try(lua_State *L, int fi, int ai, int nargs) {
  int top = lua_gettop(L), done;
  fi = lua_absindex(L, fi);
  ai = lua_absindex(L, ai);
  if (!lua_checkstack(L, 4 + TRY_SLOTS + nargs))   /* the upvalues, then try_fast's */
    return 0;
  lua_getupvalue(L, fi, UP_RECORDS);
  lua_getupvalue(L, fi, UP_P);
  lua_getupvalue(L, fi, UP_NAME);
  lua_getupvalue(L, fi, UP_OUTCOME);
  done = try_fast(L, top + 1, top + 2, top + 3, top + 4, ai, nargs);
  if (done)
    lua_replace(L, top + 1);
  lua_settop(L, top + done);
  return done;
}

/* handler(m, ...) -> the target's Deferred (with the outcome link), as the Lua handler. */
int modal__relay_closed(lua_State *L) {
  int n = lua_gettop(L);
  if (n >= 1 && lua_checkstack(L, TRY_SLOTS + n) && try_fast(L, lua_upvalueindex(UP_RECORDS), lua_upvalueindex(UP_P),
                         lua_upvalueindex(UP_NAME), lua_upvalueindex(UP_OUTCOME), 1, n - 1))
    return 1;
  lua_pushvalue(L, lua_upvalueindex(UP_FALLBACK));
  lua_insert(L, 1);
  lua_call(L, n, 1);
  return 1;
}

/* link(v, a) -> v. `a` a tally: a success while the window is clean is counted in it; every
** other outcome goes to the Lua link (upvalue 1) with the period's table. */
static int relay_outcome(lua_State *L) {
  relay_tally *t = to_tally(L, 2);
  if (t) {
    if (t->clean && !modal__is_failure(L, 1)) {
      t->k++;
      lua_settop(L, 1);
      return 1;
    }
    lua_getiuservalue(L, 2, 1);
    lua_replace(L, 2);
  }
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* modal._relay_outcome(lua_link) -> the outcome link over it */
static int md_relay_outcome(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_pushcclosure(L, relay_outcome, 1);
  return 1;
}

/* modal._relay_closed(records, P, name, lua_handler, outcome) -> the closed state's handler */
static int md_relay_closed(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checktype(L, 3, LUA_TSTRING);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  lua_settop(L, 5);
  lua_pushcclosure(L, modal__relay_closed, 5);
  return 1;
}

/* modal._relay_tally(w, clean) -> a tally for the count window w */
static int md_relay_tally(lua_State *L) {
  relay_tally *t;
  luaL_checktype(L, 1, LUA_TTABLE);
  t = (relay_tally *)lua_newuserdatauv(L, sizeof *t, 1);
  t->magic = TALLY_MAGIC;
  t->clean = lua_toboolean(L, 2);
  t->k = 0;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static relay_tally *check_tally(lua_State *L) {
  relay_tally *t = to_tally(L, 1);
  if (!t)
    luaL_typeerror(L, 1, "modal tally");
  return t;
}

/* modal._relay_clean(t, clean): whether the tally counts successes from now on */
static int md_relay_clean(lua_State *L) {
  check_tally(L)->clean = lua_toboolean(L, 2);
  return 0;
}

/* modal._relay_take(t) -> the successes counted since the last take */
static int md_relay_take(lua_State *L) {
  relay_tally *t = check_tally(L);
  lua_pushinteger(L, t->k);
  t->k = 0;
  return 1;
}

void modal__open_relay(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"_relay_closed", md_relay_closed},
    {"_relay_outcome", md_relay_outcome},
    {"_relay_tally", md_relay_tally},
    {"_relay_clean", md_relay_clean},
    {"_relay_take", md_relay_take},
    {NULL, NULL}
  };
  luaL_setfuncs(L, fns, 0);
}
