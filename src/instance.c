/*
** instance.c — driving machine instances (DESIGN.md section 5, rules 1-11): method calls
** and postponed calls, inputs with guards and actions, run-to-completion, hooks, state
** timeouts, run jobs, final states, when and on_transition.
*/
#include <string.h>
#include "machine.h"

static const char postpone_key = 'p';   /* what m:postpone() returns */

int modal__in_hook = 0;
int modal__tracing = 0;

/* ============================================================== access */

modal_instance *modal__to_instance(lua_State *L, int idx) {
  modal_instance *c = (modal_instance *)lua_touserdata(L, idx);
  if (c && lua_rawlen(L, idx) == sizeof *c && c->magic == INSTANCE_MAGIC)
    return c;
  return NULL;
}

static modal_instance *check_instance(lua_State *L, int idx) {
  modal_instance *c = modal__to_instance(L, idx);
  if (!c)
    luaL_typeerror(L, idx, "modal.instance");
  return c;
}

void modal__push_fns(lua_State *L, modal_instance *c, int ci) {
  (void)c;
  lua_getiuservalue(L, ci, I_MACHINE);
  lua_getiuservalue(L, -1, M_DEF);
  lua_getiuservalue(L, -1, K_FNS);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

static void push_fn(lua_State *L, modal_instance *c, int ci, int k) {
  modal__push_fns(L, c, ci);
  lua_rawgeti(L, -1, k);
  lua_remove(L, -2);
}

static void push_state_name(lua_State *L, modal_instance *c, int ci, int st) {
  push_fn(L, c, ci, c->M->def->states[st].name);
}

static void push_input_name(lua_State *L, int ci, int in) {
  lua_getiuservalue(L, ci, I_MACHINE);
  lua_getiuservalue(L, -1, M_DEF);
  lua_getiuservalue(L, -1, K_INPUTS);
  lua_rawgeti(L, -1, in + 1);
  lua_replace(L, -4);
  lua_pop(L, 2);
}

/* Pushes the extras table, making it when `make`; pushes nil when absent and not made. An
** instance that never needed one (most, and every idle one) costs no API call here. */
static int push_extras(lua_State *L, int ci, int make) {
  modal_instance *c = (modal_instance *)lua_touserdata(L, ci);
  if ((c->flags & I_HASX) && lua_getiuservalue(L, ci, I_EXTRAS) == LUA_TTABLE)
    return 1;
  if (c->flags & I_HASX)
    lua_pop(L, 1);
  if (!make) {
    lua_pushnil(L);
    return 0;
  }
  lua_createtable(L, 8, 0);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, ci, I_EXTRAS);
  c->flags |= I_HASX;
  return 1;
}

/* Pushes extras[field] (nil when there are no extras). */
static int push_extra(lua_State *L, int ci, int field) {
  int t;
  if (!push_extras(L, ci, 0))
    return LUA_TNIL;
  t = lua_rawgeti(L, -1, field);
  lua_remove(L, -2);
  return t;
}

/* extras[field] = value on top (popped). */
static void set_extra(lua_State *L, int ci, int field) {
  push_extras(L, ci, 1);
  lua_insert(L, -2);
  lua_rawseti(L, -2, field);
  lua_pop(L, 1);
}

/* Pushes extras[field], a list made empty on first use; returns 1 when it was just made. */
static int push_extra_list(lua_State *L, int ci, int field) {
  if (push_extra(L, ci, field) == LUA_TTABLE)
    return 0;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  set_extra(L, ci, field);
  return 1;
}

/* Pushes the log fields {machine, id, state[, input]}. */
static void push_fields(lua_State *L, modal_instance *c, int ci, int in) {
  lua_createtable(L, 0, 4);
  push_fn(L, c, ci, c->M->def->name);
  lua_setfield(L, -2, "machine");
  lua_pushinteger(L, (lua_Integer)c->id);
  lua_setfield(L, -2, "id");
  push_state_name(L, c, ci, c->state);
  lua_setfield(L, -2, "state");
  if (in >= 0) {
    push_input_name(L, ci, in);
    lua_setfield(L, -2, "input");
  }
}

/* ============================================================== user code errors */


static void enqueue_input(lua_State *L, int ci, int in, int args, int nargs, int soft);

/* A hook, action, guard, timeout function or run raised (failure on top, popped): log it at
** error and queue input "error" with it (dropped quietly if no state then takes it). */
static void hook_error(lua_State *L, modal_instance *c, int ci, const char *what) {
  int f = lua_gettop(L);
  push_fields(L, c, ci, -1);
  push_state_name(L, c, ci, c->state);
  luaL_tolstring(L, f, NULL);
  modal__log(L, MODAL_LOG_ERROR, f + 1, "error in %s (state '%s'): %s", what,
             lua_tostring(L, -2), lua_tostring(L, -1));
  lua_settop(L, f);
  enqueue_input(L, ci, c->M->def->in_error, f, 1, 1);
  lua_settop(L, f - 1);
}

/* ============================================================== the input queue */

/* Appends (input, nargs, args..., soft) to the queue; args at [args, args + nargs). */
static void enqueue_input(lua_State *L, int ci, int in, int args, int nargs, int soft) {
  lua_Integer n;
  int i;
  if (push_extra_list(L, ci, X_INPUTS)) {
    lua_pushinteger(L, 1);
    set_extra(L, ci, X_INHEAD);
  }
  n = (lua_Integer)lua_rawlen(L, -1);
  lua_pushinteger(L, in);
  lua_rawseti(L, -2, ++n);
  lua_pushinteger(L, nargs);
  lua_rawseti(L, -2, ++n);
  for (i = 0; i < nargs; i++) {
    lua_pushvalue(L, args + i);
    lua_rawseti(L, -2, ++n);
  }
  lua_pushboolean(L, soft);
  lua_rawseti(L, -2, ++n);
  lua_pop(L, 1);
}

static int handle_input(lua_State *L, modal_instance *c, int ci, int in, int args, int nargs);

