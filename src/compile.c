/*
** compile.c — compiles the normalized form of a definition (modal.check's normalize; its shape
** is described at the top of lua/modal/check.lua) into one block of C arrays (machine.h).
**
** It reads only the normalized form, raw (lua_raw*, never a metamethod), in one pass over its
** contents: the lengths that size the block are read first, and every write is checked against
** what was allocated, so a form that differs from what it expects raises a clear error and
** never writes out of bounds. A target may name a later state: targets are resolved after the
** pass, from the compile's own table. Nothing after the compile reads the user's definition:
** the user values hold every name and function it had.
*/

/***
@module modal
*/

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include "machine.h"

typedef struct compiler {
  lua_State *L;
  modal_compiled *k;
  int fns, seen, inputs, states, methods, pending;   /* stack indices of the work tables */
  int nfns;
  int tcount;              /* transitions written so far */
} compiler;

/* Raises "modal.compile: malformed normalized definition: <path>: <message>". */
static int malformed(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_pushliteral(L, "modal.compile: malformed normalized definition: ");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

/* True when the value at idx is the string `s`, byte for byte ("postpone\0x" is not). */
static int is_string(lua_State *L, int idx, const char *s) {
  size_t len;
  const char *v = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  return v && len == strlen(s) && memcmp(v, s, len) == 0;
}

/* Pushes t[key], raw; returns its type. */
static int field(lua_State *L, int t, const char *key) {
  lua_pushstring(L, key);
  return lua_rawget(L, t);
}

/* Pushes t[key], which must be a table (a list): returns its length. */
static int list_field(lua_State *L, int t, const char *key, const char *path, long limit) {
  lua_Unsigned n;
  if (field(L, t, key) != LUA_TTABLE)
    malformed(L, "%s%s: expected a list, got %s", path, key, luaL_typename(L, -1));
  n = lua_rawlen(L, -1);
  if (n > (lua_Unsigned)limit)
    malformed(L, "%s%s: %d entries, more than %d", path, key, (int)(n > INT_MAX ? INT_MAX : n),
              (int)limit);
  return (int)n;
}

/* Appends the value at idx to fns, once per distinct value: returns its fns index. */
static int add_fn(compiler *c, int idx) {
  lua_State *L = c->L;
  int r;
  idx = lua_absindex(L, idx);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, c->seen) == LUA_TNUMBER) {
    r = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return r;
  }
  lua_pop(L, 1);
  if (c->nfns == INT_MAX)
    malformed(L, "more functions and names than an int counts");
  r = ++c->nfns;
  lua_pushvalue(L, idx);
  lua_rawseti(L, c->fns, r);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, r);
  lua_rawset(L, c->seen);
  return r;
}

/* An optional function at t[key]: its fns index, or 0 when absent. */
static int opt_fn(compiler *c, int t, const char *key, const char *path, int i) {
  lua_State *L = c->L;
  int r = 0, type = field(L, t, key);
  if (type == LUA_TFUNCTION)
    r = add_fn(c, -1);
  else if (type != LUA_TNIL)
    malformed(L, "%s[%d].%s: expected a function or nil, got %s", path, i, key,
              lua_typename(L, type));
  lua_pop(L, 1);
  return r;
}

/* The index of the input named by the string at idx. */
static int input_of(compiler *c, int idx, const char *path, int i) {
  lua_State *L = c->L;
  int r;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TSTRING)
    malformed(L, "%s[%d]: expected an input name, got %s", path, i, luaL_typename(L, idx));
  lua_pushvalue(L, idx);
  if (lua_rawget(L, c->inputs) != LUA_TNUMBER)
    malformed(L, "%s[%d]: input '%s' is not in input_names", path, i, lua_tostring(L, idx));
  r = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return r;
}

/* methods: K_METHODS[i] = name, in order. */
static void read_methods(compiler *c, int norm) {
  lua_State *L = c->L;
  int i, n = list_field(L, norm, "methods", "", MODAL_MAX_METHODS), list = lua_gettop(L);
  lua_createtable(L, 0, n);               /* names seen */
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, list, i) != LUA_TSTRING)
      malformed(L, "methods[%d]: expected a method name, got %s", i, luaL_typename(L, -1));
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) != LUA_TNIL)
      malformed(L, "methods[%d]: duplicate method '%s'", i, lua_tostring(L, -2));
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, -4);
    lua_rawseti(L, c->methods, i);
  }
  lua_pop(L, 2);
  c->k->nmethods = n;
}

