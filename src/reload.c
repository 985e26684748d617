/*
** reload.c — hot reload (doc/reload.md): modal.load, modal.loaded and modal.reload — plan
** every live instance (migrate only reads), then switch them all, or change nothing.
*/

/***
@module modal
*/

#include <stdlib.h>
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
    lua_createtable(L, 0, 3);
    lua_newtable(L);
    lua_setfield(L, -2, "paths");
    lua_newtable(L);
    lua_setfield(L, -2, "names");
    lua_newtable(L);
    lua_setfield(L, -2, "loading");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loaded_key);
  }
}

/* obtain(path) -> definition, compiled, result: runs a definition file, which returns a
** definition table or a machine; raises with the path and every problem. */
static int obtain(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_settop(L, 1);
  /* Text only: Lua does not check precompiled chunks, and a corrupt one crashes the host. */
  if (luaL_loadfilex(L, path, "t") != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg && strncmp(msg, "attempt to load a binary chunk", 30) == 0)
      return luaL_error(L, "%s: a precompiled (binary) chunk: modal loads definition files as "
                           "Lua source only", path);
    return lua_error(L);                  /* "cannot open <path>" or "<path>:<line>: ..." */
  }
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {  /* 2: what the file returns */
    const char *msg = modal__tostring(L, -1);   /* an error object: its text, never a raise */
    if (strncmp(msg, path, strlen(path)) == 0)
      return lua_error(L);                /* "<path>:<line>: ..." names the file already */
    return luaL_error(L, "%s: %s", path, msg);
  }
  if (modal__to_machine(L, 2)) {
    lua_getiuservalue(L, 2, M_DEF);       /* 3: compiled */
    lua_getiuservalue(L, 3, K_DEF);       /* 4: definition */
    lua_insert(L, 3);
  } else if (lua_istable(L, 2)) {
    lua_pushvalue(L, 2);                  /* 3: definition */
    modal__build(L, 2, path);             /* 4: compiled (or every problem, with the path) */
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

/* Replaces the path at idx with the file's canonical path (symlinks, "." and ".." resolved),
** so that one file is one entry whatever path names it; a path that does not resolve (the
** file is missing) is kept as given. */
static const char *canonical(lua_State *L, int idx) {
  char *real;
  idx = lua_absindex(L, idx);
  real = realpath(lua_tostring(L, idx), NULL);
  if (real) {
    lua_pushstring(L, real);
    free(real);
    lua_replace(L, idx);
  }
  return lua_tostring(L, idx);
}

/* A path or name is looked up and opened as a C string: one holding a zero byte would name
** its prefix (modal.reload("app\0x") reloading 'app'). No file path or machine name holds
** one, so such a string names nothing. Returns whether the string at idx holds a zero byte. */
static int has_zero_byte(lua_State *L, int idx, size_t *len) {
  const char *s = lua_tolstring(L, idx, len);
  return strlen(s) != *len;
}

/***
Runs a definition file and registers the machine by name and path, for hot reload
(`doc/reload.md`). Loading a path again returns the same `M` without running the file.
@function load
@tparam string path a Lua file returning a definition table or a machine
@treturn Machine
@raise with the path and every problem when the file does not load or validate, or when
another path already registered that name
@within Hot reload
*/
/* modal.load(path) -> M */
static int md_load(lua_State *L) {
  const char *path;
  size_t len;
  int status;
  luaL_checkstring(L, 1);
  if (has_zero_byte(L, 1, &len))
    return luaL_error(L, "modal.load: the path '%s' is followed by a zero byte (%d bytes in "
                      "all); no file path holds one", lua_tostring(L, 1), (int)len);
  lua_settop(L, 1);
  path = canonical(L, 1);
  push_loaded(L);                         /* 2 */
  lua_getfield(L, 2, "paths");            /* 3 */
  lua_getfield(L, 2, "names");            /* 4 */
  if (lua_getfield(L, 3, path) != LUA_TNIL)
    return 1;                             /* loaded already: the same M, not run again */
  lua_pop(L, 1);
  lua_getfield(L, 2, "loading");          /* paths whose file runs now */
  if (lua_getfield(L, -1, path) != LUA_TNIL)
    return luaL_error(L, "modal.load: %s loads itself (modal.load of its own path while it "
                      "runs); a definition file returns its definition", path);
  lua_pop(L, 1);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, path);
  lua_pushcfunction(L, obtain);
  lua_pushvalue(L, 1);
  status = lua_pcall(L, 1, 3, 0);
  lua_pushnil(L);
  lua_setfield(L, 5, path);               /* not loading any more, however it ended */
  lua_remove(L, 5);
  if (status != LUA_OK)                   /* 5 definition, 6 compiled, 7 result */
    return luaL_error(L, "modal.load: %s", modal__tostring(L, -1));
  lua_getfield(L, 5, "name");             /* 8 */
  if (lua_getfield(L, 4, lua_tostring(L, 8)) != LUA_TNIL)
    return luaL_error(L, "modal.load: %s defines machine '%s', already loaded from %s", path,
                      lua_tostring(L, 8), lua_tostring(L, -1));
  lua_pop(L, 1);
  if (!modal__to_machine(L, 7)) {         /* a table: its machine, from what obtain built */
    modal__machine_new(L, 6);
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

/* Records the outcome in M's info (last_reload) and, on failure, logs it; pushes the
** results of modal.reload: M, or nil and the message at `msg`. */
static int reload_result(lua_State *L, int mi, int name, const char *path, const char *msg) {
  lua_getiuservalue(L, mi, M_INFO);
  lua_createtable(L, 0, 3);
  lua_pushboolean(L, msg == NULL);
  lua_setfield(L, -2, "ok");
  if (msg) {
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "error");
  }
  lua_pushnumber(L, wall_now());
  lua_setfield(L, -2, "at");
  lua_setfield(L, -2, "last_reload");
  lua_pop(L, 1);
  if (!msg) {
    lua_pushvalue(L, mi);
    return 1;
  }
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, name);
  lua_setfield(L, -2, "machine");
  modal__log(L, MODAL_LOG_ERROR, -1, "reload of '%s' from %s failed; the old definition "
             "keeps serving: %s", lua_tostring(L, name), path, msg);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* One live instance in a reload: its id (the order of creation), where it is in the list
** that anchors it, and the state it goes to (migrated: it needs an entry). */
typedef struct slot {
  modal_instance *c;                      /* anchored by the list while the reload works */
  uint32_t id, entry;                     /* entry: at the switch's first pass */
  int old, to, migrated, had;             /* had: the old state's timeout (1) and run (2) */
  lua_Integer at;
} slot;

/* Sorts by id in O(n): three passes of 11 bits (ids are 32-bit). */
static void sort_slots(slot *a, slot *tmp, size_t n) {
  size_t count[2048], i;
  unsigned shift;
  for (shift = 0; shift < 33; shift += 11) {
    size_t sum = 0;
    memset(count, 0, sizeof count);
    for (i = 0; i < n; i++)
      count[(a[i].id >> shift) & 2047]++;
    for (i = 0; i < 2048; i++) {
      size_t c = count[i];
      count[i] = sum;
      sum += c;
    }
    for (i = 0; i < n; i++)
      tmp[count[(a[i].id >> shift) & 2047]++] = a[i];
    memcpy(a, tmp, n * sizeof *a);
  }
}

/* The array at `map` gets old index + 1 -> new index + 1 (0: gone) for the names of the
** lists `from` and `to`, and -(old index + 1) -> the name for each one gone. */
static void index_map(lua_State *L, int map, int from, int to) {
  lua_Integer a, na, b, nb;
  from = lua_absindex(L, from);
  to = lua_absindex(L, to);
  na = (lua_Integer)lua_rawlen(L, from);
  nb = (lua_Integer)lua_rawlen(L, to);
  lua_newtable(L);                        /* name -> new index + 1 */
  for (b = 1; b <= nb; b++) {
    lua_rawgeti(L, to, b);
    lua_pushinteger(L, b);
    lua_rawset(L, -3);
  }
  for (a = 1; a <= na; a++) {
    lua_rawgeti(L, from, a);
    lua_rawget(L, -2);
    lua_pushinteger(L, lua_tointeger(L, -1));
    lua_rawseti(L, map, a);
    if (lua_isnil(L, -1)) {
      lua_rawgeti(L, from, a);
      lua_rawseti(L, map, -a);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* The work of modal.reload, protected: (path, M, name) -> M | nil, err.
** NOLINTNEXTLINE(readability-function-cognitive-complexity): plan all, then switch all */
static int reload_body(lua_State *L) {
  const char *path = lua_tostring(L, 1);
  modal_machine *M = modal__to_machine(L, 2);
  modal_ctx *ctx = M->ctx;
  modal_compiled *oldk = M->def, *newk;
  lua_Integer i, n;
  int mi = 2, name = 3, oldc, newc, def, list, map, smap, st, *smapc;
  const char *err = NULL;
  slot *slots;
  lua_settop(L, 3);
  lua_getiuservalue(L, mi, M_DEF);        /* 4: old compiled */
  oldc = 4;
  lua_pushcfunction(L, obtain);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 3, 0) != LUA_OK)    /* 5 definition, 6 compiled, 7 result */
    return reload_result(L, mi, name, path, modal__tostring(L, -1));
  def = 5;
  newc = 6;
  newk = (modal_compiled *)lua_touserdata(L, newc);
  lua_pushliteral(L, "name");
  lua_rawget(L, def);
  if (!lua_rawequal(L, -1, name)) {
    lua_pushfstring(L, "the file now defines machine '%s', not '%s' (a reload keeps the name)",
                    modal__tostring(L, -1), lua_tostring(L, name));
    return reload_result(L, mi, name, path, lua_tostring(L, -1));
  }
  lua_settop(L, 7);
  /* From the listing to the switch, M:new, fire and method calls raise — from migrate, and
  ** from a finalizer that the allocations here run: an instance made or moved then would be
  ** missing from the plan, or switched by a stale one. */
  ctx->planning++;
  /* plan: every live instance's state in the new definition; nothing changes yet */
  lua_newtable(L);                        /* 8: the live instances (anchored while we work) */
  list = 8;
  n = 0;
  lua_getiuservalue(L, mi, M_INSTANCES);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, list, ++n);
  }
  lua_pop(L, 1);
  slots = (slot *)lua_newuserdatauv(L, sizeof *slots * (size_t)(2 * n + 1), 0);   /* 9 */
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, list, i + 1);
    slots[i].c = modal__to_instance(L, -1);
    slots[i].id = slots[i].c->id;
    slots[i].at = i + 1;
    lua_pop(L, 1);
  }
  sort_slots(slots, slots + n, (size_t)n);   /* creation order, whatever the set's */
  smapc = (int *)lua_newuserdatauv(L, sizeof *smapc * (size_t)oldk->nstates, 0);  /* 10 */
  lua_createtable(L, oldk->nstates, 0);   /* 11: states, old index + 1 -> new index + 1 */
  smap = 11;
  for (st = 0; st < oldk->nstates; st++) {
    push_state(L, oldc, st);
    smapc[st] = state_in(L, newc);
    lua_pushinteger(L, smapc[st] + 1);
    lua_rawseti(L, smap, st + 1);
  }
  for (i = 0; i < n && !err; i++) {
    modal_instance *c;
    int to, status;
    c = slots[i].c;
    slots[i].old = c->state;
    slots[i].to = smapc[c->state];
    slots[i].migrated = 0;
    if (slots[i].to >= 0)
      continue;
    lua_settop(L, smap);
    lua_rawgeti(L, list, slots[i].at);    /* 12 */
    push_state(L, oldc, c->state);        /* 13: the old state's name */
    if (!newk->migrate) {
      err = lua_pushfstring(L, "%s#%d is in state '%s', which the new definition does not "
                            "have, and it has no migrate", lua_tostring(L, name), (int)c->id,
                            lua_tostring(L, 13));
      break;
    }
    lua_getiuservalue(L, newc, K_FNS);
    lua_rawgeti(L, -1, newk->migrate);
    lua_remove(L, -2);
    lua_pushvalue(L, 12);                 /* m */
    lua_pushvalue(L, 13);                 /* old state */
    modal__push_version(L, M);
    status = modal__call(L, 3, 1);        /* 14: a state name, or the failure */
    if (status != LUA_OK) {
      err = lua_pushfstring(L, "migrate raised for %s#%d (state '%s'): %s",
                            lua_tostring(L, name), (int)c->id, lua_tostring(L, 13),
                            modal__tostring(L, 14));
      break;
    }
    if (lua_type(L, 14) != LUA_TSTRING || (lua_pushvalue(L, 14), to = state_in(L, newc)) < 0) {
      if (lua_type(L, 14) == LUA_TSTRING)
        lua_pushfstring(L, "'%s'", lua_tostring(L, 14));
      else
        lua_pushstring(L, luaL_typename(L, 14));
      err = lua_pushfstring(L, "migrate returned %s for %s#%d (state '%s'), not a state of the "
                            "new definition", lua_tostring(L, -1), lua_tostring(L, name),
                            (int)c->id, lua_tostring(L, 13));
      break;
    }
    slots[i].to = to;
    slots[i].migrated = 1;
  }
  if (err) {
    ctx->planning--;
    lua_replace(L, smap + 1);             /* the message: kept while the instances drain */
    lua_settop(L, smap + 1);
    modal__drive_deferred_drains(L);      /* what migrate's user code set going, as usual */
    return reload_result(L, mi, name, path, lua_tostring(L, smap + 1));
  }
  lua_settop(L, smap);
  lua_newtable(L);                        /* 12: methods, old index + 1 -> new index + 1 */
  map = 12;
  lua_getiuservalue(L, oldc, K_METHODS);
  lua_getiuservalue(L, newc, K_METHODS);
  index_map(L, map, -2, -1);
  lua_settop(L, map);
  /* Everything the switch needs is made first (13 methods, 14 index, 15 inputs): the switch
  ** itself allocates nothing, so no finalizer can run while instances are half switched. */
  modal__build_methods(L, mi, newc, M->gen + 1);
  luaL_checkstack(L, 16, "reload");
  ctx->driving++;                         /* user code from here on may not reload */
  M->def = newk;
  M->gen++;
  M->has_version = newk->has_version;
  M->version = newk->version;
  lua_pushvalue(L, newc);
  lua_setiuservalue(L, mi, M_DEF);
  modal__install_methods(L, mi, 13, 14);
  for (i = 0; i < n; i++) {
    modal_instance *c = slots[i].c;
    modal_state *old = &oldk->states[slots[i].old];
    slots[i].had = (old->timeout >= 0 || old->timeout_fn ? 1 : 0) | (old->run ? 2 : 0);
    slots[i].entry = c->entry;
    if (!(c->flags & I_HASX)) {           /* no timer, job, calls or waiters: the state only */
      c->state = (uint16_t)slots[i].to;
      continue;
    }
    lua_rawgeti(L, list, slots[i].at);
    modal__remap_calls(L, c, -1, map);
    modal__remap_waiters(L, c, -1, smap);
    modal__switch_state(L, -1, newk, slots[i].to, slots[i].migrated);
    lua_pop(L, 1);
  }
  ctx->planning--;
  /* Second pass: every instance is in its new state; user code may run. Each instance's
  ** entry retries its calls and drains its queue before the next one's starts. */
  modal__drive_deferred_drains(L);
  for (i = 0; i < n; i++) {
    int quiet = modal__switch_is_quiet(L, slots[i].c, 0, slots[i].to, slots[i].migrated,
                                       slots[i].had);
    if (quiet == 1)
      continue;
    lua_settop(L, 15);
    lua_rawgeti(L, list, slots[i].at);    /* 16 */
    if (quiet < 0 && modal__switch_is_quiet(L, slots[i].c, 16, slots[i].to, slots[i].migrated,
                                            slots[i].had) == 1)
      continue;
    push_state(L, oldc, slots[i].old);    /* 17 */
    modal__after_switch(L, 16, slots[i].to, slots[i].migrated, slots[i].had, slots[i].entry,
                        17);
  }
  lua_settop(L, 15);
  ctx->driving--;
  return reload_result(L, mi, name, path, NULL);
}

