/*
** observe.c — watching an instance (doc/machines.md, rule 10): c:when(state) waiters and
** c:on_transition(fn) observers, and what the driver calls after each entry to tell them.
** Both are lists with explicit counts; entries added while a list is walked wait for the
** next walk, entries that leave meanwhile are skipped.
*/

/***
@module modal
*/

#include "machine.h"

/* Pushes the state index of the name at `name` in the instance's definition, or raises. */
static int state_index(lua_State *L, modal_instance *c, int ci, int name) {
  int st;
  lua_getmetatable(L, ci);
  lua_rawgeti(L, -1, 1);
  lua_getiuservalue(L, -1, M_DEF);
  lua_getiuservalue(L, -1, K_STATES);
  lua_pushvalue(L, name);
  if (lua_rawget(L, -2) != LUA_TNUMBER) {
    modal__push_fn(L, ci, c->M->def->name);
    return luaL_error(L, "modal: c:when(): machine '%s' has no state '%s'", lua_tostring(L, -1),
                      lua_tostring(L, name));
  }
  st = (int)lua_tointeger(L, -1);
  lua_pop(L, 5);
  return st;
}

/* Pushes a failure of kind "stopped" naming the final state the instance is in. */
static void push_final_failure(lua_State *L, modal_instance *c, int ci, const char *fmt) {
  modal__push_state_name(L, c, ci, c->state);
  lua_pushfstring(L, fmt, lua_tostring(L, -1));
  modal__failure_new(L, "stopped", lua_tostring(L, -1), 0, 0);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/***
@type Instance
*/
/***
A Deferred that succeeds with `c` when the instance is (or next is) in `state`. It fails
with kind `"stopped"` at once when the instance is in another final state, or when it
reaches one.
@function Instance:when
@tparam string state a state name of the definition
@treturn Deferred
@raise on an unknown state name
@usage c:when("ready"):add_callback(function(c) print(c.state) end)
*/
/* c:when(state) -> Deferred(c) */
static int md_when(lua_State *L) {
  modal_instance *c = modal__check_instance(L, 1);
  modal_extras *x;
  int st;
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "bad argument #1 to 'when' (state name expected, got %s)",
                      lua_isnone(L, 2) ? "no value" : luaL_typename(L, 2));
  lua_settop(L, 2);
  st = state_index(L, c, 1, 2);
  modal__deferred_new(L, 1);             /* 3; cancel: the instance lets go of it */
  if (st != c->state && !c->M->def->states[c->state].final) {
    x = modal__extras(L, 1, 1);          /* 4 */
    modal__push_list(L, 4, X_WAITERS);
    lua_pushvalue(L, 3);
    modal__list_push(L, &x->waiters, 5);
    *modal__deferred_aux(L, 3) = AUX_WHEN | (uint32_t)st;
    modal__update_pin(L, c, 1);
    /* Those allocations may have run a finalizer that moved the instance; an announce then
    ** settled the waiter already, or came before it was listed: look again. */
    if (*modal__deferred_aux(L, 3) == 0 ||
        (st != c->state && !c->M->def->states[c->state].final)) {
      lua_settop(L, 3);
      return 1;
    }
    x->waiters.live--;
    *modal__deferred_aux(L, 3) = 0;
    modal__update_pin(L, c, 1);
  }
  if (st == c->state) {
    lua_pushvalue(L, 1);
    modal__fire(L, 3, -1, 0);
  } else {
    push_final_failure(L, c, 1, "the instance is in final state '%s'");
    modal__fire(L, 3, -1, 1);
  }
  lua_settop(L, 3);
  return 1;
}

/* handle:cancel() of on_transition: upvalue 1 the observer's record {fn}, 2 the instance. */
static int observer_cancel(lua_State *L) {
  int ci = lua_upvalueindex(2);
  modal_instance *c = modal__to_instance(L, ci);
  modal_extras *x;
  if (lua_rawgeti(L, lua_upvalueindex(1), 1) == LUA_TNIL || !c)
    return 0;                            /* cancelled already */
  lua_pushnil(L);
  lua_rawseti(L, lua_upvalueindex(1), 1);
  x = modal__extras(L, ci, 0);
  if (!x)
    return 0;
  x->observers.live--;
  if (!(c->flags & I_ANNOUNCING) && x->observers.tail - x->observers.head > 16 &&
      x->observers.tail - x->observers.head > 2 * x->observers.live) {
    modal__push_list(L, -1, X_OBSERVERS);
    modal__list_compact(L, &x->observers, -1, 0);
  }
  return 0;
}

