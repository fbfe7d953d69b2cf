# going — build, install, test.
#   make                 static release binary in target/going (musl; static glibc fallback)
#   make install         prefix=/usr DESTDIR= : sbin/going, man pages, /etc/going.d
#   make uninstall
#   make test            the whole test suite (what .ci/run runs)
#   make lint            rustfmt and clippy, warnings as errors
#   make run             going in the foreground on etc/going.d, logging to stderr
#   make bench           measure the static binary (bench/results.md, bench/results.json)
#   make deb             Debian package target/going_VERSION_ARCH.deb (dpkg-deb only)
#   make e2e             the package under busybox init, rsyslog, redis, nginx (root)

prefix ?= /usr
DESTDIR ?=
sbindir ?= $(prefix)/sbin
mandir ?= $(prefix)/share/man
sysconfdir ?= /etc
CARGO ?= cargo
ARCH := $(shell uname -m)
MUSL := $(ARCH)-unknown-linux-musl
GNU := $(ARCH)-unknown-linux-gnu
BIN := target/going

.PHONY: all build install uninstall test lint run man-check bench deb e2e clean

all: build

# The musl build is what keeps VmPeak under 1024 kB; the target is added when missing.
# SMALL leaves out the unwind tables, which panic=abort never reads (link/*.ld says more).
SMALL := -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$(CURDIR)/link/no-unwind-tables.ld
# Where that fails (no rustup, no network) a static glibc binary is built instead.
build:
	@set -e; \
	if { rustup target list --installed 2>/dev/null | grep -qx '$(MUSL)' || rustup target add '$(MUSL)'; } \
	   && RUSTFLAGS='$(SMALL)' $(CARGO) build --release --locked --target '$(MUSL)'; then \
		cp 'target/$(MUSL)/release/going' '$(BIN)'; \
	else \
		echo 'going: the musl build failed; building a static glibc binary instead' >&2; \
		RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked --target '$(GNU)'; \
		cp 'target/$(GNU)/release/going' '$(BIN)'; \
	fi
	@echo "built $(BIN)"

install: build
	install -d '$(DESTDIR)$(sbindir)' '$(DESTDIR)$(mandir)/man8' '$(DESTDIR)$(mandir)/man5' \
		'$(DESTDIR)$(sysconfdir)/going.d'
	install -m 755 '$(BIN)' '$(DESTDIR)$(sbindir)/going'
	install -m 644 man/going.8 '$(DESTDIR)$(mandir)/man8/going.8'
	install -m 644 man/going.d.5 '$(DESTDIR)$(mandir)/man5/going.d.5'

# Service files an admin wrote are theirs: /etc/going.d is removed only when empty.
uninstall:
	rm -f '$(DESTDIR)$(sbindir)/going' '$(DESTDIR)$(mandir)/man8/going.8' \
		'$(DESTDIR)$(mandir)/man5/going.d.5'
	-rmdir '$(DESTDIR)$(sysconfdir)/going.d' 2>/dev/null

# As root, as CI runs, the tests marked "needs root" run too.
test:
	$(CARGO) test --locked $(if $(filter 0,$(shell id -u)),-- --include-ignored)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# groff's warnings about the man pages, as errors.
man-check:
	@for m in man/going.8 man/going.d.5; do \
		out=$$(groff -man -ww -z $$m 2>&1); \
		if [ -n "$$out" ]; then echo "$$m: $$out"; exit 1; fi; \
	done; echo "man pages: no warnings"

# Service files must not be writable by others (going refuses them): a checkout made
# under umask 002 would be.
run: build
	chmod -R go-w etc/going.d
	mkdir -p target/run
	$(BIN) -f -d etc/going.d -r target/run

bench: build
	python3 bench/bench.py $(BIN)

deb: build
	pkg/mkdeb '$(BIN)' target

e2e: build
	e2e/run "$$(pkg/mkdeb '$(BIN)' target)"

clean:
	$(CARGO) clean
