/*
** host.c — the `modal` program: embeds Lua 5.4 with luv and modal preloaded, runs a script on
** the shared loop, stops gracefully on SIGINT/SIGTERM (a second signal exits at once).
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

#ifndef MODAL_PREFIX
#define MODAL_PREFIX "/usr/local"
#endif

typedef struct host {
  int argc;
  char **argv;
  int script;              /* index in argv of the script */
  int log_level;           /* -1: default */
  int watch, trace;        /* --watch, --trace */
  const char *admin;       /* --admin PATH */
  int status;              /* the exit status */
  int stopping;            /* a first stop signal was received */
  uv_signal_t *signals[2];
} host;

static host H;

static const char usage_text[] =
  "usage: modal <command> [options]\n"
  "\n"
  "Runs Lua 5.4 programs on modal's event loop (libuv, shared with luv).\n"
  "\n"
  "commands:\n"
  "  run [options] SCRIPT [ARGS...]  run SCRIPT; `arg` and `...` are as under lua5.4,\n"
  "                                  and luv and modal are preloaded; the loop runs after\n"
  "                                  the script's main chunk until no work is left\n"
  "  check FILE...                   validate machine definitions: every error and\n"
  "                                  warning as `file: path: message`; exit 1 on errors\n"
  "  graph FILE [--format dot|mermaid]\n"
  "                                  print the state diagram (Graphviz renders dot)\n"
  "\n"
  "  ctl SOCKET status|reload [NAME]|trace on|off\n"
  "                                  talk to a host started with --admin SOCKET\n"
  "\n"
  "run options:\n"
  "  --watch                         reload a definition loaded with modal.load when its\n"
  "                                  file changes (folders are watched; saves are debounced)\n"
  "  --admin PATH                    serve status/reload/trace on a unix socket (mode 0600)\n"
  "  --trace                         log every transition, its input and the time spent\n"
  "                                  in the old state\n"
  "  --log-level LEVEL               error, warn, info (default) or debug\n"
  "\n"
  "options:\n"
  "  -h, --help                      show this help and exit\n"
  "  -V, --version                   print the version and exit\n"
  "\n"
  "SIGINT or SIGTERM runs the modal.on_stop handlers and lets the loop drain;\n"
  "a second signal exits at once. SIGHUP reloads every loaded definition. See modal(1).\n";

static void usage(FILE *to) {
  fputs(usage_text, to);
}

static int fail_usage(const char *fmt, const char *what) {
  fprintf(stderr, "modal: ");
  fprintf(stderr, fmt, what);
  fprintf(stderr, "\nTry 'modal --help'.\n");
  return 2;
}

/* A readable error with a traceback, as lua.c's msghandler. */
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

static int docall(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs, status;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  return status;
}

static const char *signal_name(int signum) {
  return signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : "signal";
}

static int stop_protected(lua_State *L) {
  int signum = (int)lua_tointeger(L, 1);
  modal__log(L, MODAL_LOG_INFO, 0, "%s received: stopping (send it again to exit at once)",
             signal_name(signum));
  modal__run_stop_handlers(L);
  return 0;
}

static void on_signal(uv_signal_t *h, int signum) {
  lua_State *L = (lua_State *)h->data;
  if (!L)
    return;
  if (H.stopping) {
    fprintf(stderr, "modal: second %s: exiting now\n", signal_name(signum));
    fflush(stderr);
    _exit(128 + signum);
  }
  H.stopping = 1;
  lua_pushcfunction(L, stop_protected);  /* no Lua error may unwind through libuv */
  lua_pushinteger(L, signum);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "modal: error while stopping: %s\n",
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
  }
}

static void free_signal(uv_handle_t *h) {
  free(h);
}

static void open_signals(lua_State *L) {
  static const int which[2] = {SIGINT, SIGTERM};
  int i;
  for (i = 0; i < 2; i++) {
    uv_signal_t *s = (uv_signal_t *)malloc(sizeof *s);
    if (!s)
      continue;
    uv_signal_init(luv_loop(L), s);
    s->data = L;
    uv_signal_start(s, on_signal, which[i]);
    uv_unref((uv_handle_t *)s);          /* a signal watcher never keeps the host alive */
    H.signals[i] = s;
  }
}

static void close_signals(void) {
  int i;
  for (i = 0; i < 2; i++) {
    if (H.signals[i]) {
      H.signals[i]->data = NULL;
      uv_close((uv_handle_t *)H.signals[i], free_signal);
      H.signals[i] = NULL;
    }
  }
}

