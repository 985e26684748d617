# Makefile — build, test, lint, asan, valgrind, coverage, bench, demo, doc, deps, install, clean.
#
#   make            build/modal (the host) and build/modal.so (the module)
#   make deps       install the Debian packages modal needs (idempotent; sudo when not root)
#   make test       luacheck + the busted specs; ends with "N passed, N failed"
#   make lint       luacheck, clang-tidy (.clang-tidy) and cppcheck; fails on any finding
#   make asan       the same specs against an ASan + UBSan build (build-asan/)
#   make valgrind   the specs under valgrind memcheck, failing on a leak from modal
#   make fuzz-driver  the driver's re-entry fuzzer (specs/fuzz/driver_fuzz.lua) on the ASan
#                   build: FUZZ_SEED (1), FUZZ_ITERATIONS (2000); FUZZ_START, FUZZ_VERBOSE,
#                   FUZZ_KEEP_GOING and FUZZ_GC=manual pass through (see the file)
#   make coverage   the specs against a gcov build (build-cov/, host included), then line and
#                   branch coverage of src/ per file (gcovr); fails below COVERAGE_MIN % of lines
#   make bench      the benchmark workloads (bench/README.md), each beside its judged floor;
#                   BENCH_STRICT=1 makes a missed target fail
#   make demo       the main job: a service through outages, a reload and a refused password
#   make example-redis  a breaker over a Redis facade while a real redis-server dies and returns
#   make example-pool   worker processes hashing files, one of them crashing
#   make fuzz       the libFuzzer harnesses (fuzz/, doc/fuzzing.md), FUZZ_SECONDS each
#   make doc        the HTML API reference (LDoc, config.ld) in build/doc/
#   make install    PREFIX=/usr/local: host, module, Lua files, man pages modal(1) and modal(7)

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
VERSION  := 0.1.0

LUA_VERSION := 5.4
LUA      := lua$(LUA_VERSION)
PKGS     := lua5.4 libuv lua5.4-luv

DEB_PACKAGES := lua5.4 liblua5.4-dev libuv1-dev lua-luv lua-luv-dev lua-busted lua-check \
                luarocks lua-cjson pkg-config graphviz redis-server gcc make \
                lua-ldoc lua-markdown groff-base mandoc gcovr clang-tidy cppcheck \
                clang libclang-rt-14-dev

WARN     := -Wall -Wextra -Werror -Wshadow -Wundef -Wwrite-strings -Wstrict-prototypes \
            -Wmissing-prototypes -Wpointer-arith -Wcast-align -Wvla
OPT      ?= -O2 -g -fno-plt
SAN      ?=
CPPFLAGS := -D_GNU_SOURCE -DMODAL_VERSION='"$(VERSION)"' -DMODAL_PREFIX='"$(PREFIX)"'
CFLAGS    = -std=c99 -fPIC -fvisibility=hidden $(OPT) $(WARN) $(SAN) \
            $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(PKGS) 2>/dev/null))
UV_LIBS   = $(shell pkg-config --libs libuv 2>/dev/null)

CORE_SRC := src/context.c src/log.c src/failure.c src/timer.c src/deferred_links.c \
            src/deferred_chain.c src/deferred_cancel.c src/deferred.c src/combine.c src/async.c \
            src/later.c src/clock.c src/loop.c src/compile.c src/instance.c src/observe.c \
            src/calls.c src/drive.c src/entry.c src/machine.c src/reload.c src/stats.c src/peer.c \
            src/relay.c src/module.c
HOST_SRC := src/host.c src/host_usage.c
CORE_OBJ := $(CORE_SRC:src/%.c=$(BUILD)/%.o)
HOST_OBJ := $(HOST_SRC:src/%.c=$(BUILD)/%.o)

# Specs and tools find the module, the Lua half and the host through these.
spec_env = LUA_PATH='./lua/?.lua;./lua/?/init.lua;./specs/?.lua;./bench/?.lua;;' \
            LUA_CPATH='./$(1)/?.so;;' MODAL_BUILD='$(1)'
