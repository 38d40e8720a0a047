# twshim: an LD_PRELOAD library that decides who closes TCP connections first.
CC ?= cc
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(PREFIX)/bin
# where the library goes, and where `twshim run` looks for it (compiled in);
# the Debian package sets it to its multiarch directory
LIBDIR ?= $(PREFIX)/lib
MANDIR = $(PREFIX)/share/man
DATADIR = $(PREFIX)/share/twshim
PKG_CONFIG ?= pkg-config
B ?= build

WARN = -std=gnu11 -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
       -Wwrite-strings -Wformat-security -fno-common
ifeq ($(WERROR),1)
WARN += -Werror
endif
OPT ?= -O2 -g
SAN ?=
PKGS_LIB = libconfig libmnl
CFLAGS_ALL = $(WARN) $(OPT) $(SAN) -fPIC -D_GNU_SOURCE -Iinclude -DTW_LIBDIR='"$(LIBDIR)"' \
	     $(shell $(PKG_CONFIG) --cflags $(PKGS_LIB)) $(CPPFLAGS) $(CFLAGS)
LIBS_LIB = $(shell $(PKG_CONFIG) --libs $(PKGS_LIB)) -ldl -lpthread
# the tool only: the preload library links neither jansson nor libmicrohttpd
LIBS_TOOL = $(LIBS_LIB) $(shell $(PKG_CONFIG) --libs jansson libmicrohttpd)
CRIT_CFLAGS = $(shell $(PKG_CONFIG) --cflags criterion jansson)
TOOL_CFLAGS = $(shell $(PKG_CONFIG) --cflags jansson libmicrohttpd)
CRIT_LIBS = $(shell $(PKG_CONFIG) --libs criterion jansson)

