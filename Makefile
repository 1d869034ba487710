# quilkin-c: thin wrapper around CMake. All output goes under build*/ (never committed).
#   make run     install deps, build, run the proxy on examples/quilkin.yaml
#   make test    install deps, build with ASan+UBSan, run unit tests, fuzz replays,
#                integration tests (on both I/O backends), and a bounded libFuzzer run
#   make bench   install deps (and nginx, perf), build optimised, run bench/bench.sh: direct,
#                nginx and quilkin-c variants in rotating rounds (latency, throughput, a
#                paced load with RTT and CPU per round trip, syscalls per round trip); prints
#                tables with a row per path, ~10 min. The quilkin-c variants come from
#                BENCH_QUILKIN_VARIANTS="LABEL=ARGS;LABEL=ARGS" (ARGS: shell words appended
#                after `quilkin proxy ...`; LABEL names the row, "quilkin" shows as quilkin-c),
#                default "quilkin=;quilkin-epoll=--io-backend epoll;
#                quilkin-batch=--coalesce-us 500" (one line); a variant that does not start
#                (an option the binary lacks) is reported FAILED and the others run
#   make bench-short  the same scenarios once each, briefly (~70 s), not in `make test`
#   make soak    the field harness (bench/soak.py), full form: a few minutes, not in `make test`
#   make soak-short  its short form (under 75 s), part of `make test`
#   make attack  the attack harness (bench/attack.py), about 2 minutes, not in `make test`
#   make attack-short  its short form (about 45 s), part of `make test`
#   make xds-bench  the xDS server harness (bench/xds_fleet.py): 200 ADS streams, 20 changes,
#                hostile clients; a few minutes, not in `make test`
#   make xds-bench-short  its short form (50 streams, 3 changes, small hostile sizes)
#   make man     regenerate docs/man/quilkin.1 from the option tables (`quilkin man`); a test
#                fails when the committed page differs from what the binary writes
#   make install the binary, man page, /etc/quilkin/quilkin.yaml and quilkin.service
#                (PREFIX=/usr/local, DESTDIR honoured; an existing quilkin.yaml is kept)
#   make deb     the Debian package, in build/deb/ (debhelper, built from a copy of the tree)
#   make image   the container image localhost/quilkin-c:0.7.0 (FROM scratch, podman)
#   make deploy-test  install, package and image tests (tests/deploy), part of `make test`

JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON     ?= /usr/bin/python3
BUILD      := build
BUILD_ASAN := build-asan
BUILD_FUZZ := build-fuzz
BUILD_TSAN := build-tsan
FUZZ_SECS  ?= 40
PREFIX     ?= /usr/local
IMAGE      ?= localhost/quilkin-c:0.7.0

.PHONY: all deps bench-deps build build-asan run test unit integration tsan fuzz bench \
	bench-short soak soak-short \
	attack attack-short xds-bench xds-bench-short man install deb image deploy-deps deploy-test \
        clean fmt check-deps

all: build

deps:
	@bash scripts/install-deps.sh

# What only the benchmark needs (nginx and its stream module, perf, strace): `make test`
# does not install these.
bench-deps:
	@bash scripts/install-deps.sh --bench

$(BUILD)/build.ninja $(BUILD)/Makefile:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD_ASAN)/Makefile:
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DQK_SANITIZE=ON >/dev/null

build-asan: deps $(BUILD_ASAN)/Makefile
	cmake --build $(BUILD_ASAN) -j $(JOBS)

run: build
	$(BUILD)/quilkin -c examples/quilkin.yaml proxy

unit: build-asan
	cd $(BUILD_ASAN) && ctest --output-on-failure -j $(JOBS)

# The whole suite twice at once, one run per I/O backend (scripts/run-integration.sh):
# io_uring with the ASan binary, epoll with the optimised one. Both use the optimised
# binary and the counting preload (build/liballoccount.so) for test_hot_path.py: an ASan
# build replaces malloc itself.
integration: build-asan build
	bash scripts/run-integration.sh $(PYTHON) $(BUILD_ASAN) $(BUILD)

fuzz: deps
	cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	  -DCMAKE_CXX_COMPILER=clang++ \
	  -DQK_FUZZ=ON >/dev/null
	cmake --build $(BUILD_FUZZ) -j $(JOBS)
	bash fuzz/run.sh $(BUILD_FUZZ) $(FUZZ_SECS)

