# Front door for pulsec. `make run` and `make test` do all set-up on a fresh Debian machine:
# they install missing -dev packages with apt-get and the JS dependencies with npm ci.
# The C build itself is CMake (CMakeLists.txt); this file only sequences it.

APT_PACKAGES := build-essential cmake pkg-config libuv1-dev libhttp-parser-dev libwslay-dev \
                libjansson-dev libyajl-dev libssl-dev libhiredis-dev redis-server chromium \
                fonts-liberation valgrind clang clang-format libclang-rt-14-dev python3-dev \
                python3-venv python3-pip python3-setuptools python3-wheel python3-pytest \
                python3-pytest-asyncio python3-mypy python3-socketio python3-uvicorn \
                python3-uvloop python3-httptools python3-websockets
# TLS and metrics tests (issue 14): openssl mints throw-away certificates, certutil makes Chromium
# trust them, promtool and the Python client's parser check /metrics.
APT_PACKAGES += openssl libnss3-tools prometheus python3-prometheus-client
JOBS   ?= 2
PORT   ?= 8000
HOST   ?= 127.0.0.1
BUILD  := build
ASAN   := build-asan
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-apt deps-npm build build-asan web run run-cluster run-playground test test-unit test-asan \
        test-integration test-integration-allocator test-install test-js test-e2e clean format \
        format-check python run-python test-python

all: build

deps: deps-apt deps-npm

# Installs only what is missing, so a machine that has everything pays one dpkg-query.
deps-apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# npm ci only when a lock file changed since the last install.
deps-npm: node_modules/.pulsec-stamp clients/js/node_modules/.pulsec-stamp
node_modules/.pulsec-stamp: package-lock.json package.json | deps-apt
	npm ci --no-audit --no-fund
	@touch $@
clients/js/node_modules/.pulsec-stamp: clients/js/package-lock.json clients/js/package.json | deps-apt
	cd clients/js && npm ci --no-audit --no-fund
	@touch $@

build: deps-apt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps-apt
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DPULSEC_SANITIZE=ON >/dev/null
	cmake --build $(ASAN) -j $(JOBS)

# The demo pages (React, bundled by esbuild from npm) into $(BUILD)/web/chat and .../playground.
web: deps-npm
	node examples/web-build.mjs

# The chat demo; open the printed URL in two windows. `make run-playground` starts the other one.
run: build web
	@echo "pulsec chat demo (Ctrl-C stops it)"
	./$(BUILD)/examples/chat --host $(HOST) --port $(PORT) --static $(BUILD)/web/chat

# The chat on two nodes sharing one Redis (Debian's redis-server on a private unix socket), on
# PORT and PORT+1; WORKERS=2 gives each node two workers. Prints both addresses.
WORKERS ?= 1
run-cluster: build web
	examples/chat/run-cluster.sh $(BUILD) $(BUILD)/web/chat $(HOST) $(PORT) $(WORKERS)

run-playground: build web
	@echo "pulsec channel playground (Ctrl-C stops it)"
	./$(BUILD)/examples/playground --host $(HOST) --port $(PORT) --static $(BUILD)/web/playground

test: format-check test-unit test-asan test-js test-integration test-integration-allocator \
      test-install test-e2e test-python bench-smoke fuzz-smoke

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd $(ASAN) && ctest --output-on-failure -j $(JOBS)

# The integration suites drive the sanitizer build, so every real-socket scenario is also a
# memory-error and leak check (servers exit non-zero when LeakSanitizer finds something).
# One file at a time: the floods and stress runs would otherwise skew the heartbeat and timer
# tests beside them, whose bounds are milliseconds.
test-integration: build-asan deps-npm
	PULSEC_BUILD_DIR=$(CURDIR)/$(ASAN) node --test --test-concurrency=1 tests/integration/

# Suites that cover most of the stack, again with the echo fixture allocating through
# ps_set_allocator with a checked header per block (--custom-allocator): memory released by the
# wrong allocator aborts the server, and every block must be back by its exit (issue 14).
ALLOCATOR_SUITES := channels socketio polling-engine polling-http http websocket edges tls metrics
test-integration-allocator: build-asan deps-npm
	PULSEC_BUILD_DIR=$(CURDIR)/$(ASAN) PULSEC_TEST_ALLOCATOR=1 node --test --test-concurrency=1 \
	  $(ALLOCATOR_SUITES:%=tests/integration/%.test.mjs)