/* Processes queued inputs in order until none is left (the instance is busy meanwhile). */
static void drain(lua_State *L, modal_instance *c, int ci) {
  int top;
  if (c->flags & I_BUSY || !(c->flags & I_HASX))
    return;                              /* no extras: no queued input */
  top = lua_gettop(L);
  c->flags |= I_BUSY;
  for (;;) {
    lua_Integer head, n;
    int in, nargs, soft, i, args;
    lua_settop(L, top);
    if (push_extra(L, ci, X_INPUTS) != LUA_TTABLE)
      break;
    n = (lua_Integer)lua_rawlen(L, -1);
    push_extra(L, ci, X_INHEAD);
    head = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (head > n) {                      /* all done: drop the queue */
      lua_pushnil(L);
      set_extra(L, ci, X_INPUTS);
      break;
    }
    lua_rawgeti(L, top + 1, head);
    in = (int)lua_tointeger(L, -1);
    lua_rawgeti(L, top + 1, head + 1);
    nargs = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    luaL_checkstack(L, nargs + 8, "too many input arguments");
    args = lua_gettop(L) + 1;
    for (i = 0; i < nargs; i++) {
      lua_rawgeti(L, top + 1, head + 2 + i);
      lua_pushnil(L);
      lua_rawseti(L, top + 1, head + 2 + i);
    }
    lua_rawgeti(L, top + 1, head + 2 + nargs);
    soft = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_pushinteger(L, head + 3 + nargs);
    set_extra(L, ci, X_INHEAD);
    if (in == -2) {                      /* queued before a reload that removed it */
      push_fields(L, c, ci, -1);
      modal__log(L, MODAL_LOG_DEBUG, -1, "a queued input was dropped: the reloaded definition "
                 "does not have it");
    } else if (in < 0) {                 /* an input no state takes, fired from inside */
      int f = lua_gettop(L) + 1;
      push_fields(L, c, ci, -1);
      lua_pushvalue(L, args);
      lua_setfield(L, f, "input");
      luaL_tolstring(L, args, NULL);
      push_state_name(L, c, ci, c->state);
      modal__log(L, MODAL_LOG_WARN, f, "input '%s' not taken in state '%s' (no state takes it)",
                 lua_tostring(L, -2), lua_tostring(L, -1));
    } else if (handle_input(L, c, ci, in, args, nargs)) {
      int f = lua_gettop(L) + 1;
      push_fields(L, c, ci, in);
      push_input_name(L, ci, in);
      push_state_name(L, c, ci, c->state);
      if (soft)                          /* an "error" input from a hook: logged already */
        modal__log(L, MODAL_LOG_DEBUG, f, "input '%s' dropped: state '%s' does not take it",
                   lua_tostring(L, -2), lua_tostring(L, -1));
      else
        modal__log(L, MODAL_LOG_WARN, f, "input '%s' not taken in state '%s'",
                   lua_tostring(L, -2), lua_tostring(L, -1));
    }
  }
  lua_settop(L, top);
  c->flags &= (uint16_t)~I_BUSY;
}

/* ============================================================== postponed calls */

#define AUX_NOARGS 0x8000u
#define AUX_PACKED 0x4000u
#define AUX_METHOD 0x3fffu

