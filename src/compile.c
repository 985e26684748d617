/*
** compile.c — from a definition table to its compiled form (doc/machines.md, validation):
** modal.check, and the compile of a validated definition into C arrays.
*/
#include <stdlib.h>
#include <string.h>
#include "machine.h"

/* ============================================================== validation */

/* Pushes require("modal.check").check. */
static void push_checker(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal.check");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "check");
  lua_remove(L, -2);
}

/* modal.check(def) -> ok, errors, warnings */
static int md_check(lua_State *L) {
  lua_settop(L, 1);
  push_checker(L);
  lua_insert(L, 1);
  lua_call(L, 1, 3);
  return 3;
}

/* ============================================================== compile */

typedef struct builder {
  lua_State *L;
  int def, fns, nfns, inputs, states, methods;
  int ninputs;
} builder;

/* Appends the value at idx to fns; returns its index. */
static int add_fn(builder *b, int idx) {
  lua_pushvalue(b->L, idx);
  lua_rawseti(b->L, b->fns, ++b->nfns);
  return b->nfns;
}

static int add_input(builder *b, int name) {
  lua_State *L = b->L;
  int r;
  lua_pushvalue(L, name);
  if (lua_rawget(L, b->inputs) == LUA_TNUMBER) {
    r = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return r;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, name);
  lua_pushinteger(L, b->ninputs);
  lua_rawset(L, b->inputs);
  lua_pushvalue(L, name);                 /* and index + 1 -> name */
  lua_rawseti(L, b->inputs, b->ninputs + 1);
  return b->ninputs++;
}

static int add_input_name(builder *b, const char *name) {
  int r;
  lua_pushstring(b->L, name);
  r = add_input(b, -1);
  lua_pop(b->L, 1);
  return r;
}

/* Adds every string of the list at idx as an input. */
static void add_input_list(builder *b, int idx) {
  lua_State *L = b->L;
  lua_Integer i, n;
  if (!lua_istable(L, idx))
    return;
  n = (lua_Integer)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) == LUA_TSTRING)
      add_input(b, -1);
    lua_pop(L, 1);
  }
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Number of transitions of an `on` entry: a name, one {to=...}, or a list of those. */
static int count_entry(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING)
    return 1;
  if (!lua_istable(L, idx))
    return 0;
  if (lua_rawgeti(L, idx, 1) != LUA_TNIL) {
    lua_pop(L, 1);
    return (int)lua_rawlen(L, idx);
  }
  lua_pop(L, 1);
  return 1;
}

static int state_index(builder *b, int name) {
  int r = -2;
  lua_pushvalue(b->L, name);
  if (lua_rawget(b->L, b->states) == LUA_TNUMBER)
    r = (int)lua_tointeger(b->L, -1);
  lua_pop(b->L, 1);
  return r;
}

/* Fills one transition from the value at idx (a state name or {to, guard, action}). */
static void fill_transition(builder *b, modal_transition *t, int idx) {
  lua_State *L = b->L;
  t->to = -1;
  t->guard = t->action = 0;
  if (lua_type(L, idx) == LUA_TSTRING) {
    t->to = state_index(b, idx);
    return;
  }
  if (!lua_istable(L, idx))
    return;
  if (lua_getfield(L, idx, "to") == LUA_TSTRING)
    t->to = state_index(b, lua_gettop(L));
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "guard") == LUA_TFUNCTION)
    t->guard = add_fn(b, -1);
  lua_pop(L, 1);
  if (lua_getfield(L, idx, "action") == LUA_TFUNCTION)
    t->action = add_fn(b, -1);
  lua_pop(L, 1);
}

/* A handler value: a function, "postpone", or nothing. */
static int handler_of(builder *b, int idx) {
  if (lua_type(b->L, idx) == LUA_TFUNCTION)
    return add_fn(b, idx);
  if (lua_type(b->L, idx) == LUA_TSTRING && strcmp(lua_tostring(b->L, idx), "postpone") == 0)
    return H_POSTPONE;
  return H_NONE;
}

