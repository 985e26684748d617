-- rockspec/modal-scm-1.rockspec — the development rock: the C core as the `modal` module and
-- the Lua half (modal.*). luv comes from Debian's lua-luv (the module links the same file as
-- luv.so), so it is not a rock dependency: `luarocks make` works offline.
rockspec_format = "3.0"
package = "modal"
version = "scm-1"
source = {
  url = "git+file:///dev/null",   -- built from a checkout with `luarocks make`
}
description = {
  summary = "Consistent interfaces to partially-available services: native Deferreds and state machines on libuv",
  detailed = [[
modal embeds Lua 5.4 and libuv: native Deferreds, timers on the loop shared with luv, and
state machines defined as Lua tables, validated, compiled and driven in C.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h" },
  LUV = { header = "lua5.4/luv/luv.h", library = "lua5.4-luv" },
}
build = {
  type = "builtin",
  modules = {
    modal = {
      sources = {
        "src/context.c", "src/log.c", "src/failure.c", "src/timer.c", "src/deferred_links.c",
        "src/deferred_chain.c", "src/deferred_cancel.c", "src/deferred.c", "src/combine.c",
        "src/async.c", "src/later.c", "src/clock.c", "src/loop.c", "src/compile.c", "src/instance.c",
        "src/observe.c", "src/calls.c", "src/drive.c", "src/entry.c", "src/machine.c",
        "src/reload.c", "src/stats.c", "src/peer.c", "src/relay.c", "src/module.c",
      },
      defines = { "_GNU_SOURCE", "MODAL_VERSION=\"0.1.0\"" },
      incdirs = { "$(LIBUV_INCDIR)", "$(LUV_INCDIR)/lua5.4" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(LUV_LIBDIR)" },
      libraries = { "lua5.4-luv", "uv" },
    },
    ["modal.check"] = "lua/modal/check.lua",
    ["modal.graph"] = "lua/modal/graph.lua",
    ["modal.cli"] = "lua/modal/cli.lua",
    ["modal.host"] = "lua/modal/host.lua",
    ["modal.backoff"] = "lua/modal/backoff.lua",
    ["modal.service"] = "lua/modal/service.lua",
    ["modal.breaker"] = "lua/modal/breaker.lua",
    ["modal.pool"] = "lua/modal/pool.lua",
    ["modal.worker"] = "lua/modal/worker.lua",
    ["modal.policy"] = "lua/modal/policy.lua",
    ["modal.testing"] = "lua/modal/testing/init.lua",
    ["modal.testing.clock"] = "lua/modal/testing/clock.lua",
    ["modal.testing.paths"] = "lua/modal/testing/paths.lua",
    ["modal.testing.server"] = "lua/modal/testing/server.lua",
  },
}
test = { type = "busted" }