/* input_names: K_INPUTS[name] = index, K_INPUTS[index + 1] = name; the built-in ones first. */
static void read_inputs(compiler *c, int norm) {
  static const char *const builtin[] = { "timeout", "done", "error" };
  lua_State *L = c->L;
  int i, n = list_field(L, norm, "input_names", "", INT_MAX - 1), list = lua_gettop(L);
  if (n < 3)
    malformed(L, "input_names: expected timeout, done and error first, got %d names", n);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, list, i) != LUA_TSTRING)
      malformed(L, "input_names[%d]: expected an input name, got %s", i, luaL_typename(L, -1));
    if (i <= 3 && !is_string(L, -1, builtin[i - 1]))
      malformed(L, "input_names[%d]: expected '%s', got '%s'", i, builtin[i - 1],
                lua_tostring(L, -1));
    lua_pushvalue(L, -1);
    if (lua_rawget(L, c->inputs) != LUA_TNIL)
      malformed(L, "input_names[%d]: duplicate input '%s'", i, lua_tostring(L, -2));
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushinteger(L, i - 1);
    lua_rawset(L, c->inputs);
    lua_rawseti(L, c->inputs, i);
  }
  lua_pop(L, 1);
  c->k->ninputs = n;
  c->k->in_timeout = 0;
  c->k->in_done = 1;
  c->k->in_error = 2;
}

/* One transition (table at idx) of states[si].on[oi], written at trans[c->tcount]. A target
** may name a later state: it waits in `pending` until every state has its index. */
static void read_transition(compiler *c, int idx, int si, int oi, int ti) {
  lua_State *L = c->L;
  modal_transition *t = &c->k->trans[c->tcount];
  int type;
  if (lua_type(L, idx) != LUA_TTABLE)
    malformed(L, "states[%d].on[%d].transitions[%d]: expected a table, got %s", si, oi, ti,
              luaL_typename(L, idx));
  t->to = -1;
  type = field(L, idx, "to");
  if (type == LUA_TSTRING)
    lua_rawseti(L, c->pending, c->tcount + 1);
  else if (type == LUA_TNIL)
    lua_pop(L, 1);
  else
    malformed(L, "states[%d].on[%d].transitions[%d].to: expected a state name or nil, got %s",
              si, oi, ti, lua_typename(L, type));
  lua_pushfstring(L, "states[%d].on[%d].transitions", si, oi);
  t->guard = opt_fn(c, idx, "guard", lua_tostring(L, -1), ti);
  t->action = opt_fn(c, idx, "action", lua_tostring(L, -1), ti);
  lua_pop(L, 1);
  c->tcount++;
}

/* states[si].on: each entry { input =, transitions = { ... } }. */
static void read_on(compiler *c, int st, int si) {
  lua_State *L = c->L;
  modal_compiled *k = c->k;
  int oi, ti, n, on;
  lua_pushfstring(L, "states[%d].", si);
  n = list_field(L, st, "on", lua_tostring(L, -1), INT_MAX);
  on = lua_gettop(L);
  for (oi = 1; oi <= n; oi++) {
    int e, nt, cell;
    if (lua_rawgeti(L, on, oi) != LUA_TTABLE)
      malformed(L, "states[%d].on[%d]: expected a table, got %s", si, oi, luaL_typename(L, -1));
    e = lua_gettop(L);
    lua_pushfstring(L, "states[%d].on", si);
    field(L, e, "input");
    cell = (si - 1) * k->ninputs + input_of(c, -1, lua_tostring(L, -2), oi);
    lua_pop(L, 2);
    if (k->on_count[cell])
      malformed(L, "states[%d].on[%d]: a second entry for one input", si, oi);
    lua_pushfstring(L, "states[%d].on[%d].", si, oi);
    nt = list_field(L, e, "transitions", lua_tostring(L, -1), MODAL_MAX_CHOICES);
    if (nt < 1)
      malformed(L, "states[%d].on[%d].transitions: empty", si, oi);
    if (nt > k->ntrans - c->tcount)
      malformed(L, "states[%d].on[%d].transitions: more transitions than ntransitions (%d)",
                si, oi, k->ntrans);
    k->on_first[cell] = c->tcount;
    k->on_count[cell] = (uint8_t)nt;
    for (ti = 1; ti <= nt; ti++) {
      lua_rawgeti(L, -1, ti);
      read_transition(c, lua_gettop(L), si, oi, ti);
      lua_pop(L, 1);
    }
    lua_settop(L, e - 1);
  }
  lua_settop(L, on - 2);
}

