/*
** machine.h — compiled definitions (compile.c), the machine object (machine.c) and its
** instances (instance.c, observe.c, calls.c, drive.c, entry.c), shared by those files.
**
** A definition compiles into one userdata block: states, handler and transition tables
** indexed by (state, method) and (state, input), with every Lua value (functions, names)
** kept in the `fns` table at integer indices. Dispatch builds no strings and allocates
** nothing beyond the caller's Deferred. Nothing after the compile reads the user's
** definition table: the user values hold every name and function it had.
*/
#ifndef MODAL_MACHINE_H
#define MODAL_MACHINE_H

#include "core.h"

#define H_NONE      0      /* no handler (the compile never writes it: each cell has one) */
#define H_POSTPONE  (-1)   /* the handler "postpone" */

/* What the compiled form can hold; lua/modal/check.lua (check.LIMITS) refuses a definition
** past one of them at validation, with the limit named. */
#define MODAL_MAX_STATES      65535       /* an instance keeps its state in a uint16_t */
#define MODAL_MAX_METHODS     65535       /* well inside the 28 bits of a call's aux word */
#define MODAL_MAX_CHOICES     255         /* transitions for one input of one state (on_count) */
#define MODAL_MAX_CELLS       (1 << 22)   /* nstates * nmethods, and nstates * ninputs */
#define MODAL_MAX_TRANSITIONS (1 << 22)   /* ntrans */

enum {                     /* user values of a compiled definition */
  K_FNS = 1,               /* {[i] = function or name string}, each distinct value once */
  K_INPUTS,                /* {input name = input index, [input index + 1] = input name} */
  K_STATES,                /* {state name = state index} */
  K_DEF,                   /* the definition table as given, for M.definition only */
  K_METHODS,               /* {[method index + 1] = method name}, in order */
  K_NUV = K_METHODS
};

typedef struct modal_transition {
  int to;                  /* state index, or -1 for an internal transition */
  int guard;               /* fns index, or 0 */
  int action;              /* fns index, or 0 */
  int plain;               /* 1: taking it runs no user code (no guard, action, exit, enter,
                              run or timeout): the driver may switch state in place */
} modal_transition;

typedef struct modal_state {
  int name;                /* fns index of the name string */
  int final;
  int enter, exit, run;    /* fns indices, or 0 */
  int timeout_fn;          /* fns index of a timeout function, or 0 */
  double timeout;          /* seconds; < 0: none (unless timeout_fn) */
} modal_state;

typedef struct modal_compiled {
  int nstates, nmethods, ninputs, ntrans;
  int initial;
  int max_postponed;
  int name;                /* fns index of the machine's name */
  int in_timeout, in_done, in_error;   /* input indices of the built-in inputs */
  int migrate;             /* fns index, or 0 */
  int has_version;         /* 0: the definition has no version */
  double version;          /* the definition's version (M.version) */
  modal_state *states;     /* [nstates] */
  int *handlers;           /* [state * nmethods + method]: fns index, H_POSTPONE or H_NONE */
  int *on_first;           /* [state * ninputs + input]: first transition */
  uint8_t *on_count;       /* [state * ninputs + input]: 0 = not taken */
  uint8_t *ignored;        /* [state * ninputs + input]: listed in an ignore list */
  modal_transition *trans; /* [ntrans] */
} modal_compiled;


/* compile(norm[, def]) -> the compiled userdata for the normalized form `norm` (made by
** lua/modal/check.lua's normalize; `def` is kept as K_DEF). Raises on a malformed form. Also
** the registry's "modal.compile", for specs. */
MODAL__FUNC int modal__compile(lua_State *L);
/* Pushes a new compiled definition for the definition table at `def`: "<where>: invalid
** definition" with every problem raises (the one path from a table to a compiled form). */
MODAL__FUNC void modal__build(lua_State *L, int def, const char *where);

/* ======================================================================= the machine object */