SPEC_ENV := $(call spec_env,$(BUILD))

.PHONY: all deps test check-deps asan asan-build valgrind coverage bench demo example-redis \
        example-pool doc install uninstall clean lint lint-lua lint-c fuzz-driver fuzz fuzz-build \
        fuzz-repro check-fuzz-deps

all: check-deps $(BUILD)/modal $(BUILD)/modal.so

# Installs whatever is missing, once; apt-get update only before the first install.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all Debian packages present"; fi

# One dpkg call: non-zero when any package is missing, and then make deps installs them all.
check-deps:
	@dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1 || $(MAKE) --no-print-directory deps

$(BUILD)/%.o: src/%.c src/modal.h src/core.h src/machine.h src/deferred.h src/host.h | $(BUILD)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $(BUILD)

# The module does not link liblua5.4: lua5.4 has Lua built in, and a second copy breaks it.
$(BUILD)/modal.so: $(CORE_OBJ)
	$(CC) $(SAN) -shared -o $@ $(CORE_OBJ) -llua5.4-luv $(UV_LIBS) -lm

# The host finds its Lua half under the prefix compiled into it: host.o is rebuilt whenever
# PREFIX changes (`make demo` then `make install PREFIX=/opt/modal` installs a working host).
$(BUILD)/prefix: FORCE | $(BUILD)
	@echo '$(PREFIX)' | cmp -s - $@ || echo '$(PREFIX)' > $@

$(BUILD)/host.o: $(BUILD)/prefix

FORCE:

$(BUILD)/modal: $(HOST_OBJ) $(CORE_OBJ)
	$(CC) $(SAN) -Wl,-E -o $@ $(HOST_OBJ) $(CORE_OBJ) -llua5.4 -llua5.4-luv $(UV_LIBS) -lm -ldl

# make test runs only lint-lua (seconds); make lint adds the C analysers (about a minute).
lint: lint-lua lint-c

lint-lua: check-deps
	luacheck -q $(wildcard lua) specs examples bench fuzz

# clang-tidy gets the build's own flags after `--` (no compile_commands.json), one file per
# process, as many at once as there are CPUs; each file's report is printed whole, without
# clang's "N warnings generated." (system headers). cppcheck checks the same files in one run.
LINT_C   := $(CORE_SRC) $(HOST_SRC) specs/fixtures/capi/capi_test.c
NPROC    := $(shell nproc 2>/dev/null || echo 2)
TIDY_ONE := out=$$(clang-tidy --quiet "$$@" 2>&1); st=$$?; \
            printf "%s\n" "$$out" | grep -v -e " generated\.$$" -e "^$$"; exit $$st

lint-c: check-deps
	@command -v clang-tidy >/dev/null && command -v cppcheck >/dev/null \
	  || $(MAKE) --no-print-directory deps
	@printf '%s\n' $(LINT_C) | xargs -P$(NPROC) -I{} \
	  sh -c '$(TIDY_ONE)' clang-tidy {} -- $(CPPFLAGS) $(CFLAGS) -Isrc
	@cppcheck -q --std=c99 --enable=warning,style,performance,portability --error-exitcode=1 \
	  --inline-suppr --suppress=missingIncludeSystem -I src $(CPPFLAGS) $(LINT_C)

# A C module that uses only src/modal.h, for specs/capi_spec.lua.
$(BUILD)/capi_test.so: specs/fixtures/capi/capi_test.c src/modal.h $(BUILD)/modal.so
	$(CC) $(CPPFLAGS) $(CFLAGS) -Isrc -shared -o $@ $< -L$(BUILD) -l:modal.so \
	  -Wl,-rpath,$(abspath $(BUILD)) $(SAN)

test: all lint-lua $(BUILD)/capi_test.so
	@$(SPEC_ENV) sh specs/run.sh

asan: asan-build
	@$(MAKE) --no-print-directory BUILD=build-asan lint-lua
	@$(call spec_env,build-asan) MODAL_SANITIZE=1 sh specs/run.sh

