/*
** entry.c — the ways in from Lua (doc/machines.md): bound methods (rule 13), c:fire, an
** instance's first entry, a reload's switch of one instance, and the end of the loop with
** calls nobody can answer any more. Each runs the engine of drive.c as one entry.
*/

/***
@module modal
*/

#include <string.h>
#include "machine.h"

enum { TAG_PLAIN = 0 };

/* ============================================================== method calls */

/* A bound method's upvalues: the method index, M, M's generation when bound, the fns table
** of that generation, the method's name, the Deferreds' metatable. */
enum { UP_METHOD = 1, UP_M, UP_GEN, UP_FNS, UP_NAME, UP_MT };

/* After a reload: finds the method's new index by name, or 0 when it was removed. */
static int rebind(lua_State *L, modal_machine *M) {
  int mi = lua_upvalueindex(UP_M);
  lua_getiuservalue(L, mi, M_MINDEX);
  lua_pushvalue(L, lua_upvalueindex(UP_NAME));
  if (lua_rawget(L, -2) != LUA_TNUMBER) {
    lua_pop(L, 2);
    return 0;
  }
  lua_replace(L, lua_upvalueindex(UP_METHOD));
  lua_pop(L, 1);
  lua_pushinteger(L, (lua_Integer)M->gen);
  lua_replace(L, lua_upvalueindex(UP_GEN));
  lua_getiuservalue(L, mi, M_DEF);
  lua_getiuservalue(L, -1, K_FNS);
  lua_replace(L, lua_upvalueindex(UP_FNS));
  lua_pop(L, 1);
  return 1;
}

/* Pushes a Deferred failed with kind "error" and the message on top (popped). */
static int failed_call(lua_State *L) {
  modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
  modal__deferred_fired(L, -1, 1);
  return 1;
}

/* A call after the Lua state began closing (from a finalizer): nothing runs; the caller gets
** a Deferred failed with kind "stopped", already counted as handled. */
static int closed_call(lua_State *L) {
  modal__failure_new(L, "stopped", "modal is closing (the Lua state is being closed)", 0, 0);
  modal__deferred_fired(L, -1, 1);
  modal__mark_handled(L, -1);
  return 1;
}