/***
Observes every external transition (self transitions included) after it happened: `fn(c,
from, to, input)`. Observers added while observers run wait for the next transition.
@function Instance:on_transition
@tparam function fn the observer
@return a handle whose `cancel()` stops it
*/
/* c:on_transition(fn(c, from, to, input)) -> handle with :cancel() */
static int md_on_transition(lua_State *L) {
  modal_extras *x;
  modal__check_instance(L, 1);
  if (lua_type(L, 2) != LUA_TFUNCTION)
    return luaL_error(L, "bad argument #1 to 'on_transition' (function expected, got %s)",
                      lua_isnone(L, 2) ? "no value" : luaL_typename(L, 2));
  lua_settop(L, 2);
  x = modal__extras(L, 1, 1);            /* 3 */
  modal__push_list(L, 3, X_OBSERVERS);   /* 4 */
  lua_createtable(L, 1, 0);              /* 5: the record */
  lua_pushvalue(L, 2);
  lua_rawseti(L, 5, 1);
  lua_pushvalue(L, 5);
  modal__list_push(L, &x->observers, 4);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 5);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, observer_cancel, 2);
  lua_setfield(L, -2, "cancel");
  return 1;
}

/* ============================================================== telling them */

static void push_opt(lua_State *L, int idx) {
  if (idx)
    lua_pushvalue(L, idx);
  else
    lua_pushnil(L);
}

static void call_observers(lua_State *L, modal_instance *c, int ci, int xi, int from, int in) {
  modal_extras *x = (modal_extras *)lua_touserdata(L, xi);
  uint32_t i, n = x->observers.tail;     /* observers added now wait for the next one */
  int t, nested = c->flags & I_ANNOUNCING;
  modal__push_list(L, xi, X_OBSERVERS);
  t = lua_gettop(L);
  c->flags |= I_ANNOUNCING;
  for (i = x->observers.head; i < n; i++) {
    if (lua_rawgeti(L, t, (lua_Integer)i) != LUA_TTABLE || lua_rawgeti(L, -1, 1) != LUA_TFUNCTION) {
      lua_settop(L, t);
      continue;
    }
    lua_pushvalue(L, ci);
    push_opt(L, from);
    modal__push_state_name(L, c, ci, c->state);
    push_opt(L, in);
    if (modal__call(L, 4, 0) != LUA_OK) {
      int f = lua_gettop(L);
      modal__push_fields(L, c, ci, in);
      luaL_tolstring(L, f, NULL);
      modal__log(L, MODAL_LOG_ERROR, f + 1, "error in an on_transition observer: %s",
                 lua_tostring(L, -1));
    }
    lua_settop(L, t);
  }
  if (!nested) {
    c->flags &= (uint16_t)~I_ANNOUNCING;
    if (x->observers.tail - x->observers.head > 2 * x->observers.live + 16)
      modal__list_compact(L, &x->observers, t, 0);
  }
  lua_settop(L, t - 1);
}

/* A waiter leaves the list (before its Deferred fires: user code may look at the counts). */
static void waiter_left(modal_extras *x, uint32_t *aux) {
  *aux = 0;
  x->waiters.live--;
}

typedef int (*waiter_fn)(lua_State *L, modal_instance *c, int ci, modal_extras *x, int d,
                         int st, void *arg);

/* Walks the live waiters: fn(L, c, ci, x, d, st, arg) with d on top. */
static void each_waiter(lua_State *L, modal_instance *c, int ci, int xi, waiter_fn fn,
                        void *arg) {
  modal_extras *x = (modal_extras *)lua_touserdata(L, xi);
  uint32_t i, n = x->waiters.tail;
  int t, nested = c->flags & I_ANNOUNCING;
  modal__push_list(L, xi, X_WAITERS);
  t = lua_gettop(L);
  c->flags |= I_ANNOUNCING;              /* a cancel meanwhile leaves the slots in place */
  for (i = x->waiters.head; i < n; i++) {
    uint32_t *aux;
    lua_rawgeti(L, t, (lua_Integer)i);
    aux = modal__deferred_aux(L, -1);
    if (aux && (*aux & AUX_WHEN) && modal__is_pending(L, -1))
      fn(L, c, ci, x, lua_gettop(L), (int)(*aux & AUX_INDEX), arg);
    lua_settop(L, t);
  }
  if (!nested) {
    c->flags &= (uint16_t)~I_ANNOUNCING;
    modal__list_compact(L, &x->waiters, t, 1);
  }
  lua_settop(L, t - 1);
  modal__update_pin(L, c, ci);
}

/* Settles a waiter for the state just entered, or fails it in a final state. */
static int settle_waiter(lua_State *L, modal_instance *c, int ci, modal_extras *x, int d,
                         int st, void *arg) {
  (void)arg;
  if (st == c->state) {
    waiter_left(x, modal__deferred_aux(L, d));
    lua_pushvalue(L, ci);
    modal__fire(L, d, -1, 0);
    return 1;
  }
  if (!c->M->def->states[c->state].final)
    return 0;
  waiter_left(x, modal__deferred_aux(L, d));
  push_final_failure(L, c, ci, "the instance reached final state '%s'");
  modal__fire(L, d, -1, 1);
  return 1;
}