# ThreadSanitizer over the cross-thread paths: snapshot swap (RCU), metrics scraping,
# the gRPC server/client and the ADS thread publishing while workers read.
tsan: deps
	cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=Debug -DQK_TSAN=ON >/dev/null
	cmake --build $(BUILD_TSAN) -j $(JOBS) --target quilkin snapshot_test metrics_test \
	  grpc_test ads_client_test load_balancer_test log_test ip_limit_test
	cd $(BUILD_TSAN) && ctest --output-on-failure -R 'snapshot_test|metrics_test|grpc_test|ads_client_test|load_balancer_test|log_test|ip_limit_test'
	TSAN_OPTIONS="halt_on_error=1 exitcode=66" QUILKIN_BIN=$(abspath $(BUILD_TSAN))/quilkin \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration/test_admin.py \
	  tests/integration/test_reload.py tests/integration/test_xds_client.py \
	  tests/integration/test_xds_e2e.py tests/integration/test_filter_metrics.py \
	  tests/integration/test_reload_field.py

test: check-deps unit integration tsan fuzz soak-short attack-short deploy-test
	@echo "make test: all suites passed"

# The main comparison (direct, nginx, the quilkin-c variants with --to), then quilkin-c with
# a Capture + TokenRouter chain against direct, one round, without the syscall pass (the
# plain variant only, to keep it short: this run is about the filter chain).
bench: build bench-deps
	@echo "== direct vs nginx vs quilkin-c variants (--to) =="
	bash bench/bench.sh $(BUILD)
	@echo "== Capture + TokenRouter chain =="
	BENCH_CONFIG=bench/capture_token_router.yaml BENCH_TARGETS="direct quilkin" \
	  BENCH_QUILKIN_VARIANTS="quilkin=" BENCH_ROUNDS=1 \
	  BENCH_SCENARIOS="latency throughput paced" bash bench/bench.sh $(BUILD)
	@echo "== filter timing cost (Capture + TokenRouter, one thread, no I/O) =="
	$(BUILD)/bench_chain_cost

bench-short: build bench-deps
	BENCH_QUICK=1 bash bench/bench.sh $(BUILD)

# Field harness (issue 8): thousands of clients through a file-config and an xDS proxy with
# churn, reloads, control-plane restarts and failing endpoints; accounts for every lost
# packet and exits non-zero when an invariant fails. Report: build/soak/report.json.
soak: build
	$(PYTHON) bench/soak.py --profile full

soak-short: build
	$(PYTHON) bench/soak.py --profile short

# The attack harness (bench/attack.py): 200 players at 30 pkt/s while a regex bomb, spoofed
# sources, idle admin connections, a QCMP reflection attempt and a 100k pps junk flood run in
# turn; prints what the players still get. Report: build/attack/report.json.
attack: build
	$(PYTHON) bench/attack.py --profile full

attack-short: build
	$(PYTHON) bench/attack.py --profile short

# The xDS server harness (bench/xds_fleet.py): `quilkin manage file` with N ADS streams from
# one process (bench_xds_fleet): propagation from a file change to every stream's ACK, RSS
# and CPU per stream; then each hostile client in turn (half-sent messages, a million
# resource names, idle connections, a slow reader, streams without a request) with manage's
# peak RSS (killed above 2 GiB). Reports, never asserts. Report: build/xds_fleet/report.json.
xds-bench: build
	$(PYTHON) bench/xds_fleet.py --build $(BUILD) --streams 200 --changes 20 --hostile full

xds-bench-short: build
	$(PYTHON) bench/xds_fleet.py --build $(BUILD) --streams 50 --changes 3 --hostile small

man: build
	mkdir -p docs/man
	$(BUILD)/quilkin man > docs/man/quilkin.1
# Installation and packaging. `install` reconfigures build/ with PREFIX (the unit's
# ExecStart names the installed binary) and builds only the binary.
install: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=$(PREFIX) \
	  >/dev/null
	cmake --build $(BUILD) -j $(JOBS) --target quilkin
	DESTDIR=$(DESTDIR) cmake --install $(BUILD)

deploy-deps:
	@bash scripts/install-deps.sh deploy

deb: deploy-deps
	bash packaging/build-deb.sh $(BUILD)/deb $(JOBS)

image: deploy-deps build
	bash packaging/build-image.sh $(BUILD)/quilkin $(BUILD)/image $(IMAGE)

# tests/deploy: `make install` into a scratch DESTDIR (systemd-analyze verify, the seccomp
# filter against the syscalls the proxy makes), the Debian package (built, unpacked with
# dpkg -x, run), the container image (contents; run with podman where it can run).
deploy-test: deploy-deps build
	QUILKIN_BIN=$(abspath $(BUILD))/quilkin QK_BUILD_DIR=$(abspath $(BUILD)) QK_JOBS=$(JOBS) \
	  QK_IMAGE=$(IMAGE) $(PYTHON) -m pytest -q -p no:cacheprovider tests/deploy

check-deps: deps
	bash scripts/check-deps.sh

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ) $(BUILD_TSAN)
