/*
** fuzz/modcache.c — a package searcher for the harnesses: every input runs in a fresh Lua
** state, so each Lua file (modal's Lua half, the harness) is compiled once per process and its
** bytecode, debug info kept, is loaded in every later state. Names resolve as the standard
** Lua searcher does (package.searchpath over package.path).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "fuzz.h"

typedef struct entry {
  char *name, *file;       /* module name; chunk name ("@path") */
  char *code;              /* bytecode */
  size_t len;
  struct entry *next;
} entry;

static entry *entries;

typedef struct buffer {
  char *p;
  size_t len, cap;
} buffer;

static int write_chunk(lua_State *L, const void *p, size_t sz, void *ud) {
  buffer *b = (buffer *)ud;
  (void)L;
  if (b->len + sz > b->cap) {
    size_t cap = (b->len + sz) * 2;
    char *more = (char *)realloc(b->p, cap);
    if (!more)
      return 1;
    b->p = more;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, sz);
  b->len += sz;
  return 0;
}

static char *copy(const char *s) {
  size_t n = strlen(s) + 1;
  char *c = (char *)malloc(n);
  if (c)
    memcpy(c, s, n);
  return c;
}

/* Compiles the file of `name` and keeps its bytecode; NULL (a message pushed) when the name
** has no file or it does not compile. */
static entry *compile(lua_State *L, const char *name) {
  buffer b = {NULL, 0, 0};
  entry *e;
  const char *file;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchpath");
  lua_pushstring(L, name);
  lua_getfield(L, -3, "path");
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2)) {
    lua_remove(L, -2);
    lua_remove(L, -2);
    return NULL;                         /* the message: where it looked */
  }
  file = lua_tostring(L, -2);
  if (luaL_loadfile(L, file) != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
                      lua_tostring(L, -1)), NULL;
  if (lua_dump(L, write_chunk, &b, 0) != 0 || !(e = (entry *)calloc(1, sizeof *e))) {
    free(b.p);
    luaL_error(L, "modcache: out of memory");
    return NULL;
  }
  e->name = copy(name);
  e->file = copy(file);
  e->code = b.p;
  e->len = b.len;
  e->next = entries;
  entries = e;
  lua_pop(L, 4);
  return e;
}

/* package.searchers[2]: the loader of `name` and its file, or a message. */
static int search(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  entry *e;
  char chunk[4096];
  for (e = entries; e; e = e->next)
    if (strcmp(e->name, name) == 0)
      break;
  if (!e && !(e = compile(L, name)))
    return 1;
  snprintf(chunk, sizeof chunk, "@%s", e->file);
  if (luaL_loadbufferx(L, e->code, e->len, chunk, "b") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, e->file);
  return 2;
}

void fuzz_modcache_install(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  lua_pushcfunction(L, search);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
}

void fuzz_modcache_free(void) {
  while (entries) {
    entry *e = entries;
    entries = e->next;
    free(e->name);
    free(e->file);
    free(e->code);
    free(e);
  }
}