/* M: user values below; the compiled definition it serves now is `def` (a reload swaps it). */
typedef struct modal_machine {
  uint32_t magic;
  uint32_t next_id;        /* ids of its instances: 1, 2, ... */
  uint32_t gen;            /* successful reloads: bound methods compare it */
  int last_in;             /* fire's cache: the index of the input last named ... */
  const char *last_name;   /* ... by this interned (short) string; NULL after a reload */
  modal_compiled *def;
  modal_ctx *ctx;
  double version;
  int has_version;
  uint64_t transitions;    /* external transitions of all its instances */
} modal_machine;

/* M's user values: the compiled definition, the instances' metatable, the methods table
** ({name = bound method}, the instances' __index fast path; refilled in place by a reload),
** the live instances (a weak-keyed set: the cost of a walk follows live instances, not the
** instances ever made), an info table (path, last_reload), {method name = index}, and
** {input name = index} (refilled in place by a reload, like the methods). */
enum { M_DEF = 1, M_IMT, M_METHODS, M_INSTANCES, M_INFO, M_MINDEX, M_INPUTS,
       M_NUV = M_INPUTS };

#define MACHINE_MAGIC  0x4d444d31u
#define INSTANCE_MAGIC 0x4d444931u

static inline modal_machine *modal__to_machine(lua_State *L, int idx) {
  modal_machine *M = (modal_machine *)lua_touserdata(L, idx);
  if (M && lua_rawlen(L, idx) == sizeof *M && M->magic == MACHINE_MAGIC)
    return M;
  return NULL;
}

/* ======================================================================= instances */

enum {                     /* instance flags */
  I_BUSY = 1 << 0,         /* the driver is working on it: inputs fired now are queued */
  I_RETRYING = 1 << 1,     /* its postponed calls are being retried */
  I_ANNOUNCING = 1 << 2,   /* observers are being called: no compaction of their list */
  I_PINNED = 1 << 3,       /* `pin` holds a registry ref (a job runs or calls wait) */
  I_QUEUED = 1 << 4,       /* inputs wait in its queue */
  I_HASX = 1 << 5          /* it has extras (user value I_EXTRAS) */
};

/* An instance: user value I_DATA the data table (made on first use), I_EXTRAS the extras
** (made on first need). Its metatable (one per machine) holds M at index 1. */
typedef struct modal_instance {
  uint32_t magic;
  uint16_t flags;
  uint16_t state;
  uint32_t id;
  uint32_t entry;          /* entries into states: timers and job outcomes carry theirs */
  uint32_t entered_ms;     /* monotonic ms of the last entry, for the trace (or
                              ENTERED_UNKNOWN: entered in place while the trace was off) */
  int32_t npostponed;      /* postponed calls still waiting */
  int32_t depth;           /* method handlers running (m:postpone() is legal when > 0) */
  int32_t pin;             /* registry ref while I_PINNED */
  modal_machine *M;
} modal_instance;

enum { I_DATA = 1, I_EXTRAS, I_NUV = I_EXTRAS };

#define ENTERED_UNKNOWN UINT32_MAX

/* A FIFO of Lua values in a table, with explicit counts: the live slots are [head, tail);
** `live` counts entries that have not left (lazy removal leaves dead slots behind). */
typedef struct modal_list {
  uint32_t head, tail, live;
} modal_list;

/* What an instance needs beyond its state: made the first time it queues an input,
** postpones a call, is observed, arms a timeout or runs a job. */
typedef struct modal_extras {
  modal_timer timer;       /* the state timeout; armed while timer.slot >= 0 */
  uint32_t timer_entry;    /* the entry it was armed for */
  modal_list inputs;       /* queued inputs: (name, tag, nargs, args...) per input */
  modal_list calls;        /* postponed calls: their Deferreds (aux 0 once a call left) */
  modal_list waiters;      /* when() Deferreds (aux 0 once a waiter left) */
  modal_list observers;    /* on_transition records {fn} (fn nil once cancelled) */
  int job;                 /* a job runs: user value X_JOB is its Deferred */
  int job_detached;        /* a reload moved it on: X_JOB waits to be cancelled */
} modal_extras;

/* User values of the extras: the instance, then one table per list, then the job. */
enum { X_INSTANCE = 1, X_INPUTS, X_CALLS, X_WAITERS, X_OBSERVERS, X_JOB, X_NUV = X_JOB };

