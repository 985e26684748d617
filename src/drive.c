/*
** drive.c — the run-to-completion engine (doc/machines.md, rules 1-12): every entry point
** into an instance (a method call, c:fire, a state timeout, a job's outcome, the first entry,
** a reload's switch), its input queue and the drain, transitions with their hooks, state
** timeouts, jobs, and the retry of postponed calls.
**
** Re-entry by construction: an entry marks the instance busy and the context as driving,
** runs protected, and clears both on every exit path; inputs that arrive while an instance
** is busy wait in its queue (with their arguments, nil included) and the outermost entry
** drains them in order. Outcomes that belong to one entry of a state (its timeout, its job's
** done/error) carry that entry, and are dropped when their turn comes after it ended.
*/
#include <math.h>
#include <string.h>
#include "machine.h"

enum { TAG_PLAIN = 0 };                 /* queued inputs; > 0: the entry they belong to */

#define LOOP_WARN 100000u                /* transitions in one drain before the host says so */


/* ============================================================== entries */

/* Runs body(ci, ...) — nargs values on top — as an entry into the instance at ci: busy and
** driving while it runs, both restored however it ends. Returns the pcall status (the
** failure on top on error; else nres results). */
int modal__drive_protected(lua_State *L, modal_instance *c, int ci, lua_CFunction body,
                           int nargs, int nres) {
  modal_ctx *ctx = c->M->ctx;
  int outer = !(c->flags & I_BUSY), base = lua_gettop(L) - nargs, status;
  lua_pushcfunction(L, modal__msgh);
  lua_pushcfunction(L, body);
  lua_pushvalue(L, ci);
  lua_rotate(L, base + 1, 3);            /* msgh, body, c, args... */
  c->flags |= I_BUSY;
  ctx->driving++;
  status = lua_pcall(L, nargs + 1, nres, base + 1);
  ctx->driving--;
  if (outer)
    c->flags &= (uint16_t)~I_BUSY;
  lua_remove(L, base + 1);
  if (status != LUA_OK)
    modal__to_failure(L, -1);
  return status;
}

/* An error of modal's own while it drove an instance (out of memory, a C stack overflow):
** the instance is free again and what is still queued waits for the next entry. */
void modal__drive_internal_error(lua_State *L, modal_instance *c, int ci) {
  int f = lua_gettop(L);
  modal__push_fields(L, c, ci, 0);
  luaL_tolstring(L, f, NULL);
  modal__log(L, MODAL_LOG_ERROR, f + 1, "internal error while driving the instance (inputs "
             "still queued wait for its next entry): %s", lua_tostring(L, -1));
  lua_settop(L, f - 1);
}

static int drain_body(lua_State *L) {
  modal__drive_drain(L, modal__to_instance(L, 1), 1);
  return 0;
}

static const char deferred_key = 'q';   /* registry: instances a reload's plan left queued */

/* Drains the instance's queue now, unless an entry further out will — or a reload plans:
** migrate only reads, so what its user code set going (a job it cancelled) waits in the
** queue until the reload is over (modal__drive_deferred_drains). */
void modal__drive_drain_entry(lua_State *L, modal_instance *c, int ci) {
  if ((c->flags & (I_QUEUED | I_BUSY)) != I_QUEUED)
    return;
  ci = lua_absindex(L, ci);
  if (c->M->ctx->planning) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &deferred_key) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &deferred_key);
    }
    lua_pushvalue(L, ci);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    return;
  }
  if (modal__drive_protected(L, c, ci, drain_body, 0, 0) != LUA_OK)
    modal__drive_internal_error(L, c, ci);
}

