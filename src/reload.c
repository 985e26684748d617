/*
** reload.c — hot reload (DESIGN.md section 6): modal.load, modal.reload (plan every live
** instance, then switch them all or change nothing), and what the live host reads and sets:
** modal.loaded, modal.stats, modal.trace, modal.log_level.
*/
#include <string.h>
#include "machine.h"

static const char loaded_key = 'l';

/* Wall-clock seconds since the epoch, for last_reload.at (operators read it). */
static double wall_now(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return 0;
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}     /* registry: {paths = {[path] = M}, names = {[name] = path}} */

static void push_loaded(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loaded_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    lua_setfield(L, -2, "paths");
    lua_newtable(L);
    lua_setfield(L, -2, "names");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loaded_key);
  }
}

/* obtain(path) -> definition, compiled, result: runs a definition file, which returns a
** definition table or a machine; raises with the path and every problem. */
static int obtain(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  if (luaL_loadfile(L, path) != LUA_OK)
    return luaL_error(L, "cannot load %s", lua_tostring(L, -1));
  lua_call(L, 0, 1);                      /* 2: what the file returns */
  if (modal__to_machine(L, 2)) {
    lua_getiuservalue(L, 2, M_DEF);       /* 3: compiled */
    lua_getiuservalue(L, 3, K_DEF);       /* 4: definition */
    lua_insert(L, 3);
  } else if (lua_istable(L, 2)) {
    lua_pushvalue(L, 2);                  /* 3: definition */
    lua_getfield(L, LUA_REGISTRYINDEX, "modal.build");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    lua_call(L, 2, 1);                    /* 4: compiled (or every problem, with the path) */
  } else {
    return luaL_error(L, "%s: expected a definition table or a machine, got %s", path,
                      luaL_typename(L, 2));
  }
  lua_settop(L, 4);                       /* result, definition, compiled */
  lua_rotate(L, 2, -1);                   /* definition, compiled, result */
  return 3;
}

/* modal._on_load(path, name), set by the live host to watch loaded files. */
static void notify_load(lua_State *L, int path, int name) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "modal");
  if (lua_istable(L, -1) && lua_getfield(L, -1, "_on_load") == LUA_TFUNCTION) {
    lua_pushvalue(L, path);
    lua_pushvalue(L, name);
    modal__pcall(L, 2, 0);
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, lua_istable(L, -1) ? 3 : 2);
}

/* modal.load(path) -> M */
static int md_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  push_loaded(L);                         /* 2 */
  lua_getfield(L, 2, "paths");            /* 3 */
  lua_getfield(L, 2, "names");            /* 4 */
  if (lua_getfield(L, 3, path) != LUA_TNIL)
    return 1;                             /* loaded already: the same M, not run again */
  lua_pop(L, 1);
  lua_pushcfunction(L, obtain);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 3, 0) != LUA_OK)    /* 5 definition, 6 compiled, 7 result */
    return luaL_error(L, "modal.load: %s", luaL_tolstring(L, -1, NULL));
  lua_getfield(L, 5, "name");             /* 8 */
  if (lua_getfield(L, 4, lua_tostring(L, 8)) != LUA_TNIL)
    return luaL_error(L, "modal.load: %s defines machine '%s', already loaded from %s", path,
                      lua_tostring(L, 8), lua_tostring(L, -1));
  lua_pop(L, 1);
  if (!modal__to_machine(L, 7)) {         /* a table: its machine, from what obtain built */
    modal__machine_new(L, 5, 6);
    lua_replace(L, 7);
  }
  lua_getiuservalue(L, 7, M_INFO);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  lua_pushvalue(L, 7);
  lua_setfield(L, 3, path);
  lua_pushvalue(L, 1);
  lua_setfield(L, 4, lua_tostring(L, 8));
  notify_load(L, 1, 8);
  lua_pushvalue(L, 7);
  return 1;
}

