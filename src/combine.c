/*
** combine.c — modal.all, modal.settled and modal.race: one Deferred from a list of them.
**
** Each input gets one link (add_both) that reports to a shared state userdata; the output's
** canceller cancels the inputs still pending. Inputs that are not Deferreds count as values
** that have already succeeded. Every input is linked before the output fires or any input is
** cancelled, so each one's later failure is counted as handled (doc/deferreds.md).
*/

/***
@module modal
*/

#include "core.h"

enum { ALL, SETTLED, RACE };

typedef struct combine {
  int mode;
  int linking;             /* the inputs are being linked: the output waits for the end */
  int done;                /* the output's outcome is decided */
  int failed;              /* ... and is a failure */
  lua_Integer remaining;   /* inputs not yet fired */
  lua_Integer winner;      /* RACE: the input that decided, not cancelled */
} combine;

/* User values of the state: 1 the output Deferred, 2 the results table, 3 the inputs (a copy
** of the list), 4 the decided outcome until the output fires. */

static void cancel_inputs(lua_State *L, int st, lua_Integer except) {
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

/* Fires the output with the decided outcome (user value 4), then, for a race, cancels the
** losers. */
static void settle(lua_State *L, int st) {
  combine *c = (combine *)lua_touserdata(L, st);
  lua_getiuservalue(L, st, 1);
  lua_getiuservalue(L, st, 4);
  lua_pushnil(L);
  lua_setiuservalue(L, st, 4);
  modal__fire(L, -2, -1, c->failed);
  lua_pop(L, 2);
  if (c->mode == RACE)
    cancel_inputs(L, st, c->winner);
}

/* Decides the output's outcome (the value at v); it fires now unless inputs are still being
** linked. */
static void decide(lua_State *L, int st, int v, int failed) {
  combine *c = (combine *)lua_touserdata(L, st);
  c->done = 1;
  c->failed = failed;
  lua_pushvalue(L, v);
  lua_setiuservalue(L, st, 4);
  if (!c->linking)
    settle(L, st);
}

/* Input i (the state at st) has the outcome at v. Returns 1 when that outcome is now the
** output's (all's first failure, race's winner): the input hands it over, as a link-returned
** Deferred does, and is left holding nil. Any other failure counts as handled and stays: it
** lost the race, or came after the output was decided, or is in settled's list. */
static int collect_at(lua_State *L, int st, lua_Integer i, int v) {
  combine *c = (combine *)lua_touserdata(L, st);
  int failed = modal__is_failure(L, v), top = lua_gettop(L), taken = 0;
  if (failed) {
    lua_getiuservalue(L, st, 3);
    lua_rawgeti(L, -1, i);
    modal__mark_handled(L, -1);
    lua_settop(L, top);
  }
  if (c->done)
    return 0;
  c->remaining--;
  switch (c->mode) {
    case ALL:
      if (failed) {
        taken = 1;
        decide(L, st, v, 1);
        break;
      }
      lua_getiuservalue(L, st, 2);
      lua_pushvalue(L, v);
      lua_rawseti(L, -2, i);
      if (c->remaining == 0)
        decide(L, st, -1, 0);
      break;
    case SETTLED:
      lua_getiuservalue(L, st, 2);
      lua_createtable(L, 0, 2);
      lua_pushboolean(L, !failed);
      lua_setfield(L, -2, "ok");
      lua_pushvalue(L, v);
      lua_setfield(L, -2, failed ? "failure" : "value");
      lua_rawseti(L, -2, i);
      if (c->remaining == 0)
        decide(L, st, -1, 0);
      break;
    default:                             /* RACE: the first outcome, bare */
      taken = 1;
      c->winner = i;
      decide(L, st, v, failed);
      break;
  }
  lua_settop(L, top);
  return taken;
}

/* The link on every input: (result, state, index) -> the input's result from now on. */
static int collect(lua_State *L) {
  lua_settop(L, 3);
  if (collect_at(L, 2, lua_tointeger(L, 3), 1))
    lua_pushnil(L);
  else
    lua_settop(L, 1);
  return 1;
}

/* The output's canceller: cancels every input still pending. */
static int cancel_all(lua_State *L) {
  cancel_inputs(L, lua_upvalueindex(1), 0);
  return 0;
}

/* The longest list all, settled and race take: 64 Mi Deferreds are 7.5 GiB. */
#define MAX_LIST (1 << 26)

static int combine_list(lua_State *L, int mode, const char *fname) {
  lua_Integer i, n;
  int whole;
  combine *c;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_len(L, 1);                         /* `#` as Lua reads it: __len honoured */
  n = lua_tointegerx(L, -1, &whole);     /* 2.0 is 2, as table.unpack takes it */
  if (!whole || lua_type(L, -1) != LUA_TNUMBER)
    return luaL_error(L, "bad argument #1 to '%s' (its length is %s: a list's length is a whole "
                      "number)", fname, modal__tostring(L, -1));
  lua_settop(L, 1);
  if (n < 0)
    return luaL_error(L, "bad argument #1 to '%s' (its length is %I: a list cannot be "
                      "negative)", fname, n);
  if (n > MAX_LIST)                      /* a __len that lies would have us read for ever */
    return luaL_error(L, "bad argument #1 to '%s' (its length is %I: more than the %d "
                      "entries a list may have)", fname, n, MAX_LIST);
  if (n == 0 && mode == RACE)
    return luaL_error(L, "bad argument #1 to '%s' (empty list: a race needs a Deferred)", fname);
  c = (combine *)lua_newuserdatauv(L, sizeof *c, 4);   /* 2: state */
  c->mode = mode;
  c->linking = 1;
  c->done = c->failed = 0;
  c->remaining = n;
  c->winner = 0;
  lua_createtable(L, n > 0 && n < 1 << 24 ? (int)n : 0, 0);   /* 3: a copy of the inputs */
  for (i = 1; i <= n; i++) {             /* read once: the caller's list may change or lie */
    lua_geti(L, 1, i);
    lua_rawseti(L, 3, i);
  }
  lua_setiuservalue(L, 2, 3);
  lua_createtable(L, mode == RACE || n >= 1 << 24 ? 0 : (int)n, 0);
  lua_setiuservalue(L, 2, 2);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, cancel_all, 1);
  modal__deferred_new(L, -1);            /* 4: output (3: canceller) */
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, 2, 1);
  lua_getiuservalue(L, 2, 3);            /* 5: the inputs */
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 5, i);                /* 6 */
    if (modal__is_deferred(L, 6)) {
      lua_pushcfunction(L, collect);     /* 7 */
      lua_pushvalue(L, 2);
      lua_pushinteger(L, i);
      modal__add_link(L, 6, 7, 0, 1, 2);
    } else {                             /* a plain value: already succeeded */
      collect_at(L, 2, i, 6);
    }
    lua_settop(L, 5);
  }
  c->linking = 0;
  if (n == 0) {
    lua_getiuservalue(L, 2, 2);
    decide(L, 2, -1, 0);
  } else if (c->done) {
    settle(L, 2);
  }
  lua_pushvalue(L, 4);
  return 1;
}