void modal__drive_deferred_drains(lua_State *L) {
  lua_Integer i, n;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &deferred_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &deferred_key);
  n = (lua_Integer)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    modal_instance *c;
    lua_rawgeti(L, -1, i);
    if ((c = modal__to_instance(L, -1)) != NULL)
      modal__drive_drain_entry(L, c, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ============================================================== the input queue */

/* Queues (name, tag, nargs, args...): `name` a stack index, args at [args, args + nargs). */
void modal__drive_enqueue(lua_State *L, modal_instance *c, int ci, int name, int tag, int args,
                    int nargs) {
  modal_extras *x;
  int t, i;
  name = lua_absindex(L, name);
  args = nargs ? lua_absindex(L, args) : 0;
  x = modal__extras(L, ci, 1);
  modal__push_list(L, -1, X_INPUTS);
  t = lua_gettop(L);
  if (x->inputs.tail > UINT32_MAX - (uint32_t)nargs - 8)
    luaL_error(L, "modal: the input queue of an instance is full");
  lua_pushvalue(L, name);
  lua_rawseti(L, t, (lua_Integer)x->inputs.tail);
  lua_pushinteger(L, tag);
  lua_rawseti(L, t, (lua_Integer)x->inputs.tail + 1);
  lua_pushinteger(L, nargs);
  lua_rawseti(L, t, (lua_Integer)x->inputs.tail + 2);
  for (i = 0; i < nargs; i++) {
    lua_pushvalue(L, args + i);
    lua_rawseti(L, t, (lua_Integer)x->inputs.tail + 3 + i);
  }
  x->inputs.tail += 3 + (uint32_t)nargs; /* only now: a memory error above queued nothing */
  x->inputs.live++;
  c->flags |= I_QUEUED;
  lua_pop(L, 2);
}

static void enqueue_literal(lua_State *L, modal_instance *c, int ci, const char *name, int tag,
                            int args, int nargs) {
  args = nargs ? lua_absindex(L, args) : 0;
  lua_pushstring(L, name);
  modal__drive_enqueue(L, c, ci, -1, tag, args, nargs);
  lua_pop(L, 1);
}

/* Logs a queued input that was not taken: at debug when soft or stale, else at warn. */
static void not_taken(lua_State *L, modal_instance *c, int ci, int name, int level,
                      const char *why) {
  int f = lua_gettop(L) + 1;
  modal__push_fields(L, c, ci, name);
  modal__push_state_name(L, c, ci, c->state);
  modal__log(L, level, f, "input '%s' %s in state '%s'", lua_tostring(L, name), why,
             lua_tostring(L, -1));
  lua_settop(L, f - 1);
}

/* Handles one queued input (its name at `name`, its tag, its arguments). */
static void process(lua_State *L, modal_instance *c, int ci, int inputs, int name, int tag,
                    int args, int nargs) {
  int in;
  lua_pushvalue(L, name);
  if (lua_rawget(L, inputs) != LUA_TNUMBER) {
    lua_pop(L, 1);
    not_taken(L, c, ci, name, MODAL_LOG_WARN, "not taken (no state takes it)");
    return;
  }
  in = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (tag > 0 && (uint32_t)tag != c->entry) {
    not_taken(L, c, ci, name, MODAL_LOG_DEBUG, "dropped: the entry it belonged to has ended,");
    return;
  }
  if (modal__drive_input(L, c, ci, in, name, args, nargs))
    not_taken(L, c, ci, name, tag > 0 ? MODAL_LOG_DEBUG : MODAL_LOG_WARN, "not taken");
}

/* A definition that loops without end: said once per drain, with the cycle of states; under
** the testing kit's limit (ctx->drain_limit) the drain stops there instead, what is queued
** left queued, and the cycle is kept for modal__drive_looped. */
typedef struct loop_watch {
  uint32_t count;                        /* inputs processed in this drain (an internal
                                         ** transition enters no state, but loops as well) */
  int n, said, stop;
  int states[16];
} loop_watch;

static const char looped_key = 'l';     /* registry: the cycle of the last drain stopped */

void modal__drive_looped(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &looped_key);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &looped_key);
}