/* ============================================================== reload */

/* Pushes the name of state `st` of the compiled definition at `k`. */
static void push_state(lua_State *L, int k, int st) {
  modal_compiled *kc = (modal_compiled *)lua_touserdata(L, k);
  lua_getiuservalue(L, k, K_FNS);
  lua_rawgeti(L, -1, kc->states[st].name);
  lua_remove(L, -2);
}

/* The state index of the name on top in the compiled definition at k (popped), or -1. */
static int state_in(lua_State *L, int k) {
  int r = -1;
  lua_getiuservalue(L, k, K_STATES);
  lua_insert(L, -2);
  if (lua_rawget(L, -2) == LUA_TNUMBER)
    r = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  return r;
}

static int reload_failed(lua_State *L, int mi, int name, const char *path, const char *msg) {
  lua_pushstring(L, msg);
  lua_getiuservalue(L, mi, M_INFO);
  lua_createtable(L, 0, 3);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "ok");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "error");
  lua_pushnumber(L, wall_now());
  lua_setfield(L, -2, "at");
  lua_setfield(L, -2, "last_reload");
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, name);
  lua_setfield(L, -2, "machine");
  modal__log(L, MODAL_LOG_ERROR, -1, "reload of '%s' from %s failed; the old definition "
             "keeps serving: %s", lua_tostring(L, name), path, msg);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* modal.reload(path_or_name) -> true | nil, err */
