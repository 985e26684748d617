/*
** fuzz/luacov.c — coverage of modal's Lua half for libFuzzer: a line hook that counts, in the
** extra counters libFuzzer reads after each input, the edges (previous line, line) that Lua
** code from lua/modal/ takes. Only the C core is compiled with coverage instrumentation;
** without this the validator (lua/modal/check.lua) and the admin dispatcher
** (lua/modal/host.lua) would be invisible to the fuzzer.
*/
#include <stdint.h>
#include <string.h>
#include <lua.h>
#include "fuzz.h"

#define NCOUNTERS (1u << 16)
#define NCACHE 256u

/* libFuzzer (Linux) reads every counter of this section as coverage. */
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t counters[NCOUNTERS];

/* Chunk names seen in the current state, by address: their hash, or 0 for chunks not from
** lua/modal/ (the harnesses' own Lua is not counted). Reset for every state: an address may
** name another string in the next one. */
static struct {
  const char *source;
  uint32_t id;
} cache[NCACHE];
static uint32_t prev;

static uint32_t source_id(const char *source) {
  uintptr_t p = (uintptr_t)source;
  unsigned slot = (unsigned)((p >> 4) ^ (p >> 12)) & (NCACHE - 1);
  uint32_t h = 2166136261u;
  const char *c;
  if (cache[slot].source == source)
    return cache[slot].id;
  if (strstr(source, "/lua/modal/") != NULL) {
    for (c = source; *c; c++)
      h = (h ^ (uint8_t)*c) * 16777619u;
    h |= 1u;
  } else {
    h = 0;
  }
  cache[slot].source = source;
  cache[slot].id = h;
  return h;
}

static void on_line(lua_State *L, lua_Debug *ar) {
  uint32_t id, loc;
  uint8_t *c;
  if (!lua_getinfo(L, "S", ar) || (id = source_id(ar->source)) == 0)
    return;
  loc = (id ^ ((uint32_t)ar->currentline * 2654435761u)) & (NCOUNTERS - 1);
  c = &counters[(loc ^ prev) & (NCOUNTERS - 1)];
  if (*c != 255)
    (*c)++;
  prev = loc >> 1;
}

void fuzz_luacov_attach(lua_State *L) {
  memset(cache, 0, sizeof cache);
  prev = 0;
  lua_sethook(L, on_line, LUA_MASKLINE, 0);   /* coroutines inherit it (lua_newthread) */
}
