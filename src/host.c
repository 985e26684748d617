/*
** host.c — the `modal` program: embeds Lua 5.4 with luv and modal preloaded, runs a script on
** the shared loop, stops gracefully on SIGINT/SIGTERM (a second signal exits at once), and
** ends through one exit path, even when a luv callback raised (doc/loop.md).
*/
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lualib.h>
#include <luv/luv.h>
#include "core.h"
#include "host.h"

#ifndef MODAL_PREFIX
#define MODAL_PREFIX "/usr/local"
#endif

/* What one `modal run` (or tool) is doing; lives in cmd_run's frame, found from Lua through
** the registry. */
typedef struct host {
  int argc;
  char **argv;
  int script;              /* index in argv of the script */
  int log_level;           /* -1: default */
  int watch, trace;        /* --watch, --trace */
  const char *admin;       /* --admin PATH */
  int status;              /* the exit status */
  int stopping;            /* a first stop signal was received */
  int fatal;               /* a luv callback raised: the host ends (status 1) */
} host;

static const char host_key = 'H';       /* registry: the host (light userdata) */
static const char signals_key = 'S';    /* registry: the SIGINT and SIGTERM watchers */

static host *host_of(lua_State *L) {
  host *h;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &host_key);
  h = (host *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return h;
}

static void usage(FILE *to) {
  (void)fputs(modal__host_usage, to);
}

/* After printing to stdout: 0, or 1 with the reason on stderr when the output could not be
** written (`modal --help > /dev/full`); `what` names the command. */
static int flush_stdout(const char *what) {
  if (fflush(stdout) == 0 && !ferror(stdout))
    return 0;
  (void)fprintf(stderr, "modal %s: cannot write the output: %s\n", what, strerror(errno));
  return 1;
}

/* A usage error, exit 2: "modal: ..." and a pointer to --help; of `modal run`, "modal run:
** ..." and a pointer to run's own --help, as check/graph/test/ctl do. */
static int usage_error(int run, const char *fmt, const char *what) {
  (void)fprintf(stderr, run ? "modal run: " : "modal: ");
  (void)fprintf(stderr, fmt, what);
  (void)fprintf(stderr, run ? "\nTry 'modal run --help'.\n" : "\nTry 'modal --help'.\n");
  return 2;
}
#define fail_usage(fmt, what) usage_error(0, fmt, what)
#define fail_run_usage(fmt, what) usage_error(1, fmt, what)

/* A readable error with a traceback, as lua.c's msghandler: for the outermost call only,
** made before modal is loaded. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls through modal's protected path; on error, leaves "message\ntraceback" on top, or
** "kind: message" for a failure raised as it is (it has no traceback). */
static int docall(lua_State *L, int nargs, int nres) {
  int status = modal__call(L, nargs, nres);
  if (status != LUA_OK) {
    if (lua_getfield(L, -1, "traceback") != LUA_TSTRING) {
      lua_pop(L, 1);
      luaL_tolstring(L, -1, NULL);
    } else {
      lua_getfield(L, -2, "message");
      lua_pushliteral(L, "\n");
      lua_rotate(L, -3, -1);               /* message, "\n", traceback */
      lua_concat(L, 3);
    }
    lua_remove(L, -2);
  }
  return status;
}

/* ============================================================== luv's callbacks */

/* After a luv callback's error: says so (unless luv asked not to), and ends the loop run when
** the host is to end. */
static int fatal_protected(lua_State *L) {
  if (lua_toboolean(L, 2)) {
    const char *text = luaL_tolstring(L, 1, NULL), *tb = NULL;
    if (lua_getfield(L, 1, "traceback") == LUA_TSTRING)
      tb = lua_tostring(L, -1);
    modal__log(L, MODAL_LOG_ERROR, 0, "uncaught error in a luv callback: %s%s%s%s", text,
               tb ? "\n" : "", tb ? tb : "", host_of(L) && host_of(L)->fatal ?
               "\nthe host exits (status 1)" : "");
  }
  if (host_of(L) && host_of(L)->fatal)
    modal__loop_stop(L);
  return 0;
}

/* luv calls every Lua callback through this (luv_set_callback). luv's own rule for an error
** stands — the host ends — but through the exit path: modal.on_stop handlers, the run-end
** hooks, the admin socket removed, status 1 (doc/loop.md). Results as luv_cfpcall's. */
static int callbacks_off;                /* a tool's last pass: no callback of the files runs */