static void watch_loop(lua_State *L, modal_instance *c, int ci, loop_watch *w) {
  uint32_t limit = c->M->ctx->drain_limit;
  int i;
  if (limit == 0 || limit > LOOP_WARN)
    limit = LOOP_WARN;
  if (w->said || ++w->count < limit)
    return;
  for (i = 0; i < w->n && w->states[i] != c->state; i++)
    ;
  if (i == w->n && w->n < 16) {
    w->states[w->n++] = c->state;
    return;
  }
  w->said = 1;
  {
    luaL_Buffer b;
    int f = lua_gettop(L) + 1, k;
    modal__push_fields(L, c, ci, 0);
    luaL_buffinit(L, &b);
    for (k = i < w->n ? i : 0; k < w->n; k++) {
      modal__push_state_name(L, c, ci, w->states[k]);
      luaL_addvalue(&b);
      luaL_addstring(&b, " -> ");
    }
    modal__push_state_name(L, c, ci, c->state);
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    if (c->M->ctx->drain_limit) {
      lua_pushfstring(L, "%d transitions in one run to completion: the definition loops "
                         "without waiting (cycle: %s)", (int)w->count,
                      lua_tostring(L, -1));
      lua_rawsetp(L, LUA_REGISTRYINDEX, &looped_key);
      w->stop = 1;
    } else {
      modal__log(L, MODAL_LOG_WARN, f, "%u transitions in one run to completion: the "
                 "definition loops without waiting (cycle: %s)", (unsigned)LOOP_WARN,
                 lua_tostring(L, -1));
    }
    lua_settop(L, f - 1);
  }
}

/* Processes the queued inputs in order until none is left; the instance is busy. */
void modal__drive_drain(lua_State *L, modal_instance *c, int ci) {
  modal_extras *x;
  loop_watch w;
  int base, t, inputs;
  ci = lua_absindex(L, ci);
  x = modal__extras(L, ci, 0);
  if (!x)
    return;
  modal__push_list(L, -1, X_INPUTS);
  t = lua_gettop(L);
  modal__push_inputs(L, ci);                    /* no reload while driving: the map stays current */
  inputs = lua_gettop(L);
  base = inputs;
  memset(&w, 0, sizeof w);
  while (x->inputs.head < x->inputs.tail) {
    uint32_t h = x->inputs.head, i;
    int tag, nargs, name, args;
    lua_rawgeti(L, t, (lua_Integer)h);
    name = lua_gettop(L);
    lua_rawgeti(L, t, (lua_Integer)h + 1);
    tag = (int)lua_tointeger(L, -1);
    lua_rawgeti(L, t, (lua_Integer)h + 2);
    nargs = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    luaL_checkstack(L, nargs + 16, "too many input arguments");
    args = lua_gettop(L) + 1;
    for (i = 0; i < (uint32_t)nargs; i++)
      lua_rawgeti(L, t, (lua_Integer)h + 3 + i);
    for (i = 0; i < 3 + (uint32_t)nargs; i++) {
      lua_pushnil(L);
      lua_rawseti(L, t, (lua_Integer)h + i);
    }
    x->inputs.head = h + 3 + (uint32_t)nargs;
    x->inputs.live--;
    if (x->inputs.head == x->inputs.tail) {   /* empty: start again at 1 */
      x->inputs.head = x->inputs.tail = 1;
      c->flags &= (uint16_t)~I_QUEUED;
    }
    process(L, c, ci, inputs, name, tag, args, nargs);
    watch_loop(L, c, ci, &w);
    lua_settop(L, base);
    if (w.stop)
      break;
  }
  lua_settop(L, t - 2);
}

/* ============================================================== user code */

/* A hook, action, guard, timeout function or run raised (failure on top, popped): log it
** at error and queue input "error" with it (taken, ignored at debug, or logged at warn). */
static void hook_error(lua_State *L, modal_instance *c, int ci, const char *what) {
  int f = lua_gettop(L);
  modal__push_fields(L, c, ci, 0);
  modal__push_state_name(L, c, ci, c->state);
  luaL_tolstring(L, f, NULL);
  modal__log(L, MODAL_LOG_ERROR, f + 1, "error in %s (state '%s'): %s", what,
             lua_tostring(L, -2), lua_tostring(L, -1));
  lua_settop(L, f);
  enqueue_literal(L, c, ci, "error", TAG_PLAIN, f, 1);
  lua_settop(L, f - 1);
}

/* Calls fns[k] as fn(m, extra..., args...) protected; `nextra` values on top are popped.
** Returns 0 with nres results pushed, or 1 after hook_error (nothing pushed). */
static int call_hook(lua_State *L, modal_instance *c, int ci, int k, int nextra, int args,
                     int nargs, int nres, const char *what) {
  int i, base = lua_gettop(L) - nextra;
  luaL_checkstack(L, nargs + 8, "too many input arguments");
  modal__push_fn(L, ci, k);
  lua_insert(L, base + 1);
  lua_pushvalue(L, ci);
  lua_insert(L, base + 2);
  for (i = 0; i < nargs; i++)
    lua_pushvalue(L, args + i);
  if (modal__call(L, 1 + nextra + nargs, nres) != LUA_OK) {
    hook_error(L, c, ci, what);
    return 1;
  }
  return 0;
}

