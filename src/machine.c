/*
** machine.c — the machine object M (doc/machines.md): modal.machine, M.name, M.version,
** M.states, M.definition, M:new, the methods table its instances share (bound methods,
** refilled in place by a reload), and the registry of every machine — walked when the loop
** ends with calls nobody can answer any more.
*/

/***
@module modal
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

/***
A machine: a compiled, validated definition, and the maker of its instances. `M` is
updated in place by a reload (`doc/reload.md`). `tostring(M)` is
`"modal.machine 'name' version 3"`.
@type Machine
@field name the definition's `name`
@field version the definition's `version` (nil when it has none)
@field states the state names, a list in the definition's order
@field definition the normalized definition that was validated and compiled
*/
/***
Makes an instance and enters `initial`: its `enter(m, nil, nil)` runs, its timeout is
armed, its `run` starts.
@function Machine:new
@tparam[opt] table data the instance's `c.data` (a new empty table when nil)
@treturn Instance
@raise when `data` is neither a table nor nil, or when called from `migrate`
@usage local c = Connection:new { host = "127.0.0.1", port = 6379 }
*/
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
    return luaL_error(L, "modal: M:new() called from migrate or while a reload plans (migrate "
                      "only reads the instance)");
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
  push_name(L, 1, 0);                    /* 2 */
  if (M->has_version) {
    modal__push_version(L, M);
    lua_pushfstring(L, "modal.machine '%s' version %s", lua_tostring(L, 2),
                    luaL_tolstring(L, 3, NULL));
  } else {
    lua_pushfstring(L, "modal.machine '%s'", lua_tostring(L, -1));
  }
  return 1;
}

void modal__build_methods(lua_State *L, int mi, int compiled, uint32_t gen) {
  lua_Integer i, n;
  int methods, index, inputs, names;
  mi = lua_absindex(L, mi);
  compiled = lua_absindex(L, compiled);
  lua_newtable(L);                       /* the methods, as the instances' __index sees them */
  methods = lua_gettop(L);
  lua_newtable(L);                       /* {name = index}, for bound methods after a reload */
  index = lua_gettop(L);
  lua_newtable(L);                       /* {input name = index}, for c:fire */
  inputs = lua_gettop(L);
  lua_getiuservalue(L, compiled, K_INPUTS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, inputs);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  modal__open_calls(L, methods);
  modal__open_observe(L, methods);
  modal__open_drive(L, methods, mi);
  lua_getiuservalue(L, compiled, K_METHODS);
  names = lua_gettop(L);
  lua_getiuservalue(L, compiled, K_FNS); /* names + 1 */
  n = (lua_Integer)lua_rawlen(L, names);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, names, i);
    lua_pushinteger(L, i - 1);
    lua_rawset(L, index);
    lua_rawgeti(L, names, i);
    modal__push_method(L, mi, -1, (int)i - 1, gen, names + 1);
    lua_rawset(L, methods);
  }
  lua_settop(L, inputs);
}

void modal__install_methods(lua_State *L, int mi, int methods, int index) {
  modal_machine *M = modal__to_machine(L, mi);
  mi = lua_absindex(L, mi);
  methods = lua_absindex(L, methods);
  index = lua_absindex(L, index);
  lua_pushvalue(L, methods);
  lua_setiuservalue(L, mi, M_METHODS);
  lua_pushvalue(L, index);
  lua_setiuservalue(L, mi, M_MINDEX);
  lua_pushvalue(L, index + 1);
  lua_setiuservalue(L, mi, M_INPUTS);
  M->last_name = NULL;                   /* fire's cache: the names' indices may change */
  if (lua_getiuservalue(L, mi, M_IMT) == LUA_TTABLE) {   /* the instances' __index */
    lua_rawgeti(L, -1, 2);
    lua_pushvalue(L, methods);
    lua_setupvalue(L, -2, 1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
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
  modal__build_methods(L, mi, compiled, M->gen);   /* methods, index, inputs */
  modal__instance_mt(L, mi, -3);
  lua_setiuservalue(L, mi, M_IMT);
  modal__install_methods(L, mi, -3, -2);
  lua_settop(L, mi);
  modal__push_machines(L);
  lua_pushvalue(L, mi);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_settop(L, mi);
}

/* ============================================================== the end of the loop */

/* Adds a stranded instance's counts to the row of its machine and state in `rows` (a list
** of {machine, state, calls, waiters} in first-seen order; `index` maps "m\0s" to a row). */
static void count_row(lua_State *L, modal_instance *c, int ci, int st, int rows, int index,
                      int calls, int waiters) {
  modal__push_fn(L, ci, c->M->def->name);
  modal__push_state_name(L, c, ci, st);
  lua_pushfstring(L, "%s%c%s", lua_tostring(L, -2), 0, lua_tostring(L, -1));
  if (lua_rawget(L, index) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 4, 0);
    lua_pushvalue(L, -3);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 2);
    lua_pushfstring(L, "%s%c%s", lua_tostring(L, -3), 0, lua_tostring(L, -2));
    lua_pushvalue(L, -2);
    lua_rawset(L, index);
    lua_pushvalue(L, -1);
    lua_rawseti(L, rows, (lua_Integer)lua_rawlen(L, rows) + 1);
  }
  lua_rawgeti(L, -1, 3);
  lua_pushinteger(L, lua_tointeger(L, -1) + calls);
  lua_rawseti(L, -3, 3);
  lua_rawgeti(L, -2, 4);
  lua_pushinteger(L, lua_tointeger(L, -1) + waiters);
  lua_rawseti(L, -4, 4);
  lua_pop(L, 5);
}