CORE_SRC = $(wildcard core/*.c)
SHIM_SRC = $(wildcard shim/*.c)
TOOL_SRC = $(wildcard tools/*.c)
EXAMPLE_SRC = $(wildcard examples/*.c)
UNIT_SRC = $(wildcard tests/unit/*.c)
INTEG_SRC = $(wildcard tests/integration/*.c)
BENCH_SRC = $(wildcard bench/*.c)
HDRS = $(wildcard include/*.h) $(wildcard shim/*.h) $(wildcard tests/integration/*.h) \
       $(wildcard tools/*.h)

CORE_OBJ = $(CORE_SRC:%.c=$(B)/obj/%.o)
SHIM_OBJ = $(SHIM_SRC:%.c=$(B)/obj/%.o)
TOOL_OBJ = $(TOOL_SRC:%.c=$(B)/obj/%.o)
PROGRAM_SRC = $(wildcard tests/programs/*.c)
PROGRAMS = $(PROGRAM_SRC:tests/programs/%.c=$(B)/programs/%)
UNIT_OBJ = $(UNIT_SRC:%.c=$(B)/obj/%.o)
INTEG_OBJ = $(INTEG_SRC:%.c=$(B)/obj/%.o)
EXAMPLES = $(EXAMPLE_SRC:examples/%.c=$(B)/examples/%)

LIB = $(B)/libtwshim.so
CORE = $(B)/libtwcore.a
TOOL = $(B)/twshim
UNIT = $(B)/tests/unit
INTEG = $(B)/tests/integration

.PHONY: all test unit integration install uninstall clean demo bench deps asan ubsan tsan fuzz deb compat
all: $(LIB) $(if $(TOOL_SRC),$(TOOL)) $(EXAMPLES)

$(B)/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden $(if $(filter tools/%,$<),$(TOOL_CFLAGS)) \
		$(if $(filter tests/%,$<),$(CRIT_CFLAGS) -Itests/integration) -c $< -o $@

$(CORE): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB): $(SHIM_OBJ) $(CORE) shim/twshim.map
	$(CC) $(SAN) -shared -o $@ $(SHIM_OBJ) $(CORE) -Wl,--version-script=shim/twshim.map \
		-Wl,-z,now -Wl,-z,relro $(LIBS_LIB) $(LDFLAGS)

$(TOOL): $(TOOL_OBJ) $(CORE)
	$(CC) $(SAN) -o $@ $(TOOL_OBJ) $(CORE) $(LIBS_TOOL) $(LDFLAGS)

# Each example is one program; what they share is in examples/common/.
EXAMPLE_COMMON = $(wildcard examples/common/*.c)
$(B)/examples/%: examples/%.c $(EXAMPLE_COMMON) $(wildcard examples/common/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(OPT) $(SAN) -D_GNU_SOURCE -Iexamples/common -o $@ $< $(EXAMPLE_COMMON) -lpthread

# helper programs the integration tests run (threads, fork and signal races)
$(B)/programs/%: tests/programs/%.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(OPT) $(SAN) -D_GNU_SOURCE -o $@ $< -lpthread

$(UNIT): $(UNIT_OBJ) $(CORE)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $(UNIT_OBJ) $(CORE) $(CRIT_LIBS) $(LIBS_LIB) $(LDFLAGS)

$(INTEG): $(INTEG_OBJ) $(CORE)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $(INTEG_OBJ) $(CORE) $(CRIT_LIBS) $(LIBS_LIB) $(LDFLAGS)

# Criterion runs each test in a process of its own; integration tests also
# enter a network namespace of their own, so they need root. Every check
# runs; the last line counts them and names each skipped test and why.
CRITERION_FLAGS ?= --jobs=2
test:
	@./scripts/deps
	$(MAKE) all $(UNIT) $(INTEG) $(PROGRAMS)
	B=$(B) MAKE="$(MAKE)" CRITERION_FLAGS="$(CRITERION_FLAGS)" ./tests/run-all.sh

demo:
	@./scripts/deps
	$(MAKE) all
	./examples/demo.sh $(B)

# as another user, what is missing is named and its figures are left out
bench: all
	@./scripts/deps bench || true
	$(MAKE) -C bench B=$(abspath $(B))

deps:
	./scripts/deps

# CPython's socket, subprocess and server tests without the library and under
# each close policy (tests/compat/run.sh); 2 to 4 minutes a run, 4 runs.
compat: all
	./tests/compat/run.sh $(B)

# The whole suite under a sanitizer, in a build directory of its own.
asan ubsan tsan:
	./tests/sanitize.sh $@

# libFuzzer targets for the settings parsers, bounded in time; not part of test.
fuzz:
	@command -v clang >/dev/null || { echo "make fuzz needs clang (libFuzzer): apt-get install clang" >&2; exit 1; }
	$(MAKE) -f tests/fuzz/Makefile

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DATADIR)/policies
	install -m 755 $(TOOL) $(DESTDIR)$(BINDIR)/twshim
	install -m 755 $(LIB) $(DESTDIR)$(LIBDIR)/libtwshim.so
	install -m 644 man/twshim.1 $(DESTDIR)$(MANDIR)/man1/twshim.1
	install -m 644 man/twshim.conf.5 $(DESTDIR)$(MANDIR)/man5/twshim.conf.5
	install -m 644 policies/*.conf $(DESTDIR)$(DATADIR)/policies/

# The Debian package, built from a copy of the tree so that neither the tree
# nor its parent directory (where dpkg-buildpackage writes) gets the outputs:
# $(B)/deb/twshim_VERSION_ARCH.deb. Needs dpkg-dev and debhelper.
DEB_VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
		{ echo "make deb needs dpkg-dev and debhelper: apt-get install dpkg-dev debhelper" >&2; exit 1; }
	rm -rf $(B)/deb && mkdir -p $(B)/deb/twshim-$(DEB_VERSION)
	tar -c --exclude=./.git --exclude='./build' --exclude='./build-*' -f - . | \
		tar -x -C $(B)/deb/twshim-$(DEB_VERSION)
	cd $(B)/deb/twshim-$(DEB_VERSION) && dpkg-buildpackage -b -us -uc
	@ls $(B)/deb/*.deb

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/twshim $(DESTDIR)$(LIBDIR)/libtwshim.so \
		$(DESTDIR)$(MANDIR)/man1/twshim.1 $(DESTDIR)$(MANDIR)/man5/twshim.conf.5
	rm -rf $(DESTDIR)$(DATADIR)

clean:
	rm -rf build build-asan build-ubsan build-tsan
