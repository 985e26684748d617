/*
** peer.c — who is at the other end of a unix socket (doc/host.md, the admin socket): the
** peer's credentials (SO_PEERCRED) and this process's own uid, for the host's peer check.
*/
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include "core.h"

/* modal._peercred(fd) -> uid, gid, pid | nil, "ENAME: message" */
static int md_peercred(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", e == EBADF ? "EBADF" : e == ENOTSOCK ? "ENOTSOCK" : "ERROR",
                    strerror(e));
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)cred.uid);
  lua_pushinteger(L, (lua_Integer)cred.gid);
  lua_pushinteger(L, (lua_Integer)cred.pid);
  return 3;
}

/* modal._uid() -> this process's real uid */
static int md_uid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getuid());
  return 1;
}

void modal__open_peer(lua_State *L) {
  lua_pushcfunction(L, md_peercred);
  lua_setfield(L, -2, "_peercred");
  lua_pushcfunction(L, md_uid);
  lua_setfield(L, -2, "_uid");
}
