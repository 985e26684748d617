/*
** fuzz/fuzz.h — what the libFuzzer harnesses' C files share: the runner (runner.c) calls the
** module cache (modcache.c) and the Lua coverage counters (luacov.c) (doc/fuzzing.md).
*/
#ifndef MODAL_FUZZ_H
#define MODAL_FUZZ_H

#include <lua.h>

/* Replaces package.searchers[2] of a fresh state with one that compiles each Lua file once
** per process and loads its bytecode (debug info kept) in every later state. */
void fuzz_modcache_install(lua_State *L);
/* Frees the cached bytecode (at exit). */
void fuzz_modcache_free(void);

/* Counts the line-to-line edges that the Lua code of modal's own files (lua/modal/) takes in
** the state L, in libFuzzer's extra counters, so that coverage guides the fuzzer through the
** Lua half too. Call once per fresh state. */
void fuzz_luacov_attach(lua_State *L);

#endif