/* Pushes the Deferred of a new postponed call of `method` with args [args, args + nargs). */
static void postpone_call(lua_State *L, modal_instance *c, int ci, int method, int args,
                          int nargs) {
  modal_compiled *k = c->M->def;
  uint32_t *aux;
  int d;
  lua_Integer n;
  if (k->states[c->state].final) {
    push_state_name(L, c, ci, c->state);
    lua_pushfstring(L, "cannot postpone a call in final state '%s'", lua_tostring(L, -1));
    modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
    lua_replace(L, -3);
    lua_pop(L, 1);
    modal_new_deferred(L);
    lua_insert(L, -2);
    modal__fire(L, -2, -1, 1);
    lua_pop(L, 1);
    return;
  }
  if (c->npostponed >= k->max_postponed) {
    lua_pushfstring(L, "too many postponed calls (max_postponed = %d)", k->max_postponed);
    modal__failure_new(L, "overloaded", lua_tostring(L, -1), 0, 0);
    lua_remove(L, -2);
    modal_new_deferred(L);
    lua_insert(L, -2);
    modal__fire(L, -2, -1, 1);
    lua_pop(L, 1);
    return;
  }
  modal__deferred_new(L, ci);            /* the canceller is the instance: its __call */
  d = lua_gettop(L);
  aux = modal__deferred_aux(L, d);
  *aux = (uint32_t)((method + 1) & AUX_METHOD);   /* never 0: 0 marks a call that left */
  if (nargs == 0) {
    *aux |= AUX_NOARGS;
  } else if (nargs == 1) {
    lua_pushvalue(L, args);
    lua_setiuservalue(L, d, 1);          /* a pending Deferred's result slot is free */
  } else {
    int i;
    *aux |= AUX_PACKED;
    lua_createtable(L, nargs, 1);
    for (i = 0; i < nargs; i++) {
      lua_pushvalue(L, args + i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, nargs);
    lua_setfield(L, -2, "n");
    lua_setiuservalue(L, d, 1);
  }
  push_extra_list(L, ci, (c->flags & I_RETRYING) ? X_INCOMING : X_QUEUE);
  n = (lua_Integer)lua_rawlen(L, -1);
  lua_pushvalue(L, d);
  lua_rawseti(L, -2, n + 1);
  lua_pop(L, 1);
  c->npostponed++;
}

#define AUX_WHEN  (AUX_NOARGS | AUX_PACKED)   /* a when() Deferred; low bits: its state */

/* Sets the first entry of the list at `list` (from index `from`) equal to the value at v to
** false; returns its index, or 0. */
static lua_Integer unlist(lua_State *L, int list, lua_Integer from, int v) {
  lua_Integer i, n = (lua_Integer)lua_rawlen(L, list);
  for (i = from > 0 ? from : 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    if (lua_rawequal(L, -1, v)) {
      lua_pop(L, 1);
      lua_pushboolean(L, 0);
      lua_rawseti(L, list, i);
      return i;
    }
    lua_pop(L, 1);
  }
  return 0;
}

/* The instance's __call: (c, d), the canceller of its postponed calls and when() Deferreds.
** The instance lets go of d at once (its queue slot becomes false). */
int modal__instance_cancel_call(lua_State *L) {
  modal_instance *c = check_instance(L, 1);
  uint32_t *aux = modal__deferred_aux(L, 2);
  uint32_t a;
  if (!aux || !modal__is_cancelling(L, 2))  /* only d:cancel() gets here legitimately */
    return luaL_error(L, "modal: attempt to call an instance (%s)", luaL_tolstring(L, 1, NULL));
  if (!*aux)
    return 0;
  a = *aux;
  *aux = 0;
  lua_settop(L, 2);
  if ((a & AUX_WHEN) == AUX_WHEN) {      /* a when() waiter */
    if (push_extra(L, 1, X_WAITERS) == LUA_TTABLE &&
        lua_rawgeti(L, 3, (a & AUX_METHOD) + 1) == LUA_TTABLE) {
      lua_Integer i = unlist(L, 4, 1, 2), n = (lua_Integer)lua_rawlen(L, 4);
      for (; i > 0 && i < n; i++) {      /* close the gap: waiters stay in order */
        lua_rawgeti(L, 4, i + 1);
        lua_rawseti(L, 4, i);
      }
      if (i > 0) {
        lua_pushnil(L);
        lua_rawseti(L, 4, n);
      }
    }
    return 0;
  }
  if (c->npostponed > 0)
    c->npostponed--;
  if (push_extra(L, 1, X_QUEUE) == LUA_TTABLE) {
    lua_Integer head, i, n;
    push_extra(L, 1, X_QHEAD);
    head = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 1;
    lua_pop(L, 1);
    i = unlist(L, 3, head, 2);
    if (i == head) {                     /* cancels in order (timeouts) stay O(1) */
      n = (lua_Integer)lua_rawlen(L, 3);
      while (head <= n && (lua_rawgeti(L, 3, head), lua_toboolean(L, -1) == 0)) {
        lua_pop(L, 1);
        head++;
      }
      lua_settop(L, 3);
      lua_pushinteger(L, head);
      set_extra(L, 1, X_QHEAD);
    }
  }
  lua_settop(L, 2);
  if (push_extra(L, 1, X_INCOMING) == LUA_TTABLE)
    unlist(L, 3, 1, 2);
  return 0;
}

/* ============================================================== handlers */

enum { R_VALUE, R_POSTPONE, R_ERROR };

/* Runs handler h (fns index) as h(m, args...); leaves its result (or failure) on top. */
static int run_handler(lua_State *L, modal_instance *c, int ci, int fns, int h, int args,
                       int nargs) {
  int i, status, base = lua_gettop(L) + 1;
  if (nargs > LUA_MINSTACK / 2 || base > LUA_MINSTACK / 2)
    luaL_checkstack(L, nargs + 4, "too many arguments");
  lua_pushcfunction(L, modal__msgh);
  lua_rawgeti(L, fns, h);
  lua_pushvalue(L, ci);
  for (i = 0; i < nargs; i++)
    lua_pushvalue(L, args + i);
  c->depth++;
  status = lua_pcall(L, nargs + 1, 1, base);
  c->depth--;
  lua_replace(L, base);                  /* the result where the handler was */
  if (status != LUA_OK) {
    modal__to_failure(L, -1);
    return R_ERROR;
  }
  if (lua_touserdata(L, -1) == (void *)&postpone_key)
    return R_POSTPONE;
  return R_VALUE;
}

/* Settles the call's Deferred at d with the handler's outcome on top (popped). */
static void settle(lua_State *L, int d, int r) {
  if (r == R_ERROR)
    modal__fire(L, d, -1, 1);
  else if (modal__is_deferred(L, -1))
    modal__follow(L, d, -1);
  else
    modal__fire(L, d, -1, modal__is_failure(L, -1));
  lua_pop(L, 1);
}

/* Pushes the caller's Deferred for a handler outcome on top (replaced). A returned Deferred
** that has fired hands its outcome over at once (it counts as handled there). `mt` is the
** Deferreds' metatable (an upvalue index) or 0. */
static void outcome_deferred(lua_State *L, int r, int mt) {
  int taken;
  if (r == R_ERROR) {
    modal__deferred_fired(L, -1, 1);
  } else if (!modal__is_deferred(L, -1)) {
    modal__deferred_fired_mt(L, -1, modal__is_failure(L, -1), mt);
  } else if ((taken = modal__take_result(L, -1)) != 0) {
    modal__deferred_fired_mt(L, -1, taken == 2, mt);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  } else {
    modal_new_deferred(L);
    modal__follow(L, -1, -2);
  }
  lua_replace(L, -2);
}

/* c:<method>(...) — upvalue 1: the method index, 2: the fns table, 3: the Deferreds'
** metatable. */
int modal__instance_call(lua_State *L) {
  modal_instance *c = check_instance(L, 1);
  int method = (int)lua_tointeger(L, lua_upvalueindex(1));
  int nargs = lua_gettop(L) - 1, outer = !(c->flags & I_BUSY);
  modal_compiled *k = c->M->def;
  int h = k->handlers[c->state * k->nmethods + method];
  if (outer)
    c->flags |= I_BUSY;                  /* inputs fired by the handler wait for it */
  if (h == H_POSTPONE) {
    postpone_call(L, c, 1, method, 2, nargs);
  } else if (h > 0) {
    int r = run_handler(L, c, 1, lua_upvalueindex(2), h, 2, nargs);
    if (r == R_POSTPONE) {
      lua_pop(L, 1);
      postpone_call(L, c, 1, method, 2, nargs);
    } else {
      outcome_deferred(L, r, lua_upvalueindex(3));
    }
  } else {
    lua_pushliteral(L, "no handler for this method in this state");
    modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
    outcome_deferred(L, R_ERROR, 0);
    lua_remove(L, -2);
  }
  if (outer) {
    c->flags &= (uint16_t)~I_BUSY;
    drain(L, c, 1);
  }
  return 1;
}

/* Retries the postponed calls, oldest first (after a change of state name): a call whose
** handler postpones again keeps its place; calls postponed meanwhile go after them. */
static void retry(lua_State *L, modal_instance *c, int ci) {
  lua_Integer n, r, w = 0;
  int q, fns, top;
  modal_compiled *k;
  if (c->npostponed == 0) {              /* only cancelled slots, if any: let them go */
    if (c->flags & I_HASX) {
      lua_pushnil(L);
      set_extra(L, ci, X_QUEUE);
    }
    return;
  }
  top = lua_gettop(L);
  if (push_extra(L, ci, X_QUEUE) != LUA_TTABLE || c->npostponed == 0) {
    lua_settop(L, top);
    return;
  }
  q = lua_gettop(L);
  modal__push_fns(L, c, ci);
  fns = lua_gettop(L);
  c->flags |= I_RETRYING;
  n = (lua_Integer)lua_rawlen(L, q);
  for (r = 1; r <= n; r++) {
    uint32_t *aux, a;
    int d, h, nargs, args, res;
    lua_settop(L, fns);
    lua_rawgeti(L, q, r);
    d = lua_gettop(L);
    aux = modal__deferred_aux(L, d);
    if (!aux || !*aux || !modal__is_pending(L, d))
      continue;                          /* cancelled meanwhile: leaves the queue */
    a = *aux;
    k = c->M->def;
    h = k->handlers[c->state * k->nmethods + (a & AUX_METHOD) - 1];
    if (h == H_POSTPONE) {
      lua_rawseti(L, q, ++w);            /* keeps its place */
      continue;
    }
    args = lua_gettop(L) + 1;
    if (a & AUX_NOARGS) {
      nargs = 0;
    } else if (a & AUX_PACKED) {
      lua_getiuservalue(L, d, 1);
      lua_getfield(L, -1, "n");
      nargs = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
      luaL_checkstack(L, nargs + 8, "too many arguments");
      args = lua_gettop(L) + 1;
      for (h = 1; h <= nargs; h++)
        lua_rawgeti(L, args - 1, h);
      h = k->handlers[c->state * k->nmethods + (a & AUX_METHOD) - 1];
    } else {
      nargs = 1;
      lua_getiuservalue(L, d, 1);
    }
    if (h <= 0) {
      c->npostponed--;
      *aux = 0;
      lua_pushliteral(L, "no handler for this method in this state");
      modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
      settle(L, d, R_ERROR);
      continue;
    }
    res = run_handler(L, c, ci, fns, h, args, nargs);
    if (res == R_POSTPONE) {             /* postponed again: keeps its place */
      lua_pushvalue(L, d);
      lua_rawseti(L, q, ++w);
      continue;
    }
    c->npostponed--;
    *aux = 0;
    settle(L, d, res);
  }
  for (r = w + 1; r <= n; r++) {         /* the queue now ends at w */
    lua_pushnil(L);
    lua_rawseti(L, q, r);
  }
  c->flags &= (uint16_t)~I_RETRYING;
  if (push_extra(L, ci, X_INCOMING) == LUA_TTABLE) {
    lua_Integer m = (lua_Integer)lua_rawlen(L, -1), i;
    for (i = 1; i <= m; i++) {
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, q, ++w);
    }
    lua_pushnil(L);
    set_extra(L, ci, X_INCOMING);
  }
  if (w == 0) {
    lua_pushnil(L);
    set_extra(L, ci, X_QUEUE);
  }
  lua_pushnil(L);                        /* compacted: no cancelled slot in front */
  set_extra(L, ci, X_QHEAD);
  lua_settop(L, top);
}