/***
@type Instance
*/
/***
Calls one of the definition's `methods`: the current state's handler (else the default)
runs as `handler(m, ...)` (driving rule 1, `doc/machines.md`). A returned Deferred is the
caller's; a returned failure fails it; any other value succeeds it; a raised error fails it
(kind `"error"`, traceback kept) and leaves the state unchanged; `return m:postpone()` (or
the handler `"postpone"`) queues the call until the state name changes. A method fetched
from an instance (`local q = c.query`) stays bound to its name across reloads.
@function Instance:method
@param ... the method's arguments
@treturn Deferred in every state; a postponed call past `max_postponed` fails at once with
kind `"overloaded"`
@usage c:query("select 1"):add_callback(print)
*/
/* c:<method>(...) — every method of every machine.
** NOLINTNEXTLINE(readability-function-cognitive-complexity): the hot path, one frame */
static int method_call(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  modal_machine *M = (modal_machine *)lua_touserdata(L, lua_upvalueindex(UP_M));
  modal_compiled *k;
  int nargs = lua_gettop(L) - 1, method, h, outer, status, i, base, r;
  if (!c || c->M != M) {
    lua_getiuservalue(L, lua_upvalueindex(UP_M), M_DEF);
    lua_getiuservalue(L, -1, K_FNS);
    lua_rawgeti(L, -1, M->def->name);
    return luaL_error(L, "modal: method '%s' of machine '%s' called on %s", 
                      lua_tostring(L, lua_upvalueindex(UP_NAME)), lua_tostring(L, -1),
                      c ? "an instance of another machine" : luaL_typename(L, 1));
  }
  if (M->ctx->planning)
    return luaL_error(L, "modal: method '%s' called from migrate or while a reload plans "
                      "(migrate only reads the instance)",
                      lua_tostring(L, lua_upvalueindex(UP_NAME)));
  if (M->ctx->closed)
    return closed_call(L);
  if ((lua_Integer)M->gen != lua_tointeger(L, lua_upvalueindex(UP_GEN)) && !rebind(L, M)) {
    lua_pushfstring(L, "method '%s' was removed by a reload",
                    lua_tostring(L, lua_upvalueindex(UP_NAME)));
    return failed_call(L);
  }
  method = (int)lua_tointeger(L, lua_upvalueindex(UP_METHOD));
  k = M->def;
  h = k->handlers[c->state * k->nmethods + method];
  if (h == H_NONE) {
    modal__push_state_name(L, c, 1, c->state);
    lua_pushfstring(L, "no handler for method '%s' in state '%s'",
                    lua_tostring(L, lua_upvalueindex(UP_NAME)), lua_tostring(L, -1));
    return failed_call(L);
  }
  if (nargs > LUA_MINSTACK / 2 - 8)
    luaL_checkstack(L, nargs + 12, "too many arguments");
  base = nargs + 2;
  if (h != H_POSTPONE) {
    lua_pushcfunction(L, modal__msgh);   /* base */
    lua_rawgeti(L, lua_upvalueindex(UP_FNS), h);
    /* A breaker's closed handler passes the call on to its target and touches nothing of this
    ** instance: its common case runs here, without the protected call (src/relay.c; W8). */
    if (lua_tocfunction(L, -1) == modal__relay_closed && modal__relay_try(L, -1, 1, nargs))
      return 1;
  }
  outer = !(c->flags & I_BUSY);
  c->flags |= I_BUSY;                    /* busy until the call is answered or queued: what */
  M->ctx->driving++;                     /* anyone fires meanwhile (a finalizer) waits */
  if (h == H_POSTPONE) {
    r = R_POSTPONE;
    lua_pushnil(L);                      /* base: no result */
  } else {
    int depth = c->depth;
    for (i = 1; i <= nargs + 1; i++)
      lua_pushvalue(L, i);               /* m, args: kept below in case it postpones */
    r = modal__run_handler(L, c, base, nargs);   /* its result at base */
    c->depth = depth;
  }
  if (r != R_VALUE || !modal__is_deferred(L, base)) {   /* a Deferred: the caller's as is */
    lua_pushcfunction(L, modal__msgh);   /* base + 1 */
    lua_pushcfunction(L, modal__call_finish);
    lua_pushinteger(L, r);
    lua_pushvalue(L, base);
    lua_pushinteger(L, method);
    lua_pushvalue(L, lua_upvalueindex(UP_MT));
    lua_pushvalue(L, 1);
    if (r == R_POSTPONE)
      for (i = 2; i <= nargs + 1; i++)
        lua_pushvalue(L, i);
    status = lua_pcall(L, r == R_POSTPONE ? nargs + 5 : 5, 1, base + 1);
    if (status != LUA_OK)
      modal__to_failure(L, -1);
    lua_replace(L, base);
    lua_settop(L, base);
  } else {
    status = LUA_OK;
  }
  M->ctx->driving--;
  if (outer)
    c->flags &= (uint16_t)~I_BUSY;
  if (status != LUA_OK)                  /* modal ran out of memory making the Deferred */
    modal__deferred_fired(L, base, 1);
  if (outer)
    modal__drive_drain_entry(L, c, 1);
  return 1;
}

void modal__push_method(lua_State *L, int mi, int name, int method, uint32_t gen, int fns) {
  mi = lua_absindex(L, mi);
  name = lua_absindex(L, name);
  fns = lua_absindex(L, fns);
  lua_pushinteger(L, method);
  lua_pushvalue(L, mi);
  lua_pushinteger(L, (lua_Integer)gen);
  lua_pushvalue(L, fns);
  lua_pushvalue(L, name);
  modal__push_deferred_mt(L);
  lua_pushcclosure(L, method_call, UP_MT);
}

/* ============================================================== c:fire */

static int fire_body(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  int taken = !modal__drive_input(L, c, 1, (int)lua_tointeger(L, 2), 3, 4, lua_gettop(L) - 3);
  modal__drive_drain(L, c, 1);
  lua_pushboolean(L, taken);
  return 1;
}

/* Pushes the instance's machine's name and state name, for messages. */
static void push_names(lua_State *L, modal_instance *c, int ci) {
  modal__push_fn(L, ci, c->M->def->name);
  modal__push_state_name(L, c, ci, c->state);
}

/* Raises: the instance's state does not take the input named at 2. */
static int not_taken(lua_State *L, modal_instance *c, const char *why) {
  push_names(L, c, 1);
  return luaL_error(L, "modal: %s#%d in state '%s' does not take input '%s'%s",
                    lua_tostring(L, -2), (int)c->id, lua_tostring(L, -1), lua_tostring(L, 2),
                    why);
}