/***
Replaces a loaded definition in place, for every live instance, without losing or
double-answering a call (Erlang's `code_change`). It re-runs the file, validates it and plans
every instance: one whose state still exists stays (its timer and job carry on); any other
needs the new definition's `migrate(m, old_state, old_version)` to name a state. If
anything fails nothing changes. Postponed calls are retried once after the switch.
@function reload
@tparam string path_or_name a loaded file's path or its machine's name
@treturn[1] Machine `M`, updated in place
@treturn[2] nil
@treturn[2] string the error (also logged), when anything failed; nothing changed
@raise while a machine runs user code, or another reload plans: reload from outside
(`modal.call_later(0, modal.reload, name)`)
@within Hot reload
*/
/* modal.reload(path_or_name) -> M | nil, err */
static int md_reload(lua_State *L) {
  const char *key = luaL_checkstring(L, 1);
  size_t len;
  modal_ctx *ctx = modal__ctx(L);
  modal_machine *M;
  int driving = ctx->driving, planning = ctx->planning, reloading = ctx->reloading, status;
  if (driving || planning || reloading)
    return luaL_error(L, "modal.reload: called while %s; reloads come from outside (the "
                      "main chunk, a timer, a signal, the admin socket): use "
                      "modal.call_later(0, modal.reload, '%s')",
                      reloading || planning ? "another reload runs (its file, its migrate, "
                      "its switch)" : "a machine runs user code (a handler, hook, guard, "
                      "action, run, timeout function, observer, or a callback a transition "
                      "fired)", key);
  lua_settop(L, 1);
  if (has_zero_byte(L, 1, &len)) {
    lua_pushnil(L);
    lua_pushfstring(L, "modal.reload: '%s' is followed by a zero byte (%d bytes in all); no "
                    "loaded path or machine name holds one", key, (int)len);
    return 2;
  }
  push_loaded(L);                         /* 2 */
  lua_getfield(L, 2, "paths");            /* 3 */
  if (lua_getfield(L, 3, key) == LUA_TNIL) {               /* 4: M, by path */
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    if (lua_getfield(L, 3, canonical(L, -1)) != LUA_TNIL) {   /* another name of the file */
      lua_copy(L, 4, 1);                  /* 1: the canonical path */
      lua_replace(L, 4);                  /* 4: M */
      goto found;
    }
    lua_pop(L, 2);
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
found:
  M = modal__to_machine(L, 4);
  lua_pushcfunction(L, modal__msgh);      /* 5 */
  lua_pushcfunction(L, reload_body);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_getiuservalue(L, 4, M_DEF);
  lua_getiuservalue(L, -1, K_FNS);
  lua_rawgeti(L, -1, M->def->name);
  lua_replace(L, -3);
  lua_pop(L, 1);
  ctx->reloading = 1;
  status = lua_pcall(L, 3, 2, 5);
  ctx->driving = driving;                 /* however it ended */
  ctx->planning = planning;
  ctx->reloading = reloading;
  if (status != LUA_OK)
    return lua_error(L);
  if (lua_isnil(L, -2))
    return 2;                             /* nil, err */
  lua_pop(L, 1);
  return 1;                               /* M */
}

/***
The definitions loaded with `modal.load`.
@function loaded
@treturn table `{ [name] = path }`
@within Hot reload
*/
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

void modal__open_reload(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"load", md_load},
    {"reload", md_reload},
    {"loaded", md_loaded},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