/* ============================================================== timeouts and jobs */

/* Calls the state's timeout function or run (fns index k) as fn(m): 0 with its result on
** top, else the error has been reported (hook_error) and nothing is pushed. */
static int call_state_fn(lua_State *L, modal_instance *c, int ci, int k, const char *what) {
  int status;
  push_fn(L, c, ci, k);
  lua_pushvalue(L, ci);
  modal__in_hook++;                      /* no reload from here */
  status = modal__call(L, 1, 1);
  modal__in_hook--;
  if (status != LUA_OK) {
    hook_error(L, c, ci, what);
    return 1;
  }
  return 0;
}

/* The state timeout's handle function: (c, entry). */
static int timeout_fired(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  if (!c || (lua_Integer)c->entry != lua_tointeger(L, 2))
    return 0;
  lua_pushnil(L);
  set_extra(L, 1, X_TIMER);
  enqueue_input(L, 1, c->M->def->in_timeout, 0, 0, 0);
  drain(L, c, 1);
  return 0;
}

static void arm_timeout(lua_State *L, modal_instance *c, int ci) {
  modal_state *s = &c->M->def->states[c->state];
  double secs = s->timeout;
  modal_handle *h;
  if (s->timeout_fn) {
    if (call_state_fn(L, c, ci, s->timeout_fn, "timeout"))
      return;
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return;
    }
    if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < 0) {
      lua_pushfstring(L, "timeout function returned %s, not seconds or nil",
                      luaL_typename(L, -1));
      modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
      lua_replace(L, -3);
      lua_pop(L, 1);
      hook_error(L, c, ci, "timeout");
      return;
    }
    secs = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  if (secs < 0)
    return;
  lua_pushcfunction(L, timeout_fired);
  lua_pushvalue(L, ci);
  lua_pushinteger(L, (lua_Integer)c->entry);
  h = modal__handle_new(L, 2);
  modal__timer_start(L, &h->t, -1, secs);
  set_extra(L, ci, X_TIMER);
}

static void unpin(lua_State *L, modal_instance *c) {
  if (c->pin != LUA_NOREF && c->pin != LUA_REFNIL) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->pin);
    c->pin = LUA_NOREF;
  }
}

/* The link on a running job: (result, c, job). Its outcome becomes input done or error,
** unless the state was left first (the job is no longer the instance's). */
static int job_settled(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 2);
  int failed = modal__is_failure(L, 1);
  lua_settop(L, 3);
  if (failed)
    modal__mark_handled(L, 3);
  if (!c || push_extra(L, 2, X_JOB) == LUA_TNIL || !lua_rawequal(L, -1, 3)) {
    lua_settop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  set_extra(L, 2, X_JOB);
  unpin(L, c);
  enqueue_input(L, 2, failed ? c->M->def->in_error : c->M->def->in_done, 1, 1, 1);
  drain(L, c, 2);                        /* soft: dropped at debug if no longer taken */
  lua_settop(L, 1);
  return 1;
}

