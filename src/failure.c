/*
** failure.c — failure objects (kind, message, value, traceback), the message handler that
** turns any Lua error into one, and the reporter of unhandled failures.
*/

/***
@module modal
*/

#include <string.h>
#include "core.h"

static const char failure_key = 'f';    /* registry: the failures' metatable */
static const char unhandled_key = 'u';  /* registry: the unhandled-failure reporter */

static int tostring_protected(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

const char *modal__tostring(lua_State *L, int value) {
  value = lua_absindex(L, value);
  if (lua_type(L, value) == LUA_TSTRING) {
    lua_pushvalue(L, value);
  } else {
    lua_pushcfunction(L, tostring_protected);
    lua_pushvalue(L, value);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value whose __tostring failed)",
                      luaL_typename(L, value));
    }
  }
  return lua_tostring(L, -1);
}

static void push_message(lua_State *L, int value) {
  modal__tostring(L, value);
}

void modal__failure_new(lua_State *L, const char *kind, const char *message, int value,
                        int traceback) {
  value = value ? lua_absindex(L, value) : 0;
  traceback = traceback ? lua_absindex(L, traceback) : 0;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  if (message)
    lua_pushstring(L, message);
  else if (value)
    push_message(L, value);
  else
    lua_pushstring(L, kind);
  lua_setfield(L, -2, "message");
  if (value) {
    lua_pushvalue(L, value);
    lua_setfield(L, -2, "value");
  }
  if (traceback) {
    lua_pushvalue(L, traceback);
    lua_setfield(L, -2, "traceback");
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &failure_key);
  lua_setmetatable(L, -2);
}

int modal__is_failure(lua_State *L, int idx) {
  int r;
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &failure_key);
  r = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return r;
}

int modal__failure_is_kind(lua_State *L, int idx, const char *kind) {
  int r;
  if (!modal__is_failure(L, idx))
    return 0;
  lua_getfield(L, idx, "kind");
  r = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return r;
}

void modal__to_failure(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (modal__is_failure(L, idx))
    return;
  modal__failure_new(L, "error", NULL, idx, 0);
  lua_replace(L, idx);
}

int modal__msgh(lua_State *L) {
  if (modal__is_failure(L, 1))
    return 1;                            /* raised as a failure: kept as it is */
  luaL_traceback(L, L, NULL, 1);         /* "stack traceback:\n..." from where it was raised */
  modal__failure_new(L, "error", NULL, 1, -1);
  return 1;
}

int modal__call(lua_State *L, int nargs, int nres) {
  int base = lua_gettop(L) - nargs;      /* the function's index */
  int status;
  lua_pushcfunction(L, modal__msgh);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  if (status != LUA_OK)
    modal__to_failure(L, -1);            /* a memory error skips the handler */
  return status;
}

int modal__pcall(lua_State *L, int nargs, int nres) {
  int status = modal__call(L, nargs, nres);
  if (status != LUA_OK) {
    modal__report_unhandled(L, -1);
    lua_pop(L, 1);
  }
  return status;
}

/* The default reporter: one log line at level error with the failure and its traceback. */
static int default_reporter(lua_State *L) {
  const char *text = luaL_tolstring(L, 1, NULL);
  const char *tb = NULL;
  if (modal__is_failure(L, 1)) {
    lua_getfield(L, 1, "traceback");
    tb = lua_tostring(L, -1);
  }
  if (tb)
    modal__log(L, MODAL_LOG_ERROR, 0, "unhandled failure: %s\n%s", text, tb);
  else
    modal__log(L, MODAL_LOG_ERROR, 0, "unhandled failure: %s", text);
  return 0;
}