/* A Deferred's aux word, for the Deferreds an instance keeps: 0 = none (or left). */
#define AUX_WHEN     0x80000000u   /* a when() waiter; low bits: the state index */
#define AUX_NOARGS   0x40000000u   /* a postponed call without arguments */
#define AUX_PACKED   0x20000000u   /* a postponed call's arguments are a table {n=, ...} */
#define AUX_INDEX    0x0fffffffu   /* a call's method index + 1, or a waiter's state */
#define AUX_GONE     AUX_INDEX     /* that index: its method or state was removed by a reload */

/* instance.c: the object */
MODAL__FUNC modal_instance *modal__to_instance(lua_State *L, int idx);
MODAL__FUNC modal_instance *modal__check_instance(lua_State *L, int idx);
/* Pushes the machine object of the instance at ci. */
MODAL__FUNC void modal__push_machine(lua_State *L, int ci);
/* Pushes fns[k] of the definition the instance at ci now serves. */
MODAL__FUNC void modal__push_fn(lua_State *L, int ci, int k);
/* Pushes the name of state `st` (nil when out of range). */
MODAL__FUNC void modal__push_state_name(lua_State *L, modal_instance *c, int ci, int st);
/* Pushes the {input name = index} table of the definition the instance at ci serves. */
MODAL__FUNC void modal__push_inputs(lua_State *L, int ci);
/* Pushes the log fields {machine, id, state[, input]} (input: a name at `input`, or 0). */
MODAL__FUNC void modal__push_fields(lua_State *L, modal_instance *c, int ci, int input);
/* The extras of the instance at ci, pushed; made when `make` (else NULL and nil pushed). */
MODAL__FUNC modal_extras *modal__extras(lua_State *L, int ci, int make);
/* Pushes the table of list `which` (X_INPUTS...) of the extras at xi. */
MODAL__FUNC void modal__push_list(lua_State *L, int xi, int which);
/* Pins the instance while it runs a job or keeps calls or waiters, and lets go after. */
MODAL__FUNC void modal__update_pin(lua_State *L, modal_instance *c, int ci);
/* Pushes a new instance of the machine at mi with the data at `data` (0: none), in its
** initial state, not yet entered (its first entry is the driver's). */
MODAL__FUNC modal_instance *modal__instance_alloc(lua_State *L, int mi, int data);
/* Pushes a new metatable for the instances of the machine at mi (index: its methods). */
MODAL__FUNC void modal__instance_mt(lua_State *L, int mi, int methods);
/* Registers what the instances' layer tells the context (kept Deferreds fired outside). */
MODAL__FUNC void modal__open_instance(lua_State *L);
/* The instances' __call: the canceller of their postponed calls and when() waiters. */
MODAL__FUNC int modal__instance_cancel(lua_State *L);
/* Frees the dead slots of a list whose table is at t (order kept; head back to 1). `kind`:
** 1 for Deferreds (dead once aux is 0), 0 for observer records (dead once [1] is nil). */
MODAL__FUNC void modal__list_compact(lua_State *L, modal_list *l, int t, int kind);
/* Appends the value on top (popped) to the list whose table is at t. */
MODAL__FUNC void modal__list_push(lua_State *L, modal_list *l, int t);

/* observe.c: when() and on_transition() */
MODAL__FUNC void modal__open_observe(lua_State *L, int methods);
/* After an entry: calls the observers (from/in: names at those indices, or 0 for nil) and
** settles the when() waiters. */
MODAL__FUNC void modal__announce(lua_State *L, modal_instance *c, int ci, int from, int in);
/* Fails every waiter with a failure of kind `kind`; returns how many. */
MODAL__FUNC int modal__fail_waiters(lua_State *L, modal_instance *c, int ci, const char *kind,
                                    const char *message);
/* Reload, first pass (no allocation, no Lua code): each waiter's state through the table at
** smap (old + 1 -> new + 1, 0 = removed: marked AUX_GONE). */
MODAL__FUNC void modal__remap_waiters(lua_State *L, modal_instance *c, int ci, int smap);
/* Reload, second pass: waiters marked AUX_GONE fail with kind "stopped"; unless gone_only,
** the others are settled as after an entry (in a final state they fail: rule 10). */
MODAL__FUNC void modal__settle_waiters(lua_State *L, modal_instance *c, int ci, int gone_only);