static int md_reload(lua_State *L) {
  const char *key = luaL_checkstring(L, 1), *path;
  modal_machine *M;
  modal_compiled *oldk, *newk;
  lua_Integer i, n;
  int mi, name, oldc, newc, def, insts, plan, map;
  if (modal__in_hook)
    return luaL_error(L, "modal.reload: called from a hook, action, guard, run, timeout "
                         "function or on_transition observer; reloads come from outside (a "
                         "handler, a timer, a signal, the admin socket)");
  lua_settop(L, 1);
  push_loaded(L);                         /* 2 */
  lua_getfield(L, 2, "paths");            /* 3 */
  if (lua_getfield(L, 3, key) == LUA_TNIL) {               /* 4: M, by path */
    lua_pop(L, 1);
    lua_getfield(L, 2, "names");
    if (lua_getfield(L, -1, key) != LUA_TSTRING) {
      lua_pushnil(L);
      lua_pushfstring(L, "modal.reload: no machine was loaded from '%s' or is named so", key);
      return 2;
    }
    lua_replace(L, 1);                    /* the path */
    lua_pop(L, 1);
    lua_getfield(L, 3, lua_tostring(L, 1));
  }
  path = lua_tostring(L, 1);
  mi = 4;
  M = modal__to_machine(L, mi);
  oldk = M->def;
  lua_getiuservalue(L, mi, M_DEF);        /* 5: old compiled */
  oldc = 5;
  lua_getiuservalue(L, oldc, K_FNS);
  lua_rawgeti(L, -1, oldk->name);         /* 7: name */
  lua_remove(L, -2);
  name = 6;
  lua_pushcfunction(L, obtain);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 3, 0) != LUA_OK)    /* 7 definition, 8 compiled, 9 result */
    return reload_failed(L, mi, name, path, luaL_tolstring(L, -1, NULL));
  def = 7;
  newc = 8;
  newk = (modal_compiled *)lua_touserdata(L, newc);
  lua_getfield(L, def, "name");
  if (!lua_rawequal(L, -1, name)) {
    lua_pushfstring(L, "the file now defines machine '%s', not '%s' (a reload keeps the name)",
                    luaL_tolstring(L, -1, NULL), lua_tostring(L, name));
    return reload_failed(L, mi, name, path, lua_tostring(L, -1));
  }
  lua_settop(L, 9);
  /* plan: every live instance's state in the new definition; nothing changes yet */
  lua_getiuservalue(L, mi, M_INSTANCES);  /* 10 */
  insts = 10;
  lua_newtable(L);                        /* 11: plan[id] = state, or -(state + 1) if migrated */
  plan = 11;
  n = (lua_Integer)M->next_id;
  for (i = 1; i <= n; i++) {
    modal_instance *c;
    int to;
    if (lua_rawgeti(L, insts, i) == LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    c = modal__to_instance(L, -1);
    push_state(L, oldc, c->state);        /* the old state's name */
    lua_pushvalue(L, -1);
    to = state_in(L, newc);
    if (to >= 0) {
      lua_pushinteger(L, to);
    } else {
      int status;
      if (!newk->migrate) {
        lua_pushfstring(L, "%s#%d is in state '%s', which the new definition does not have, "
                        "and it has no migrate", lua_tostring(L, name), (int)c->id,
                        lua_tostring(L, -1));
        return reload_failed(L, mi, name, path, lua_tostring(L, -1));
      }
      lua_getiuservalue(L, newc, K_FNS);
      lua_rawgeti(L, -1, newk->migrate);
      lua_remove(L, -2);
      lua_pushvalue(L, -3);               /* m */
      lua_pushvalue(L, -3);               /* old state */
      modal__push_version(L, M);
      modal__in_hook++;                   /* migrate only reads: no reload from it either */
      status = modal__call(L, 3, 1);
      modal__in_hook--;
      if (status != LUA_OK) {
        const char *old = lua_tostring(L, -2), *err = luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "migrate raised for %s#%d (state '%s'): %s", lua_tostring(L, name),
                        (int)c->id, old, err);
        return reload_failed(L, mi, name, path, lua_tostring(L, -1));
      }
      if (lua_type(L, -1) != LUA_TSTRING || (lua_pushvalue(L, -1), to = state_in(L, newc)) < 0) {
        const char *old = lua_tostring(L, -2), *got;
        if (lua_type(L, -1) == LUA_TSTRING)
          got = lua_pushfstring(L, "'%s'", lua_tostring(L, -1));
        else
          got = luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "migrate returned %s for %s#%d (state '%s'), not a state of the new "
                        "definition", got, lua_tostring(L, name), (int)c->id, old);
        return reload_failed(L, mi, name, path, lua_tostring(L, -1));
      }
      lua_pop(L, 1);
      lua_pushinteger(L, -(to + 1));
    }
    lua_rawseti(L, plan, i);
    lua_settop(L, plan);
  }
  /* methods: old index + 1 -> new index + 1 (0: removed) */
  lua_newtable(L);                        /* 12 */
  map = 12;
  {
    lua_Integer a, na, b, nb;
    lua_getiuservalue(L, oldc, K_DEF);
    lua_getfield(L, -1, "methods");
    lua_getfield(L, def, "methods");
    na = lua_istable(L, -2) ? (lua_Integer)lua_rawlen(L, -2) : 0;
    nb = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
    for (a = 1; a <= na; a++) {
      lua_Integer to = 0;
      lua_rawgeti(L, -2, a);
      for (b = 1; b <= nb && !to; b++) {
        lua_rawgeti(L, -2, b);
        if (lua_rawequal(L, -1, -2))
          to = b;
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
      lua_pushinteger(L, to);
      lua_rawseti(L, map, a);
    }
    lua_settop(L, map);
  }
  /* states: old index + 1 -> new index + 1 (0: removed), for when() waiters */
  lua_newtable(L);                        /* 13 */
  {
    int st;
    for (st = 0; st < oldk->nstates; st++) {
      int to;
      push_state(L, oldc, st);
      to = state_in(L, newc);
      lua_pushinteger(L, to + 1);
      lua_rawseti(L, 13, st + 1);
    }
  }
  /* inputs: old index + 1 -> new index + 1 (0: gone), for inputs queued meanwhile */
  lua_newtable(L);                        /* 14 */
  {
    int in;
    lua_getiuservalue(L, oldc, K_INPUTS);
    lua_getiuservalue(L, newc, K_INPUTS);
    for (in = 0; in < oldk->ninputs; in++) {
      lua_rawgeti(L, -2, in + 1);
      lua_pushinteger(L, lua_rawget(L, -2) == LUA_TNUMBER ? lua_tointeger(L, -1) + 1 : 0);
      lua_rawseti(L, 14, in + 1);
      lua_pop(L, 1);
    }
    lua_settop(L, 14);
  }
  /* commit: M in place, then every instance, then their postponed calls */
  M->def = newk;
  lua_pushvalue(L, newc);
  lua_setiuservalue(L, mi, M_DEF);
  lua_getfield(L, def, "version");
  M->has_version = lua_type(L, -1) == LUA_TNUMBER;
  M->version = M->has_version ? lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  lua_getiuservalue(L, mi, M_METHODS);
  modal__fill_methods(L, -1, newc);
  lua_pop(L, 1);
  for (i = 1; i <= n; i++) {              /* queued calls and when() waiters first */
    if (lua_rawgeti(L, insts, i) != LUA_TNIL)
      modal__instance_remap(L, -1, map, 13, 14);
    lua_settop(L, 14);
  }
  for (i = 1; i <= n; i++) {
    lua_Integer to;
    if (lua_rawgeti(L, plan, i) != LUA_TNUMBER) {
      lua_pop(L, 1);
      continue;
    }
    to = lua_tointeger(L, -1);
    lua_rawgeti(L, insts, i);             /* kept alive by the plan's pass: still there */
    if (lua_isnil(L, -1)) {
      lua_pop(L, 2);
      continue;
    }
    if (to >= 0) {
      modal__instance_switch(L, -1, (int)to, 0);
    } else {
      push_state(L, oldc, modal__to_instance(L, -1)->state);
      modal__instance_switch(L, -2, (int)(-to - 1), -1);
    }
    lua_settop(L, 14);
  }
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, insts, i) != LUA_TNIL)
      modal__instance_after_reload(L, -1);
    lua_settop(L, 14);
  }
  M->reloads++;
  lua_getiuservalue(L, mi, M_INFO);
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "ok");
  lua_pushnumber(L, wall_now());
  lua_setfield(L, -2, "at");
  lua_setfield(L, -2, "last_reload");
  lua_pushboolean(L, 1);
  return 1;
}