/***
Fires an input (driving rule 3): the state's `on[input]` picks the transition (the first
entry whose guard passes). Inputs fired while the instance is busy (from a handler, hook,
observer...) are queued and handled in order afterwards, never nested; from outside, the
input and every input it queued are handled before `fire` returns.
@function Instance:fire
@tparam string input the input's name
@param ... its arguments, passed to guards, actions and hooks
@raise from outside, when the current state does not take `input` and no `ignore` lists it
(from inside, that is logged at warn instead)
*/
/* c:fire(input, ...) — upvalues: M and its {input name = index} table (refilled in place by
** a reload). From outside, an input the state does not take raises; from inside the driver,
** the input waits in the queue. */
static int md_fire(lua_State *L) {
  modal_instance *c = (modal_instance *)lua_touserdata(L, 1);
  modal_machine *M;
  modal_compiled *k;
  modal_transition *t;
  const char *name;
  size_t len;
  int in, cell, nargs = lua_gettop(L) - 2;
  if (!c || lua_rawlen(L, 1) != sizeof *c || c->magic != INSTANCE_MAGIC)
    return luaL_typeerror(L, 1, "modal.instance");
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "bad argument #1 to 'fire' (input name expected, got %s)",
                      lua_isnone(L, 2) ? "no value" : luaL_typename(L, 2));
  M = c->M;
  if (M->ctx->planning)
    return luaL_error(L, "modal: c:fire() called from migrate or while a reload plans "
                      "(migrate only reads the instance)");
  if (M->ctx->closed)
    return 0;                            /* from a finalizer once the state began closing */
  if (c->flags & I_BUSY) {
    modal__drive_enqueue(L, c, 1, 2, TAG_PLAIN, 3, nargs);
    return 0;
  }
  name = lua_tolstring(L, 2, &len);
  if (name == M->last_name) {
    in = M->last_in;
  } else {
    if (lua_touserdata(L, lua_upvalueindex(1)) == M)
      lua_getiuservalue(L, lua_upvalueindex(1), M_INPUTS);
    else {                               /* a fire fetched from another machine's instance */
      modal__push_machine(L, 1);
      lua_getiuservalue(L, -1, M_INPUTS);
      lua_remove(L, -2);
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TNUMBER)
      return not_taken(L, c, " (no state does)");
    in = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (len <= 40) {                     /* short strings are interned: one pointer each */
      M->last_name = name;
      M->last_in = in;
    }
  }
  k = M->def;
  cell = c->state * k->ninputs + in;
  t = &k->trans[k->on_first[cell]];
  if (k->on_count[cell] == 1 && t->plain && !(c->flags & I_HASX) && !M->ctx->tracing) {
    c->state = (uint16_t)t->to;          /* no user code, nothing to tell: done in place */
    c->entry++;
    c->entered_ms = ENTERED_UNKNOWN;      /* no clock read here: the trace is off */
    M->transitions++;
    return 0;
  }
  lua_pushinteger(L, in);
  lua_pushvalue(L, 2);
  lua_rotate(L, 3, 2);                   /* c, name, in, name, args... (name kept at 2) */
  if (modal__drive_protected(L, c, 1, fire_body, nargs + 2, 1) != LUA_OK)
    return lua_error(L);
  if (!lua_toboolean(L, -1))
    return not_taken(L, c, "");
  return 0;
}

/* ============================================================== first entry, reload */

static int start_body(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  modal__drive_enter(L, c, 1, 0, 0, 0, 0);
  modal__drive_drain(L, c, 1);
  return 0;
}

void modal__drive_start(lua_State *L, int ci) {
  modal_instance *c = modal__to_instance(L, ci);
  ci = lua_absindex(L, ci);
  if (c->M->ctx->closed)
    return;                              /* made from a finalizer: it stays as it is */
  if (modal__drive_protected(L, c, ci, start_body, 0, 0) != LUA_OK)
    lua_error(L);
}

void modal__switch_state(lua_State *L, int ci, modal_compiled *k, int to, int migrated) {
  modal_instance *c = modal__to_instance(L, ci);
  modal_state *s = &k->states[to];
  c->state = (uint16_t)to;
  if (!(c->flags & I_HASX))
    return;
  {
    modal_extras *x = modal__extras(L, ci, 0);
    if (migrated || (s->timeout < 0 && !s->timeout_fn))
      modal__timer_stop(L, &x->timer);   /* kept when it stays in a state with a timeout */
    if (migrated && x->job) {
      x->job = 0;                        /* its outcome is ignored from now on ... */
      x->job_detached = 1;               /* ... and the second pass cancels it */
    }
    lua_pop(L, 1);
  }
}