/* compile(def) -> the compiled userdata. The definition has passed modal.check; what this
** still checks only keeps a bad table from crashing (it raises instead). */
static int compile(lua_State *L) {
  builder b;
  const char **names;
  int S, nstates = 0, nmethods, ntrans = 0, i, j, st, machine_ignore, tcount;
  size_t size;
  char *block;
  modal_compiled *k;
  memset(&b, 0, sizeof b);
  b.L = L;
  b.def = 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_newtable(L);
  b.fns = 2;
  lua_newtable(L);
  b.inputs = 3;
  lua_newtable(L);
  b.states = 4;
  lua_newtable(L);
  b.methods = 5;
  if (lua_getfield(L, 1, "states") != LUA_TTABLE)
    return luaL_error(L, "modal.machine: 'states' must be a table");
  S = 6;
  lua_pushnil(L);
  while (lua_next(L, S)) {
    if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
      return luaL_error(L, "modal.machine: every state must be a table under a name");
    nstates++;
    lua_pop(L, 1);
  }
  if (nstates == 0 || nstates > 65535)
    return luaL_error(L, "modal.machine: a machine needs 1 to 65535 states");
  names = (const char **)lua_newuserdatauv(L, sizeof *names * (size_t)nstates, 0);  /* 7 */
  i = 0;
  lua_pushnil(L);
  while (lua_next(L, S)) {
    names[i++] = lua_tostring(L, -2);    /* anchored in the definition */
    lua_pop(L, 1);
  }
  qsort(names, (size_t)nstates, sizeof *names, cmp_names);
  for (i = 0; i < nstates; i++) {
    lua_pushstring(L, names[i]);
    lua_pushinteger(L, i);
    lua_rawset(L, b.states);
  }
  /* methods, in their order */
  lua_getfield(L, 1, "methods");          /* 8 */
  nmethods = lua_istable(L, 8) ? (int)lua_rawlen(L, 8) : 0;
  for (i = 1; i <= nmethods; i++) {
    if (lua_rawgeti(L, 8, i) != LUA_TSTRING)
      return luaL_error(L, "modal.machine: methods[%d] must be a string", i);
    lua_pushinteger(L, i - 1);
    lua_rawset(L, b.methods);
  }
  /* inputs: built-ins, declared, taken, ignored */
  b.ninputs = 0;
  add_input_name(&b, "timeout");
  add_input_name(&b, "done");
  add_input_name(&b, "error");
  lua_getfield(L, 1, "inputs");
  add_input_list(&b, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "ignore");           /* 9 */
  machine_ignore = 9;
  add_input_list(&b, machine_ignore);
  for (i = 0; i < nstates; i++) {
    lua_getfield(L, S, names[i]);
    if (lua_getfield(L, -1, "on") == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
          add_input(&b, -2);
          ntrans += count_entry(L, lua_gettop(L));
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "ignore");
    add_input_list(&b, -1);
    lua_pop(L, 2);
  }
  /* one block: header, states, handlers, on tables, transitions */
  size = sizeof(modal_compiled) + sizeof(modal_state) * (size_t)nstates +
         sizeof(int) * (size_t)nstates * (size_t)(nmethods ? nmethods : 1) +
         sizeof(int) * (size_t)nstates * (size_t)b.ninputs +
         2 * (size_t)nstates * (size_t)b.ninputs +
         sizeof(modal_transition) * (size_t)(ntrans ? ntrans : 1) + 16;
  block = (char *)lua_newuserdatauv(L, size, K_NUV);     /* 10 */
  memset(block, 0, size);
  k = (modal_compiled *)block;          /* widest alignment first: states hold a double */
  block += sizeof *k;
  k->states = (modal_state *)block;
  block += sizeof(modal_state) * (size_t)nstates;
  k->trans = (modal_transition *)block;
  block += sizeof(modal_transition) * (size_t)(ntrans ? ntrans : 1);
  k->handlers = (int *)block;
  block += sizeof(int) * (size_t)nstates * (size_t)(nmethods ? nmethods : 1);
  k->on_first = (int *)block;
  block += sizeof(int) * (size_t)nstates * (size_t)b.ninputs;
  k->on_count = (uint8_t *)block;
  block += (size_t)nstates * (size_t)b.ninputs;
  k->ignored = (uint8_t *)block;
  k->nstates = nstates;
  k->nmethods = nmethods;
  k->ninputs = b.ninputs;
  k->in_timeout = 0;
  k->in_done = 1;
  k->in_error = 2;
  lua_getfield(L, 1, "name");
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "modal.machine: 'name' must be a string");
  k->name = add_fn(&b, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "initial");
  k->initial = lua_type(L, -1) == LUA_TSTRING ? state_index(&b, -1) : -2;
  lua_pop(L, 1);
  if (k->initial < 0)
    return luaL_error(L, "modal.machine: 'initial' must name a state");
  lua_getfield(L, 1, "max_postponed");
  k->max_postponed = lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0 &&
                     lua_tointeger(L, -1) < 0x7fffffff ? (int)lua_tointeger(L, -1) : 10000;
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "migrate") == LUA_TFUNCTION)
    k->migrate = add_fn(&b, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "defaults");         /* 11 */
  tcount = 0;
  for (st = 0; st < nstates; st++) {
    modal_state *s = &k->states[st];
    int sidx;
    lua_getfield(L, S, names[st]);        /* 12: the state */
    sidx = lua_gettop(L);
    lua_pushstring(L, names[st]);
    s->name = add_fn(&b, -1);
    lua_pop(L, 1);
    lua_getfield(L, sidx, "final");
    s->final = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, sidx, "enter") == LUA_TFUNCTION)
      s->enter = add_fn(&b, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, sidx, "exit") == LUA_TFUNCTION)
      s->exit = add_fn(&b, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, sidx, "run") == LUA_TFUNCTION)
      s->run = add_fn(&b, -1);
    lua_pop(L, 1);
    s->timeout = -1;
    switch (lua_getfield(L, sidx, "timeout")) {
      case LUA_TFUNCTION: s->timeout_fn = add_fn(&b, -1); break;
      case LUA_TNUMBER:   s->timeout = lua_tonumber(L, -1); break;
      default: break;
    }
    lua_pop(L, 1);
    for (j = 0; j < nmethods; j++) {
      int h;
      lua_rawgeti(L, 8, j + 1);
      lua_gettable(L, sidx);
      h = handler_of(&b, -1);
      lua_pop(L, 1);
      if (h == H_NONE && lua_istable(L, 11)) {
        lua_rawgeti(L, 8, j + 1);
        lua_gettable(L, 11);
        h = handler_of(&b, -1);
        lua_pop(L, 1);
      }
      k->handlers[st * nmethods + j] = h;
    }
    /* ignored inputs: the machine's list and the state's */
    for (j = 0; j < 2; j++) {
      lua_Integer n, x;
      if (j == 0)
        lua_pushvalue(L, machine_ignore);
      else
        lua_getfield(L, sidx, "ignore");
      n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0;
      for (x = 1; x <= n; x++) {
        if (lua_rawgeti(L, -1, x) == LUA_TSTRING)
          k->ignored[st * b.ninputs + add_input(&b, -1)] = 1;
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    if (lua_getfield(L, sidx, "on") == LUA_TTABLE) {
      int on = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, on)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
          int in = add_input(&b, -2), n = count_entry(L, lua_gettop(L)), x, e = lua_gettop(L);
          if (n > 255)
            return luaL_error(L, "modal.machine: too many transitions for one input");
          k->on_first[st * b.ninputs + in] = tcount;
          k->on_count[st * b.ninputs + in] = (uint8_t)n;
          if (lua_type(L, e) == LUA_TTABLE && n > 1) {
            for (x = 1; x <= n; x++) {
              lua_rawgeti(L, e, x);
              fill_transition(&b, &k->trans[tcount++], lua_gettop(L));
              lua_pop(L, 1);
            }
          } else if (lua_type(L, e) == LUA_TTABLE && lua_rawgeti(L, e, 1) != LUA_TNIL) {
            fill_transition(&b, &k->trans[tcount++], lua_gettop(L));   /* a list of one */
            lua_pop(L, 1);
          } else {
            if (lua_type(L, e) == LUA_TTABLE)
              lua_pop(L, 1);
            fill_transition(&b, &k->trans[tcount++], e);
          }
        }
        lua_pop(L, 1);
      }
    }
    lua_settop(L, 11);
  }
  k->ntrans = tcount;
  lua_pushvalue(L, b.fns);
  lua_setiuservalue(L, 10, K_FNS);
  lua_pushvalue(L, b.inputs);
  lua_setiuservalue(L, 10, K_INPUTS);
  lua_pushvalue(L, b.states);
  lua_setiuservalue(L, 10, K_STATES);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 10, K_DEF);
  lua_createtable(L, nmethods, 0);
  for (i = 1; i <= nmethods; i++) {
    lua_rawgeti(L, 8, i);
    lua_rawseti(L, -2, i);
  }
  lua_setiuservalue(L, 10, K_METHODS);
  lua_pushvalue(L, 10);
  return 1;
}