/* states[si].ignore: input names, flagged in `ignored`. */
static void read_ignore(compiler *c, int st, int si) {
  lua_State *L = c->L;
  int i, n, list;
  lua_pushfstring(L, "states[%d].", si);
  n = list_field(L, st, "ignore", lua_tostring(L, -1), INT_MAX);
  list = lua_gettop(L);
  lua_pushfstring(L, "states[%d].ignore", si);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    c->k->ignored[(si - 1) * c->k->ninputs + input_of(c, -1, lua_tostring(L, list + 1), i)] = 1;
    lua_pop(L, 1);
  }
  lua_settop(L, list - 2);
}

/* states[si].handlers: one per method, a function or "postpone". */
static void read_handlers(compiler *c, int st, int si) {
  lua_State *L = c->L;
  modal_compiled *k = c->k;
  int j, h, list;
  lua_pushfstring(L, "states[%d].", si);
  if (list_field(L, st, "handlers", lua_tostring(L, -1), INT_MAX) != k->nmethods)
    malformed(L, "states[%d].handlers: %d handlers for %d methods", si,
              (int)lua_rawlen(L, -1), k->nmethods);
  list = lua_gettop(L);
  for (j = 0; j < k->nmethods; j++) {
    int type = lua_rawgeti(L, list, j + 1);
    if (type == LUA_TFUNCTION)
      h = add_fn(c, -1);
    else if (is_string(L, -1, "postpone"))
      h = H_POSTPONE;
    else
      h = malformed(L, "states[%d].handlers[%d]: expected a function or 'postpone', got %s", si,
                    j + 1, lua_typename(L, type));
    k->handlers[(si - 1) * k->nmethods + j] = h;
    lua_pop(L, 1);
  }
  lua_settop(L, list - 2);
}

/* states[si]: its record, in one pass. */
static void read_state(compiler *c, int st, int si) {
  lua_State *L = c->L;
  modal_state *s = &c->k->states[si - 1];
  int type;
  if (field(L, st, "name") != LUA_TSTRING)
    malformed(L, "states[%d].name: expected a state name, got %s", si, luaL_typename(L, -1));
  lua_pushvalue(L, -1);
  if (lua_rawget(L, c->states) != LUA_TNIL)
    malformed(L, "states[%d]: duplicate state '%s'", si, lua_tostring(L, -2));
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_pushinteger(L, si - 1);
  lua_rawset(L, c->states);
  s->name = add_fn(c, -1);
  lua_pop(L, 1);
  if (field(L, st, "final") != LUA_TBOOLEAN)
    malformed(L, "states[%d].final: expected a boolean, got %s", si, luaL_typename(L, -1));
  s->final = lua_toboolean(L, -1);
  lua_pop(L, 1);
  s->enter = opt_fn(c, st, "enter", "states", si);
  s->exit = opt_fn(c, st, "exit", "states", si);
  s->run = opt_fn(c, st, "run", "states", si);
  s->timeout = -1;
  type = field(L, st, "timeout");
  if (type == LUA_TFUNCTION) {
    s->timeout_fn = add_fn(c, -1);
  } else if (type == LUA_TNUMBER) {
    s->timeout = lua_tonumber(L, -1);
    if (!(s->timeout >= 0 && s->timeout < HUGE_VAL))
      malformed(L, "states[%d].timeout: expected a non-negative finite number", si);
  } else if (type != LUA_TNIL) {
    malformed(L, "states[%d].timeout: expected seconds, a function or nil, got %s", si,
              lua_typename(L, type));
  }
  lua_pop(L, 1);
  read_handlers(c, st, si);
  read_ignore(c, st, si);
  read_on(c, st, si);
}

/* Raises for transition t, whose target names no state (the string on top): finds where it
** came from, which only an error needs. */
static int unknown_target(compiler *c, int t) {
  lua_State *L = c->L;
  const modal_compiled *k = c->k;
  int cell, ncells = k->nstates * k->ninputs;
  for (cell = 0; cell < ncells; cell++) {
    if (k->on_count[cell] && t >= k->on_first[cell] && t < k->on_first[cell] + k->on_count[cell]) {
      lua_rawgeti(L, c->inputs, cell % k->ninputs + 1);
      malformed(L, "states[%d].on (input '%s'): transitions[%d].to: unknown state '%s'",
                cell / k->ninputs + 1, lua_tostring(L, -1), t - k->on_first[cell] + 1,
                lua_tostring(L, -2));
    }
  }
  return malformed(L, "transition %d: unknown state '%s'", t, lua_tostring(L, -1));
}