/* ============================================================== timeouts and jobs */

/* The state timeout's expiry (the extras on top): input "timeout" for the entry it was
** armed for. */
static void timeout_fired(lua_State *L, modal_timer *t) {
  modal_extras *x = (modal_extras *)t;
  modal_instance *c;
  int ci;
  lua_getiuservalue(L, -1, X_INSTANCE);
  ci = lua_gettop(L);
  c = modal__to_instance(L, ci);
  if (!c || x->timer_entry != c->entry)
    return;
  enqueue_literal(L, c, ci, "timeout", (int)c->entry, 0, 0);
  modal__drive_drain_entry(L, c, ci);
}

/* Pushes a readable form of the value at idx for an error message (no metamethods). */
static const char *describe(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    return modal__number_text(L, idx);
  }
  return lua_pushfstring(L, "a %s", luaL_typename(L, idx));
}

void modal__drive_arm_timeout(lua_State *L, modal_instance *c, int ci) {
  modal_state *s = &c->M->def->states[c->state];
  double secs = s->timeout;
  modal_extras *x;
  if (s->timeout_fn) {
    if (call_hook(L, c, ci, s->timeout_fn, 0, 0, 0, 1, "timeout"))
      return;
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return;
    }
    secs = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
    if (!(secs >= 0) || isinf(secs)) {
      lua_pushfstring(L, "timeout function returned %s (seconds must be a finite number >= 0, "
                      "or nil for none)", describe(L, -1));
      modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
      lua_replace(L, -4);
      lua_pop(L, 2);
      hook_error(L, c, ci, "timeout");
      return;
    }
    lua_pop(L, 1);
  }
  if (secs < 0)
    return;
  x = modal__extras(L, ci, 1);
  x->timer.fire = timeout_fired;
  x->timer_entry = c->entry;
  modal__timer_start(L, &x->timer, -1, secs);
  lua_pop(L, 1);
}

/* The link on a running job: (result, c, entry, job). Its outcome becomes input done or
** error of the entry that started it. */
static int job_settled(lua_State *L) {
  modal_instance *c = modal__to_instance(L, 2);
  int failed = modal__is_failure(L, 1);
  modal_extras *x;
  lua_settop(L, 4);
  if (failed)
    modal__mark_handled(L, 4);           /* the machine takes it, as input "error" */
  if (!c || c->M->ctx->closed)
    return 0;
  x = modal__extras(L, 2, 0);
  if (!x || !x->job || (lua_Integer)c->entry != lua_tointeger(L, 3)) {
    lua_settop(L, 1);
    return 1;                            /* not the current job: left, or re-entered */
  }
  lua_pushnil(L);
  lua_setiuservalue(L, 5, X_JOB);
  x->job = 0;
  modal__update_pin(L, c, 2);
  enqueue_literal(L, c, 2, failed ? "error" : "done", (int)c->entry, 1, 1);
  modal__drive_drain_entry(L, c, 2);
  lua_settop(L, 1);
  return 1;
}

void modal__drive_start_job(lua_State *L, modal_instance *c, int ci) {
  modal_state *s = &c->M->def->states[c->state];
  modal_extras *x;
  int d;
  if (call_hook(L, c, ci, s->run, 0, 0, 0, 1, "run"))
    return;
  d = lua_gettop(L);
  if (!modal__is_deferred(L, d)) {       /* a plain value: done at once; a failure: error */
    enqueue_literal(L, c, ci, modal__is_failure(L, d) ? "error" : "done", (int)c->entry, d, 1);
    lua_pop(L, 1);
    return;
  }
  x = modal__extras(L, ci, 1);
  lua_pushvalue(L, d);
  lua_setiuservalue(L, -2, X_JOB);
  x->job = 1;
  lua_pop(L, 1);
  modal__update_pin(L, c, ci);
  lua_pushcfunction(L, job_settled);
  lua_pushvalue(L, ci);
  lua_pushinteger(L, (lua_Integer)c->entry);
  lua_pushvalue(L, d);
  modal__add_link(L, d, -4, 0, 1, 3);    /* runs at once when the job is done already */
  lua_settop(L, d - 1);
}