asan-build:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT='-O1 -g' \
	  SAN='-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer' \
	  all build-asan/capi_test.so

FUZZ_SEED ?= 1
FUZZ_ITERATIONS ?= 2000

# Seeded; prints iterations, operations and every finding; non-zero on a violated invariant
# or a sanitizer report.
fuzz-driver: asan-build
	@$(call spec_env,build-asan) FUZZ_SEED='$(FUZZ_SEED)' FUZZ_ITERATIONS='$(FUZZ_ITERATIONS)' \
	  sh specs/fuzz/run.sh specs/fuzz/driver_fuzz.lua

valgrind: all $(BUILD)/capi_test.so
	@$(SPEC_ENV) MODAL_VALGRIND=1 sh specs/run.sh

# The host is built with coverage too and the specs that run it use this build's (MODAL_BUILD),
# so src/host.c counts. Counters start from zero each run; a failing spec fails the target after
# the report.
COV_BUILD    := build-cov
COVERAGE_MIN ?= 90
GCOVR         = gcovr --root . --filter src/ $(1) --add-tracefile $(COV_BUILD)/coverage.json

coverage: check-deps
	@command -v gcovr >/dev/null || $(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory BUILD=$(COV_BUILD) OPT='-O0 -g' SAN=--coverage \
	  all $(COV_BUILD)/capi_test.so
	@find $(COV_BUILD) -name '*.gcda' -delete
	@$(call spec_env,$(COV_BUILD)) sh specs/run.sh; specs=$$?; \
	gcovr --root . --filter src/ --json $(COV_BUILD)/coverage.json $(COV_BUILD) && \
	echo && $(call GCOVR,--branches --sort-percentage) && \
	echo && $(call GCOVR,--sort-percentage --print-summary --fail-under-line $(COVERAGE_MIN)) \
	  || { echo "make coverage: line coverage of src/ is below $(COVERAGE_MIN)%"; exit 1; }; \
	exit $$specs

bench: all
	@$(SPEC_ENV) $(LUA) bench/run.lua

# About ten seconds; writes build/demo/echo.dot (and echo.png with Graphviz); exits 0 by itself.
demo: all
	@$(SPEC_ENV) ./$(BUILD)/modal run examples/demo/main.lua $(BUILD)/demo

# examples/redis/README.md, examples/pool/README.md; each exits by itself.
example-redis: all
	@$(SPEC_ENV) ./$(BUILD)/modal run examples/redis/main.lua

example-pool: all
	@$(SPEC_ENV) ./$(BUILD)/modal run examples/pool/main.lua

# The HTML API reference, from the doc comments of lua/modal/ and of the C functions bound to
# Lua (config.ld lists the files). LDoc runs on Lua 5.1 (Debian's lua-ldoc); a warning fails.
# ldoc's own #! picks the first Lua of its list; run it on lua5.1, where lua-markdown is.
doc:
	@command -v ldoc >/dev/null && lua5.1 -e 'require "markdown"' 2>/dev/null \
	  || $(MAKE) --no-print-directory deps
	@rm -rf $(BUILD)/doc && mkdir -p $(BUILD)/doc
	@lua5.1 "$$(command -v ldoc)" -q -d $(BUILD)/doc . >$(BUILD)/doc.log 2>&1; rc=$$?; \
	  grep -v -e '^reading configuration from config.ld$$' -e '^found master module' \
	    -e 'closing section from master module' $(BUILD)/doc.log >$(BUILD)/doc.warnings; \
	  cat $(BUILD)/doc.warnings; \
	  if [ $$rc -ne 0 ] || [ -s $(BUILD)/doc.warnings ] || [ ! -s $(BUILD)/doc/index.html ]; then \
	    echo "make doc: failed (see above)"; exit 1; fi
	@echo "make doc: $(BUILD)/doc/index.html"

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION) \
	  $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/modal/testing $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/man/man7
	install -m 755 $(BUILD)/modal $(DESTDIR)$(PREFIX)/bin/modal
	install -m 644 $(BUILD)/modal.so $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION)/modal.so
	cd lua && find modal -name '*.lua' | while read -r f; do \
	  install -D -m 644 "$$f" "$(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/$$f"; done
	install -m 644 man/modal.1 $(DESTDIR)$(PREFIX)/share/man/man1/modal.1
	install -m 644 man/modal.7 $(DESTDIR)$(PREFIX)/share/man/man7/modal.7

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/modal $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VERSION)/modal.so \
	  $(DESTDIR)$(PREFIX)/share/man/man1/modal.1 $(DESTDIR)$(PREFIX)/share/man/man7/modal.7
	rm -rf $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VERSION)/modal
	@for d in share/lua/$(LUA_VERSION) share/lua lib/lua/$(LUA_VERSION) lib/lua lib \
	  share/man/man1 share/man/man7 share/man share bin; do \
	  rmdir "$(DESTDIR)$(PREFIX)/$$d" 2>/dev/null || true; done   # only folders left empty