/***
One Deferred for a list of them: the results in order (Twisted's `gatherResults`, a
promise's `all`). It fails at once with the first failure in time, the same object; the
other inputs are not cancelled, and their later failures count as handled. An entry that
is not a Deferred counts as a value that has succeeded. Cancelling the output cancels
every input still pending.
@function all
@tparam {Deferred|any,...} list the inputs (read once)
@treturn Deferred succeeds with `{ r1, r2, ... }` (`nil`s in place); `all({})` succeeds
with `{}`
@usage modal.all({ c:query("a"), c:query("b") }):add_callback(function(r) print(r[1], r[2]) end)
@within Combining
*/
static int md_all(lua_State *L) {
  return combine_list(L, ALL, "all");
}

/***
One Deferred for a list of them that never fails: every outcome, in order (a promise's
`allSettled`). It handles every input's failure.
@function settled
@tparam {Deferred|any,...} list the inputs
@treturn Deferred succeeds with `{ { ok = true, value = v }, { ok = false, failure = f },
... }`; `settled({})` succeeds with `{}`
@within Combining
*/
static int md_settled(lua_State *L) {
  return combine_list(L, SETTLED, "settled");
}

/***
The first outcome of a list of Deferreds, bare (a value, or a failure); the others are
cancelled and their cancel failures handled (a promise's `race`, with the losers stopped).
@function race
@tparam {Deferred|any,...} list the inputs, at least one
@treturn Deferred fires as the first input to fire
@raise on an empty list
@usage modal.race({ c:query("x"), modal.sleep(1) })    -- whichever comes first
@within Combining
*/
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