/* build(def, where) -> compiled: every problem modal.check finds raises at once as
** "<where>: invalid definition 'name':" with one problem per line; warnings are logged. The one
** path from a definition table to a compiled one (modal.machine, modal.load, modal.reload). */
static int build(lua_State *L) {
  int n, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  push_checker(L);                        /* every problem at once, with paths */
  lua_pushvalue(L, 1);
  lua_call(L, 1, 3);                      /* 3 ok, 4 errors, 5 warnings */
  lua_getfield(L, 1, "name");             /* 6 */
  if (!lua_toboolean(L, 3)) {
    luaL_Buffer buf;
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
  n = lua_istable(L, 5) ? (int)lua_rawlen(L, 5) : 0;
  for (i = 1; i <= n; i++) {
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 6);
    lua_setfield(L, -2, "machine");
    lua_rawgeti(L, 5, i);
    modal__log(L, MODAL_LOG_WARN, -2, "definition warning: %s", lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pushcfunction(L, compile);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

void modal__build(lua_State *L, int def, const char *where) {
  def = lua_absindex(L, def);
  lua_pushcfunction(L, build);
  lua_pushvalue(L, def);
  lua_pushstring(L, where);
  lua_call(L, 2, 1);
}

void modal__open_compile(lua_State *L) {
  lua_pushcfunction(L, build);
  lua_setfield(L, LUA_REGISTRYINDEX, "modal.build");
  lua_pushcfunction(L, md_check);
  lua_setfield(L, -2, "check");
}