/* modal.loaded() -> {[name] = path} */
static int md_loaded(lua_State *L) {
  push_loaded(L);
  lua_getfield(L, -1, "names");
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  return 1;
}

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
    lua_Integer id, count = 0, postponed = 0;
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
    for (id = 1; id <= (lua_Integer)M->next_id; id++) {
      modal_instance *c;
      if (lua_rawgeti(L, -1, id) == LUA_TNIL) {
        lua_pop(L, 1);
        continue;
      }
      c = modal__to_instance(L, -1);
      lua_pop(L, 1);
      count++;
      postponed += c->npostponed;
      lua_rawgeti(L, -3, k->states[c->state].name);
      lua_pushvalue(L, -1);
      lua_rawget(L, -4);
      lua_pushinteger(L, lua_tointeger(L, -1) + 1);
      lua_replace(L, -2);
      lua_rawset(L, -4);
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
    lua_pushinteger(L, (lua_Integer)M->reloads);
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

/* modal.trace(on) -> previous */
static int md_trace(lua_State *L) {
  int previous = modal__tracing;
  if (!lua_isnone(L, 1))
    modal__tracing = lua_toboolean(L, 1);
  lua_pushboolean(L, previous);
  return 1;
}

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

void modal__open_reload(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"load", md_load},
    {"reload", md_reload},
    {"loaded", md_loaded},
    {"stats", md_stats},
    {"trace", md_trace},
    {"log_level", md_log_level},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