static void start_job(lua_State *L, modal_instance *c, int ci) {
  modal_state *s = &c->M->def->states[c->state];
  if (!s->run || call_state_fn(L, c, ci, s->run, "run"))
    return;
  if (!modal__is_deferred(L, -1)) {      /* a plain value: done at once */
    enqueue_input(L, ci, c->M->def->in_done, lua_gettop(L), 1, 0);
    lua_pop(L, 1);
    return;
  }
  lua_pushvalue(L, -1);
  set_extra(L, ci, X_JOB);
  if (c->pin == LUA_NOREF || c->pin == LUA_REFNIL) {   /* a running job keeps c alive */
    lua_pushvalue(L, ci);
    c->pin = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushcfunction(L, job_settled);
  lua_pushvalue(L, ci);
  lua_pushvalue(L, -3);
  modal__add_link(L, -4, -3, 0, 1, 2);
  lua_pop(L, 2);
}

/* Leaving a state: its timeout and its job end (the job is cancelled, its outcome ignored). */
static void end_entry(lua_State *L, modal_instance *c, int ci) {
  if (!(c->flags & I_HASX))
    return;
  if (push_extra(L, ci, X_TIMER) != LUA_TNIL) {
    modal_handle *h = (modal_handle *)lua_touserdata(L, -1);
    if (h)
      modal__timer_stop(L, &h->t);
    lua_pushnil(L);
    set_extra(L, ci, X_TIMER);
  }
  lua_pop(L, 1);
  if (push_extra(L, ci, X_JOB) != LUA_TNIL) {
    lua_pushnil(L);
    set_extra(L, ci, X_JOB);
    unpin(L, c);
    modal__cancel(L, -1);
  }
  lua_pop(L, 1);
}

/* ============================================================== transitions */

/* Calls a hook/action/guard (fns index k) as fn(m, extra..., args...): `extra` values are
** on top of the stack (popped). Returns 0 and pushes nres results, or reports the error. */
static int call_hook(lua_State *L, modal_instance *c, int ci, int k, int nextra, int args,
                     int nargs, int nres, const char *what) {
  int i, base = lua_gettop(L) - nextra;
  luaL_checkstack(L, nargs + 4, "too many input arguments");
  push_fn(L, c, ci, k);
  lua_insert(L, base + 1);
  lua_pushvalue(L, ci);
  lua_insert(L, base + 2);
  for (i = 0; i < nargs; i++)
    lua_pushvalue(L, args + i);
  modal__in_hook++;
  if (modal__call(L, 1 + nextra + nargs, nres) != LUA_OK) {
    modal__in_hook--;
    hook_error(L, c, ci, what);
    return 1;
  }
  modal__in_hook--;
  return 0;
}

/* Runs the on_transition observers and settles the when() waiters. */
/* `from_name`/`in_name`: stack indices of names to use instead of from/in (a reload). */
static void announce(lua_State *L, modal_instance *c, int ci, int from, int in, int from_name,
                     int in_name) {
  int top;
  modal_compiled *k = c->M->def;
  if (!(c->flags & I_HASX))
    return;                              /* no observers, no waiters */
  top = lua_gettop(L);
  if (push_extra(L, ci, X_OBSERVERS) == LUA_TTABLE) {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
    int obs = lua_gettop(L), nested = c->flags & I_ANNOUNCING;
    c->flags |= I_ANNOUNCING;
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, obs, i) != LUA_TTABLE || lua_rawgeti(L, -1, 1) != LUA_TFUNCTION) {
        lua_settop(L, obs);
        continue;
      }
      lua_remove(L, -2);
      lua_pushvalue(L, ci);
      if (from_name)
        lua_pushvalue(L, from_name);
      else if (from >= 0)
        push_state_name(L, c, ci, from);
      else
        lua_pushnil(L);
      push_state_name(L, c, ci, c->state);
      if (in_name)
        lua_pushvalue(L, in_name);
      else if (in >= 0)
        push_input_name(L, ci, in);
      else
        lua_pushnil(L);
      modal__in_hook++;
      if (modal__call(L, 4, 0) != LUA_OK) {
        int f = lua_gettop(L);           /* the failure */
        modal__in_hook--;
        push_fields(L, c, ci, in);
        luaL_tolstring(L, f, NULL);
        modal__log(L, MODAL_LOG_ERROR, f + 1, "error in an on_transition observer: %s",
                   lua_tostring(L, -1));
        lua_settop(L, obs);
        continue;
      }
      modal__in_hook--;
    }
    if (!nested)
      c->flags &= (uint16_t)~I_ANNOUNCING;
  }
  lua_settop(L, top);
  if (push_extra(L, ci, X_WAITERS) == LUA_TTABLE) {
    int w = lua_gettop(L), st;
    for (st = 0; st < k->nstates; st++) {
      lua_Integer i, n;
      if (st != c->state && !k->states[c->state].final)
        continue;
      if (lua_rawgeti(L, w, st + 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        continue;
      }
      lua_pushnil(L);
      lua_rawseti(L, w, st + 1);
      n = (lua_Integer)lua_rawlen(L, -1);
      for (i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (st == c->state) {
          lua_pushvalue(L, ci);
          modal__fire(L, -2, -1, 0);
        } else {
          push_state_name(L, c, ci, c->state);
          lua_pushfstring(L, "the instance reached final state '%s'", lua_tostring(L, -1));
          modal__failure_new(L, "stopped", lua_tostring(L, -1), 0, 0);
          lua_replace(L, -3);
          lua_pop(L, 1);
          modal__fire(L, -2, -1, 1);
        }
        lua_pop(L, 2);
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
}

/* Enters state `to` (from `from`, -1 at creation) by input `in` (-1 at creation). */
static void enter_state(lua_State *L, modal_instance *c, int ci, int from, int in, int args,
                        int nargs, int from_name, int in_name) {
  modal_state *s;
  c->entry++;
  c->entered_ms = (uint32_t)uv_now(c->M->loop);
  s = &c->M->def->states[c->state];
  if (s->enter) {
    if (from_name)
      lua_pushvalue(L, from_name);
    else if (from >= 0)
      push_state_name(L, c, ci, from);
    else
      lua_pushnil(L);
    if (in_name)
      lua_pushvalue(L, in_name);
    else if (in >= 0)
      push_input_name(L, ci, in);
    else
      lua_pushnil(L);
    call_hook(L, c, ci, s->enter, 2, args, nargs, 0, "enter");
  }
  if (s->timeout >= 0 || s->timeout_fn)
    arm_timeout(L, c, ci);
  start_job(L, c, ci);
  announce(L, c, ci, from, in, from_name, in_name);
}

/* --trace: one line per transition, with the time spent in the old state. */
static void trace(lua_State *L, modal_instance *c, int ci, int from, int in) {
  int f = lua_gettop(L) + 1;
  uint32_t ms = (uint32_t)uv_now(c->M->loop) - c->entered_ms;
  push_fields(L, c, ci, in);
  push_state_name(L, c, ci, from);
  push_state_name(L, c, ci, c->state);
  push_input_name(L, ci, in);
  modal__log(L, MODAL_LOG_INFO, f, "%s -> %s on '%s' after %u ms in %s", lua_tostring(L, -3),
             lua_tostring(L, -2), lua_tostring(L, -1), (unsigned)ms, lua_tostring(L, -3));
  lua_settop(L, f - 1);
}

/* An external transition to `to` by input `in` with action `action` (fns index or 0). */
static void transition(lua_State *L, modal_instance *c, int ci, int to, int in, int action,
                       int args, int nargs) {
  modal_compiled *k = c->M->def;
  int from = c->state;
  if (k->states[from].exit) {
    push_state_name(L, c, ci, to);
    push_input_name(L, ci, in);
    call_hook(L, c, ci, k->states[from].exit, 2, args, nargs, 0, "exit");
  }
  end_entry(L, c, ci);
  if (action)
    call_hook(L, c, ci, action, 0, args, nargs, 0, "action");
  c->state = (uint16_t)to;
  c->M->transitions++;
  if (modal__tracing)
    trace(L, c, ci, from, in);
  enter_state(L, c, ci, from, in, args, nargs, 0, 0);
  if (to != from)
    retry(L, c, ci);
}

/* Handles one input; returns 1 (nothing changed) when the state does not take it. */
static int handle_input(lua_State *L, modal_instance *c, int ci, int in, int args, int nargs) {
  modal_compiled *k = c->M->def;
  int cell = c->state * k->ninputs + in, n = k->on_count[cell], i, top = lua_gettop(L);
  modal_transition *t = &k->trans[k->on_first[cell]];
  if (n == 0) {
    if (!k->ignored[cell])
      return 1;
    push_fields(L, c, ci, in);
    modal__log(L, MODAL_LOG_DEBUG, -1, "input ignored");
    lua_settop(L, top);
    return 0;
  }
  for (i = 0; i < n; i++, t++) {
    int pass;
    if (!t->guard)
      break;
    if (call_hook(L, c, ci, t->guard, 0, args, nargs, 1, "guard"))
      continue;                          /* a guard that raises counts as false */
    pass = lua_toboolean(L, -1);
    lua_settop(L, top);
    if (pass)
      break;
  }
  if (i == n) {
    push_fields(L, c, ci, in);
    modal__log(L, MODAL_LOG_DEBUG, -1, "input dropped: no guard passed");
    lua_settop(L, top);
    return 0;
  }
  if (t->to < 0) {                       /* internal: the action only */
    if (t->action)
      call_hook(L, c, ci, t->action, 0, args, nargs, 0, "action");
  } else {
    transition(L, c, ci, t->to, in, t->action, args, nargs);
  }
  lua_settop(L, top);
  return 0;
}

/* ============================================================== built-in methods */

/* c:fire(input, ...) — upvalue 1: the inputs table. From outside, an input the state does
** not take raises; from inside a handler or hook, the input waits in the queue. */
static int md_instance_fire(lua_State *L) {
  modal_instance *c = check_instance(L, 1);
  int in, nargs = lua_gettop(L) - 2;
  /* inputs maps names to indices (and indices + 1 back to names): only a name gives a number */
  if (nargs < 0)
    return luaL_argerror(L, 2, "input name expected");
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNUMBER && (c->flags & I_BUSY)) {
    enqueue_input(L, 1, -1, 2, 1, 0);    /* from inside: logged when its turn comes */
    return 0;
  }
  if (lua_type(L, -1) != LUA_TNUMBER) {
    const char *input = luaL_tolstring(L, 2, NULL), *state, *name;
    push_state_name(L, c, 1, c->state);
    state = lua_tostring(L, -1);
    push_fn(L, c, 1, c->M->def->name);
    name = lua_tostring(L, -1);
    return luaL_error(L, "modal: %s#%d in state '%s' does not take input '%s' (no state does)",
                      name, (int)c->id, state, input);
  }
  in = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (c->flags & I_BUSY) {
    enqueue_input(L, 1, in, 3, nargs, 0);
    return 0;
  }
  c->flags |= I_BUSY;
  if (handle_input(L, c, 1, in, 3, nargs)) {
    c->flags &= (uint16_t)~I_BUSY;
    push_state_name(L, c, 1, c->state);
    push_fn(L, c, 1, c->M->def->name);
    return luaL_error(L, "modal: %s#%d in state '%s' does not take input '%s'",
                      lua_tostring(L, -1), (int)c->id, lua_tostring(L, -2),
                      lua_tostring(L, 2));
  }
  c->flags &= (uint16_t)~I_BUSY;
  drain(L, c, 1);
  return 0;
}

/* m:postpone() — inside a handler: queue this call until the next change of state. */
static int md_instance_postpone(lua_State *L) {
  modal_instance *c = check_instance(L, 1);
  if (c->depth <= 0)
    return luaL_error(L, "modal: m:postpone() called outside a method handler");
  if (c->M->def->states[c->state].final) {
    push_state_name(L, c, 1, c->state);
    return luaL_error(L, "modal: cannot postpone a call in final state '%s'",
                      lua_tostring(L, -1));
  }
  lua_pushlightuserdata(L, (void *)&postpone_key);
  return 1;
}

static int md_instance_postponed(lua_State *L) {
  lua_pushinteger(L, check_instance(L, 1)->npostponed);
  return 1;
}

/* c:when(state) -> Deferred(c) — upvalue 1: the states table. */
static int md_instance_when(lua_State *L) {
  modal_instance *c = check_instance(L, 1);
  modal_compiled *k = c->M->def;
  int st;
  lua_Integer n;
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNUMBER) {
    push_fn(L, c, 1, k->name);
    return luaL_error(L, "modal: c:when(): machine '%s' has no state '%s'", lua_tostring(L, -1),
                      lua_tostring(L, 2));
  }
  st = (int)lua_tointeger(L, -1);
  lua_settop(L, 2);
  modal__deferred_new(L, 1);             /* 3; cancel: the instance lets go of it */
  *modal__deferred_aux(L, 3) = (uint32_t)(AUX_WHEN | (unsigned)st);
  if (st == c->state) {
    lua_pushvalue(L, 1);
    modal__fire(L, 3, -1, 0);
  } else if (k->states[c->state].final) {
    push_state_name(L, c, 1, c->state);
    lua_pushfstring(L, "the instance is in final state '%s'", lua_tostring(L, -1));
    modal__failure_new(L, "stopped", lua_tostring(L, -1), 0, 0);
    modal__fire(L, 3, -1, 1);
  } else {
    push_extra_list(L, 1, X_WAITERS);
    if (lua_rawgeti(L, -1, st + 1) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_rawseti(L, -3, st + 1);
    }
    n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, n + 1);
  }
  lua_settop(L, 3);
  return 1;
}

