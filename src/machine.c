/*
** machine.c — the machine object M (doc/machines.md): modal.machine, M.name, M.version,
** M.states, M.definition, M:new, the methods table its instances share (bound methods,
** refilled in place by a reload), and the registry of every machine.
*/
#include <string.h>
#include "machine.h"

static const char machines_key = 'M';   /* registry: every machine (weak keys) */

static modal_machine *check_machine(lua_State *L, int idx) {
  modal_machine *M = modal__to_machine(L, idx);
  if (!M)
    luaL_typeerror(L, idx, "modal.machine");
  return M;
}

/* M:new([data]) -> instance */
static int md_machine_new(lua_State *L) {
  modal_machine *M = modal__to_machine(L, 1);
  if (!M)
    return luaL_error(L, "modal: M:new(): call it on a machine, as M:new(data) (got %s)",
                      luaL_typename(L, 1));
  if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
    return luaL_error(L, "modal: M:new(data): data must be a table or nil, got %s",
                      luaL_typename(L, 2));
  if (M->ctx->planning)
    return luaL_error(L, "modal: M:new() called from migrate (migrate only reads the instance)");
  lua_settop(L, 2);
  modal__instance_alloc(L, 1, lua_isnil(L, 2) ? 0 : 2);
  modal__drive_start(L, -1);
  return 1;
}

/* Pushes fns[which] of M's compiled definition (its name when which is 0). */
static void push_name(lua_State *L, int mi, int which) {
  modal_machine *M = modal__to_machine(L, mi);
  lua_getiuservalue(L, mi, M_DEF);
  lua_getiuservalue(L, -1, K_FNS);
  lua_rawgeti(L, -1, which ? which : M->def->name);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

void modal__push_version(lua_State *L, modal_machine *M) {
  if (!M->has_version)
    lua_pushnil(L);
  else if (M->version == (double)(lua_Integer)M->version)
    lua_pushinteger(L, (lua_Integer)M->version);   /* version = 3 reads back as 3, not 3.0 */
  else
    lua_pushnumber(L, M->version);
}

static int md_machine_index(lua_State *L) {
  modal_machine *M = check_machine(L, 1);
  const char *key = lua_tostring(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING)
    return 0;
  if (strcmp(key, "name") == 0) {
    push_name(L, 1, 0);
  } else if (strcmp(key, "version") == 0) {
    modal__push_version(L, M);
  } else if (strcmp(key, "new") == 0) {
    lua_pushcfunction(L, md_machine_new);
  } else if (strcmp(key, "definition") == 0) {
    lua_getiuservalue(L, 1, M_DEF);
    lua_getiuservalue(L, -1, K_DEF);
  } else if (strcmp(key, "states") == 0) {  /* the state names, in order */
    int i;
    lua_createtable(L, M->def->nstates, 0);
    for (i = 0; i < M->def->nstates; i++) {
      push_name(L, 1, M->def->states[i].name);
      lua_rawseti(L, -2, i + 1);
    }
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int md_machine_tostring(lua_State *L) {
  modal_machine *M = check_machine(L, 1);
  push_name(L, 1, 0);
  if (M->has_version) {
    modal__push_version(L, M);
    lua_pushfstring(L, "modal.machine '%s' version %s", lua_tostring(L, -2),
                    luaL_tolstring(L, -1, NULL));
  } else {
    lua_pushfstring(L, "modal.machine '%s'", lua_tostring(L, -1));
  }
  return 1;
}

void modal__fill_methods(lua_State *L, int mi) {
  lua_Integer i, n;
  int methods, index, names;
  mi = lua_absindex(L, mi);
  lua_getiuservalue(L, mi, M_METHODS);
  methods = lua_gettop(L);
  lua_pushnil(L);                        /* cleared first: a reload refills it in place */
  while (lua_next(L, methods)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, methods);
  }
  lua_newtable(L);                       /* {name = index}, for bound methods after a reload */
  index = lua_gettop(L);
  lua_getiuservalue(L, mi, M_INPUTS);    /* {input name = index}, refilled in place */
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, -4);
  }
  lua_getiuservalue(L, mi, M_DEF);
  lua_getiuservalue(L, -1, K_INPUTS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -6);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 3);
  modal__open_calls(L, methods);
  modal__open_observe(L, methods);
  modal__open_drive(L, methods, mi);
  lua_getiuservalue(L, mi, M_DEF);
  lua_getiuservalue(L, -1, K_METHODS);
  names = lua_gettop(L);
  n = (lua_Integer)lua_rawlen(L, names);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, names, i);
    lua_pushinteger(L, i - 1);
    lua_rawset(L, index);
    lua_rawgeti(L, names, i);
    modal__push_method(L, mi, -1, (int)i - 1);
    lua_rawset(L, methods);
  }
  lua_pushvalue(L, index);
  lua_setiuservalue(L, mi, M_MINDEX);
  lua_settop(L, methods - 1);
}

void modal__push_machines(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &machines_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &machines_key);
  }
}

void modal__machine_new(lua_State *L, int compiled) {
  modal_machine *M;
  int mi;
  compiled = lua_absindex(L, compiled);
  M = (modal_machine *)lua_newuserdatauv(L, sizeof *M, M_NUV);
  mi = lua_gettop(L);
  memset(M, 0, sizeof *M);
  M->magic = MACHINE_MAGIC;
  M->def = (modal_compiled *)lua_touserdata(L, compiled);
  M->ctx = modal__ctx(L);
  M->version = M->def->version;
  M->has_version = M->def->has_version;
  luaL_setmetatable(L, "modal.machine");
  lua_pushvalue(L, compiled);
  lua_setiuservalue(L, mi, M_DEF);
  lua_newtable(L);
  lua_setiuservalue(L, mi, M_METHODS);
  lua_newtable(L);                        /* live instances: a weak-keyed set */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, mi, M_INSTANCES);
  lua_newtable(L);
  lua_setiuservalue(L, mi, M_INFO);
  lua_newtable(L);
  lua_setiuservalue(L, mi, M_INPUTS);
  modal__fill_methods(L, mi);
  lua_getiuservalue(L, mi, M_METHODS);
  modal__instance_mt(L, mi, -1);
  lua_setiuservalue(L, mi, M_IMT);
  lua_pop(L, 1);
  modal__push_machines(L);
  lua_pushvalue(L, mi);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_settop(L, mi);
}

/* modal.machine(def) -> M */
static int md_machine(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  modal__build(L, 1, "modal.machine");    /* 2: compiled */
  modal__machine_new(L, 2);
  return 1;
}

void modal__open_machine(lua_State *L) {
  luaL_newmetatable(L, "modal.machine");
  lua_pushcfunction(L, md_machine_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, md_machine_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, md_machine);
  lua_setfield(L, -2, "machine");
}
