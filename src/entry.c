/*
** entry.c — the ways in from Lua (doc/machines.md): bound methods (rule 13), c:fire, an
** instance's first entry, a reload's switch of one instance, and the end of the loop with
** calls nobody can answer any more. Each runs the engine of drive.c as one entry.
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

/* c:<method>(...) — every method of every machine. */
static int method_call(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  modal_machine *M = (modal_machine *)lua_touserdata(L, lua_upvalueindex(UP_M));
  modal_compiled *k;
  int nargs = lua_gettop(L) - 1, method, h, outer, r, i;
  if (!c || c->M != M) {
    lua_getiuservalue(L, lua_upvalueindex(UP_M), M_DEF);
    lua_getiuservalue(L, -1, K_FNS);
    lua_rawgeti(L, -1, M->def->name);
    return luaL_error(L, "modal: method '%s' of machine '%s' called on %s", 
                      lua_tostring(L, lua_upvalueindex(UP_NAME)), lua_tostring(L, -1),
                      c ? "an instance of another machine" : luaL_typename(L, 1));
  }
  if (M->ctx->planning)
    return luaL_error(L, "modal: method '%s' called from migrate (migrate only reads the "
                      "instance)", lua_tostring(L, lua_upvalueindex(UP_NAME)));
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
  if (h == H_POSTPONE) {
    modal__postpone(L, c, 1, method, 2, nargs);
    return 1;
  }
  if (h == H_NONE) {
    modal__push_state_name(L, c, 1, c->state);
    lua_pushfstring(L, "no handler for method '%s' in state '%s'",
                    lua_tostring(L, lua_upvalueindex(UP_NAME)), lua_tostring(L, -1));
    return failed_call(L);
  }
  if (nargs > LUA_MINSTACK / 2 - 4)
    luaL_checkstack(L, nargs + 8, "too many arguments");
  lua_pushcfunction(L, modal__msgh);
  lua_rawgeti(L, lua_upvalueindex(UP_FNS), h);
  for (i = 1; i <= nargs + 1; i++)
    lua_pushvalue(L, i);                 /* m, args: kept below in case it postpones */
  outer = !(c->flags & I_BUSY);
  c->flags |= I_BUSY;                    /* inputs fired by the handler wait for it */
  M->ctx->driving++;
  r = modal__run_handler(L, c, nargs + 2, nargs);
  M->ctx->driving--;
  if (outer)
    c->flags &= (uint16_t)~I_BUSY;
  if (r == R_POSTPONE) {
    lua_pop(L, 1);
    modal__postpone(L, c, 1, method, 2, nargs);
  } else {
    modal__outcome_deferred(L, r, lua_upvalueindex(UP_MT));
  }
  if (outer)
    modal__drive_drain_entry(L, c, 1);
  return 1;
}

void modal__push_method(lua_State *L, int mi, int name, int method) {
  modal_machine *M = modal__to_machine(L, mi);
  mi = lua_absindex(L, mi);
  name = lua_absindex(L, name);
  lua_pushinteger(L, method);
  lua_pushvalue(L, mi);
  lua_pushinteger(L, (lua_Integer)M->gen);
  lua_getiuservalue(L, mi, M_DEF);
  lua_getiuservalue(L, -1, K_FNS);
  lua_remove(L, -2);
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
    return luaL_error(L, "modal: c:fire() called from migrate (migrate only reads the "
                      "instance)");
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
    lua_pushvalue(L, 2);
    if (lua_touserdata(L, lua_upvalueindex(1)) == M) {
      lua_rawget(L, lua_upvalueindex(2));
    } else {                             /* a fire fetched from another machine's instance */
      modal__push_machine(L, 1);
      lua_getiuservalue(L, -1, M_INPUTS);
      lua_pushvalue(L, -3);
      lua_rawget(L, -2);
      lua_replace(L, -4);
      lua_pop(L, 2);
    }
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

/* (c, to, from name or nil, old state's timeout and run flags) */
static int switch_body(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  int to = (int)lua_tointeger(L, 2), had = (int)lua_tointeger(L, 4);
  modal_state *s = &c->M->def->states[to];
  if (lua_isnil(L, 3)) {                 /* stays: keeps its job, and its timer if any */
    modal_extras *x;
    c->state = (uint16_t)to;
    x = modal__extras(L, 1, 0);
    lua_pop(L, 1);
    if (s->timeout < 0 && !s->timeout_fn) {
      if (x)
        modal__timer_stop(L, &x->timer);
    } else if (!(had & 1)) {
      modal__drive_arm_timeout(L, c, 1);              /* it gained a timeout: armed from the switch */
    }
    if (s->run && !(had & 2) && !(x && x->job))
      modal__drive_start_job(L, c, 1);                /* it gained a run */
  } else {                               /* migrated: no exit; enter(m, old, "reload") */
    modal__drive_end_entry(L, c, 1);
    c->state = (uint16_t)to;
    c->M->transitions++;
    lua_pushliteral(L, "reload");
    modal__drive_enter(L, c, 1, 3, 5, 0, 0);
  }
  return 0;
}

void modal__drive_switch(lua_State *L, int ci, int to, int from_name, int had) {
  modal_instance *c = modal__to_instance(L, ci);
  ci = lua_absindex(L, ci);
  if (!from_name) {                      /* stays: most do without running any user code */
    modal_state *s = &c->M->def->states[to];
    int timed = s->timeout >= 0 || s->timeout_fn;
    if (!(timed && !(had & 1)) && !(s->run && !(had & 2))) {
      c->state = (uint16_t)to;
      if (!timed && (c->flags & I_HASX)) {
        modal__timer_stop(L, &modal__extras(L, ci, 0)->timer);
        lua_pop(L, 1);
      }
      return;
    }
  }
  lua_pushinteger(L, to);
  if (from_name)
    lua_pushvalue(L, from_name);
  else
    lua_pushnil(L);
  lua_pushinteger(L, had);
  if (modal__drive_protected(L, c, ci, switch_body, 3, 0) != LUA_OK)
    modal__drive_internal_error(L, c, ci);
}

static int after_reload_body(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 1);
  modal__drive_retry(L, c, 1);
  modal__drive_drain(L, c, 1);
  return 0;
}

void modal__drive_after_reload(lua_State *L, int ci) {
  modal_instance *c = modal__to_instance(L, ci);
  ci = lua_absindex(L, ci);
  if ((c->npostponed > 0 || (c->flags & I_QUEUED)) &&
      modal__drive_protected(L, c, ci, after_reload_body, 0, 0) != LUA_OK)
    modal__drive_internal_error(L, c, ci);
}

void modal__open_drive(lua_State *L, int methods, int mi) {
  modal_machine *M = modal__to_machine(L, mi);
  mi = lua_absindex(L, mi);
  M->last_name = NULL;                   /* the names' indices may have changed */
  lua_pushvalue(L, mi);
  lua_getiuservalue(L, mi, M_INPUTS);
  lua_pushcclosure(L, md_fire, 2);
  lua_setfield(L, methods, "fire");
}
