/*
** instance.c — the instance object (doc/machines.md): its record, fields (state, data,
** machine, id), names for logs, the extras it makes on first need, the pin that keeps it
** alive while a job runs or calls wait, and the instances' metatable.
*/

/***
@module modal
*/

#include <string.h>
#include "machine.h"

/* ============================================================== access */

modal_instance *modal__to_instance(lua_State *L, int idx) {
  modal_instance *c = (modal_instance *)lua_touserdata(L, idx);
  if (c && lua_rawlen(L, idx) == sizeof *c && c->magic == INSTANCE_MAGIC)
    return c;
  return NULL;
}

modal_instance *modal__check_instance(lua_State *L, int idx) {
  modal_instance *c = modal__to_instance(L, idx);
  if (!c)
    luaL_typeerror(L, idx, "modal.instance");
  return c;
}

void modal__push_machine(lua_State *L, int ci) {
  lua_getmetatable(L, ci);
  lua_rawgeti(L, -1, 1);
  lua_remove(L, -2);
}

/* Pushes user value `k` of the compiled definition the instance at ci now serves. */
static void push_def_uv(lua_State *L, int ci, int k) {
  lua_getmetatable(L, ci);
  lua_rawgeti(L, -1, 1);
  lua_getiuservalue(L, -1, M_DEF);
  lua_getiuservalue(L, -1, k);
  lua_replace(L, -4);
  lua_pop(L, 2);
}

void modal__push_fn(lua_State *L, int ci, int k) {
  push_def_uv(L, ci, K_FNS);
  lua_rawgeti(L, -1, k);
  lua_remove(L, -2);
}

void modal__push_state_name(lua_State *L, modal_instance *c, int ci, int st) {
  if (st < 0 || st >= c->M->def->nstates) {
    lua_pushnil(L);
    return;
  }
  modal__push_fn(L, ci, c->M->def->states[st].name);
}

void modal__push_inputs(lua_State *L, int ci) {
  push_def_uv(L, ci, K_INPUTS);
}

void modal__push_fields(lua_State *L, modal_instance *c, int ci, int input) {
  ci = lua_absindex(L, ci);
  input = input ? lua_absindex(L, input) : 0;
  lua_createtable(L, 0, 4);
  modal__push_fn(L, ci, c->M->def->name);
  lua_setfield(L, -2, "machine");
  lua_pushinteger(L, (lua_Integer)c->id);
  lua_setfield(L, -2, "id");
  modal__push_state_name(L, c, ci, c->state);
  lua_setfield(L, -2, "state");
  if (input) {
    lua_pushvalue(L, input);
    lua_setfield(L, -2, "input");
  }
}

/* ============================================================== extras */

modal_extras *modal__extras(lua_State *L, int ci, int make) {
  modal_extras *x;
  int i;
  ci = lua_absindex(L, ci);
  if (!(((modal_instance *)lua_touserdata(L, ci))->flags & I_HASX) && !make) {
    lua_pushnil(L);
    return NULL;
  }
  if (lua_getiuservalue(L, ci, I_EXTRAS) == LUA_TUSERDATA)
    return (modal_extras *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!make) {
    lua_pushnil(L);
    return NULL;
  }
  x = (modal_extras *)lua_newuserdatauv(L, sizeof *x, X_NUV);
  memset(x, 0, sizeof *x);               /* a consistent empty record first */
  modal__timer_init(&x->timer, NULL);
  x->inputs.head = x->inputs.tail = 1;
  x->calls.head = x->calls.tail = 1;
  x->waiters.head = x->waiters.tail = 1;
  x->observers.head = x->observers.tail = 1;
  lua_pushvalue(L, ci);
  lua_setiuservalue(L, -2, X_INSTANCE);
  for (i = X_INPUTS; i <= X_OBSERVERS; i++) {
    lua_newtable(L);
    lua_setiuservalue(L, -2, i);
  }
  /* Those allocations may have run a finalizer that made the instance's extras meanwhile
  ** (and listed a waiter, a call or an input there): that record is the one. */
  if (lua_getiuservalue(L, ci, I_EXTRAS) == LUA_TUSERDATA) {
    lua_remove(L, -2);
    return (modal_extras *)lua_touserdata(L, -1);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, ci, I_EXTRAS);
  ((modal_instance *)lua_touserdata(L, ci))->flags |= I_HASX;
  return x;
}

void modal__push_list(lua_State *L, int xi, int which) {
  lua_getiuservalue(L, xi, which);
}