# {======== fuzzing (doc/fuzzing.md): libFuzzer harnesses built with clang against the core
# sources (not the gcc objects), ASan + UBSan on, one binary per harness in build-fuzz/.
FUZZ_BUILD    := build-fuzz
FUZZ_HARNESSES := definition deferred admin
FUZZ_SECONDS  ?= 30
FUZZ_SAN      := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                 -fno-omit-frame-pointer
FUZZ_CFLAGS    = -std=c99 -O1 -g $(WARN) $(FUZZ_SAN) \
                 $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(PKGS) 2>/dev/null))
FUZZ_CORE_OBJ := $(CORE_SRC:src/%.c=$(FUZZ_BUILD)/core/%.o)
FUZZ_LIB_OBJ  := $(FUZZ_BUILD)/luacov.o $(FUZZ_BUILD)/modcache.o

# clang's -Wcast-align also warns where x86-64 needs no alignment (gcc's only on targets that
# trap): the core's block carving (compile.c) is aligned by construction.
$(FUZZ_BUILD)/core/%.o: src/%.c src/modal.h src/core.h src/machine.h src/deferred.h
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -Wno-cast-align -c $< -o $@

$(FUZZ_BUILD)/%.o: fuzz/%.c fuzz/fuzz.h
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/runner-%.o: fuzz/runner.c fuzz/fuzz.h src/modal.h
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) $(FUZZ_CFLAGS) -DFUZZ_HARNESS='"$*"' -c $< -o $@

$(FUZZ_BUILD)/fuzz-%: $(FUZZ_BUILD)/runner-%.o $(FUZZ_LIB_OBJ) $(FUZZ_CORE_OBJ)
	clang $(FUZZ_SAN) -o $@ $^ -llua5.4 -llua5.4-luv $(UV_LIBS) -lm

.SECONDARY: $(FUZZ_CORE_OBJ) $(FUZZ_LIB_OBJ) $(FUZZ_HARNESSES:%=$(FUZZ_BUILD)/runner-%.o)

fuzz-build: check-fuzz-deps $(FUZZ_HARNESSES:%=$(FUZZ_BUILD)/fuzz-%)

check-fuzz-deps: check-deps
	@command -v clang >/dev/null && \
	  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 \
	  || $(MAKE) --no-print-directory deps

# Each harness for FUZZ_SECONDS; non-zero when one finds a crash (fuzz/run.sh).
fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh fuzz/run.sh $(FUZZ_HARNESSES)

# Replays one input: make fuzz-repro HARNESS=deferred INPUT=build-fuzz/crashes/deferred-crash-...
fuzz-repro: fuzz-build
	@test -n "$(HARNESS)" -a -n "$(INPUT)" || \
	  { echo "usage: make fuzz-repro HARNESS=definition|deferred|admin INPUT=FILE"; exit 2; }
	ASAN_OPTIONS=detect_leaks=1 ./$(FUZZ_BUILD)/fuzz-$(HARNESS) $(INPUT)
# }========

clean:
	rm -rf build build-asan build-cov build-fuzz modal.so src/*.o   # luarocks make builds in src/