void modal__announce(lua_State *L, modal_instance *c, int ci, int from, int in) {
  modal_extras *x;
  int top = lua_gettop(L);
  if (!(c->flags & I_HASX))
    return;                              /* no observers, no waiters */
  ci = lua_absindex(L, ci);
  from = from ? lua_absindex(L, from) : 0;
  in = in ? lua_absindex(L, in) : 0;
  x = modal__extras(L, ci, 0);
  if (x && x->observers.live > 0)
    call_observers(L, c, ci, top + 1, from, in);
  if (x && x->waiters.live > 0)
    each_waiter(L, c, ci, top + 1, settle_waiter, NULL);
  lua_settop(L, top);
}

typedef struct fail_arg {
  const char *kind, *message;
  int smap;                              /* reload: the state map, or 0 */
  int count;
} fail_arg;

static int fail_waiter(lua_State *L, modal_instance *c, int ci, modal_extras *x, int d, int st,
                       void *arg) {
  fail_arg *a = (fail_arg *)arg;
  (void)c;
  (void)ci;
  if (a->smap) {
    lua_Integer to;
    lua_rawgeti(L, a->smap, st + 1);
    to = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (to > 0) {
      *modal__deferred_aux(L, d) = AUX_WHEN | (uint32_t)(to - 1);
      return 0;
    }
  }
  waiter_left(x, modal__deferred_aux(L, d));
  modal__failure_new(L, a->kind, a->message, 0, 0);
  modal__fire(L, d, -1, 1);
  a->count++;
  return 1;
}

int modal__fail_waiters(lua_State *L, modal_instance *c, int ci, const char *kind,
                        const char *message) {
  fail_arg a;
  modal_extras *x;
  int top = lua_gettop(L);
  a.kind = kind;
  a.message = message;
  a.smap = 0;
  a.count = 0;
  ci = lua_absindex(L, ci);
  x = modal__extras(L, ci, 0);
  if (x && x->waiters.live > 0)
    each_waiter(L, c, ci, top + 1, fail_waiter, &a);
  lua_settop(L, top);
  return a.count;
}

/* Marks each waiter with its state's new index (no allocation, no Lua code). */
static int remap_waiter(lua_State *L, modal_instance *c, int ci, modal_extras *x, int d, int st,
                        void *arg) {
  lua_Integer to;
  (void)c;
  (void)ci;
  (void)x;
  lua_rawgeti(L, *(int *)arg, st + 1);
  to = lua_tointeger(L, -1);
  lua_pop(L, 1);
  *modal__deferred_aux(L, d) = AUX_WHEN | (to > 0 ? (uint32_t)(to - 1) : AUX_GONE);
  return 0;
}

void modal__remap_waiters(lua_State *L, modal_instance *c, int ci, int smap) {
  modal_extras *x;
  int top = lua_gettop(L);
  smap = lua_absindex(L, smap);
  ci = lua_absindex(L, ci);
  x = modal__extras(L, ci, 0);
  if (x && x->waiters.live > 0)
    each_waiter(L, c, ci, top + 1, remap_waiter, &smap);
  lua_settop(L, top);
}

/* A waiter whose state was removed by a reload fails; the others stay. */
static int fail_gone(lua_State *L, modal_instance *c, int ci, modal_extras *x, int d, int st,
                     void *arg) {
  fail_arg a;
  (void)arg;
  if ((uint32_t)st != AUX_GONE)
    return 0;
  a.kind = "stopped";
  a.message = "the state waited for was removed by a reload";
  a.smap = 0;
  a.count = 0;
  return fail_waiter(L, c, ci, x, d, st, &a);
}

/* A waiter whose state was removed fails; the rest as after an entry. */
static int settle_or_gone(lua_State *L, modal_instance *c, int ci, modal_extras *x, int d,
                          int st, void *arg) {
  if ((uint32_t)st == AUX_GONE)
    return fail_gone(L, c, ci, x, d, st, arg);
  return settle_waiter(L, c, ci, x, d, st, arg);
}

void modal__settle_waiters(lua_State *L, modal_instance *c, int ci, int gone_only) {
  modal_extras *x;
  int top = lua_gettop(L);
  ci = lua_absindex(L, ci);
  x = modal__extras(L, ci, 0);
  if (x && x->waiters.live > 0)
    each_waiter(L, c, ci, top + 1, gone_only ? fail_gone : settle_or_gone, NULL);
  lua_settop(L, top);
}

void modal__open_observe(lua_State *L, int methods) {
  lua_pushcfunction(L, md_when);
  lua_setfield(L, methods, "when");
  lua_pushcfunction(L, md_on_transition);
  lua_setfield(L, methods, "on_transition");
}