static int luv_callback(lua_State *L, int nargs, int nresults, int flags) {
  host *h = host_of(L);
  int base = lua_gettop(L) - nargs - 1, status;
  if (callbacks_off) {                   /* (a request cancelled by closing its handle) */
    lua_settop(L, base);
    for (int i = 0; i < nresults; i++)
      lua_pushnil(L);
    return nresults == LUA_MULTRET ? 0 : nresults;
  }
  status = modal__call(L, nargs, nresults);
  if (status == LUA_OK) {
    if (h && h->fatal) {                 /* a script's own uv.run() goes on: end it again */
      lua_pushcfunction(L, fatal_protected);
      lua_pushnil(L);
      lua_pushboolean(L, 0);
      modal__pcall(L, 2, 0);
    }
    return nresults == LUA_MULTRET ? lua_gettop(L) - base : nresults;
  }
  if (h && !(flags & LUVF_CALLBACK_NOEXIT)) {
    h->fatal = 1;
    h->status = 1;
  }
  lua_pushcfunction(L, fatal_protected);
  lua_insert(L, -2);
  lua_pushboolean(L, !(flags & LUVF_CALLBACK_NOERRMSG));
  modal__pcall(L, 2, 0);
  return -status;
}

/* ============================================================== signals */

static const char *signal_name(int signum) {
  return signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "signal";
}

static void exit_now(int signum);

/* The SIGINT/SIGTERM watchers' callback (luv passes the signal's name): the first runs the
** modal.on_stop handlers and lets the loop drain; a second exits at once. */
static int on_signal(lua_State *L) {
  host *h = host_of(L);
  int signum = strcmp(luaL_optstring(L, 1, ""), "sigint") == 0 ? SIGINT : SIGTERM;
  if (!h)
    return 0;
  if (h->stopping) {
    (void)fprintf(stderr, "modal: second %s: exiting now\n", signal_name(signum));
    (void)fflush(stderr);
    exit_now(signum);
  }
  h->stopping = 1;
  modal__log(L, MODAL_LOG_INFO, 0, "%s received: stopping (send it again to exit at once)",
             signal_name(signum));
  modal__run_stop_handlers(L);
  return 0;
}

/* A second SIGINT/SIGTERM must end the host even while Lua code runs and the loop cannot
** call on_signal (a busy main chunk, a definition that loops): a handler of our own counts
** the signals, exits at once on the second, and passes the first on to libuv's. Process-wide
** by nature — a signal handler can reach static storage only. */
static volatile sig_atomic_t stop_signals;
static struct sigaction chained[2];     /* libuv's handlers for SIGINT and SIGTERM */
static char admin_socket[108];          /* the socket served, absolute: a second signal's exit
                                        ** removes it too (empty: none) */

/* Keeps the admin socket's absolute path, once served, for the exit at a second signal. */
static void note_admin_socket(const char *path) {
  char cwd[sizeof admin_socket];
  size_t n = path ? strlen(path) : 0, c = 0;
  if (n == 0)
    return;
  if (path[0] != '/') {
    if (!getcwd(cwd, sizeof cwd))
      return;
    c = strlen(cwd);
    cwd[c++] = '/';                      /* getcwd left room: c < sizeof cwd */
  }
  if (c + n >= sizeof admin_socket)
    return;
  memcpy(admin_socket, cwd, c);
  memcpy(admin_socket + c, path, n + 1);
}

/* The exit at a second stop signal: the admin socket goes (async-signal-safe: unlink). */
static void exit_now(int signum) {
  if (admin_socket[0])
    (void)unlink(admin_socket);
  _exit(128 + signum);
}

static void on_stop_signal(int signum) {
  static const char sigint_msg[] = "modal: second stop signal (SIGINT): exiting now\n";
  static const char sigterm_msg[] = "modal: second stop signal (SIGTERM): exiting now\n";
  struct sigaction *next = &chained[signum == SIGINT ? 0 : 1];
  if (++stop_signals >= 2) {
    if (signum == SIGINT)
      (void)!write(2, sigint_msg, sizeof sigint_msg - 1);
    else
      (void)!write(2, sigterm_msg, sizeof sigterm_msg - 1);
    exit_now(signum);
  }
  if (next->sa_handler != SIG_DFL && next->sa_handler != SIG_IGN && next->sa_handler)
    next->sa_handler(signum);           /* libuv's: on_signal runs when the loop can */
}