/* The index of the state named by the string on top (left there), or -1 when none is. */
static int state_of(compiler *c) {
  lua_State *L = c->L;
  int r = -1;
  lua_pushvalue(L, -1);
  if (lua_rawget(L, c->states) == LUA_TNUMBER)
    r = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return r;
}

/* The machine's own fields. */
static void read_scalars(compiler *c, int norm) {
  lua_State *L = c->L;
  modal_compiled *k = c->k;
  int type;
  if (field(L, norm, "name") != LUA_TSTRING)
    malformed(L, "name: expected a string, got %s", luaL_typename(L, -1));
  k->name = add_fn(c, -1);
  lua_pop(L, 1);
  type = field(L, norm, "version");
  if (type == LUA_TNUMBER) {
    k->version = lua_tonumber(L, -1);
    k->has_version = 1;
  } else if (type != LUA_TNIL) {
    malformed(L, "version: expected a number or nil, got %s", lua_typename(L, type));
  }
  lua_pop(L, 1);
  field(L, norm, "max_postponed");
  if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > INT_MAX)
    malformed(L, "max_postponed: expected an integer from 1 to %d", INT_MAX);
  k->max_postponed = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  type = field(L, norm, "migrate");
  if (type == LUA_TFUNCTION)
    k->migrate = add_fn(c, -1);
  else if (type != LUA_TNIL)
    malformed(L, "migrate: expected a function or nil, got %s", lua_typename(L, type));
  lua_pop(L, 1);
}

/* Allocates the compiled block for the counts in k (pushed); the widest alignment first. */
static modal_compiled *allocate(lua_State *L, const modal_compiled *counts) {
  size_t ns = (size_t)counts->nstates, cells_m = ns * (size_t)counts->nmethods,
         cells_i = ns * (size_t)counts->ninputs, nt = (size_t)counts->ntrans;
  size_t size = sizeof(modal_compiled) + sizeof(modal_state) * ns +
                sizeof(modal_transition) * (nt ? nt : 1) + sizeof(int) * (cells_m ? cells_m : 1) +
                sizeof(int) * cells_i + 2 * cells_i;
  char *block = (char *)lua_newuserdatauv(L, size, K_NUV);
  modal_compiled *k = (modal_compiled *)(void *)block;
  memset(block, 0, size);
  *k = *counts;
  block += sizeof *k;
  k->states = (modal_state *)(void *)block;
  block += sizeof(modal_state) * ns;
  k->trans = (modal_transition *)(void *)block;
  block += sizeof(modal_transition) * (nt ? nt : 1);
  k->handlers = (int *)(void *)block;
  block += sizeof(int) * (cells_m ? cells_m : 1);
  k->on_first = (int *)(void *)block;
  block += sizeof(int) * cells_i;
  k->on_count = (uint8_t *)block;
  block += cells_i;
  k->ignored = (uint8_t *)block;
  return k;
}

/* The counts the block is sized by, each within the limits of machine.h. */
static void read_counts(lua_State *L, int norm, modal_compiled *counts) {
  int n;
  lua_Integer nt;
  n = list_field(L, norm, "states", "", MODAL_MAX_STATES);
  if (n < 1)
    malformed(L, "states: no state");
  counts->nstates = n;
  n = list_field(L, norm, "methods", "", MODAL_MAX_METHODS);
  counts->nmethods = n;
  n = list_field(L, norm, "input_names", "", INT_MAX);
  counts->ninputs = n;
  lua_pop(L, 3);
  if ((size_t)counts->nstates * (size_t)counts->nmethods > MODAL_MAX_CELLS ||
      (size_t)counts->nstates * (size_t)counts->ninputs > MODAL_MAX_CELLS)
    malformed(L, "states: %d states by %d methods or %d inputs: more than %d cells",
              counts->nstates, counts->nmethods, counts->ninputs, MODAL_MAX_CELLS);
  field(L, norm, "ntransitions");
  nt = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
  if (nt < 0 || nt > MODAL_MAX_TRANSITIONS)
    malformed(L, "ntransitions: expected an integer from 0 to %d", MODAL_MAX_TRANSITIONS);
  counts->ntrans = (int)nt;
  lua_pop(L, 1);
}