# The library as an adopter gets it (issue 14): installed into a temporary prefix, then
# examples/find-package built against it with find_package(pulsec) (shared and static
# library), and the same program with pkg-config, and each run.
INSTALL_TEST := $(BUILD)/install-test
test-install: build
	rm -rf $(INSTALL_TEST)
	cmake --install $(BUILD) --prefix $(CURDIR)/$(INSTALL_TEST)/prefix >/dev/null
	cmake -S examples/find-package -B $(INSTALL_TEST)/app \
	  -DCMAKE_PREFIX_PATH=$(CURDIR)/$(INSTALL_TEST)/prefix >/dev/null
	cmake --build $(INSTALL_TEST)/app
	$(INSTALL_TEST)/app/app
	$(INSTALL_TEST)/app/app_static
	PKG_CONFIG_PATH=$(CURDIR)/$(INSTALL_TEST)/prefix/lib/pkgconfig; export PKG_CONFIG_PATH; \
	  cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter -Werror \
	    examples/find-package/app.c \
	    $$(pkg-config --cflags pulsec) -o $(INSTALL_TEST)/app-pc \
	    $$(pkg-config --static --libs pulsec | sed 's/-lpulsec/-l:libpulsec.a/') && \
	  $(INSTALL_TEST)/app-pc

# Longer runs of the heavy scenarios, minutes instead of the seconds make test gives them (not
# part of make test): the Redis and workers suites with more traffic and longer outages
# (PULSEC_SOAK=1); tests/soak/ (two nodes x two workers under churn: Redis and workers killed
# again and again; PULSEC_SOAK_SECONDS, 120 by default); the recovery chaos suite at RESUME_SOAK
# times its size (default 10: 50 000 events, 20 000 client and 5 000 server requests per
# transport, under cuts every ~200 ms).
RESUME_SOAK ?= 10
.PHONY: soak
soak: build-asan deps-npm
	PULSEC_BUILD_DIR=$(CURDIR)/$(ASAN) PULSEC_SOAK=1 RESUME_SOAK=$(RESUME_SOAK) \
	  node --test --test-concurrency=1 tests/integration/redis.test.mjs \
	  tests/integration/workers.test.mjs tests/integration/resume-chaos.test.mjs tests/soak/

# The demo apps in headless Chromium (Debian's, driven by playwright-core), against the
# sanitizer build of the example servers: each must also exit 0 on SIGTERM, leak-free.
test-e2e: build-asan web deps-apt
	PULSEC_BUILD_DIR=$(CURDIR)/$(ASAN) node --test --test-concurrency=2 tests/e2e/