/* Leaving a state: its timeout and its job end (the job is cancelled, its outcome ignored). */
void modal__drive_end_entry(lua_State *L, modal_instance *c, int ci) {
  modal_extras *x;
  if (!(c->flags & I_HASX))
    return;
  x = modal__extras(L, ci, 0);
  modal__timer_stop(L, &x->timer);
  if (x->job) {
    lua_getiuservalue(L, -1, X_JOB);
    lua_pushnil(L);
    lua_setiuservalue(L, -3, X_JOB);
    x->job = 0;
    modal__update_pin(L, c, ci);
    modal__cancel(L, -1);                /* user code: its canceller */
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ============================================================== transitions */

/* Enters the current state: enter(m, from, input, args...), timeout, run, observers. */
void modal__drive_enter(lua_State *L, modal_instance *c, int ci, int from, int in, int args,
                        int nargs) {
  modal_state *s = &c->M->def->states[c->state];
  c->entry++;
  c->entered_ms = (uint32_t)modal__clock_ms(c->M->ctx);
  if (s->enter) {
    if (from)
      lua_pushvalue(L, from);
    else
      lua_pushnil(L);
    if (in)
      lua_pushvalue(L, in);
    else
      lua_pushnil(L);
    call_hook(L, c, ci, s->enter, 2, args, nargs, 0, "enter");
  }
  if (s->timeout >= 0 || s->timeout_fn)
    modal__drive_arm_timeout(L, c, ci);
  if (s->run)
    modal__drive_start_job(L, c, ci);
  modal__announce(L, c, ci, from, in);
}

/* --trace: one line per transition, with the time spent in the old state. */
static void trace(lua_State *L, modal_instance *c, int ci, int from, int in) {
  int f = lua_gettop(L) + 1;
  uint32_t ms = (uint32_t)modal__clock_ms(c->M->ctx) - c->entered_ms;
  modal__push_fields(L, c, ci, in);
  modal__push_state_name(L, c, ci, c->state);
  if (c->entered_ms == ENTERED_UNKNOWN)   /* entered in place, while the trace was off */
    lua_pushliteral(L, "");
  else
    lua_pushfstring(L, " after %d ms in %s", (int)ms, lua_tostring(L, from));
  modal__log(L, MODAL_LOG_INFO, f, "%s -> %s on '%s'%s", lua_tostring(L, from),
             lua_tostring(L, -2), lua_tostring(L, in), lua_tostring(L, -1));
  lua_settop(L, f - 1);
}


/* An external transition by the input named at `in` (args at [args, args + nargs)). */
static void transition(lua_State *L, modal_instance *c, int ci, modal_transition *t, int in,
                       int args, int nargs) {
  modal_compiled *k = c->M->def;
  int from = c->state, to = t->to, fromi, top = lua_gettop(L);
  modal__push_state_name(L, c, ci, from);
  fromi = lua_gettop(L);
  if (k->states[from].exit) {
    modal__push_state_name(L, c, ci, to);
    lua_pushvalue(L, in);
    call_hook(L, c, ci, k->states[from].exit, 2, args, nargs, 0, "exit");
  }
  modal__drive_end_entry(L, c, ci);
  if (t->action)
    call_hook(L, c, ci, t->action, 0, args, nargs, 0, "action");
  c->state = (uint16_t)to;
  c->M->transitions++;
  if (c->M->ctx->tracing)
    trace(L, c, ci, fromi, in);
  modal__drive_enter(L, c, ci, fromi, in, args, nargs);
  if (to != from)
    modal__drive_retry(L, c, ci);
  lua_settop(L, top);
}

/* Handles input `in` (its name at `name`); returns 1 (nothing changed) when the state does
** not take it. */
int modal__drive_input(lua_State *L, modal_instance *c, int ci, int in, int name, int args,
                       int nargs) {
  modal_compiled *k = c->M->def;
  int cell = c->state * k->ninputs + in, n = k->on_count[cell], i, top = lua_gettop(L);
  modal_transition *t = &k->trans[k->on_first[cell]];
  if (n == 0) {
    if (!k->ignored[cell])
      return 1;
    not_taken(L, c, ci, name, MODAL_LOG_DEBUG, "ignored");
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
    not_taken(L, c, ci, name, MODAL_LOG_DEBUG, "dropped (no guard passed)");
    return 0;
  }
  if (t->to < 0) {                       /* internal: the action only */
    if (t->action)
      call_hook(L, c, ci, t->action, 0, args, nargs, 0, "action");
  } else {
    transition(L, c, ci, t, name, args, nargs);
  }
  lua_settop(L, top);
  return 0;
}

/* ============================================================== retrying postponed calls */

/* Retries the postponed calls, oldest first (after a change of state name): a call whose
** handler postpones again keeps its place; calls postponed meanwhile go after them; a call
** that user code answered or cancelled while a handler ran is not answered again. */
void modal__drive_retry(lua_State *L, modal_instance *c, int ci) {
  modal_extras *x;
  modal_compiled *k = c->M->def;
  uint32_t r, w, end;
  int t, top = lua_gettop(L);
  if (c->npostponed == 0 || (c->flags & I_RETRYING))
    return;
  x = modal__extras(L, ci, 0);
  modal__push_list(L, -1, X_CALLS);
  t = lua_gettop(L);
  c->flags |= I_RETRYING;
  end = x->calls.tail;
  w = x->calls.head;
  for (r = x->calls.head; r < end; r++) {
    uint32_t *aux;
    int d, h, nargs, res;
    lua_settop(L, t);
    lua_rawgeti(L, t, (lua_Integer)r);
    d = lua_gettop(L);
    lua_pushnil(L);
    lua_rawseti(L, t, (lua_Integer)r);   /* it is on the stack now; kept ones move to w */
    aux = modal__deferred_aux(L, d);
    if (!aux || !*aux || !modal__is_pending(L, d))
      continue;                          /* cancelled: leaves the queue */
    if ((*aux & AUX_INDEX) == AUX_GONE || (int)(*aux & AUX_INDEX) > k->nmethods) {
      modal__push_gone_message(L, d);    /* its method was removed by a reload */
      modal__call_left(L, c, ci, d);
      modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
      lua_remove(L, -2);
      modal__settle(L, d, R_ERROR);
      continue;
    }
    h = k->handlers[c->state * k->nmethods + (int)(*aux & AUX_INDEX) - 1];
    if (h == H_POSTPONE) {
      lua_rawseti(L, t, (lua_Integer)w++);
      continue;
    }
    if (h == H_NONE) {
      modal__call_left(L, c, ci, d);
      lua_pushliteral(L, "no handler for this method in this state");
      modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
      modal__settle(L, d, R_ERROR);
      continue;
    }
    lua_pushcfunction(L, modal__msgh);
    modal__push_fn(L, ci, h);
    lua_pushvalue(L, ci);
    nargs = modal__call_args(L, d, *aux);
    res = modal__run_handler(L, c, d + 1, nargs);
    if (!*aux || !modal__is_pending(L, d))
      continue;                          /* taken while its handler ran */
    if (res == R_POSTPONE && !k->states[c->state].final) {
      lua_settop(L, d);
      lua_rawseti(L, t, (lua_Integer)w++);
      continue;
    }
    if (res == R_POSTPONE) {             /* a marker handed back in a final state: as rule 1 */
      lua_pop(L, 1);
      modal__push_state_name(L, c, ci, c->state);
      lua_pushfstring(L, "cannot postpone a call in final state '%s'", lua_tostring(L, -1));
      modal__failure_new(L, "error", lua_tostring(L, -1), 0, 0);
      lua_replace(L, -3);
      lua_pop(L, 1);
      res = R_ERROR;
    }
    modal__call_left(L, c, ci, d);
    modal__settle(L, d, res);
  }
  lua_settop(L, t);
  c->flags &= (uint16_t)~I_RETRYING;
  modal__list_compact(L, &x->calls, t, 1);    /* [w, end) empty; [end, tail) are newer */
  lua_settop(L, top);
  modal__update_pin(L, c, ci);
}