/* handle:cancel() of on_transition: upvalue 1 the observer's record {fn}, 2 the instance. */
static int observer_cancel(lua_State *L) {
  lua_Integer dead, n, i, w = 0;
  int ci = lua_upvalueindex(2);
  if (lua_rawgeti(L, lua_upvalueindex(1), 1) == LUA_TNIL)
    return 0;                            /* cancelled already */
  lua_pushnil(L);
  lua_rawseti(L, lua_upvalueindex(1), 1);
  push_extra(L, ci, X_DEAD);
  dead = lua_tointeger(L, -1) + 1;
  if (push_extra(L, ci, X_OBSERVERS) != LUA_TTABLE)
    return 0;
  n = (lua_Integer)lua_rawlen(L, -1);
  if (dead * 2 <= n ||                   /* compact once half the records are dead */
      (modal__to_instance(L, ci)->flags & I_ANNOUNCING)) {
    lua_pushinteger(L, dead);
    set_extra(L, ci, X_DEAD);
    return 0;
  }
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_rawgeti(L, -1, 1) != LUA_TNIL) {
      lua_pop(L, 1);
      lua_rawseti(L, -2, ++w);
    } else {
      lua_pop(L, 2);
    }
  }
  for (i = w + 1; i <= n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, 0);
  set_extra(L, ci, X_DEAD);
  return 0;
}