# The Python package (python/, docs/PYTHON.md): a venv of Debian's Python in the build tree that
# sees Debian's packages (pytest, python-socketio, ...), with pulsec pip-installed into it offline
# and linked against $(BUILD)/libpulsec.a. Always /usr/bin/python3: another python3 on PATH
# (pyenv) has neither Debian's packages nor its headers.
PYTHON ?= /usr/bin/python3
VENV   := $(BUILD)/python-venv
PY_SOURCES := $(wildcard python/setup.py python/pyproject.toml python/src/*.[ch] python/pulsec/*)
# $(call py-install,BUILD_DIR[,ENV]): BUILD_DIR/python-venv with pulsec linked against its
# libpulsec.a (ENV: more variables for setup.py, e.g. PULSEC_SANITIZE=1).
define py-install
	@test -x $(1)/python-venv/bin/python || $(PYTHON) -m venv --system-site-packages $(1)/python-venv
	$(2) PULSEC_BUILD_DIR=$(CURDIR)/$(1) PULSEC_WERROR=1 $(1)/python-venv/bin/pip install -q \
	  --no-build-isolation --no-index --no-deps --force-reinstall ./python
endef
python: $(VENV)/.pulsec-stamp
$(VENV)/.pulsec-stamp: $(PY_SOURCES) build
	$(call py-install,$(BUILD))
	@touch $@

# The seed's chat example in Python, serving the chat page of `make web`.
run-python: python web
	@echo "pulsec chat demo in Python (Ctrl-C stops it)"
	$(VENV)/bin/python examples/python/chat.py --host $(HOST) --port $(PORT) --static $(BUILD)/web/chat

# pytest against real servers driven by socket.io-client; the same suite (but the churn test,
# whose RSS bound ASan's quarantine breaks) with the extension and libpulsec built with ASan and
# UBSan ($(ASAN)/python-venv, the runtimes preloaded into Debian's Python, leak checks off:
# Python itself does not free everything at exit); then both Python demos in Chromium.
SAN_PRELOAD = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
test-python: python web deps-npm build-asan
	$(VENV)/bin/python -m pytest tests/python -q
	$(call py-install,$(ASAN),PULSEC_SANITIZE=1)
	LD_PRELOAD="$(SAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(ASAN)/python-venv/bin/python -m pytest tests/python -q -k "not churn and not typing"
	PULSEC_PYTHON=$(CURDIR)/$(VENV)/bin/python node --test --test-concurrency=1 tests/python/e2e/

# Benchmarks (bench/README.md): release build in its own dir, the Socket.IO baseline from its
# lock file, every scenario against both servers, BENCHMARKS.md. bench-smoke runs each loadgen
# scenario for a second against the echo server, so `make test` keeps the benchmark working.
.PHONY: bench bench-smoke
# perf counts system calls per round trip (its tracepoints; bench/run.mjs leaves that table out
# without it). A target-specific value reaches deps-apt when bench pulls it in.
bench: APT_PACKAGES += linux-perf
bench: deps-apt bench/baseline-socketio/node_modules/.pulsec-stamp
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DPULSEC_BUILD_TESTS=OFF >/dev/null
	cmake --build build-release -j $(JOBS) --target echo loadgen floor fanout pulsec_static
	$(call py-install,build-release)
	node bench/run.mjs --build build-release --out BENCHMARKS.md
bench/baseline-socketio/node_modules/.pulsec-stamp: bench/baseline-socketio/package-lock.json \
    bench/baseline-socketio/package.json | deps-apt
	cd bench/baseline-socketio && npm ci --no-audit --no-fund
	@touch $@

bench-smoke: build
	bench/smoke.sh $(BUILD)

# The pulsec-client package: unit tests, the real client against the ASan echo server, and a
# React page in headless Chromium (Debian's) served by that server.
test-js: build-asan deps-npm
	cd clients/js && node --test test/unit/
	cd clients/js && PULSEC_BUILD_DIR=$(CURDIR)/$(ASAN) npm run -s test:integration
	cd clients/js && PULSEC_BUILD_DIR=$(CURDIR)/$(ASAN) npm run -s test:e2e

# libFuzzer targets (tests/fuzz): clang with ASan + UBSan in a build directory of their own.
# `make fuzz` runs each target for FUZZ_SECONDS, growing $(FUZZ)/fuzz-corpus from the seeds in
# tests/fuzz/corpus (which stay untouched); fuzz-smoke runs each for 10 s from the seeds alone,
# so that `make test` keeps every target building and finding nothing.
FUZZ         := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_BUILD    = CC=clang cmake -S . -B $(FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPULSEC_FUZZ=ON \
                  -DPULSEC_BUILD_TESTS=OFF -DPULSEC_BUILD_EXAMPLES=OFF -DPULSEC_BUILD_BENCH=OFF \
                  >/dev/null && cmake --build $(FUZZ) -j $(JOBS) --target fuzz_targets
.PHONY: fuzz fuzz-smoke
fuzz: deps-apt
	$(FUZZ_BUILD)
	tests/fuzz/run.sh $(FUZZ) $(FUZZ_SECONDS)

fuzz-smoke: deps-apt
	$(FUZZ_BUILD)
	tests/fuzz/run.sh --scratch $(FUZZ) 10

clean:
	rm -rf $(BUILD) $(ASAN)

FORMATTED = $(wildcard include/*.h src/*.[ch] tests/unit/*.[ch] tests/fuzz/*.[ch] examples/*/*.[ch] \
                       bench/loadgen/*.[ch] bench/floor/*.c python/src/*.[ch])

format:
	clang-format -i $(FORMATTED)

# Debian's clang-format 14 is the reference; `make format` fixes what this reports.
format-check: deps-apt
	clang-format --dry-run -Werror $(FORMATTED)
	@echo "format: $(words $(FORMATTED)) files clean"