/* Puts on_stop_signal in front of the handlers libuv installed for the watchers. */
static void chain_stop_signals(void) {
  static const int which[2] = {SIGINT, SIGTERM};
  int i;
  for (i = 0; i < 2; i++) {
    struct sigaction sa;
    if (sigaction(which[i], NULL, &chained[i]) != 0)
      continue;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(which[i], &sa, NULL);
  }
}

/* Calls method `name` of the value on top with the string `arg` (or none); pops the results. */
static void call_method(lua_State *L, const char *name, const char *arg) {
  int self = lua_gettop(L);
  lua_getfield(L, self, name);
  lua_pushvalue(L, self);
  if (arg)
    lua_pushstring(L, arg);
  lua_call(L, arg ? 2 : 1, 0);
}

/* The watchers are luv's own handles (uv.walk sees them as such), unref'd: a signal watcher
** never keeps the host alive. */
static void open_signals(lua_State *L) {
  static const char *const which[2] = {"sigint", "sigterm"};
  int i, uv;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luv");
  lua_call(L, 1, 1);
  uv = lua_gettop(L);
  lua_createtable(L, 2, 0);
  for (i = 0; i < 2; i++) {
    lua_getfield(L, uv, "new_signal");
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    lua_getfield(L, -1, "start");
    lua_pushvalue(L, -2);
    lua_pushstring(L, which[i]);
    lua_pushcfunction(L, on_signal);
    lua_call(L, 3, 0);
    call_method(L, "unref", NULL);
    lua_rawseti(L, -2, i + 1);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &signals_key);
  lua_pop(L, 1);
  chain_stop_signals();
}

/* Closes the watchers (whoever closed them already, e.g. uv.walk's exit idiom, is fine). */
static int close_signals(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &signals_key) == LUA_TTABLE) {
    int i;
    for (i = 1; i <= 2; i++) {
      if (lua_rawgeti(L, -1, i) == LUA_TUSERDATA) {
        int closing;
        lua_getfield(L, -1, "is_closing");
        lua_pushvalue(L, -2);
        lua_call(L, 1, 1);
        closing = lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!closing)
          call_method(L, "close", NULL);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &signals_key);
  return 0;
}

/* package.path: the Lua half next to the binary (build tree), then the install prefix. */
static void set_paths(lua_State *L) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  lua_getglobal(L, "package");
  if (n > 0) {
    char *slash;
    exe[n] = '\0';
    if ((slash = strrchr(exe, '/')) != NULL)
      *slash = '\0';
    lua_pushfstring(L, "%s/../lua/?.lua;%s/../lua/?/init.lua;", exe, exe);
  } else {
    lua_pushliteral(L, "");
  }
  lua_pushliteral(L, MODAL_PREFIX "/share/lua/5.4/?.lua;" MODAL_PREFIX "/share/lua/5.4/?/init.lua;");
  lua_getfield(L, -3, "path");
  lua_concat(L, 3);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

static void preload(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_luv);
  lua_setfield(L, -2, "luv");
  lua_pushcfunction(L, luaopen_modal);
  lua_setfield(L, -2, "modal");
  lua_pop(L, 2);
}

/* arg[0] is the script, arg[1..] its arguments, arg[-k] what came before (as lua.c). */
static void set_arg(lua_State *L, host *h) {
  int i;
  lua_createtable(L, h->argc - h->script - 1, h->script + 1);
  for (i = 0; i < h->argc; i++) {
    lua_pushstring(L, h->argv[i]);
    lua_rawseti(L, -2, i - h->script);
  }
  lua_setglobal(L, "arg");
}

/* The host's first steps and the script, protected: the host (light userdata) at 1. */
static int pmain(lua_State *L) {
  host *h = (host *)lua_touserdata(L, 1);
  int i, nargs = h->argc - h->script - 1;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &host_key);
  luaL_openlibs(L);
  luv_set_callback(L, luv_callback);     /* before luv opens: it keeps the first one set */
  preload(L);
  set_paths(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal");
  lua_call(L, 1, 0);
  if (h->log_level >= 0)
    modal__ctx(L)->log_level = h->log_level;
  set_arg(L, h);
  open_signals(L);
  lua_getglobal(L, "require");           /* the live host: SIGHUP, --watch, --admin, --trace */
  lua_pushliteral(L, "modal.host");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "start");
  lua_createtable(L, 0, 3);
  lua_pushboolean(L, h->watch);
  lua_setfield(L, -2, "watch");
  lua_pushboolean(L, h->trace);
  lua_setfield(L, -2, "trace");
  if (h->admin) {
    lua_pushstring(L, h->admin);
    lua_setfield(L, -2, "admin");
  }
  lua_call(L, 1, 0);
  lua_pop(L, 1);
  note_admin_socket(h->admin);
  if (luaL_loadfile(L, h->argv[h->script]) != LUA_OK)
    return lua_error(L);
  luaL_checkstack(L, nargs + 4, "too many arguments to the script");
  for (i = h->script + 1; i < h->argc; i++)
    lua_pushstring(L, h->argv[i]);
  if (docall(L, nargs, 0) != LUA_OK)
    return lua_error(L);
  if (!h->fatal)                         /* the final run: its end is the host's (exiting) */
    modal__loop_run(L);
  return 0;
}