/* calls.c: method handlers and the postponed-call record */
/* Adds postpone and postponed to the methods table at `methods`. */
MODAL__FUNC void modal__open_calls(lua_State *L, int methods);
enum { R_VALUE, R_POSTPONE, R_ERROR };
/* Runs a handler protected: the stack holds modal__msgh at `base`, then the handler, m and
** nargs arguments. Its result (or failure) is left at `base`, the top. */
MODAL__FUNC int modal__run_handler(lua_State *L, modal_instance *c, int base, int nargs);
/* After a call's handler: makes the caller's Deferred (or postpones the call), run protected
** by the caller with the instance still busy: (R_* outcome, the handler's result, method
** index, Deferreds' metatable, c, args... — the args only for R_POSTPONE) -> the Deferred. */
MODAL__FUNC int modal__call_finish(lua_State *L);
/* Replaces the handler outcome on top with the caller's Deferred (mt: Deferred metatable
** index, or 0): a new one fired with a value or failure, or the returned Deferred itself. */
MODAL__FUNC void modal__outcome_deferred(lua_State *L, int r, int mt);
/* Settles the pending Deferred at d with the handler outcome on top (popped). */
MODAL__FUNC void modal__settle(lua_State *L, int d, int r);
/* Pushes the Deferred of a new postponed call of `method` with nargs arguments from args
** (a failed Deferred when the queue is full or the state is final). */
MODAL__FUNC void modal__postpone(lua_State *L, modal_instance *c, int ci, int method, int args,
                                 int nargs);
/* The call whose Deferred is at d leaves the queue (answered or cancelled). */
MODAL__FUNC void modal__call_left(lua_State *L, modal_instance *c, int ci, int d);
/* Pushes the arguments of the postponed call at d; returns how many. */
MODAL__FUNC int modal__call_args(lua_State *L, int d, uint32_t aux);
/* Reload, first pass (no allocation, no Lua code): each call's method through the table at
** map (old index + 1 -> new + 1, 0 = removed: marked AUX_GONE). */
MODAL__FUNC void modal__remap_calls(lua_State *L, modal_instance *c, int ci, int map);
/* Reload, second pass: the calls marked AUX_GONE fail with kind "error". */
MODAL__FUNC void modal__fail_gone_calls(lua_State *L, modal_instance *c, int ci);
/* Pushes the message a call whose method a reload removed fails with (its Deferred at d). */
MODAL__FUNC void modal__push_gone_message(lua_State *L, int d);
/* Fails every postponed call with kind/message; returns how many. */
MODAL__FUNC int modal__fail_calls(lua_State *L, modal_instance *c, int ci, const char *kind,
                                  const char *message);

/* drive.c: the run-to-completion engine */
/* Runs body(c, args...) (nargs values on top) as an entry into the instance at ci: busy and
** driving while it runs, both restored on every exit path. The pcall status; the failure on
** top on error, else nres results. */
MODAL__FUNC int modal__drive_protected(lua_State *L, modal_instance *c, int ci,
                                       lua_CFunction body, int nargs, int nres);
/* Logs an error of modal's own while it drove the instance (failure on top, popped). */
MODAL__FUNC void modal__drive_internal_error(lua_State *L, modal_instance *c, int ci);
/* Drains the instance's queue as an entry of its own, unless one further out will. */
MODAL__FUNC void modal__drive_drain_entry(lua_State *L, modal_instance *c, int ci);
/* After a reload's plan: drains the instances whose queue waited while migrate ran. */
MODAL__FUNC void modal__drive_deferred_drains(lua_State *L);
/* Inside an entry: processes the queued inputs in order until none is left. */
MODAL__FUNC void modal__drive_drain(lua_State *L, modal_instance *c, int ci);
/* Queues the input named at `name` with its tag and arguments [args, args + nargs). */
MODAL__FUNC void modal__drive_enqueue(lua_State *L, modal_instance *c, int ci, int name,
                                      int tag, int args, int nargs);