void modal__report_unhandled(lua_State *L, int idx) {
  int status;
  idx = lua_absindex(L, idx);
  lua_pushcfunction(L, modal__msgh);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &unhandled_key);
  lua_pushvalue(L, idx);
  status = lua_pcall(L, 1, 0, -3);
  if (status != LUA_OK) {               /* the reporter itself failed: say so, do not loop */
    int f;
    modal__to_failure(L, -1);
    f = lua_gettop(L);
    lua_getfield(L, f, "traceback");
    modal__tostring(L, f);               /* "kind: message" of the reporter's own failure */
    modal__tostring(L, idx);             /* and the failure it was given */
    modal__log(L, MODAL_LOG_ERROR, 0, "on_unhandled reporter failed: %s (while reporting: "
               "%s)%s%s", lua_tostring(L, -2), lua_tostring(L, -1),
               lua_isstring(L, f + 1) ? "\n" : "", lua_isstring(L, f + 1) ? lua_tostring(L, f + 1) : "");
    lua_settop(L, f - 1);
  }
  lua_pop(L, 1);
}

/***
Sets the reporter of unhandled failures: a Deferred collected while its current result is
a failure (no errback took it, or the last one raised again) is reported once, from the
garbage collector or on the next loop turn (Twisted's "Unhandled error in Deferred").
@function on_unhandled
@tparam ?function fn `fn(failure)`; `nil` restores the default, a log line at level error
through `modal.on_log` with the failure and its traceback
@treturn function the previous reporter
@within Failures
*/
/* modal.on_unhandled(fn | nil) -> previous reporter */
static int md_on_unhandled(lua_State *L) {
  return modal__swap_handler(L, &unhandled_key, default_reporter);
}

/***
Makes a failure: what a failed Deferred holds (Twisted's `Failure`). Kinds modal itself
makes: `error` (a Lua error), `cancelled`, `timeout`, `overloaded`, `stopped`,
`unavailable`, `walk`; your code picks its own.
@function failure
@tparam string kind what went wrong, for `f:is(kind)` and `classify`
@tparam[opt] string message for people
@param[opt] value anything to carry along (the original error value, a status table)
@treturn Failure a new failure
@usage return modal.fail(modal.failure("auth", "password refused"))
@within Failures
*/
/* modal.failure(kind, message[, value]) */
static int md_failure(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *message = luaL_optstring(L, 2, NULL);
  lua_settop(L, 3);
  modal__failure_new(L, kind, message, lua_isnil(L, 3) ? 0 : 3, 0);
  return 1;
}

/***
Tells a failure from any other value (a look-alike table is not one).
@function is_failure
@param x any value
@treturn boolean
@within Failures
*/
static int md_is_failure(lua_State *L) {
  lua_pushboolean(L, modal__is_failure(L, 1));
  return 1;
}

/***
A failure: a table with the fields below and a metatable; `tostring(f)` is
`"kind: message"`.
@type Failure
@field kind a string: what went wrong (`"timeout"`, `"error"`, your own)
@field message a string; for a non-string error value, `tostring(value)`
@field value the original error value, or nil
@field traceback where a Lua error was raised, or nil
*/
/***
Compares the kind.
@function Failure:is
@tparam string kind
@treturn boolean `f.kind == kind`
*/
/* f:is(kind) */
static int md_failure_is(lua_State *L) {
  const char *kind = luaL_checkstring(L, 2);
  lua_pushboolean(L, modal__failure_is_kind(L, 1, kind));
  return 1;
}

/* tostring(f) -> "kind: message" */
static int md_failure_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "%s: %s", luaL_optstring(L, 2, "?"), luaL_optstring(L, 3, ""));
  return 1;
}

void modal_new_failure(lua_State *L, const char *kind, const char *message) {
  modal__failure_new(L, kind, message, 0, 0);
}

int modal_is_failure(lua_State *L, int idx) {
  return modal__is_failure(L, idx);
}

void modal__open_failure(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"is", md_failure_is},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"failure", md_failure},
    {"is_failure", md_is_failure},
    {"on_unhandled", md_on_unhandled},
    {NULL, NULL}
  };
  lua_createtable(L, 0, 3);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, md_failure_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "modal.failure");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &failure_key);
  lua_pushcfunction(L, default_reporter);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &unhandled_key);
  luaL_setfuncs(L, funcs, 0);          /* into the module table on top */
}
