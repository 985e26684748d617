/*
** calls.c — method calls (doc/machines.md, rules 1 and 2): running a handler protected,
** turning its outcome into the caller's Deferred, and the postponed-call record — a
** Deferred whose aux word holds the method and whose pending result slot holds the
** arguments — in the instance's queue of calls.
*/

/***
@module modal
*/

#include "machine.h"

static const char postpone_key = 'p';   /* what m:postpone() returns */

/* ============================================================== handlers */

int modal__run_handler(lua_State *L, modal_instance *c, int base, int nargs) {
  int status;
  c->depth++;
  status = lua_pcall(L, nargs + 1, 1, base);
  c->depth--;
  lua_replace(L, base);                  /* the result (or failure) where msgh was */
  if (status != LUA_OK) {
    modal__to_failure(L, base);
    return R_ERROR;
  }
  if (lua_touserdata(L, base) == (void *)&postpone_key)
    return R_POSTPONE;
  return R_VALUE;
}

int modal__call_finish(lua_State *L) {
  int r = (int)lua_tointeger(L, 1);
  if (r == R_POSTPONE) {
    modal_instance *c = modal__to_instance(L, 5);
    modal__postpone(L, c, 5, (int)lua_tointeger(L, 3), 6, lua_gettop(L) - 5);
    return 1;
  }
  lua_settop(L, 4);
  lua_pushvalue(L, 2);
  modal__outcome_deferred(L, r, 4);
  return 1;
}

void modal__settle(lua_State *L, int d, int r) {
  d = lua_absindex(L, d);
  if (r == R_ERROR)
    modal__fire(L, d, -1, 1);
  else if (modal__is_deferred(L, -1))
    modal__follow(L, d, -1);
  else
    modal__fire(L, d, -1, modal__is_failure(L, -1));
  lua_pop(L, 1);
}

void modal__outcome_deferred(lua_State *L, int r, int mt) {
  if (r == R_ERROR) {
    modal__deferred_fired(L, -1, 1);
  } else if (!modal__is_deferred(L, -1)) {
    modal__deferred_fired_mt(L, -1, modal__is_failure(L, -1), mt);
  } else {
    return;                              /* a Deferred: the caller gets it as it is */
  }
  lua_replace(L, -2);
}

/***
@type Instance
*/
/***
Inside a method handler, `return m:postpone()` queues this call: it is retried, oldest
first, after every change of state name (`gen_statem`'s postpone). Cancelling the caller's
Deferred takes it out of the queue.
@function Instance:postpone
@return a marker for the handler to return
@raise outside a method handler; in a final state it raises (and the call fails with kind
`"error"`)
*/
/* m:postpone() — inside a handler: queue this call until the next change of state. */
static int md_postpone(lua_State *L) {
  modal_instance *c = modal__check_instance(L, 1);
  if (c->depth <= 0)
    return luaL_error(L, "modal: m:postpone() called outside a method handler");
  if (c->M->def->states[c->state].final) {
    modal__push_state_name(L, c, 1, c->state);
    return luaL_error(L, "modal: cannot postpone a call in final state '%s'",
                      lua_tostring(L, -1));
  }
  lua_pushlightuserdata(L, (void *)&postpone_key);
  return 1;
}

/***
The number of calls waiting in the queue.
@function Instance:postponed
@treturn integer
*/
static int md_postponed(lua_State *L) {
  lua_pushinteger(L, modal__check_instance(L, 1)->npostponed);
  return 1;
}

/* ============================================================== the postponed-call record */

/* Pushes a Deferred already failed with a new failure of `kind`; message on top (popped). */
static void push_failed(lua_State *L, const char *kind) {
  modal__failure_new(L, kind, lua_tostring(L, -1), 0, 0);
  lua_remove(L, -2);
  modal__deferred_fired(L, -1, 1);
  lua_remove(L, -2);
}

