# weir: the two commands are `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := curl nghttp2-client clang llvm libbpf-dev bpftool iproute2 iptables docker-registry apache2-utils
BENCH_PACKAGES := nginx-light haproxy wrk nghttp2-client

.PHONY: run test bench bench-wasm bench-scaling conformance sdk-examples fuzz deps bench-deps lint build release

## run: the proxy on its built-in config (a page on 127.0.0.1:10000, admin on 127.0.0.1:9901),
## or on CONFIG=FILE (e.g. `make run CONFIG=configs/wasm_auth.yaml`). weir runs in the
## repository root, so the paths inside the examples (relative to the working directory, as in
## Envoy) resolve from any directory with `make -C /path/to/weir run CONFIG=configs/...`; the Wasm
## filters are built first for a CONFIG whose name has "wasm" in it.
CONFIG ?=
run: deps release $(if $(findstring wasm,$(CONFIG)),wasm-filters)
	./target/release/weir --log-level info $(if $(CONFIG),-c $(CONFIG))

## test: every test (unit and end to end), plus fmt and clippy
test: deps wasm-filters wasm-fixtures envoy
	$(CARGO) fmt --all -- --check
	$(CARGO) build -p weir --bin weir
	$(CARGO) test --workspace --no-fail-fast
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p weir-sdk -p header-manipulation -p auth -p local-rate-limit -p websocket-guard -p tcp-guard -- -D warnings

## bench: weir beside nginx, haproxy, Envoy and a direct connection (loopback, < 3 min)
bench: bench-deps release bench-wasm
	$(CARGO) build --release -p weir-tests --bin xds_scale
	WEIR_BIN=$(CURDIR)/target/release/weir tests/bench/run.sh

## bench-wasm: Wasm VM creation (microseconds) and a reload's first request (ms), release build
bench-wasm: release wasm-filters
	$(CARGO) build --release -p weir --example wasm_vm_bench
	WEIR_BIN=$(CURDIR)/target/release/weir tests/bench/wasm_vm.sh

## bench-scaling: weir with 1, 2, 4, ... workers pinned apart from the load (a many-core machine)
bench-scaling: bench-deps release
	WEIR_BIN=$(CURDIR)/target/release/weir tests/bench/scaling.sh

## conformance: h2spec's 146 HTTP/2 cases against weir at its default settings (HTTP2 in the
## clear and over TLS, AUTO); h2spec is not on the registries: see the message when it is missing
H2SPEC ?= $(CURDIR)/target/h2spec
H2SPEC_SRC ?=
conformance: deps
	@if [ ! -x "$(H2SPEC)" ] && [ -n "$(H2SPEC_SRC)" ]; then tests/scripts/build-h2spec.sh "$(H2SPEC_SRC)" "$(H2SPEC)"; fi
	@if [ ! -x "$(H2SPEC)" ]; then \
		echo "h2spec is missing at $(H2SPEC). It is on no package registry: get a git checkout of"; \
		echo "github.com/summerwind/h2spec (a clone, or a fetched snapshot), then run"; \
		echo "  make conformance H2SPEC_SRC=/path/to/that/checkout"; \
		echo "which builds it with Debian's Go (tests/scripts/build-h2spec.sh), or pass H2SPEC=/path/to/h2spec."; \
		exit 2; \
	fi
	$(CARGO) build -p weir --bin weir
	H2SPEC=$(H2SPEC) $(CARGO) test -p weir-tests --test conformance -- --ignored --nocapture

## sdk-examples: the official proxy-wasm Rust SDK's `hello_world` example (a bootstrap Wasm
## service) run by weir from its own envoy.yaml (only the module's path changed), checked to
## start, tick and stop. The examples are not in the crates.io package: pass a checkout of
## github.com/proxy-wasm/proxy-wasm-rust-sdk (a clone or a fetched snapshot's git directory).
PROXY_WASM_SDK_SRC ?=
sdk-examples: wasm-target
	@if [ -z "$(PROXY_WASM_SDK_SRC)" ]; then \
		echo "make sdk-examples needs a checkout of github.com/proxy-wasm/proxy-wasm-rust-sdk:"; \
		echo "  make sdk-examples PROXY_WASM_SDK_SRC=/path/to/that/checkout"; \
		exit 2; \
	fi
	$(CARGO) build -p weir --bin weir
	CARGO=$(CARGO) tests/scripts/sdk-examples.sh "$(PROXY_WASM_SDK_SRC)" $(CURDIR)/target/debug/weir

## fuzz: each cargo-fuzz target in host/fuzz for FUZZ_SECONDS (default 60) under libFuzzer;
## needs nightly and cargo-fuzz. New inputs go to host/fuzz/target/corpus, crashes to
## host/fuzz/artifacts; `make test` runs a short smoke of the same targets without either.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := config_loader request_head h2_frames wasm_memory
fuzz:
	@$(CARGO) +nightly --version >/dev/null 2>&1 || { echo "make fuzz needs the nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@$(CARGO) +nightly fuzz --version >/dev/null 2>&1 || { echo "make fuzz needs cargo-fuzz: cargo install cargo-fuzz"; exit 1; }
	cd host/fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$target && \
		$(CARGO) +nightly fuzz run $$target target/corpus/$$target corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 || exit 1; \
	done

build:
	$(CARGO) build -p weir

release:
	$(CARGO) build --release -p weir

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p weir-sdk -p header-manipulation -p auth -p local-rate-limit -p websocket-guard -p tcp-guard -- -D warnings

# Debian packages the build and tests need (clang llvm libbpf-dev: the eBPF splice, built by
# host/build.rs; bpftool: the splice tests read the maps; curl, nghttp; iproute2 iptables: the
# sidecar tests build network namespaces and REDIRECT rules), installed when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

bench-deps:
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

include filters/Makefile.inc
