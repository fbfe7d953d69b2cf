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
#   make dist            source tarball target/going-VERSION.tar.gz, crates vendored, reproducible
#   make distcheck       make dist, then build the unpacked tarball with no network
#   make release         static musl binaries, smoke-tested (other ARCHs under qemu-user):
#                        target/going-VERSION-ARCH-linux-musl.tar.gz for RELEASE_ARCHS
#   make rpm             RPM package target/going-VERSION-1.ARCH.rpm (rpmbuild, pkg/going.spec)
#   make release-check   all four, checked: offline build, reproducibility, smoke tests,
#                        rpmlint, rpm install in a scratch root, lintian (root: apt-get)
# Each of dist, release, rpm and deb rewrites target/SHA256SUMS for what target/ holds.

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
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
# Cross-built with Debian's gcc-ARCH-linux-gnu as linker, when not the machine's.
RELEASE_ARCHS ?= x86_64 aarch64

.PHONY: all build install uninstall test lint run man-check bench deb e2e clean \
	dist distcheck release rpm release-check

all: build

# The musl build is what keeps VmPeak under 1024 kB; the target is added when missing.
# SMALL leaves out the unwind tables, which panic=abort never reads (link/*.ld says more);
# links a static binary that is not position-independent (no relocations to apply at
# start-up nor pages of them to map: 20 kB of VmPeak); and lets the read-only data share
# the code's segment (noseparate-code: one mapping of the binary where there were three,
# 8 kB less of page padding; the read-only data is then executable, as it was in every
# binary before 2018). The std's source paths, which its panic locations keep, are
# shortened to /rust/...: 5 kB of read-only data. (Packed relative relocations, DT_RELR,
# gave 17 kB to the static-pie build; a non-PIE binary has no relocations to pack.)
# NOLOC, where the std is going's own (STD, below, through RUSTC_BOOTSTRAP=1): a panic's
# message keeps its text but not its file, line and column, 16 kB less VmPeak.
SYSROOT := $(shell rustc --print sysroot 2>/dev/null)
SMALL := -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$(CURDIR)/link/no-unwind-tables.ld \
	-C relocation-model=static -C link-arg=-Wl,-z,noseparate-code \
	$(if $(SYSROOT),--remap-path-prefix=$(SYSROOT)/lib/rustlib/src/rust=/rust)
# STD builds the standard library with going's own profile (opt-level z, LTO across it)
# and without its backtrace symbolizer, which panic=abort never runs: 210 kB less binary,
# and as much less VmPeak. It needs the rust-src component (added when missing) and two
# unstable cargo flags, which RUSTC_BOOTSTRAP=1 lets a stable toolchain use, as Rust's
# own build does. Where it fails (no rust-src, no network for std's crates) the ordinary
# std is linked; where musl fails too (no rustup, no network) a static glibc binary is
# built instead. Each step says which. Its optimize_for_size feature picks std's smaller
# code where it has two (its sorts, say): 16 kB less VmPeak.
STD := -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
NOLOC := -Zlocation-detail=none
HAVE_MUSL := { rustup target list --installed 2>/dev/null | grep -qx '$(MUSL)' || rustup target add '$(MUSL)'; }
HAVE_SRC := { rustup component list --installed 2>/dev/null | grep -q '^rust-src' || rustup component add rust-src; }
build:
	@set -e; \
	if $(HAVE_MUSL) && $(HAVE_SRC) && RUSTC_BOOTSTRAP=1 RUSTFLAGS='$(SMALL) $(NOLOC)' \
	     $(CARGO) build --release --locked --target '$(MUSL)' $(STD); then \
		cp 'target/$(MUSL)/release/going' '$(BIN)'; \
	elif echo 'going: no std of its own (see STD in the Makefile); the ordinary one' >&2 \
	   && $(HAVE_MUSL) && RUSTFLAGS='$(SMALL)' $(CARGO) build --release --locked --target '$(MUSL)'; then \
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

# As root (CI is root) the tests marked #[ignore = "needs root"] run too.
ROOT_TESTS := $(if $(filter 0,$(shell id -u)),-- --include-ignored)
test:
	$(CARGO) test --locked $(ROOT_TESTS)

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
	@pkg/sums target '$(VERSION)' >/dev/null

e2e: build
	e2e/run "$$(pkg/mkdeb '$(BIN)' target)"

# The source tarball holds what git ls-files lists, and vendor/ with a .cargo/config.toml
# that builds from it: no network needed (pkg/mkdist says more).
dist:
	pkg/mkdist target
	@pkg/sums target '$(VERSION)'

distcheck: dist
	pkg/distcheck 'target/going-$(VERSION).tar.gz'

# The same size levers as make (SMALL, NOLOC); no glibc fallback: a release binary is musl.
release:
	@set -e; for a in $(RELEASE_ARCHS); do \
		RUSTFLAGS='$(SMALL) $(NOLOC)' CARGO='$(CARGO)' pkg/mkrelease "$$a" target; \
	done
	@pkg/sums target '$(VERSION)'

rpm: build
	pkg/mkrpm '$(BIN)' target
	@pkg/sums target '$(VERSION)' >/dev/null

release-check:
	RELEASE_ARCHS='$(RELEASE_ARCHS)' pkg/release-check

clean:
	$(CARGO) clean