/* Handles input `in` (named at `name`) now; 1 when the state does not take it. */
MODAL__FUNC int modal__drive_input(lua_State *L, modal_instance *c, int ci, int in, int name,
                                   int args, int nargs);
/* Enters the current state: enter hook (from/in: names at those indices, or 0), timeout,
** run, observers. */
MODAL__FUNC void modal__drive_enter(lua_State *L, modal_instance *c, int ci, int from, int in,
                                    int args, int nargs);
MODAL__FUNC void modal__drive_arm_timeout(lua_State *L, modal_instance *c, int ci);
MODAL__FUNC void modal__drive_start_job(lua_State *L, modal_instance *c, int ci);
/* Leaving a state: stops its timeout, cancels its job. */
MODAL__FUNC void modal__drive_end_entry(lua_State *L, modal_instance *c, int ci);
/* Retries the postponed calls once (after a change of state name, or a reload). */
MODAL__FUNC void modal__drive_retry(lua_State *L, modal_instance *c, int ci);

/* entry.c: the ways in from Lua */
/* Enters the initial state of the new instance at ci (enter, timeout, run) and drains. */
MODAL__FUNC void modal__drive_start(lua_State *L, int ci);
/* Reload, first pass (allocates nothing, runs no Lua code): the instance at ci is put in
** state `to` of the new definition `k`; its timer stops unless it stays in a state with a
** timeout; a migrated instance's job is detached (its outcome ignored). */
MODAL__FUNC void modal__switch_state(lua_State *L, int ci, modal_compiled *k, int to,
                                     int migrated);
/* Reload, second pass (user code runs): fails the calls and waiters whose method or state is
** gone, cancels a detached job, then — unless user code moved the instance since the first
** pass (its entry is no longer `entry`) — enters a migrated instance's state with input
** "reload" (from the state named at from_name), or arms what a staying state gained (a
** timeout, a run; `had`: 1 the old state had a timeout, 2 a run); then retries its calls
** (every instance was switched by then) and handles its queued inputs before it lets go. */
MODAL__FUNC void modal__after_switch(lua_State *L, int ci, int to, int migrated, int had,
                                     uint32_t entry, int from_name);
/* Whether modal__after_switch would do nothing for instance c (then it is skipped): 1 yes,
** 0 no, -1 when its extras decide and c is not on the stack (ci == 0). */
MODAL__FUNC int modal__switch_is_quiet(lua_State *L, modal_instance *c, int ci, int to,
                                       int migrated, int had);
/* Pushes a bound method for the name at `name` (index `method`) of the machine at mi, for
** generation `gen` whose fns table is at `fns`. */
MODAL__FUNC void modal__push_method(lua_State *L, int mi, int name, int method, uint32_t gen,
                                    int fns);
/* Adds fire to the methods table at `methods` of the machine at mi. */
MODAL__FUNC void modal__open_drive(lua_State *L, int methods, int mi);

/* machine.c: the machine object */
/* Pushes a new machine object for the compiled definition at `compiled`. */
MODAL__FUNC void modal__machine_new(lua_State *L, int compiled);
MODAL__FUNC void modal__push_machines(lua_State *L);
MODAL__FUNC void modal__push_version(lua_State *L, modal_machine *M);
/* The loop has no work left: calls still postponed and when() waiters nobody can answer
** any more fail with kind "stopped" when `exiting` (the host), else they are logged. */
MODAL__FUNC void modal__machines_strand(lua_State *L, int exiting);
/* Pushes, for the machine at mi serving the compiled definition at `compiled` as generation
** `gen`, three new tables: its methods (the instances' __index), {method name = index} and
** {input name = index}. */
MODAL__FUNC void modal__build_methods(lua_State *L, int mi, int compiled, uint32_t gen);
/* Makes the tables at methods, index, index + 1 the machine's, allocating nothing (a reload
** swaps them with no finalizer able to run in between). */
MODAL__FUNC void modal__install_methods(lua_State *L, int mi, int methods, int index);

#endif
