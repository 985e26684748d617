/*
** module.c — luaopen_modal: borrows luv's loop, checks libuv versions, opens every part of
** the core into the `modal` table, and loads the Lua half's policies on first use. The host
** preloads the same function.
*/

/***
Deferreds, timers and state machines on the libuv loop shared with luv.

`local modal = require "modal"` under the stock `lua5.4`, or preloaded in the host
`modal run`: the same C core either way, one event loop with luv (`modal.run()` and
`require("luv").run()` drive the same `uv_loop_t`).

The API comes from Twisted (Deferred, `task.Clock`, ClientService), Erlang's `gen_statem`
(postponed calls, state timeouts, `code_change` as `migrate`), XState (invoked jobs with
done/error), gRPC (connection backoff, wait-for-ready or fail-fast) and epsilon.modal
(methods per mode). Every time is in seconds (a number, fractions allowed). Misuse (a
wrong argument type, a call from the wrong place) raises a Lua error; an outcome that can
go wrong at run time (a call, a job, a timer) comes back as a failed Deferred instead.

The prose reference is `doc/` in the source tree (`doc/README.md` is its index).

`modal.backoff`, `modal.service` and `modal.testing` are the Lua modules of the same
names (`modal.backoff` ...), loaded on first use.
@module modal
@field _VERSION the version of modal, a string ("0.1.0")
*/

#include <signal.h>
#include <string.h>
#include <luv/luv.h>
#include "core.h"

#ifndef MODAL_VERSION
#define MODAL_VERSION "0.0.0"
#endif

static const char loop_anchor = 'a';    /* registry: luv's loop userdata, held */

const char *modal_version(void) {
  return MODAL_VERSION;
}

/* luv.version() of the luv in this state must be the libuv modal was compiled against. */
static void check_luv(lua_State *L, int luv) {
  lua_Integer theirs;
  lua_getfield(L, luv, "version");
  if (!lua_isfunction(L, -1))
    luaL_error(L, "modal: the loaded 'luv' module has no version() function");
  lua_call(L, 0, 1);
  theirs = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (theirs != (lua_Integer)UV_VERSION_HEX)
    luaL_error(L, "modal: luv uses libuv %d.%d.%d but modal was built against libuv %d.%d.%d; "
                  "rebuild modal against the libuv luv uses",
               (int)((theirs >> 16) & 0xff), (int)((theirs >> 8) & 0xff), (int)(theirs & 0xff),
               UV_VERSION_MAJOR, UV_VERSION_MINOR, UV_VERSION_PATCH);
}

/* The Lua half's policies and testing kit, loaded on first use: modal.backoff, modal.service
** and modal.testing are require("modal.<name>") (lua/modal/), kept in the table once read. */
static const char *const lazy_names[] = {"backoff", "service", "breaker", "pool", "testing", NULL};

static int lazy_index(lua_State *L) {
  const char *key = lua_tostring(L, 2);
  int i;
  if (lua_type(L, 2) != LUA_TSTRING)
    return 0;
  for (i = 0; lazy_names[i] != NULL; i++) {
    if (strcmp(key, lazy_names[i]) == 0) {
      lua_getglobal(L, "require");
      lua_pushfstring(L, "modal.%s", key);
      lua_call(L, 1, 1);
      lua_pushvalue(L, 2);
      lua_pushvalue(L, -2);
      lua_rawset(L, 1);
      return 1;
    }
  }
  return 0;
}

int luaopen_modal(lua_State *L) {
  int luv;
  lua_getglobal(L, "require");           /* luv first: its loop must exist before our sentinel */
  lua_pushliteral(L, "luv");
  lua_call(L, 1, 1);
  luv = lua_gettop(L);
  check_luv(L, luv);
  if (!luv_loop(L))
    return luaL_error(L, "modal: luv has no loop in this state");
  /* luv anchors its loop only in its module table (field _loop): a test runner that unloads
  ** modules would let the loop be collected and closed under modal's feet. Hold it. */
  if (lua_getfield(L, luv, "_loop") == LUA_TUSERDATA)
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_anchor);
  else
    lua_pop(L, 1);
  (void)signal(SIGPIPE, SIG_IGN);        /* a write to a reset peer must not kill the process */
  if (!modal__ctx(L))
    modal__ctx_open(L, luv_loop(L));
  modal__timers_open(L, luv);            /* luv's handles, made before the sentinel is armed */
  modal__ctx_arm(L);                     /* so lua_close closes modal first (doc/loop.md) */
  lua_newtable(L);
  modal__open_loop(L);
  modal__open_log(L);
  modal__open_failure(L);
  modal__open_deferred(L);
  modal__open_combine(L);
  modal__open_async(L);
  modal__open_later(L);
  modal__open_clock(L);
  modal__open_compile(L);
  modal__open_machine(L);
  modal__open_reload(L);
  modal__open_stats(L);
  modal__open_peer(L);
  modal__open_relay(L);
  lua_pushliteral(L, MODAL_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