/* c:on_transition(fn(c, from, to, input)) -> handle with :cancel() */
static int md_instance_on_transition(lua_State *L) {
  lua_Integer n;
  check_instance(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  push_extra_list(L, 1, X_OBSERVERS);
  n = (lua_Integer)lua_rawlen(L, -1) + 1;
  lua_createtable(L, 1, 0);              /* 4: the record */
  lua_pushvalue(L, 2);
  lua_rawseti(L, 4, 1);
  lua_pushvalue(L, 4);
  lua_rawseti(L, 3, n);
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, observer_cancel, 2);
  lua_setfield(L, -2, "cancel");
  return 1;
}

/* ============================================================== fields, creation */

/* __index(c, key) — upvalue 1: the methods table. Methods first, then the fields. */
int modal__instance_index(lua_State *L) {
  modal_instance *c;
  const char *key;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return 1;
  c = check_instance(L, 1);
  key = lua_tostring(L, 2);
  if (!key)
    return 0;
  if (strcmp(key, "state") == 0) {
    push_state_name(L, c, 1, c->state);
  } else if (strcmp(key, "data") == 0) {
    if (lua_getiuservalue(L, 1, I_DATA) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, 1, I_DATA);
    }
  } else if (strcmp(key, "machine") == 0) {
    lua_getiuservalue(L, 1, I_MACHINE);
  } else if (strcmp(key, "id") == 0) {
    lua_pushinteger(L, (lua_Integer)c->id);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

int modal__instance_tostring(lua_State *L) {
  modal_instance *c = check_instance(L, 1);
  push_fn(L, c, 1, c->M->def->name);
  push_state_name(L, c, 1, c->state);
  lua_pushfstring(L, "%s#%d (%s)", lua_tostring(L, -2), (int)c->id, lua_tostring(L, -1));
  return 1;
}

void modal__instance_new(lua_State *L, int mi, int data) {
  modal_machine *M = modal__to_machine(L, mi);
  modal_instance *c;
  int ci;
  mi = lua_absindex(L, mi);
  data = data ? lua_absindex(L, data) : 0;
  c = (modal_instance *)lua_newuserdatauv(L, sizeof *c, I_NUV);
  ci = lua_gettop(L);
  memset(c, 0, sizeof *c);
  c->magic = INSTANCE_MAGIC;
  c->M = M;
  c->id = ++M->next_id;
  c->pin = LUA_NOREF;
  c->state = (uint16_t)M->def->initial;
  lua_getiuservalue(L, mi, M_IMT);
  lua_setmetatable(L, ci);
  lua_pushvalue(L, mi);
  lua_setiuservalue(L, ci, I_MACHINE);
  lua_getiuservalue(L, mi, M_INSTANCES);  /* weak: for reloads and stats */
  lua_pushvalue(L, ci);
  lua_rawseti(L, -2, (lua_Integer)c->id);
  lua_pop(L, 1);
  if (data) {
    lua_pushvalue(L, data);
    lua_setiuservalue(L, ci, I_DATA);
  }
  c->flags |= I_BUSY;                    /* enter(m, nil, nil), timeout, run */
  enter_state(L, c, ci, -1, -1, 0, 0, 0, 0);
  c->flags &= (uint16_t)~I_BUSY;
  drain(L, c, ci);
  lua_settop(L, ci);
}

void modal__open_instance(lua_State *L, int methods, int compiled) {
  lua_pushcfunction(L, md_instance_postpone);
  lua_setfield(L, methods, "postpone");
  lua_pushcfunction(L, md_instance_postponed);
  lua_setfield(L, methods, "postponed");
  lua_pushcfunction(L, md_instance_on_transition);
  lua_setfield(L, methods, "on_transition");
  lua_getiuservalue(L, compiled, K_INPUTS);
  lua_pushcclosure(L, md_instance_fire, 1);
  lua_setfield(L, methods, "fire");
  lua_getiuservalue(L, compiled, K_STATES);
  lua_pushcclosure(L, md_instance_when, 1);
  lua_setfield(L, methods, "when");
}

/* ============================================================== reload */

void modal__instance_switch(lua_State *L, int ci, int to, int from_name) {
  modal_instance *c = modal__to_instance(L, ci);
  modal_state *s;
  int top = lua_gettop(L), outer;
  ci = lua_absindex(L, ci);
  from_name = from_name ? lua_absindex(L, from_name) : 0;
  outer = !(c->flags & I_BUSY);
  c->flags |= I_BUSY;
  if (!from_name) {                      /* stays: keeps its job, and its timer if any */
    c->state = (uint16_t)to;
    s = &c->M->def->states[to];
    if (s->timeout < 0 && !s->timeout_fn && push_extra(L, ci, X_TIMER) != LUA_TNIL) {
      modal_handle *h = (modal_handle *)lua_touserdata(L, -1);
      if (h)
        modal__timer_stop(L, &h->t);
      lua_pushnil(L);
      set_extra(L, ci, X_TIMER);
    }
  } else {                               /* migrated: no exit; enter(m, old, "reload") */
    end_entry(L, c, ci);
    c->state = (uint16_t)to;
    c->M->transitions++;
    lua_pushliteral(L, "reload");
    enter_state(L, c, ci, -1, -1, 0, 0, from_name, lua_gettop(L));
  }
  lua_settop(L, top);
  if (outer)
    c->flags &= (uint16_t)~I_BUSY;
}

void modal__instance_remap(lua_State *L, int ci, int map, int smap, int imap) {
  modal_instance *c = modal__to_instance(L, ci);
  int top = lua_gettop(L), q;
  ci = lua_absindex(L, ci);
  map = lua_absindex(L, map);
  smap = lua_absindex(L, smap);
  imap = lua_absindex(L, imap);
  if (push_extra(L, ci, X_INPUTS) == LUA_TTABLE) {   /* queued: (input, nargs, args..., soft) */
    lua_Integer head, n = (lua_Integer)lua_rawlen(L, -1);
    push_extra(L, ci, X_INHEAD);
    head = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 1;
    lua_pop(L, 1);
    while (head <= n) {
      lua_Integer in, nargs;
      lua_rawgeti(L, -1, head);
      in = lua_tointeger(L, -1);
      lua_rawgeti(L, -2, head + 1);
      nargs = lua_tointeger(L, -1);
      lua_pop(L, 2);
      if (in >= 0) {
        lua_rawgeti(L, imap, in + 1);
        lua_pushinteger(L, lua_tointeger(L, -1) - 1);   /* the new index */
        if (lua_tointeger(L, -2) == 0) {
          lua_pop(L, 1);
          lua_pushinteger(L, -2);                       /* dropped at its turn */
        }
        lua_rawseti(L, -3, head);
        lua_pop(L, 1);
      }
      head += nargs + 3;
    }
  }
  lua_settop(L, top);
  for (q = 0; q < 2 && c->npostponed > 0; q++) {   /* the queue, and calls postponed meanwhile */
    lua_Integer i, n;
    if (push_extra(L, ci, q ? X_INCOMING : X_QUEUE) != LUA_TTABLE) {
      lua_pop(L, 1);
      continue;
    }
    n = (lua_Integer)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      uint32_t *aux;
      lua_Integer to;
      lua_rawgeti(L, -1, i);
      aux = modal__deferred_aux(L, -1);
      if (aux && *aux && modal__is_pending(L, -1)) {
        lua_rawgeti(L, map, (*aux & AUX_METHOD));
        to = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (to > 0) {
          *aux = (uint32_t)((*aux & ~AUX_METHOD) | ((unsigned)to & AUX_METHOD));
        } else {                         /* its method is gone: the call fails */
          *aux = 0;
          c->npostponed--;
          modal__failure_new(L, "error", "the method of this call was removed by a reload", 0, 0);
          modal__fire(L, -2, -1, 1);
          lua_pop(L, 1);
          lua_pushboolean(L, 0);
          lua_rawseti(L, -3, i);
        }
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (push_extra(L, ci, X_WAITERS) == LUA_TTABLE) {  /* keyed by state index + 1 */
    int w = lua_gettop(L), moved;
    lua_newtable(L);                     /* the same, keyed by the new indices */
    moved = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, w)) {
      lua_Integer to, i, n = (lua_Integer)lua_rawlen(L, -1);
      lua_rawgeti(L, smap, lua_tointeger(L, -2));
      to = lua_tointeger(L, -1);
      lua_pop(L, 1);
      for (i = 1; i <= n; i++) {
        uint32_t *aux;
        lua_rawgeti(L, -1, i);
        aux = modal__deferred_aux(L, -1);
        if (to > 0 && aux) {
          *aux = (uint32_t)(AUX_WHEN | (unsigned)(to - 1));
        } else if (modal__is_pending(L, -1)) {
          if (aux)
            *aux = 0;
          modal__failure_new(L, "stopped", "the state waited for was removed by a reload", 0, 0);
          modal__fire(L, -2, -1, 1);
          lua_pop(L, 1);
        }
        lua_pop(L, 1);
      }
      if (to > 0) {
        lua_pushinteger(L, to);
        lua_insert(L, -2);
        lua_rawset(L, moved);
      } else {
        lua_pop(L, 1);
      }
    }
    lua_pushvalue(L, moved);
    set_extra(L, ci, X_WAITERS);
  }
  lua_settop(L, top);
}

void modal__instance_after_reload(lua_State *L, int ci) {
  modal_instance *c = modal__to_instance(L, ci);
  int top = lua_gettop(L), outer;
  ci = lua_absindex(L, ci);
  outer = !(c->flags & I_BUSY);
  c->flags |= I_BUSY;
  if (c->npostponed > 0)
    retry(L, c, ci);                     /* once, after the switch */
  if (outer) {
    c->flags &= (uint16_t)~I_BUSY;
    drain(L, c, ci);
  }
  lua_settop(L, top);
}