/* The call cannot be queued: the instance is in a final state, or its queue is full. Pushes
** a failed Deferred and returns 1; else 0. */
static int refused(lua_State *L, modal_instance *c, int ci) {
  modal_compiled *k = c->M->def;
  if (k->states[c->state].final) {
    modal__push_state_name(L, c, ci, c->state);
    lua_pushfstring(L, "cannot postpone a call in final state '%s'", lua_tostring(L, -1));
    lua_remove(L, -2);
    push_failed(L, "error");
    return 1;
  }
  if (c->npostponed >= k->max_postponed) {
    lua_pushfstring(L, "too many postponed calls (max_postponed = %d)", k->max_postponed);
    push_failed(L, "overloaded");
    return 1;
  }
  return 0;
}

void modal__postpone(lua_State *L, modal_instance *c, int ci, int method, int args, int nargs) {
  modal_extras *x;
  uint32_t *aux;
  int d, base = lua_gettop(L);
  ci = lua_absindex(L, ci);
  args = nargs ? lua_absindex(L, args) : 0;
  if (refused(L, c, ci))
    return;
  x = modal__extras(L, ci, 1);           /* made first: a memory error leaves nothing behind */
  modal__push_list(L, -1, X_CALLS);
  modal__deferred_new(L, ci);            /* the canceller is the instance: its __call */
  d = lua_gettop(L);
  if (nargs == 1) {
    lua_pushvalue(L, args);
    lua_setiuservalue(L, d, 1);          /* a pending Deferred's result slot is free */
  } else if (nargs > 1) {
    int i;
    lua_createtable(L, nargs, 1);
    for (i = 0; i < nargs; i++) {
      lua_pushvalue(L, args + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, nargs);
    lua_setfield(L, -2, "n");
    lua_setiuservalue(L, d, 1);
  }
  /* Those allocations may have run a finalizer that called the instance (busy, so its state
  ** stays) and postponed calls of its own: the queue may be full now. */
  if (c->npostponed >= c->M->def->max_postponed) {
    lua_settop(L, base);
    refused(L, c, ci);
    return;
  }
  lua_pushvalue(L, d);
  modal__list_push(L, &x->calls, d - 1);
  aux = modal__deferred_aux(L, d);
  *aux = ((uint32_t)method + 1) | (nargs == 0 ? AUX_NOARGS : nargs > 1 ? AUX_PACKED : 0);
  c->npostponed++;
  lua_replace(L, d - 2);                 /* the Deferred where the extras were */
  lua_settop(L, d - 2);
  if (!(c->flags & I_PINNED))
    modal__update_pin(L, c, ci);
}

int modal__call_args(lua_State *L, int d, uint32_t aux) {
  int n, i;
  d = lua_absindex(L, d);
  if (aux & AUX_NOARGS)
    return 0;
  lua_getiuservalue(L, d, 1);
  if (!(aux & AUX_PACKED))
    return 1;
  lua_getfield(L, -1, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n + 8, "too many arguments in a postponed call");
  for (i = 1; i <= n; i++)
    lua_rawgeti(L, -i, i);
  lua_remove(L, -n - 1);
  return n;
}

void modal__call_left(lua_State *L, modal_instance *c, int ci, int d) {
  uint32_t *aux = modal__deferred_aux(L, d);
  modal_extras *x;
  if (!aux || *aux == 0 || (*aux & AUX_WHEN))
    return;
  *aux = 0;
  c->npostponed--;
  x = modal__extras(L, ci, 0);
  if (x)
    x->calls.live--;
  lua_pop(L, 1);
  if (c->npostponed == 0)
    modal__update_pin(L, c, ci);
}

/* Walks the live calls of the instance at ci: fn(L, c, ci, d, arg) with d on top. */
static int each_call(lua_State *L, modal_instance *c, int ci,
                     int (*fn)(lua_State *, modal_instance *, int, int, void *), void *arg) {
  modal_extras *x;
  uint32_t i, n;
  int t, count = 0, walking;
  ci = lua_absindex(L, ci);
  x = modal__extras(L, ci, 0);
  if (!x || c->npostponed == 0) {
    lua_pop(L, 1);
    return 0;
  }
  modal__push_list(L, -1, X_CALLS);
  t = lua_gettop(L);
  n = x->calls.tail;                     /* calls fn's user code postpones are not walked */
  walking = c->flags & I_RETRYING;
  c->flags |= I_RETRYING;                /* a cancel meanwhile leaves the slots in place */
  for (i = x->calls.head; i < n; i++) {
    uint32_t *aux;
    lua_rawgeti(L, t, (lua_Integer)i);
    aux = modal__deferred_aux(L, -1);
    if (aux && *aux && modal__is_pending(L, -1))
      count += fn(L, c, ci, lua_gettop(L), arg);
    lua_settop(L, t);
  }
  if (!walking) {
    c->flags &= (uint16_t)~I_RETRYING;
    modal__list_compact(L, &x->calls, t, 1);
  }
  lua_pop(L, 2);
  return count;
}

/* Fails the call at d with a new failure (kind, message in arg[0], arg[1]). */
static int fail_one(lua_State *L, modal_instance *c, int ci, int d, void *arg) {
  const char **km = (const char **)arg;
  modal__call_left(L, c, ci, d);
  modal__failure_new(L, km[0], km[1], 0, 0);
  modal__fire(L, d, -1, 1);
  lua_pop(L, 1);
  return 1;
}

int modal__fail_calls(lua_State *L, modal_instance *c, int ci, const char *kind,
                      const char *message) {
  const char *km[2];
  km[0] = kind;
  km[1] = message;
  return each_call(L, c, ci, fail_one, km);
}

/* Moves the call at d to its method's new index (arg: the map's stack index); a call whose
** method is gone is marked, to fail in the second pass. */
static int remap_one(lua_State *L, modal_instance *c, int ci, int d, void *arg) {
  uint32_t *aux = modal__deferred_aux(L, d), old = *aux & AUX_INDEX;
  lua_Integer to;
  (void)c;
  (void)ci;
  if (old == AUX_GONE)
    return 0;                            /* gone at an earlier reload: it keeps its name */
  lua_rawgeti(L, *(int *)arg, (lua_Integer)old);
  to = lua_tointeger(L, -1);
  lua_pop(L, 1);
  *aux = (*aux & ~AUX_INDEX) | (to > 0 ? (uint32_t)to & AUX_INDEX : AUX_GONE);
  if (to <= 0) {                         /* its arguments make way for the method's name */
    lua_rawgeti(L, *(int *)arg, -(lua_Integer)old);
    lua_setiuservalue(L, d, 1);
  }
  return 0;
}

void modal__remap_calls(lua_State *L, modal_instance *c, int ci, int map) {
  map = lua_absindex(L, map);
  each_call(L, c, ci, remap_one, &map);
}

/* Pushes what a call whose method a reload removed fails with: "method 'q' was removed by a
** reload" (the name took its arguments' place at the reload). */
void modal__push_gone_message(lua_State *L, int d) {
  d = lua_absindex(L, d);
  if (lua_getiuservalue(L, d, 1) == LUA_TSTRING &&
      (*modal__deferred_aux(L, d) & AUX_INDEX) == AUX_GONE) {
    lua_pushfstring(L, "method '%s' was removed by a reload", lua_tostring(L, -1));
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  lua_pushliteral(L, "the method of this call was removed by a reload");
}

static int fail_gone(lua_State *L, modal_instance *c, int ci, int d, void *arg) {
  const char *km[2];
  int n;
  (void)arg;
  if ((*modal__deferred_aux(L, d) & AUX_INDEX) != AUX_GONE)
    return 0;
  modal__push_gone_message(L, d);
  km[0] = "error";
  km[1] = lua_tostring(L, -1);
  n = fail_one(L, c, ci, d, (void *)km);
  lua_pop(L, 1);
  return n;
}

void modal__fail_gone_calls(lua_State *L, modal_instance *c, int ci) {
  each_call(L, c, ci, fail_gone, NULL);
}

void modal__open_calls(lua_State *L, int methods) {
  lua_pushcfunction(L, md_postpone);
  lua_setfield(L, methods, "postpone");
  lua_pushcfunction(L, md_postponed);
  lua_setfield(L, methods, "postponed");
}
