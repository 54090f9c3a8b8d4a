# Station: the commands the README gives.
#   make run [CAPTURE=file.pcap] [OUT=dir]   balancer + detector + app on a capture (a generated one by default)
#   make test                                every test (unit, property, cross-process, end to end)
#   make check-corpus                        the real-capture corpus (e2e/corpus) against pmacctd (make test runs it too)
#   make bench                               pipeline and peers on the same captures (BENCHMARKS.md)
#   make lint                                rustfmt check and clippy with warnings as errors
#   make check-pfring [PF_RING_DIR=prefix]   balancer and pfring-sys with --features pfring, where libpfring is installed
#   make fuzz [FUZZ_RUNS=n]                  every fuzz target for a fixed number of inputs from a fixed seed
#   make container [target=det|app|zbalance|sim] [pfring_ver=...] [pfring_src=DIR]   docker images (docker/Dockerfile)
#   make check-images [pfring_src=DIR]       build every image target and run each against the generator's truth

CARGO    ?= cargo
OUT      ?= out
CAPTURE  ?=
SAMPLE_SPEC ?= flows=2000,packets=200000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,seed=1
BIN      := target/release

.PHONY: all build run test check-corpus lint bench fmt clean check-pfring container check-images fuzz

all: build

build:
	$(CARGO) build --release --bins

run: build
	@OUT="$(OUT)" CAPTURE="$(CAPTURE)" SAMPLE_SPEC="$(SAMPLE_SPEC)" BIN="$(BIN)" scripts/run_pipeline.sh

# The binaries under test are the release builds (end-to-end tests start them
# from CJ_BIN_DIR); the test code itself builds in the dev profile, which
# compiles far faster than the LTO release profile. A test that lacks root,
# Docker, a peer tool or a core fails under CI and elsewhere appends a line to
# $(SKIPPED) (e2e::skip): emptied first, printed at the end, never a failure.
SKIPPED := target/skipped-tests.txt

test: build
	@mkdir -p target && : > "$(SKIPPED)"
	@CJ_BIN_DIR="$(CURDIR)/$(BIN)" $(CARGO) test --workspace --no-fail-fast; rc=$$?; \
	if [ -s "$(SKIPPED)" ]; then \
		echo "make test: $$(wc -l < "$(SKIPPED)") test(s) SKIPPED, not run (the reason follows each):"; \
		sed 's/^/  /' "$(SKIPPED)"; \
	else \
		echo "make test: no test skipped"; \
	fi; \
	exit $$rc

# The corpus of real captures (e2e/corpus, README there: sources and licences)
# through the station and pmacctd, eight files at a time: no crash, no hang, the
# identity holds and the rows equal pmacctd's but for the differences
# e2e/tests/corpus.rs lists by file and reason. About 30 s, so `make test` runs
# it as well; this target runs it alone (skipped by e2e::skip's rule without pmacctd).
check-corpus: build
	@mkdir -p target && : > "$(SKIPPED)"
	@CJ_BIN_DIR="$(CURDIR)/$(BIN)" $(CARGO) test -p e2e --test corpus; rc=$$?; \
	if [ -s "$(SKIPPED)" ]; then echo "make check-corpus: SKIPPED:"; sed 's/^/  /' "$(SKIPPED)"; fi; \
	exit $$rc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The PF_RING feature needs libpfring: PF_RING_DIR, else /usr/local or /usr (as pfring-sys/build.rs looks).