/* Closes the live host's handles (watchers, admin socket, SIGHUP) before the state closes. */
static int pstop(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "modal.host") == LUA_TTABLE && lua_getfield(L, -1, "stop") == LUA_TFUNCTION)
    lua_call(L, 0, 0);
  return 0;
}

/* One step of the exit path, protected; a step that fails is said, and the next ones run. */
static void exit_step(lua_State *L, lua_CFunction step) {
  lua_pushcfunction(L, step);
  if (docall(L, 0, 0) != LUA_OK) {
    (void)fprintf(stderr, "modal: while exiting: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* uv.walk's callback for close_handles: the exit idiom. */
static int close_walked(lua_State *L) {
  int closing;
  lua_settop(L, 1);
  lua_getfield(L, 1, "is_closing");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  closing = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!closing)
    call_method(L, "close", NULL);
  return 0;
}

/* Closes every handle left on the loop (luv's and modal's), so that the last turn of the loop
** finishes closing them while the state is whole, and nothing armed runs after the exit path. */
static int close_handles(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luv");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "walk");
  lua_pushcfunction(L, close_walked);
  lua_call(L, 1, 0);
  return 0;
}

/* The exit path, whatever ended the host but a second signal or os.exit: after a luv
** callback's error the modal.on_stop handlers (as for a stop signal), then the run-end hooks
** (nothing can answer what waits any more), the live host's handles with the admin socket
** file, the signal watchers, every other handle. */
static void exit_path(lua_State *L, host *h) {
  if (!modal__ctx(L))                    /* modal never loaded: nothing of it to end */
    return;
  if (h->fatal)
    modal__run_stop_handlers(L);
  modal__run_end(L, 1);
  exit_step(L, pstop);
  exit_step(L, close_signals);
  exit_step(L, close_handles);
}

/* The tools written in Lua (lua/modal/cli.lua): `modal check`, `graph`, `test` and `ctl`. */
static int ptool(lua_State *L) {
  host *h = (host *)lua_touserdata(L, 1);
  int i;
  luaL_openlibs(L);
  /* As under `modal run`, but with no host to end: a luv callback of a file that raises is
  ** logged, and the command's own status stands, where luv's default would exit 255; in
  ** cmd_tool's last pass no callback runs at all. */
  luv_set_callback(L, luv_callback);
  preload(L);
  set_paths(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_pushstring(L, h->argv[1]);
  lua_createtable(L, h->argc - 2, 0);
  for (i = 2; i < h->argc; i++) {
    lua_pushstring(L, h->argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_call(L, 2, 1);
  h->status = (int)luaL_optinteger(L, -1, 0);
  return 0;
}

static int cmd_tool(int argc, char **argv) {
  host h;
  lua_State *L = luaL_newstate();
  if (!L) {
    (void)fprintf(stderr, "modal: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  memset(&h, 0, sizeof h);
  h.argc = argc;
  h.argv = argv;
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, ptool);
  lua_pushlightuserdata(L, &h);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    (void)fprintf(stderr, "modal %s: %s\n", argv[1], lua_tostring(L, -1));
    h.status = 1;
  }
  if (h.status == 0)
    h.status = flush_stdout(argv[1]);    /* `modal graph FILE > /dev/full` fails */
  else
    (void)fflush(stdout);
  /* What the files set going never runs: every handle is closed (uv.walk, as doc/loop.md's
  ** exit idiom) before the pass that lets closing handles finish, and that pass calls none of
  ** their callbacks (a cancelled connect's would print after the diagram, or exit). */
  if (luaL_loadstring(L, "local uv = package.loaded.luv\n"
                         "if uv then uv.walk(function(h)\n"
                         "  if not h:is_closing() then h:close() end\n"
                         "end) end") != LUA_OK || lua_pcall(L, 0, 0, 0) != LUA_OK)
    lua_pop(L, 1);
  callbacks_off = 1;
  if (luv_loop(L))
    uv_run(luv_loop(L), UV_RUN_NOWAIT);
  lua_close(L);
  return h.status;
}

/* Whether argv[*i] is the option `name` with a value, as `name VALUE` (the next argument,
** taken) or `name=VALUE`; *value is NULL when the value is missing. */
static int take_value(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return 0;
  if (argv[*i][n] == '=') {
    *value = argv[*i] + n + 1;
    return 1;
  }
  if (argv[*i][n] != '\0')
    return 0;
  *value = *i + 1 < argc ? argv[++*i] : NULL;
  return 1;
}

/* `modal run [OPTIONS] SCRIPT [ARGS...]`.
** NOLINTNEXTLINE(readability-function-cognitive-complexity): a flat option parser */
static int cmd_run(int argc, char **argv) {
  host h;
  lua_State *L;
  int i;
  const char *v;
  memset(&h, 0, sizeof h);
  h.log_level = -1;
  for (i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      (void)fputs(modal__host_run_usage, stdout);   /* an error stays in stdout for flush_stdout */
      return flush_stdout("run --help");
    }
    if (take_value(argc, argv, &i, "--log-level", &v)) {
      if (!v)
        return fail_run_usage("%s", "--log-level needs a level (error, warn, info, debug)");
      if ((h.log_level = modal__level_parse(v)) < 0)
        return fail_run_usage("unknown log level '%s' (use error, warn, info or debug)", v);
    } else if (strcmp(argv[i], "--watch") == 0) {
      h.watch = 1;
    } else if (strcmp(argv[i], "--trace") == 0) {
      h.trace = 1;
    } else if (take_value(argc, argv, &i, "--admin", &v)) {
      if (!v || !*v)
        return fail_run_usage("%s", "--admin needs the path of a unix socket");
      h.admin = v;
    } else if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (strncmp(argv[i], "--watch=", 8) == 0 || strncmp(argv[i], "--trace=", 8) == 0) {
      return fail_run_usage("option '%.7s' takes no value", argv[i]);
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return fail_run_usage("unknown option '%s'", argv[i]);
    } else {
      break;
    }
  }
  if (i >= argc)
    return fail_run_usage("%s", "no script given (usage: modal run [options] SCRIPT [ARGS...])");
  h.argc = argc;
  h.argv = argv;
  h.script = i;
  L = luaL_newstate();
  if (!L) {
    (void)fprintf(stderr, "modal: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  lua_pushcfunction(L, pmain);
  lua_pushlightuserdata(L, &h);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    (void)fprintf(stderr, "modal: %s\n", msg ? msg : "(error object is not a string)");
    (void)fflush(stderr);
    lua_pop(L, 1);
    h.status = 1;
  }
  exit_path(L, &h);
  if (luv_loop(L))                       /* let handles that are closing finish (luv frees */
    uv_run(luv_loop(L), UV_RUN_NOWAIT);  /* a closing handle at lua_close too early) */
  lua_close(L);                          /* modal's handles close first, then luv's loop */
  return h.status;
}

static int is_command(const char *name) {
  return strcmp(name, "run") == 0 || strcmp(name, "check") == 0 || strcmp(name, "graph") == 0 ||
         strcmp(name, "test") == 0 || strcmp(name, "ctl") == 0;
}

int main(int argc, char **argv) {
  (void)signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "help") == 0 && argc > 2 && strcmp(argv[2], "help") != 0) {
    char *help[] = { argv[0], argv[2], (char *)"--help", NULL };   /* modal help CMD */
    if (!is_command(argv[2]))
      return fail_usage("no help on '%s': not a command (run, check, graph, test, ctl)", argv[2]);
    return argv[2][0] == 'r' ? cmd_run(3, help) : cmd_tool(3, help);
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return flush_stdout(argv[1]);
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    (void)printf("modal %s (%s, libuv %s)\n", modal_version(), LUA_RELEASE, uv_version_string());
    return flush_stdout(argv[1]);
  }
  if (strcmp(argv[1], "run") == 0)
    return cmd_run(argc, argv);
  if (is_command(argv[1]))
    return cmd_tool(argc, argv);
  if (argv[1][0] == '-')
    return fail_usage("unknown option '%s'", argv[1]);
  return fail_usage("unknown command '%s'", argv[1]);
}