/* Appends to the list at `list` every instance with calls or waiters; returns how many. */
static lua_Integer collect_stranded(lua_State *L, int list) {
  lua_Integer n = 0;
  int m;
  modal__push_machines(L);
  m = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, m)) {
    lua_pop(L, 1);
    lua_getiuservalue(L, -1, M_INSTANCES);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      modal_instance *c = modal__to_instance(L, -2);
      modal_extras *x;
      lua_pop(L, 1);
      if (!c)
        continue;
      x = modal__extras(L, -1, 0);
      lua_pop(L, 1);
      if (c->npostponed > 0 || (x && x->waiters.live > 0)) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, list, ++n);
      }
    }
    lua_pop(L, 1);
  }
  lua_settop(L, m - 1);
  return n;
}

#define STRAND_PASSES 100                /* a callback may make calls while others are failed */

void modal__machines_strand(lua_State *L, int exiting) {
  int top = lua_gettop(L), rows, index, pass;
  lua_Integer i, n = 0;
  lua_newtable(L);
  rows = lua_gettop(L);
  lua_newtable(L);
  index = lua_gettop(L);
  for (pass = 0; pass < STRAND_PASSES; pass++) {
    lua_settop(L, index);
    lua_newtable(L);                     /* answering runs user code: the list is ours */
    n = collect_stranded(L, index + 1);
    if (n == 0)
      break;
    for (i = 1; i <= n; i++) {
      modal_instance *c;
      modal_extras *x;
      int calls, waiters, st;
      lua_rawgeti(L, index + 1, i);
      c = modal__to_instance(L, -1);
      st = c->state;                     /* where they were stranded, before any callback */
      if (exiting) {
        calls = modal__fail_calls(L, c, -1, "stopped", "host exiting");
        waiters = modal__fail_waiters(L, c, -1, "stopped", "host exiting");
      } else {
        x = modal__extras(L, -1, 0);
        lua_pop(L, 1);
        calls = c->npostponed;
        waiters = x ? (int)x->waiters.live : 0;
      }
      if (calls || waiters)
        count_row(L, c, lua_gettop(L), st, rows, index, calls, waiters);
      lua_settop(L, index + 1);
    }
    if (!exiting)
      break;
  }
  if (exiting && n > 0 && pass == STRAND_PASSES)
    modal__log(L, MODAL_LOG_ERROR, 0, "calls still stranded after %d passes: callbacks keep "
               "making calls while the host fails them; %d instance(s) left waiting",
               STRAND_PASSES, (int)n);
  n = (lua_Integer)lua_rawlen(L, rows);
  for (i = 1; i <= n; i++) {
    lua_settop(L, index);
    lua_rawgeti(L, rows, i);
    lua_createtable(L, 0, 2);
    lua_rawgeti(L, -2, 1);
    lua_setfield(L, -2, "machine");
    lua_rawgeti(L, -2, 2);
    lua_setfield(L, -2, "state");
    lua_rawgeti(L, -2, 2);
    lua_rawgeti(L, -3, 3);
    lua_rawgeti(L, -4, 4);
    if (exiting)
      modal__log(L, MODAL_LOG_WARN, -4, "%d postponed call(s) and %d when() waiter(s) in "
                 "state '%s' failed with kind 'stopped': the host is exiting",
                 (int)lua_tointeger(L, -2), (int)lua_tointeger(L, -1), lua_tostring(L, -3));
    else
      modal__log(L, MODAL_LOG_WARN, -4, "modal.run() returned with %d postponed call(s) and "
                 "%d when() waiter(s) still waiting in state '%s': no work was left in the "
                 "loop to answer them (a later run may)", (int)lua_tointeger(L, -2),
                 (int)lua_tointeger(L, -1), lua_tostring(L, -3));
  }
  lua_settop(L, top);
}

/***
Validates a machine definition and compiles it (`gen_statem`'s states and postponed calls,
XState's invoked jobs, epsilon.modal's methods per state; `doc/machines.md`). The table is
read once, raw (no metamethod runs); what was checked is what is compiled. Warnings are
logged.
@function machine
@tparam table def `{ name =, version =, initial =, methods = {...}, inputs =, defaults =,
ignore =, max_postponed =, migrate =, states = { [name] = { enter =, exit =, on =, run =,
timeout =, final =, ignore =, [method] = handler } } }`
@treturn Machine
@raise `modal.machine: invalid definition 'name':` and every problem, one per line, each
with its path (as `modal.check` returns them)
@within Machines
*/
/* modal.machine(def) -> M */
static int md_machine(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  modal__build(L, 1, "modal.machine");    /* 2: compiled */
  modal__machine_new(L, 2);
  return 1;
}

static int strand_protected(lua_State *L) {
  modal__machines_strand(L, (int)lua_toboolean(L, 1));
  return 0;
}

/* The run-end hook: never raises (an error of its own is reported as unhandled). */
static void strand_hook(lua_State *L, void *arg, int exiting) {
  (void)arg;
  lua_pushcfunction(L, strand_protected);
  lua_pushboolean(L, exiting);
  modal__pcall(L, 1, 0);
}

static const char hooked_key = 'h';     /* registry: the run-end hook is registered */

void modal__open_machine(lua_State *L) {
  modal__open_instance(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &hooked_key) == LUA_TNIL) {
    modal__ctx_on_run_end(L, strand_hook, NULL);
    lua_pushboolean(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &hooked_key);
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, "modal.machine");
  lua_pushcfunction(L, md_machine_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, md_machine_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, md_machine);
  lua_setfield(L, -2, "machine");
}
