/*
** log.c — the log sink: modal.on_log, the default stderr sink (one readable line per event,
** filtered by level), modal__log, through which every line modal writes goes, and modal.log,
** through which scripts and the host write theirs.
*/

/***
@module modal
*/

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core.h"

static const char sink_key = 's';       /* registry: the current sink */

static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};

const char *modal__level_name(int level) {
  return (level >= MODAL_LOG_ERROR && level <= MODAL_LOG_DEBUG) ? level_names[level] : "info";
}

int modal__level_parse(const char *name) {
  int i;
  for (i = 0; level_names[i]; i++)
    if (strcmp(level_names[i], name) == 0)
      return i;
  return -1;
}

/* Pushes " key=value" for a field of `fields` (index 3), or "" when absent; returns 1. */
static int push_field(lua_State *L, const char *key) {
  if (lua_getfield(L, 3, key) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  } else {
    lua_pushfstring(L, " %s=%s", key, luaL_tolstring(L, -1, NULL));
    lua_replace(L, -3);
    lua_pop(L, 1);
  }
  return 1;
}

/* The default sink: "2026-11-29T10:00:00.123Z error connection#3 message state=x input=y". */
static int default_sink(lua_State *L) {
  const char *level = luaL_optstring(L, 1, "info");
  modal_ctx *ctx = modal__ctx(L);
  int lv = modal__level_parse(level);
  char stamp[40];
  struct timespec ts;
  struct tm tm;
  if (ctx && lv > ctx->log_level)
    return 0;
  luaL_optstring(L, 2, "");
  if (!lua_istable(L, 3)) {
    lua_settop(L, 2);
    lua_newtable(L);
  }
  lua_settop(L, 3);
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  (void)strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  (void)snprintf(stamp + 19, sizeof stamp - 19, ".%03dZ", (int)(ts.tv_nsec / 1000000));
  lua_pushfstring(L, "%s %s ", stamp, level);
  if (lua_getfield(L, 3, "machine") != LUA_TNIL) {
    const char *machine = luaL_tolstring(L, -1, NULL);
    if (lua_getfield(L, 3, "id") != LUA_TNIL)
      lua_pushfstring(L, "%s#%s ", machine, luaL_tolstring(L, -1, NULL));
    else
      lua_pushfstring(L, "%s ", machine);
    lua_replace(L, 5);
    lua_settop(L, 5);
  } else {
    lua_pop(L, 1);
    lua_pushliteral(L, "modal ");
  }
  lua_pushvalue(L, 2);
  push_field(L, "state");
  push_field(L, "input");
  lua_pushliteral(L, "\n");
  lua_concat(L, 6);
  (void)fputs(lua_tostring(L, -1), stderr);   /* stderr has no one to tell */
  (void)fflush(stderr);
  return 0;
}

/* Sends the message on top (popped) to the current sink with `fields` (an index, or 0: an
** empty table). A sink that raises never loses the line: it goes to stderr. */
static void emit(lua_State *L, int level, int fields) {
  int msg = lua_gettop(L);
  lua_pushnil(L);                        /* keeps the indices below as they were */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &sink_key);
  if (lua_isnil(L, -1)) {                /* not opened yet */
    lua_pop(L, 1);
    lua_pushcfunction(L, default_sink);
  }
  lua_pushstring(L, modal__level_name(level));
  lua_pushvalue(L, msg);
  if (fields)
    lua_pushvalue(L, fields);
  else
    lua_newtable(L);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) { /* no metamethod of the error value runs here */
    (void)fprintf(stderr, "modal: log sink failed (%s); the line was: %s %s\n",
            lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1),
            modal__level_name(level), lua_tostring(L, msg));
  }
  lua_settop(L, msg - 1);
}

void modal__log(lua_State *L, int level, int fields, const char *fmt, ...) {
  char small[512], *big = NULL;
  va_list ap;
  int n;
  fields = fields ? lua_absindex(L, fields) : 0;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n >= (int)sizeof small && (big = malloc((size_t)n + 1)) != NULL) {
    va_start(ap, fmt);
    (void)vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
  }
  lua_pushstring(L, big ? big : small);  /* without memory: the line cut at sizeof small */
  free(big);
  emit(L, level, fields);
}

/***
Writes one line through the current sink, as modal's own lines go (the default sink drops
lines below the threshold, `modal.log_level`).
@function log
@tparam string level `"error"`, `"warn"`, `"info"` or `"debug"`
@tparam string message
@tparam[opt] table fields `machine`, `id`, `state`, `input`, or your own
@raise on an unknown level or a non-string message
@within Logging
*/
/* modal.log(level, message[, fields]): one line through the current sink, as modal's own
** lines go (the default sink filters by level). */
static int md_log(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int level = modal__level_parse(name);
  if (level < 0)
    return luaL_error(L, "bad argument #1 to 'log' (unknown level '%s': use error, warn, "
                      "info or debug)", name);
  luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  lua_pushvalue(L, 2);
  emit(L, level, lua_isnil(L, 3) ? 0 : 3);
  return 0;
}

int modal__swap_handler(lua_State *L, const void *key, lua_CFunction fallback) {
  if (!lua_isnoneornil(L, 1))
    luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, key);
  if (lua_isnil(L, 1))
    lua_pushcfunction(L, fallback);
  else
    lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  return 1;
}

/***
Sets the sink of every log line modal writes.
@function on_log
@tparam ?function fn `fn(level, message, fields)` (`fields` holds `machine`, `id`,
`state`, `input` where they apply); `nil` restores the default, which writes one line to
stderr: a UTC timestamp, the level, `machine#id`, the message and `key=value` fields
@treturn function the previous sink
@within Logging
*/
/* modal.on_log(fn | nil) -> previous sink */
int modal__on_log(lua_State *L) {
  return modal__swap_handler(L, &sink_key, default_sink);
}

void modal__open_log(lua_State *L) {
  lua_pushcfunction(L, default_sink);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &sink_key);
  lua_pushcfunction(L, modal__on_log);
  lua_setfield(L, -2, "on_log");
  lua_pushcfunction(L, md_log);
  lua_setfield(L, -2, "log");
}
