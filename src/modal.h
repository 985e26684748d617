/*
** modal.h — modal's public C API: Deferreds and failures that C code can make and fire.
**
** Every function takes the lua_State of a state where `require "modal"` (or the host) has
** loaded modal. Stack indices may be relative or absolute. Functions that fire a Deferred run
** its callbacks before they return; an error raised by a callback never escapes (it becomes
** the Deferred's failure, as for a callback fired from Lua).
*/
#ifndef MODAL_H
#define MODAL_H

#include <lua.h>

#if defined(__GNUC__)
#define MODAL_API __attribute__((visibility("default"))) extern
#else
#define MODAL_API extern
#endif

/* The version of modal, as a string ("0.1.0"). */
MODAL_API const char *modal_version(void);

/* Opens the module: pushes the `modal` table (as `require "modal"` does). */
MODAL_API int luaopen_modal(lua_State *L);

/* Pushes a new pending Deferred. */
MODAL_API void modal_new_deferred(lua_State *L);

/* Returns 1 when the value at `idx` is a Deferred. */
MODAL_API int modal_is_deferred(lua_State *L, int idx);

/* Fires the Deferred at `idx` with the value on top of the stack (popped). Returns 0, or -1
** (and pops the value) when the Deferred had already fired. */
MODAL_API int modal_callback(lua_State *L, int idx);

/* Fails the Deferred at `idx` with the value on top of the stack (popped); a value that is not
** a failure is wrapped in one of kind "error". Returns 0, or -1 when already fired. */
MODAL_API int modal_errback(lua_State *L, int idx);

/* Pushes a new failure of `kind` with `message` (no value, no traceback). */
MODAL_API void modal_new_failure(lua_State *L, const char *kind, const char *message);

/* Returns 1 when the value at `idx` is a failure. */
MODAL_API int modal_is_failure(lua_State *L, int idx);

#endif
