/*
** fuzz/runner.c — the libFuzzer entry shared by every harness: for each input a fresh Lua
** state with the standard libraries, luv and modal, the harness's Lua module (FUZZ_HARNESS,
** fuzz/<name>.lua) required and its function called with the input as a string. An error it
** raises — a model mismatch, a broken promise of the contract — is a finding: the runner
** prints it and aborts, so libFuzzer keeps the input (doc/fuzzing.md).
**
** A fresh state per input keeps runs independent and reproducible (one input replays the
** same way alone), and makes LeakSanitizer see everything modal allocated for it: each state
** ends as the host's does (every handle closed, the loop turned once, lua_close).
*/
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <luv/luv.h>
#include "../src/modal.h"
#include "fuzz.h"

#ifndef FUZZ_HARNESS
#error "FUZZ_HARNESS (the harness's module name) must be defined"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[PATH_MAX];              /* the checkout: the binary is in build-fuzz/ */

static void die(const char *what, const char *message) {
  fprintf(stderr, "\n==== modal fuzz (%s): %s\n%s\n", FUZZ_HARNESS, what,
          message ? message : "(no message)");
  fflush(stderr);
  abort();
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg)
    msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* luv calls every Lua callback through this: an error in one is a finding too (luv's own
** rule would exit, which libFuzzer reports with less to go on). */
static int luv_callback(lua_State *L, int nargs, int nresults, int flags) {
  int base = lua_gettop(L) - nargs - 1;
  (void)flags;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base + 1);
  if (lua_pcall(L, nargs, nresults, base + 1) != LUA_OK)
    die("an error in a luv callback", lua_tostring(L, -1));
  lua_remove(L, base + 1);
  return nresults == LUA_MULTRET ? lua_gettop(L) - base : nresults;
}

/* Standard libraries, luv and modal preloaded, paths into the checkout, the module cache. */
static int setup(lua_State *L) {
  luaL_openlibs(L);
  luv_set_callback(L, luv_callback);     /* before luv opens: it keeps the first one set */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_luv);
  lua_setfield(L, -2, "luv");
  lua_pushcfunction(L, luaopen_modal);
  lua_setfield(L, -2, "modal");
  lua_pop(L, 1);
  lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/fuzz/?.lua", root, root, root);
  lua_setfield(L, -2, "path");            /* cpath stays: lua-cjson is a C module */
  lua_pop(L, 1);
  fuzz_modcache_install(L);
  lua_pushstring(L, root);
  lua_setglobal(L, "FUZZ_ROOT");
  lua_getglobal(L, "require");
  lua_pushliteral(L, FUZZ_HARNESS);
  lua_call(L, 1, 1);
  return 1;
}

/* uv.walk's callback: closes what is still open (the host's exit idiom). */
static int close_walked(lua_State *L) {
  lua_settop(L, 1);
  lua_getfield(L, 1, "is_closing");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  if (!lua_toboolean(L, -1)) {
    lua_getfield(L, 1, "close");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
  }
  return 0;
}

static int close_handles(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "luv");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "walk");
  lua_pushcfunction(L, close_walked);
  lua_call(L, 1, 0);
  return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char exe[PATH_MAX], *slash;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  (void)argc;
  (void)argv;
  if (n <= 0)
    die("setup", "cannot read /proc/self/exe");
  exe[n] = '\0';
  if ((slash = strrchr(exe, '/')) != NULL)
    *slash = '\0';
  if (snprintf(root, sizeof root, "%s/..", exe) >= (int)sizeof root)
    die("setup", "the path of the binary is too long");
  atexit(fuzz_modcache_free);
  signal(SIGPIPE, SIG_IGN);              /* as the host does: a peer gone is an error return */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  if (!L)
    die("setup", "cannot create a Lua state");
  fuzz_luacov_attach(L);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, setup);
  if (lua_pcall(L, 0, 1, 1) != LUA_OK)
    die("setup", lua_tostring(L, -1));
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK)
    die("finding", lua_tostring(L, -1));
  lua_settop(L, 0);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, close_handles);
  if (lua_pcall(L, 0, 0, 1) != LUA_OK)
    die("closing handles", lua_tostring(L, -1));
  lua_settop(L, 0);
  if (luv_loop(L))                       /* handles still closing finish here (luv frees */
    uv_run(luv_loop(L), UV_RUN_NOWAIT);  /* one closing at lua_close too early) */
  lua_close(L);
  return 0;
}