void modal__update_pin(lua_State *L, modal_instance *c, int ci) {
  int want = c->npostponed > 0, pinned = (c->flags & I_PINNED) != 0;
  if (!want && (c->flags & I_HASX)) {
    modal_extras *x = modal__extras(L, ci, 0);
    want = x && (x->waiters.live > 0 || x->job);
    lua_pop(L, 1);
  }
  if (want && !pinned) {
    lua_pushvalue(L, ci);
    c->pin = luaL_ref(L, LUA_REGISTRYINDEX);
    c->flags |= I_PINNED;
  } else if (!want && pinned) {
    c->flags &= (uint16_t)~I_PINNED;
    luaL_unref(L, LUA_REGISTRYINDEX, c->pin);
    c->pin = LUA_NOREF;
  }
}

/* ============================================================== lists */

void modal__list_push(lua_State *L, modal_list *l, int t) {
  if (l->tail == UINT32_MAX)
    luaL_error(L, "modal: a queue of an instance is full");
  lua_rawseti(L, t, (lua_Integer)l->tail);
  l->tail++;
  l->live++;
}

/* 1 when the slot value on top is an entry that has not left. */
static int slot_live(lua_State *L, int kind) {
  int live;
  if (kind) {
    uint32_t *aux = modal__deferred_aux(L, -1);
    return aux && *aux && modal__is_pending(L, -1);
  }
  if (lua_type(L, -1) != LUA_TTABLE)
    return 0;
  live = lua_rawgeti(L, -1, 1) != LUA_TNIL;
  lua_pop(L, 1);
  return live;
}

void modal__list_compact(lua_State *L, modal_list *l, int t, int kind) {
  uint32_t r, w = 1;
  t = lua_absindex(L, t);
  for (r = l->head; r < l->tail; r++) {
    lua_rawgeti(L, t, (lua_Integer)r);
    if (slot_live(L, kind)) {
      if (r != w)
        lua_rawseti(L, t, (lua_Integer)w);
      else
        lua_pop(L, 1);
      w++;
    } else {
      lua_pop(L, 1);
    }
  }
  for (r = w; r < l->tail; r++) {
    lua_pushnil(L);
    lua_rawseti(L, t, (lua_Integer)r);
  }
  l->head = 1;
  l->tail = w;
  l->live = w - 1;
}

/* After an entry of a Deferred list left: drops dead slots at the head, and compacts once
** more than half the slots are dead (not while the driver walks the list). */
static void list_tidy(lua_State *L, modal_list *l, int t, int walking) {
  t = lua_absindex(L, t);
  if (walking)
    return;
  while (l->head < l->tail) {
    lua_rawgeti(L, t, (lua_Integer)l->head);
    if (slot_live(L, 1)) {
      lua_pop(L, 1);
      break;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, t, (lua_Integer)l->head);
    l->head++;
  }
  if (l->head == l->tail)
    l->head = l->tail = 1;
  else if (l->tail - l->head > 32 && l->tail - l->head > 2 * l->live)
    modal__list_compact(L, l, t, 1);
}

