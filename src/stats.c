/*
** stats.c — what the live host reads and sets (doc/host.md): modal.stats (machines, their
** versions, instances per state, postponed depth, transitions, reloads), modal.trace and
** modal.log_level.
*/

/***
@module modal
*/

#include "machine.h"

/***
What `modal ctl SOCKET status` shows: every machine of this Lua state. Machines with the
same name share one entry (the loaded one, else the one with more instances).
@function stats
@treturn table `{ machines = { [name] = { name =, version =, path =, instances =,
states = { [state] = count }, postponed =, transitions =, reloads =, last_reload = { ok =,
at =, error = } } } }`
@within Logging
*/
/* modal.stats() -> {machines = {[name] = {name, version, path, instances, states, postponed,
** transitions, reloads, last_reload}}} */
static int md_stats(lua_State *L) {
  lua_settop(L, 0);
  lua_createtable(L, 0, 1);               /* 1 */
  lua_newtable(L);                        /* 2 */
  lua_pushvalue(L, 2);
  lua_setfield(L, 1, "machines");
  modal__push_machines(L);                /* 3 */
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    modal_machine *M = modal__to_machine(L, -2);
    modal_compiled *k = M->def;
    lua_Integer count = 0, postponed = 0;
    int e, st;
    lua_pop(L, 1);
    lua_createtable(L, 0, 9);             /* 5: the entry */
    e = lua_gettop(L);
    lua_getiuservalue(L, -2, M_DEF);
    lua_getiuservalue(L, -1, K_FNS);
    lua_rawgeti(L, -1, k->name);
    lua_setfield(L, e, "name");
    lua_createtable(L, 0, k->nstates);    /* states, each at 0 */
    for (st = 0; st < k->nstates; st++) {
      lua_rawgeti(L, -2, k->states[st].name);
      lua_pushinteger(L, 0);
      lua_rawset(L, -3);
    }
    lua_getiuservalue(L, e - 1, M_INSTANCES);
    lua_pushnil(L);
    while (lua_next(L, -2)) {             /* live instances only */
      modal_instance *c = modal__to_instance(L, -2);
      lua_pop(L, 1);
      if (!c)
        continue;
      count++;
      postponed += c->npostponed;
      lua_rawgeti(L, e + 2, k->states[c->state].name);   /* fns */
      lua_pushvalue(L, -1);
      lua_rawget(L, e + 3);                                  /* states */
      lua_pushinteger(L, lua_tointeger(L, -1) + 1);
      lua_replace(L, -2);
      lua_rawset(L, e + 3);
    }
    lua_pop(L, 1);
    lua_setfield(L, e, "states");
    lua_settop(L, e);
    lua_pushinteger(L, count);
    lua_setfield(L, e, "instances");
    lua_pushinteger(L, postponed);
    lua_setfield(L, e, "postponed");
    lua_pushinteger(L, (lua_Integer)M->transitions);
    lua_setfield(L, e, "transitions");
    lua_pushinteger(L, (lua_Integer)M->gen);
    lua_setfield(L, e, "reloads");
    lua_getfield(L, e - 1, "version");
    lua_setfield(L, e, "version");
    lua_getiuservalue(L, e - 1, M_INFO);
    lua_getfield(L, -1, "path");
    lua_setfield(L, e, "path");
    lua_getfield(L, -1, "last_reload");
    lua_setfield(L, e, "last_reload");
    lua_pop(L, 1);
    /* same name twice (a file returning modal.machine{} makes a new machine at every run):
    ** the loaded one wins, else the one with more instances */
    lua_getfield(L, e, "name");
    if (lua_rawget(L, 2) == LUA_TTABLE) {
      int keep;
      lua_getfield(L, -1, "path");
      lua_getfield(L, e, "path");
      if (lua_isnil(L, -1) != lua_isnil(L, -2)) {
        keep = lua_isnil(L, -1);          /* only the old entry was loaded */
      } else {
        lua_getfield(L, -3, "instances");
        keep = lua_tointeger(L, -1) >= count;
        lua_pop(L, 1);
      }
      if (keep) {
        lua_settop(L, 4);
        continue;
      }
    }
    lua_settop(L, e);
    lua_getfield(L, e, "name");
    lua_pushvalue(L, e);
    lua_rawset(L, 2);
    lua_settop(L, 4);
  }
  lua_settop(L, 1);
  return 1;
}

/***
Turns the transition trace on or off: each transition logs at info with its input and the
time spent in the old state (`conn#3 idle -> connecting on 'connect' after 12 ms in idle`).
`modal run --trace` turns it on.
@function trace
@tparam[opt] boolean on without it, only reads
@treturn boolean the previous setting
@within Logging
*/
/* modal.trace(on) -> previous */
static int md_trace(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  int previous = ctx->tracing;
  if (!lua_isnone(L, 1))
    ctx->tracing = lua_toboolean(L, 1);
  lua_pushboolean(L, previous);
  return 1;
}

/***
Sets the default sink's threshold (`modal run --log-level`).
@function log_level
@tparam[opt] string level `"error"`, `"warn"`, `"info"` or `"debug"`; without it, only reads
@treturn string the previous level
@raise on an unknown level
@within Logging
*/
/* modal.log_level([level]) -> previous level */
static int md_log_level(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  int previous = ctx->log_level;
  if (!lua_isnoneornil(L, 1)) {
    int lv = modal__level_parse(luaL_checkstring(L, 1));
    if (lv < 0)
      return luaL_argerror(L, 1, "level must be error, warn, info or debug");
    ctx->log_level = lv;
  }
  lua_pushstring(L, modal__level_name(previous));
  return 1;
}

void modal__open_stats(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"stats", md_stats},
    {"trace", md_trace},
    {"log_level", md_log_level},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