/* Marks the transitions whose taking runs no user code (modal_transition.plain). */
static void mark_plain(modal_compiled *k) {
  int st, in, i;
  for (st = 0; st < k->nstates; st++) {
    for (in = 0; in < k->ninputs; in++) {
      int cell = st * k->ninputs + in;
      for (i = 0; i < k->on_count[cell]; i++) {
        modal_transition *t = &k->trans[k->on_first[cell] + i];
        const modal_state *to = t->to >= 0 ? &k->states[t->to] : NULL;
        t->plain = to && !t->guard && !t->action && !k->states[st].exit && !to->enter &&
                   !to->run && to->timeout < 0 && !to->timeout_fn;
      }
    }
  }
}

int modal__compile(lua_State *L) {
  compiler c;
  modal_compiled counts;
  int norm = 1, ki, si, n, list;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);                       /* 2: the definition as given, kept as K_DEF */
  luaL_checkstack(L, 40, "compile");
  memset(&c, 0, sizeof c);
  memset(&counts, 0, sizeof counts);
  c.L = L;
  read_counts(L, norm, &counts);
  c.k = allocate(L, &counts);             /* 3 */
  ki = 3;
  lua_newtable(L);
  c.fns = lua_gettop(L);
  lua_newtable(L);
  c.seen = lua_gettop(L);
  lua_newtable(L);
  c.inputs = lua_gettop(L);
  lua_createtable(L, 0, counts.nstates);
  c.states = lua_gettop(L);
  lua_createtable(L, counts.nmethods, 0);
  c.methods = lua_gettop(L);
  lua_newtable(L);
  c.pending = lua_gettop(L);
  read_scalars(&c, norm);
  read_methods(&c, norm);
  read_inputs(&c, norm);
  n = list_field(L, norm, "states", "", MODAL_MAX_STATES);
  list = lua_gettop(L);
  if (n != c.k->nstates)
    malformed(L, "states: changed length while compiled");
  for (si = 1; si <= n; si++) {
    if (lua_rawgeti(L, list, si) != LUA_TTABLE)
      malformed(L, "states[%d]: expected a table, got %s", si, luaL_typename(L, -1));
    read_state(&c, lua_gettop(L), si);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (c.tcount != c.k->ntrans)
    malformed(L, "ntransitions: %d, but the states have %d", c.k->ntrans, c.tcount);
  if (field(L, norm, "initial") != LUA_TSTRING)
    malformed(L, "initial: expected a state name, got %s", luaL_typename(L, -1));
  if ((c.k->initial = state_of(&c)) < 0)
    malformed(L, "initial: unknown state '%s'", lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_pushnil(L);                         /* targets, now that every state has its index */
  while (lua_next(L, c.pending)) {
    int t = (int)lua_tointeger(L, -2) - 1;   /* keys are ours: 1..tcount */
    if ((c.k->trans[t].to = state_of(&c)) < 0)
      unknown_target(&c, t);
    lua_pop(L, 1);
  }
  mark_plain(c.k);
  lua_pushvalue(L, c.fns);
  lua_setiuservalue(L, ki, K_FNS);
  lua_pushvalue(L, c.inputs);
  lua_setiuservalue(L, ki, K_INPUTS);
  lua_pushvalue(L, c.states);
  lua_setiuservalue(L, ki, K_STATES);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, ki, K_DEF);
  lua_pushvalue(L, c.methods);
  lua_setiuservalue(L, ki, K_METHODS);
  lua_pushvalue(L, ki);
  return 1;
}

/* ============================================================== validation */

/* Pushes require("modal.check")[fname]. */
static void push_checker(lua_State *L, const char *fname) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal.check");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, fname);
  lua_remove(L, -2);
}

/***
Validates a machine definition without raising (`doc/machines.md`, "Validation"): every
problem at once, each with its path in the table and a nearest-name suggestion
(`states.connecting.on.done.to: unknown state 'redy' (did you mean 'ready'?)`).
@function check
@tparam table def a machine definition
@treturn boolean ok: no errors (warnings allowed)
@treturn {string,...} errors, each `"path: message"`
@treturn {string,...} warnings (a state unreachable from `initial`)
@within Machines
*/
/* modal.check(def) -> ok, errors, warnings */
static int md_check(lua_State *L) {
  lua_settop(L, 1);
  push_checker(L, "check");
  lua_insert(L, 1);
  lua_call(L, 1, 3);
  return 3;
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
  lua_pushcfunction(L, modal__compile);
  lua_setfield(L, LUA_REGISTRYINDEX, "modal.compile");
  lua_pushcfunction(L, md_check);
  lua_setfield(L, -2, "check");
}