/* package.path: the Lua half next to the binary (build tree), then the install prefix. */
static void set_paths(lua_State *L) {
  char exe[PATH_MAX], *slash;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  lua_getglobal(L, "package");
  if (n > 0) {
    exe[n] = '\0';
    if ((slash = strrchr(exe, '/')) != NULL)
      *slash = '\0';
    lua_pushfstring(L, "%s/../lua/?.lua;%s/../lua/?/init.lua;", exe, exe);
  } else {
    lua_pushliteral(L, "");
  }
  lua_pushliteral(L, MODAL_PREFIX "/share/lua/5.4/?.lua;");
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
static void set_arg(lua_State *L) {
  int i;
  lua_createtable(L, H.argc - H.script - 1, H.script + 1);
  for (i = 0; i < H.argc; i++) {
    lua_pushstring(L, H.argv[i]);
    lua_rawseti(L, -2, i - H.script);
  }
  lua_setglobal(L, "arg");
}

static int pmain(lua_State *L) {
  int i, nargs = H.argc - H.script - 1;
  luaL_openlibs(L);
  preload(L);
  set_paths(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal");
  lua_call(L, 1, 1);
  if (H.log_level >= 0)
    modal__ctx(L)->log_level = H.log_level;
  set_arg(L);
  open_signals(L);
  lua_getglobal(L, "require");           /* the live host: SIGHUP, --watch, --admin, --trace */
  lua_pushliteral(L, "modal.host");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "start");
  lua_createtable(L, 0, 3);
  lua_pushboolean(L, H.watch);
  lua_setfield(L, -2, "watch");
  lua_pushboolean(L, H.trace);
  lua_setfield(L, -2, "trace");
  if (H.admin) {
    lua_pushstring(L, H.admin);
    lua_setfield(L, -2, "admin");
  }
  lua_call(L, 1, 0);
  lua_pop(L, 1);
  if (luaL_loadfile(L, H.argv[H.script]) != LUA_OK)
    return lua_error(L);
  luaL_checkstack(L, nargs + 4, "too many arguments to the script");
  for (i = H.script + 1; i < H.argc; i++)
    lua_pushstring(L, H.argv[i]);
  if (docall(L, nargs, 0) != LUA_OK)
    return lua_error(L);
  lua_getfield(L, -1, "run");            /* the modal table is still on the stack */
  if (docall(L, 0, 0) != LUA_OK)
    return lua_error(L);
  return 0;
}

/* Closes the live host's handles (watchers, admin socket, SIGHUP) before the state closes. */
static int pstop(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "modal.host") == LUA_TTABLE && lua_getfield(L, -1, "stop") == LUA_TFUNCTION)
    lua_call(L, 0, 0);
  return 0;
}

/* The tools written in Lua (lua/modal/cli.lua): `modal check` and `modal graph`. */
static int ptool(lua_State *L) {
  int i;
  luaL_openlibs(L);
  preload(L);
  set_paths(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "modal.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_pushstring(L, H.argv[1]);
  lua_createtable(L, H.argc - 2, 0);
  for (i = 2; i < H.argc; i++) {
    lua_pushstring(L, H.argv[i]);
    lua_rawseti(L, -2, i - 1);
  }
  lua_call(L, 2, 1);
  H.status = (int)luaL_optinteger(L, -1, 0);
  return 0;
}

static int cmd_tool(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "modal: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  H.argc = argc;
  H.argv = argv;
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, ptool);
  if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
    fprintf(stderr, "modal %s: %s\n", argv[1], lua_tostring(L, -1));
    H.status = 1;
  }
  fflush(stdout);
  if (luv_loop(L))
    uv_run(luv_loop(L), UV_RUN_NOWAIT);
  lua_close(L);
  return H.status;
}

static int cmd_run(int argc, char **argv) {
  lua_State *L;
  int i, status;
  H.log_level = -1;
  for (i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(argv[i], "--log-level") == 0) {
      if (i + 1 >= argc)
        return fail_usage("%s needs a level (error, warn, info, debug)", argv[i]);
      if ((H.log_level = modal__level_parse(argv[++i])) < 0)
        return fail_usage("unknown log level '%s' (use error, warn, info or debug)", argv[i]);
    } else if (strcmp(argv[i], "--watch") == 0) {
      H.watch = 1;
    } else if (strcmp(argv[i], "--trace") == 0) {
      H.trace = 1;
    } else if (strcmp(argv[i], "--admin") == 0) {
      if (i + 1 >= argc)
        return fail_usage("%s needs the path of a unix socket", argv[i]);
      H.admin = argv[++i];
    } else if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return fail_usage("unknown option '%s' for 'run'", argv[i]);
    } else {
      break;
    }
  }
  if (i >= argc)
    return fail_usage("%s", "run: no script given (usage: modal run SCRIPT [ARGS...])");
  H.argc = argc;
  H.argv = argv;
  H.script = i;
  L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "modal: cannot create a Lua state (out of memory)\n");
    return 1;
  }
  lua_pushcfunction(L, pmain);
  status = lua_pcall(L, 0, 0, 0);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "modal: %s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
    H.status = 1;
  }
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, pstop);
  if (lua_pcall(L, 0, 0, -2) != LUA_OK) {
    fprintf(stderr, "modal: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  close_signals();
  if (luv_loop(L))                       /* let handles that are closing finish (DESIGN 10) */
    uv_run(luv_loop(L), UV_RUN_NOWAIT);
  lua_close(L);                          /* modal's handles close first, then luv's loop */
  return H.status;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    printf("modal %s (%s, libuv %s)\n", modal_version(), LUA_RELEASE, uv_version_string());
    return 0;
  }
  if (strcmp(argv[1], "run") == 0)
    return cmd_run(argc, argv);
  if (strcmp(argv[1], "check") == 0 || strcmp(argv[1], "graph") == 0 ||
      strcmp(argv[1], "ctl") == 0)
    return cmd_tool(argc, argv);
  if (argv[1][0] == '-')
    return fail_usage("unknown option '%s'", argv[1]);
  return fail_usage("unknown command '%s'", argv[1]);
}