/* (c, to, migrated, had, entry, from name) */
static void after_switch_work(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  modal_extras *x;
  int to = (int)lua_tointeger(L, 2), migrated = lua_toboolean(L, 3);
  int had = (int)lua_tointeger(L, 4);
  modal_state *s = &c->M->def->states[to];
  modal__fail_gone_calls(L, c, 1);       /* user code runs from here on */
  x = modal__extras(L, 1, 0);
  if (x && x->job_detached) {            /* the job of a state it left: cancelled */
    x->job_detached = 0;
    lua_getiuservalue(L, -1, X_JOB);
    lua_pushnil(L);
    lua_setiuservalue(L, -3, X_JOB);
    modal__update_pin(L, c, 1);
    modal__cancel(L, -1);
  }
  lua_settop(L, 6);
  if ((lua_Integer)c->entry != lua_tointeger(L, 5) || c->state != to || migrated) {
    modal__settle_waiters(L, c, 1, 1);   /* the waiters whose state is gone */
    if (!migrated || (lua_Integer)c->entry != lua_tointeger(L, 5) || c->state != to)
      return;                            /* user code moved it meanwhile: nothing more to do */
  } else {
    modal__settle_waiters(L, c, 1, 0);   /* gone states; a state made final fails the rest */
  }
  if (migrated) {                        /* no exit; enter(m, old, "reload") */
    c->M->transitions++;
    lua_pushliteral(L, "reload");
    modal__drive_enter(L, c, 1, 6, 7, 0, 0);
    return;
  }
  x = modal__extras(L, 1, 0);
  lua_pop(L, 1);
  if ((s->timeout >= 0 || s->timeout_fn) && !(had & 1))
    modal__drive_arm_timeout(L, c, 1);   /* it gained a timeout: armed from the switch */
  if (s->run && !(had & 2) && !(x && x->job))
    modal__drive_start_job(L, c, 1);     /* it gained a run */
}

/* The switch's entry ends as every entry does: the calls are retried (the state's name
** changed) and what its user code queued is handled, in order, before the instance is free
** again — an input fired at it later, by the next instance's switch, comes after them. */
static int after_switch_body(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  after_switch_work(L);
  lua_settop(L, 6);
  modal__drive_retry(L, c, 1);
  modal__drive_drain(L, c, 1);
  return 0;
}

/* Whether after_switch_body would find nothing to do for instance c: not migrated, no
** postponed call, queued input, when() waiter or detached job to look at, and no timeout or
** run gained. Most live instances of a big reload are such; they cost no protected call.
** 1 quiet, 0 not; -1 when that depends on its extras and c is not on the stack (ci == 0). */
int modal__switch_is_quiet(lua_State *L, modal_instance *c, int ci, int to, int migrated,
                           int had) {
  const modal_state *s = &c->M->def->states[to];
  if (migrated || ((s->timeout >= 0 || s->timeout_fn) && !(had & 1)) || (s->run && !(had & 2))
      || c->npostponed > 0 || (c->flags & I_QUEUED))
    return 0;
  if (c->flags & I_HASX) {
    modal_extras *x;
    int quiet;
    if (ci == 0)
      return -1;
    x = modal__extras(L, ci, 0);
    quiet = x->calls.live == 0 && x->waiters.live == 0 && !x->job_detached;
    lua_pop(L, 1);
    return quiet;
  }
  return 1;
}

void modal__after_switch(lua_State *L, int ci, int to, int migrated, int had, uint32_t entry,
                         int from_name) {
  modal_instance *c = modal__to_instance(L, ci);
  ci = lua_absindex(L, ci);
  from_name = lua_absindex(L, from_name);
  lua_pushinteger(L, to);
  lua_pushboolean(L, migrated);
  lua_pushinteger(L, had);
  lua_pushinteger(L, (lua_Integer)entry);
  lua_pushvalue(L, from_name);
  if (modal__drive_protected(L, c, ci, after_switch_body, 5, 0) != LUA_OK)
    modal__drive_internal_error(L, c, ci);
}

void modal__open_drive(lua_State *L, int methods, int mi) {
  mi = lua_absindex(L, mi);
  lua_pushvalue(L, mi);
  lua_pushcclosure(L, md_fire, 1);
  lua_setfield(L, methods, "fire");
}
