/*
** combine.c — modal.all, modal.settled and modal.race: one Deferred from a list of them.
**
** Each input gets one link (add_both) that reports to a shared state userdata; the output's
** canceller cancels the inputs still pending. Inputs that are not Deferreds count as values
** that have already succeeded.
*/
#include "core.h"

enum { ALL, SETTLED, RACE };

typedef struct combine {
  int mode;
  int remaining;           /* inputs not yet fired */
  int done;                /* the output has fired */
} combine;

/* User values of the state: 1 the output Deferred, 2 the results table, 3 the inputs. */

static void cancel_inputs(lua_State *L, int st, int except) {
  lua_Integer i, n;
  lua_getiuservalue(L, st, 3);
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    if (i == except)
      continue;
    lua_rawgeti(L, -1, i);
    if (modal__is_deferred(L, -1))
      modal__cancel(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* The link on every input: (result, state, index, input). The input keeps its outcome; a
** failure counts as handled (it went to the output, or lost the race). */
static int collect(lua_State *L) {
  combine *c = (combine *)lua_touserdata(L, 2);
  lua_Integer i = lua_tointeger(L, 3);
  int failed = modal__is_failure(L, 1);
  lua_settop(L, 4);
  if (failed)
    modal__mark_handled(L, 4);
  lua_settop(L, 3);
  if (c->done) {
    lua_settop(L, 1);
    return 1;
  }
  c->remaining--;
  lua_getiuservalue(L, 2, 1);            /* 4: output */
  lua_getiuservalue(L, 2, 2);            /* 5: results */
  switch (c->mode) {
    case ALL:
      if (failed) {
        c->done = 1;
        modal__fire(L, 4, 1, 1);
        lua_settop(L, 1);
        return 1;
      }
      lua_pushvalue(L, 1);
      lua_rawseti(L, 5, i);
      break;
    case SETTLED:
      lua_createtable(L, 0, 2);
      lua_pushboolean(L, !failed);
      lua_setfield(L, -2, "ok");
      lua_pushvalue(L, 1);
      lua_setfield(L, -2, failed ? "failure" : "value");
      lua_rawseti(L, 5, i);
      break;
    default:                             /* RACE: the first outcome, bare */
      c->done = 1;
      modal__fire(L, 4, 1, failed);
      cancel_inputs(L, 2, i);
      lua_settop(L, 1);
      return 1;
  }
  if (c->remaining == 0) {
    c->done = 1;
    modal__fire(L, 4, 5, 0);
  }
  lua_settop(L, 1);
  return 1;
}

/* The output's canceller: cancels every input still pending. */
static int cancel_all(lua_State *L) {
  cancel_inputs(L, lua_upvalueindex(1), 0);
  return 0;
}

static int combine_list(lua_State *L, int mode, const char *fname) {
  lua_Integer i, n;
  combine *c;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  n = (lua_Integer)luaL_len(L, 1);
  if (n == 0 && mode == RACE)
    return luaL_error(L, "bad argument #1 to '%s' (empty list: a race needs a Deferred)", fname);
  c = (combine *)lua_newuserdatauv(L, sizeof *c, 3);   /* 2: state */
  c->mode = mode;
  c->remaining = (int)n;
  c->done = 0;
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, cancel_all, 1);
  modal__deferred_new(L, -1);            /* 4: output (3: canceller) */
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, 2, 1);
  lua_createtable(L, (int)n, 0);
  lua_setiuservalue(L, 2, 2);
  lua_createtable(L, (int)n, 0);         /* a copy of the inputs: the caller's list may change */
  for (i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    lua_rawseti(L, -2, i);
  }
  lua_setiuservalue(L, 2, 3);
  if (n == 0) {
    lua_newtable(L);
    modal__fire(L, 4, -1, 0);
    lua_pushvalue(L, 4);
    return 1;
  }
  for (i = 1; i <= n && !c->done; i++) {
    lua_geti(L, 1, i);
    if (modal__is_deferred(L, -1)) {
      lua_pushcfunction(L, collect);
      lua_pushvalue(L, 2);
      lua_pushinteger(L, i);
      lua_pushvalue(L, -4);
      modal__add_link(L, -5, -4, 0, 1, 3);
      lua_pop(L, 2);
    } else {                             /* a plain value: already succeeded */
      lua_pushcfunction(L, collect);
      lua_insert(L, -2);
      lua_pushvalue(L, 2);
      lua_pushinteger(L, i);
      lua_call(L, 3, 0);
    }
  }
  lua_pushvalue(L, 4);
  return 1;
}

static int md_all(lua_State *L) {
  return combine_list(L, ALL, "all");
}

static int md_settled(lua_State *L) {
  return combine_list(L, SETTLED, "settled");
}

static int md_race(lua_State *L) {
  return combine_list(L, RACE, "race");
}

void modal__open_combine(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"all", md_all},
    {"settled", md_settled},
    {"race", md_race},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