/* Pushes "name#id (state)" for the instance at ci. */
static void instance_name(lua_State *L, modal_instance *c, int ci) {
  modal__push_fn(L, ci, c->M->def->name);
  modal__push_state_name(L, c, ci, c->state);
  lua_pushfstring(L, "%s#%d (%s)", lua_tostring(L, -2), (int)c->id, lua_tostring(L, -1));
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* The instance at ci lets go of the Deferred at d it kept (a postponed call or a when()
** waiter): its slot becomes dead, the counts drop. Runs no Lua code. */
static void let_go(lua_State *L, modal_instance *c, int ci, int d) {
  uint32_t *aux = modal__deferred_aux(L, d), a;
  modal_extras *x;
  int top = lua_gettop(L);
  if (!aux || *aux == 0)
    return;                              /* it had left already */
  a = *aux;
  *aux = 0;
  x = modal__extras(L, ci, 0);
  if (a & AUX_WHEN) {
    if (x) {
      x->waiters.live--;
      modal__push_list(L, -1, X_WAITERS);
      list_tidy(L, &x->waiters, -1, (c->flags & I_ANNOUNCING) != 0);
    }
  } else {
    c->npostponed--;
    if (x) {
      x->calls.live--;
      modal__push_list(L, -1, X_CALLS);
      list_tidy(L, &x->calls, -1, (c->flags & I_RETRYING) != 0);
    }
  }
  lua_settop(L, top);
  modal__update_pin(L, c, ci);
}

/* The instances' __call: (c, d), the canceller of its postponed calls and when() Deferreds,
** run by d:cancel() only. The instance lets go of d at once (its slot becomes dead). */
int modal__instance_cancel(lua_State *L) {
  modal_instance *c = modal__check_instance(L, 1);
  if (!modal__deferred_aux(L, 2) || !modal__is_cancelling(L, 2))  /* only d:cancel() */
    return luaL_error(L, "modal: attempt to call an instance (%s): call its methods, as "
                      "c:method(...)", lua_tostring(L, (instance_name(L, c, 1), -1)));
  lua_settop(L, 2);
  let_go(L, c, 1, 2);
  return 0;
}

/* The context's kept_fired hook: a call's or waiter's Deferred fired by whoever holds it
** (d:callback, d:errback) is no longer waiting. */
static void kept_fired(lua_State *L, int d, int canc) {
  modal_instance *c = modal__to_instance(L, canc);
  if (c)
    let_go(L, c, lua_absindex(L, canc), lua_absindex(L, d));
}

void modal__open_instance(lua_State *L) {
  modal_ctx *ctx = modal__ctx(L);
  if (ctx)
    ctx->kept_fired = kept_fired;
}

/* ============================================================== fields */

/***
An instance of a machine (`M:new`): one object whose methods return a Deferred in every
state (`doc/machines.md`). Its fields are read-only; keep your own values in `c.data`.
Inside handlers and hooks, `m` is the same object. `tostring(c)` is `"name#id (state)"`.
@type Instance
@field state the current state's name
@field data the table given to `M:new` (or a new one)
@field machine `M`
@field id 1, 2, ... per machine
*/
/* __index(c, key) — upvalue 1: the methods table. Methods first, then the fields. */
static int instance_index(lua_State *L) {
  modal_instance *c;
  const char *key;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return 1;
  c = modal__check_instance(L, 1);
  if (lua_type(L, 2) != LUA_TSTRING)
    return 1;                            /* nil */
  key = lua_tostring(L, 2);
  if (strcmp(key, "state") == 0) {
    modal__push_state_name(L, c, 1, c->state);
  } else if (strcmp(key, "data") == 0) {
    if (lua_getiuservalue(L, 1, I_DATA) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, 1, I_DATA);
    }
  } else if (strcmp(key, "machine") == 0) {
    modal__push_machine(L, 1);
  } else if (strcmp(key, "id") == 0) {
    lua_pushinteger(L, (lua_Integer)c->id);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

/* __newindex: an instance has no assignable fields. */
static int instance_newindex(lua_State *L) {
  modal_instance *c = modal__check_instance(L, 1);
  return luaL_error(L, "modal: cannot set field '%s' of an instance (#%d): its fields are "
                    "read-only; keep your own values in c.data", lua_type(L, 2) == LUA_TSTRING ?
                    lua_tostring(L, 2) : luaL_typename(L, 2), (int)c->id);
}

static int instance_tostring(lua_State *L) {
  instance_name(L, modal__check_instance(L, 1), 1);
  return 1;
}

void modal__instance_mt(lua_State *L, int mi, int methods) {
  mi = lua_absindex(L, mi);
  methods = lua_absindex(L, methods);
  lua_createtable(L, 2, 5);
  lua_pushvalue(L, mi);                  /* [1] = M: keeps the machine alive, c.machine */
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, methods);
  lua_pushcclosure(L, instance_index, 1);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 2);                 /* [2] = __index: a reload swaps its methods table */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, modal__instance_cancel);
  lua_setfield(L, -2, "__call");
  lua_pushcfunction(L, instance_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, instance_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "modal.instance");
  lua_setfield(L, -2, "__name");
}

modal_instance *modal__instance_alloc(lua_State *L, int mi, int data) {
  modal_machine *M = modal__to_machine(L, mi);
  modal_instance *c;
  mi = lua_absindex(L, mi);
  data = data ? lua_absindex(L, data) : 0;
  c = (modal_instance *)lua_newuserdatauv(L, sizeof *c, I_NUV);
  memset(c, 0, sizeof *c);
  c->magic = INSTANCE_MAGIC;
  c->M = M;
  c->id = ++M->next_id;
  c->pin = LUA_NOREF;
  c->state = (uint16_t)M->def->initial;
  lua_getiuservalue(L, mi, M_IMT);
  lua_setmetatable(L, -2);
  if (data) {
    lua_pushvalue(L, data);
    lua_setiuservalue(L, -2, I_DATA);
  }
  lua_getiuservalue(L, mi, M_INSTANCES);  /* weak keys: reloads, stats and exit walk them */
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return c;
}
