/*
** machine.h — compiled machine definitions and instances, shared by compile.c (the compile),
** machine.c (reading a definition, the machine object) and instance.c (driving instances).
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
#define MODAL_MAX_METHODS     65535       /* well inside the 28 bits the driver keeps one in */
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

/* The machine object M: user value 1 the compiled definition, 2 the instances' metatable,
** 3 the methods table ({name = closure}, also the instances' __index fast path). */
typedef struct modal_machine {
  uint32_t magic;
  uint32_t next_id;
  modal_compiled *def;
  uv_loop_t *loop;         /* for the time an instance enters a state */
  double version;
  int has_version;
  uint32_t reloads;        /* successful reloads */
  uint64_t transitions;    /* external transitions of all its instances */
} modal_machine;

/* M's user values: the compiled definition, the instances' metatable, the methods table
** (updated in place by a reload), the live instances ({[id] = c}, weak values), and an info
** table (path, last_reload). */
enum { M_DEF = 1, M_IMT, M_METHODS, M_INSTANCES, M_INFO, M_NUV = M_INFO };

/* Set while a hook, action, guard, timeout function, run or observer runs: reloads come from
** outside (DESIGN.md section 6). */
MODAL__FUNC int modal__in_hook;
/* modal.trace(on): every transition logged at info. */
MODAL__FUNC int modal__tracing;

enum {                     /* instance flags */
  I_BUSY = 1 << 0,         /* a handler or transition runs: inputs are queued */
  I_RETRYING = 1 << 1,     /* postponed calls are being retried */
  I_HASX = 1 << 2,         /* user value I_EXTRAS holds the extras table */
  I_ANNOUNCING = 1 << 3    /* observers are being called: cancelled ones are not compacted */
};

/* An instance: user value 1 the machine object, 2 the data table (made on first use),
** 3 the extras table (queues, timer, job, observers; made on first use). */
typedef struct modal_instance {
  uint32_t magic;
  uint16_t flags;
  uint16_t state;
  uint32_t id;
  uint32_t entry;          /* counts entries into states: stale timers and jobs compare it */
  uint32_t entered_ms;     /* loop time (ms) of the last entry, for the trace */
  int npostponed;          /* live postponed calls */
  int depth;               /* handlers running (m:postpone() is legal when > 0) */
  int pin;                 /* registry ref keeping the instance alive while a job runs */
  modal_machine *M;
} modal_instance;

enum { I_MACHINE = 1, I_DATA, I_EXTRAS, I_NUV = I_EXTRAS };

/* Fields of the extras table. */
enum {
  X_QUEUE = 1,             /* postponed calls: a list of Deferreds (aux: method, nargs) */
  X_INPUTS,                /* queued inputs: flat list of (input, nargs, args..., soft) */
  X_INHEAD,                /* index of the next queued input */
  X_TIMER,                 /* the armed state timeout handle */
  X_JOB,                   /* the running job's Deferred */
  X_OBSERVERS,             /* on_transition records {fn} in order (fn nil once cancelled) */
  X_WAITERS,               /* when() Deferreds: {state index + 1 = {d, ...}} */
  X_INCOMING,              /* calls postponed while retrying */
  X_QHEAD,                 /* first X_QUEUE index that may hold a live call */
  X_DEAD                   /* cancelled records in X_OBSERVERS, not yet compacted */
};

#define MACHINE_MAGIC  0x4d444d31u
#define INSTANCE_MAGIC 0x4d444931u

/* compile(norm[, def]) -> the compiled userdata for the normalized form `norm` (made by
** lua/modal/check.lua's normalize; `def` is kept as K_DEF). Raises on a malformed form. Also
** the registry's "modal.compile", for specs. */
MODAL__FUNC int modal__compile(lua_State *L);
MODAL__FUNC modal_machine *modal__to_machine(lua_State *L, int idx);
MODAL__FUNC modal_instance *modal__to_instance(lua_State *L, int idx);
/* Pushes the fns table of the instance's machine. */
MODAL__FUNC void modal__push_fns(lua_State *L, modal_instance *c, int ci);
/* Builds the methods table of M (index mi) for its current compiled definition at
** `compiled`, into the table at `methods` (cleared first). */
MODAL__FUNC void modal__fill_methods(lua_State *L, int methods, int compiled);
/* A reload's switch of one instance (index ci): to state `to` of the new definition, staying
** (its timer kept unless the new state has none) or migrated from the state named at
** `from_name` (old timer and job cancelled, enter(m, old, "reload"), observers told). */
MODAL__FUNC void modal__instance_switch(lua_State *L, int ci, int to, int from_name);
/* Remaps the methods of the instance's postponed calls (old index + 1 -> new index + 1 in
** the array at `map`, 0 = removed: that call fails) and the states of its when() waiters
** (the same through `smap`; a removed state fails them with kind "stopped") and its queued
** inputs (through `imap`; an input the new definition lacks is dropped at debug). */
MODAL__FUNC void modal__instance_remap(lua_State *L, int ci, int map, int smap, int imap);
/* After a reload's switch: retries the instance's postponed calls once. */
MODAL__FUNC void modal__instance_after_reload(lua_State *L, int ci);
/* Pushes M.version: an integer when it is one, nil when the definition has none. */
MODAL__FUNC void modal__push_version(lua_State *L, modal_machine *M);
/* Pushes a new machine object M for the definition at `def` compiled at `compiled` (the
** registry's "modal.build"(def, where) validates and compiles: it raises with every problem). */
MODAL__FUNC void modal__machine_new(lua_State *L, int def, int compiled);
/* Pushes the weak-keyed table of every machine object. */
MODAL__FUNC void modal__push_machines(lua_State *L);
/* Pushes a new instance of the machine at `mi` with the data at `data` (0: none). */
MODAL__FUNC void modal__instance_new(lua_State *L, int mi, int data);
/* The closure behind every method of the instances: upvalue 1 the method index, 2 fns. */
MODAL__FUNC int modal__instance_call(lua_State *L);
/* The instances' __index (upvalue 1 the methods table) and __call (a postponed call's
** canceller). */
MODAL__FUNC int modal__instance_index(lua_State *L);
MODAL__FUNC int modal__instance_cancel_call(lua_State *L);
MODAL__FUNC int modal__instance_tostring(lua_State *L);
/* Adds the built-in methods (fire, when, on_transition, postponed, postpone) to the methods
** table at `methods`, as closures over the compiled definition at `compiled`. */
MODAL__FUNC void modal__open_instance(lua_State *L, int methods, int compiled);

#endif
