# ferrolb: the two commands a person needs are `make demo` and `make test`.
# Both do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
HARNESS := target/harness/k8s-harness
HELM := target/tools/helm
# kubectl of the lab's Kubernetes version is built with the harness (a symlink in
# target/harness): tests and the demo use it, whatever kubectl the machine has.
export PATH := $(CURDIR)/target/harness:$(PATH)

.PHONY: all setup build harness helm lint fmt test unit e2e demo bench generate check-generated clean require-root

all: build

setup:
	@scripts/setup.sh setup

build: setup
	$(CARGO) build --workspace --all-targets

harness: setup
	integration/harness/build.sh

helm: setup
	integration/helmtool/build.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Regenerates every committed artefact that is produced from Rust types.
generate:
	$(CARGO) run -q -p ferrolb-cli --bin ferrolb -- generate crds --out deploy/crds
	deploy/render.sh

# CI fails when a committed generated file differs from what the code produces.
check-generated: setup helm
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(CARGO) run -q -p ferrolb-cli --bin ferrolb -- generate crds --out "$$tmp/crds"; \
	if ! diff -ru deploy/crds "$$tmp/crds"; then \
	  echo "error: deploy/crds is stale: run 'make generate' and commit the result" >&2; exit 1; fi; \
	echo "check-generated: deploy/crds is up to date"
	deploy/render.sh --check

unit: setup
	$(CARGO) test --workspace --exclude ferrolb-integration

require-root:
	@if [ "$$(id -u)" -ne 0 ]; then \
	  echo "error: the e2e tests need root (they build a lab of network namespaces)." >&2; \
	  echo "       'make test' runs everything, e2e included: run it as root (sudo make test)." >&2; \
	  exit 1; fi

# The lab runs the ferrolb binaries from target/debug: build them first.
e2e: require-root setup harness helm
	$(CARGO) build --workspace --bins
	FERROLB_HARNESS=$(abspath $(HARNESS)) FERROLB_HELM=$(abspath $(HELM)) $(CARGO) test -p ferrolb-integration -- --test-threads=1

test: require-root lint check-generated unit e2e

demo: require-root setup harness
	$(CARGO) build --release --workspace --bins
	integration/demo.sh

# The benches measure release binaries: the lab is pointed at them (left alone it
# takes whichever of the debug and release builds is newer).
RELEASE_DIR = $(abspath $(or $(CARGO_TARGET_DIR),target))/release
bench: require-root setup harness
	$(CARGO) build --release --workspace --bins
	FERROLB_HARNESS=$(abspath $(HARNESS)) FERROLB_SPEAKER=$(RELEASE_DIR)/ferrolb-speaker \
	  FERROLB_CONTROLLER=$(RELEASE_DIR)/ferrolb-controller $(CARGO) bench --workspace

clean:
	$(CARGO) clean