# Without it this says, in one line, that the feature was not checked, and succeeds (also under CI,
# which cannot build libpfring: see the README, "Tests"); the tests use PF_RING's pcap: device, no
# kernel module.
check-pfring:
	@dir="$(PF_RING_DIR)"; \
	if [ -z "$$dir" ]; then \
		for p in /usr/local /usr; do \
			if [ -e "$$p/include/pfring.h" ] && ls "$$p"/lib/libpfring.so "$$p"/lib/*/libpfring.so >/dev/null 2>&1; then dir=$$p; break; fi; \
		done; \
	fi; \
	if [ -z "$$dir" ] && [ -n "$$CI" ]; then \
		echo "check-pfring: NOT CHECKED under CI: the pfring feature (cj-balancer --features pfring, pfring-sys and their PF_RING tests) is neither built nor tested, because CI has no PF_RING user library: ntop's servers are unreachable from CI and its sources may not be committed here; run make check-pfring where libpfring is installed (scripts/install_pfring.sh)"; \
		exit 0; \
	fi; \
	if [ -z "$$dir" ]; then \
		echo "check-pfring: NOT CHECKED: no PF_RING user library, so the pfring feature was neither built nor tested (set PF_RING_DIR=prefix or run scripts/install_pfring.sh)"; \
		exit 0; \
	fi; \
	echo "check-pfring: PF_RING in $$dir"; \
	export PF_RING_DIR="$$dir" LD_LIBRARY_PATH="$$dir/lib$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}"; \
	set -e; \
	$(CARGO) build -p balancer --features pfring; \
	$(CARGO) test -p pfring-sys -p balancer --features balancer/pfring

# Images: `conjure` (default target: everything, balancer with PF_RING) or `conjure_<target>`,
# each tagged latest and with the version. pfring_ver falls back to PFRING_VER from the
# environment, then latest. base_image= and builder_image= replace the Debian and Rust images
# (e2e/tests/deploy.rs builds both locally: no registry needed). pfring_src=DIR (a PF_RING
# source tree) builds the PF_RING user library from DIR instead of fetching it from ntop:
# DIR's kernel/linux and userland become the image station-pfring-src, which the Dockerfile
# reads (PFRING_SRC_IMAGE); only targets with PF_RING (the default, zbalance) use it.
target        ?=
pfring_ver    ?= $(or $(PFRING_VER),latest)
pfring_src    ?=
base_image    ?=
builder_image ?=
DOCKER        ?= docker
VERSION       := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)$(shell git rev-parse --short HEAD 2>/dev/null | sed 's/^/-/')
IMAGE          = $(if $(target),conjure_$(target),conjure)
PFRING_TARGET  = $(if $(filter-out zbalance all,$(target)),,yes)

container:
	@if [ -n "$(pfring_src)" ] && [ -n "$(PFRING_TARGET)" ]; then \
		if [ ! -d "$(pfring_src)/userland/lib" ] || [ ! -f "$(pfring_src)/kernel/linux/pf_ring.h" ]; then \
			echo "make container: pfring_src=$(pfring_src) is not a PF_RING source tree (it needs userland/lib and kernel/linux/pf_ring.h): give the top directory of a PF_RING checkout or release"; \
			exit 2; \
		fi; \
		echo "make container: PF_RING user library from $(pfring_src) (image station-pfring-src)"; \
		printf 'FROM scratch\nLABEL station.build=conjure\nCOPY kernel/linux /kernel/linux\nCOPY userland /userland\n' \
			| $(DOCKER) build -q -f - -t station-pfring-src "$(pfring_src)" >/dev/null; \
	fi
	$(DOCKER) build -f docker/Dockerfile $(if $(target),--target $(target)) \
		--build-arg pfring_ver=$(pfring_ver) \
		$(if $(and $(pfring_src),$(PFRING_TARGET)),--build-arg PFRING_SRC_IMAGE=station-pfring-src) \
		$(if $(base_image),--build-arg BASE_IMAGE=$(base_image)) \
		$(if $(builder_image),--build-arg BUILDER_IMAGE=$(builder_image)) \
		-t $(IMAGE) -t $(IMAGE):$(VERSION) .

# Every image target built (make container) and run: each binary starts, and the pipeline's
# containers on a generated capture give flows.csv equal to the generator's truth, through
# PF_RING's pcap device for the PF_RING images (e2e/deploy/check_images.sh). pfring_src=DIR
# builds their user library from a local PF_RING tree; without it, under CI, they are NOT
# CHECKED (one line). Root and docker; several minutes (the workspace is built in the image
# twice, with and without PF_RING), so not part of make test.
check-images:
	@DOCKER="$(DOCKER)" MAKE="$(MAKE)" base_image="$(base_image)" builder_image="$(builder_image)" \
		pfring_src="$(pfring_src)" pfring_ver="$(pfring_ver)" e2e/deploy/check_images.sh

# The fuzz targets (fuzz/: the wire parser, the config file reader, the pcap source), each
# for FUZZ_RUNS inputs (the pcap source, which writes a file per input, a tenth of that)
# from a fixed seed, on a copy of its seed corpus: deterministic, so a run that passes here
# passes anywhere. Built with the stable toolchain (libFuzzer's own
# mutations, no coverage instrumentation); `cargo +nightly fuzz run TARGET` guides by coverage.
FUZZ_RUNS    ?= 1000000
FUZZ_TARGETS := summarize config_file pcap_source

fuzz:
	cd fuzz && $(CARGO) build --release --quiet $(foreach t,$(FUZZ_TARGETS),--bin $(t))
	@set -e; for t in $(FUZZ_TARGETS); do \
		work=$$(mktemp -d); \
		if [ -d fuzz/corpus/$$t ]; then cp -r fuzz/corpus/$$t/. "$$work"/; fi; \
		runs=$(FUZZ_RUNS); if [ $$t = pcap_source ]; then runs=$$(( $(FUZZ_RUNS) / 10 )); fi; \
		echo "fuzz: $$t, $$runs inputs from seed 1"; \
		fuzz/target/release/$$t -seed=1 -runs=$$runs -max_len=65536 "$$work" > "$$work.log" 2>&1 || { tail -40 "$$work.log"; rm -rf "$$work" "$$work.log"; exit 1; }; \
		tail -1 "$$work.log"; rm -rf "$$work" "$$work.log"; \
	done

fmt:
	$(CARGO) fmt --all

bench: build
	BIN="$(BIN)" scripts/bench.sh
	BIN="$(BIN)" scripts/bench_live.sh

clean:
	$(CARGO) clean
	rm -rf $(OUT) bench-out
