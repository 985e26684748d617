/*
** machine.c — machine definitions: reading one (modal.check's normalize reads it once, raw, and
** validates it; compile.c compiles what it read), modal.machine, modal.check, and the machine
** object (M.name, M.version, M:new).
*/
#include <stdlib.h>
#include <string.h>
#include "machine.h"

/* ============================================================== validation */

/* Pushes require("modal.check")[fname]. */
static void push_checker(lua_State *L, const char *fname) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal.check");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, fname);
  lua_remove(L, -2);
}

/* modal.check(def) -> ok, errors, warnings */
static int md_check(lua_State *L) {
  lua_settop(L, 1);
  push_checker(L, "check");
  lua_insert(L, 1);
  lua_call(L, 1, 3);
  return 3;
}

/* ============================================================== the machine object */

modal_machine *modal__to_machine(lua_State *L, int idx) {
  modal_machine *M = (modal_machine *)lua_touserdata(L, idx);
  if (M && lua_rawlen(L, idx) == sizeof *M && M->magic == MACHINE_MAGIC)
    return M;
  return NULL;
}

static modal_machine *check_machine(lua_State *L, int idx) {
  modal_machine *M = modal__to_machine(L, idx);
  if (!M)
    luaL_typeerror(L, idx, "modal.machine");
  return M;
}

/* M:new([data]) -> instance */
static int md_machine_new(lua_State *L) {
  check_machine(L, 1);
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  modal__instance_new(L, 1, lua_isnil(L, 2) ? 0 : 2);
  return 1;
}

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
  if (!key)
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
  const char *name;
  push_name(L, 1, 0);
  name = lua_tostring(L, -1);
  if (M->has_version) {
    lua_getfield(L, 1, "version");
    lua_pushfstring(L, "modal.machine '%s' version %s", name, luaL_tolstring(L, -1, NULL));
  } else {
    lua_pushfstring(L, "modal.machine '%s'", name);
  }
  return 1;
}

void modal__fill_methods(lua_State *L, int methods, int compiled) {
  lua_Integer i, n;
  methods = lua_absindex(L, methods);
  compiled = lua_absindex(L, compiled);
  lua_pushnil(L);                         /* cleared first: a reload refills it in place */
  while (lua_next(L, methods)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, methods);
  }
  modal__open_instance(L, methods, compiled);
  lua_getiuservalue(L, compiled, K_DEF);
  lua_getfield(L, -1, "methods");
  n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_pushinteger(L, i - 1);
    lua_getiuservalue(L, compiled, K_FNS);
    modal__push_deferred_mt(L);
    lua_pushcclosure(L, modal__instance_call, 3);
    lua_rawset(L, methods);
  }
  lua_pop(L, 2);
}

static const char machines_key = 'M';   /* registry: every machine (weak keys), for stats */

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

/* build(def, where) -> compiled: reads the definition once (modal.check's normalize), and
** raises with every problem at once as "<where>: invalid definition 'name':", one problem per
** line; warnings are logged; then compiles what was read. The one path from a definition table
** to a compiled one (modal.machine, modal.load, modal.reload). */
static int build(lua_State *L) {
  int n, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  push_checker(L, "normalize");           /* every problem at once, with paths */
  lua_pushvalue(L, 1);
  lua_call(L, 1, 3);                      /* 3 norm, 4 errors, 5 warnings */
  if (!lua_istable(L, 3)) {
    luaL_Buffer buf;
    lua_pushliteral(L, "name");           /* raw: the definition may have a metatable */
    lua_rawget(L, 1);                     /* 6 */
    luaL_buffinit(L, &buf);
    luaL_addstring(&buf, lua_tostring(L, 2));
    luaL_addstring(&buf, ": invalid definition");
    if (lua_type(L, 6) == LUA_TSTRING) {
      luaL_addstring(&buf, " '");
      luaL_addstring(&buf, lua_tostring(L, 6));
      luaL_addstring(&buf, "'");
    }
    luaL_addchar(&buf, ':');
    n = lua_istable(L, 4) ? (int)lua_rawlen(L, 4) : 0;
    for (i = 1; i <= n; i++) {
      luaL_addstring(&buf, "\n  ");
      lua_rawgeti(L, 4, i);
      luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    return lua_error(L);
  }
  lua_pushliteral(L, "name");
  lua_rawget(L, 3);                       /* 6 */
  n = lua_istable(L, 5) ? (int)lua_rawlen(L, 5) : 0;
  for (i = 1; i <= n; i++) {
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 6);
    lua_setfield(L, -2, "machine");
    lua_rawgeti(L, 5, i);
    modal__log(L, MODAL_LOG_WARN, -2, "definition warning: %s", lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pushcfunction(L, modal__compile);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

void modal__machine_new(lua_State *L, int def, int compiled) {
  modal_machine *M;
  int mi, methods, imt;
  def = lua_absindex(L, def);
  compiled = lua_absindex(L, compiled);
  M = (modal_machine *)lua_newuserdatauv(L, sizeof *M, M_NUV);
  mi = lua_gettop(L);
  memset(M, 0, sizeof *M);
  M->magic = MACHINE_MAGIC;
  M->def = (modal_compiled *)lua_touserdata(L, compiled);
  M->loop = modal__ctx(L)->loop;
  lua_getfield(L, def, "version");
  if (lua_type(L, -1) == LUA_TNUMBER) {
    M->version = lua_tonumber(L, -1);
    M->has_version = 1;
  }
  lua_pop(L, 1);
  luaL_setmetatable(L, "modal.machine");
  lua_pushvalue(L, compiled);
  lua_setiuservalue(L, mi, M_DEF);
  lua_newtable(L);
  methods = lua_gettop(L);
  modal__fill_methods(L, methods, compiled);
  lua_pushvalue(L, methods);
  lua_setiuservalue(L, mi, M_METHODS);
  lua_newtable(L);                        /* live instances, weak */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setiuservalue(L, mi, M_INSTANCES);
  lua_newtable(L);
  lua_setiuservalue(L, mi, M_INFO);
  modal__push_machines(L);
  lua_pushvalue(L, mi);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);               /* the instances' metatable */
  imt = lua_gettop(L);
  lua_pushvalue(L, methods);
  lua_pushcclosure(L, modal__instance_index, 1);
  lua_setfield(L, imt, "__index");
  lua_pushcfunction(L, modal__instance_cancel_call);
  lua_setfield(L, imt, "__call");
  lua_pushcfunction(L, modal__instance_tostring);
  lua_setfield(L, imt, "__tostring");
  lua_pushliteral(L, "modal.instance");
  lua_setfield(L, imt, "__name");
  lua_setiuservalue(L, mi, M_IMT);
  lua_settop(L, mi);
}

/* modal.machine(def) -> M */
static int md_machine(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushcfunction(L, build);
  lua_pushvalue(L, 1);
  lua_pushliteral(L, "modal.machine");
  lua_call(L, 2, 1);                      /* 2: compiled */
  modal__machine_new(L, 1, 2);
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
  lua_pushcfunction(L, build);
  lua_setfield(L, LUA_REGISTRYINDEX, "modal.build");
  lua_pushcfunction(L, modal__compile);   /* for specs: compile a normalized form as given */
  lua_setfield(L, LUA_REGISTRYINDEX, "modal.compile");
  lua_pushcfunction(L, md_check);
  lua_setfield(L, -2, "check");
}
