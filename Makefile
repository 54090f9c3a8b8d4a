# Station: the commands the README gives.
#   make run [CAPTURE=file.pcap] [OUT=dir]   balancer + detector + app on a capture (a generated one by default)
#   make test                                every test (unit, property, cross-process, end to end)
#   make bench                               pipeline and peers on the same captures (BENCHMARKS.md)
#   make lint                                rustfmt check and clippy with warnings as errors
#   make check-pfring [PF_RING_DIR=prefix]   balancer and pfring-sys with --features pfring, where libpfring is installed

CARGO    ?= cargo
OUT      ?= out
CAPTURE  ?=
SAMPLE_SPEC ?= flows=2000,packets=200000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,seed=1
BIN      := target/release

.PHONY: all build run test lint bench fmt clean check-pfring

all: build

build:
	$(CARGO) build --release --bins

run: build
	@OUT="$(OUT)" CAPTURE="$(CAPTURE)" SAMPLE_SPEC="$(SAMPLE_SPEC)" BIN="$(BIN)" scripts/run_pipeline.sh

test: build
	CJ_BIN_DIR="$(CURDIR)/$(BIN)" $(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The PF_RING feature needs libpfring: PF_RING_DIR, else /usr/local or /usr (as pfring-sys/build.rs looks).
# Without it this says SKIPPED and succeeds; the tests use PF_RING's pcap: device, no kernel module.
check-pfring:
	@dir="$(PF_RING_DIR)"; \
	if [ -z "$$dir" ]; then \
		for p in /usr/local /usr; do \
			if [ -e "$$p/include/pfring.h" ] && ls "$$p"/lib/libpfring.so "$$p"/lib/*/libpfring.so >/dev/null 2>&1; then dir=$$p; break; fi; \
		done; \
	fi; \
	if [ -z "$$dir" ]; then \
		echo "check-pfring: SKIPPED: no PF_RING user library (set PF_RING_DIR=prefix or run scripts/install_pfring.sh)"; \
		exit 0; \
	fi; \
	echo "check-pfring: PF_RING in $$dir"; \
	export PF_RING_DIR="$$dir" LD_LIBRARY_PATH="$$dir/lib$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}"; \
	set -e; \
	$(CARGO) build -p balancer --features pfring; \
	$(CARGO) test -p pfring-sys -p balancer --features balancer/pfring

fmt:
	$(CARGO) fmt --all

bench: build
	BIN="$(BIN)" scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf $(OUT) bench-out
