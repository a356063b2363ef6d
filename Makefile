# ferrolb: the two commands a person needs are `make demo` and `make test`.
# Both do all set-up on a fresh Debian machine (as root).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
# Where every built artefact is: scripts/paths.sh, for make and the scripts alike.
PATHS := scripts/paths.sh
export FERROLB_HARNESS := $(shell $(PATHS) harness)
export FERROLB_HELM := $(shell $(PATHS) helm)
# kubectl of the lab's Kubernetes version is built with the harness: tests and
# the demo use it, whatever kubectl the machine has.
export PATH := $(dir $(shell $(PATHS) kubectl)):$(PATH)

.PHONY: all setup build bins harness helm lint fmt test unit e2e demo bench stress generate check-generated clean require-root

all: build

setup:
	@scripts/setup.sh setup

build: setup
	$(CARGO) build --workspace --all-targets

# The binaries the lab runs (ferrolb, the lab tool), in the profile the lab
# is told to use (FERROLB_PROFILE).
bins: setup
	@if [ "$(FERROLB_PROFILE)" = release ]; then \
	  echo "==> building ferrolb's binaries, release (first time: 8-15 min on 2 cores; later: seconds)"; \
	  $(CARGO) build --release --workspace --bins; \
	else \
	  echo "==> building ferrolb's binaries (first time: 4-8 min on 2 cores; later: seconds)"; \
	  $(CARGO) build --workspace --bins; \
	fi

harness: setup
	@integration/harness/build.sh

helm: setup
	@integration/helmtool/build.sh

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

# The demo, the e2e tests and the lab share one debug build; the benches
# measure release binaries.
demo e2e stress: export FERROLB_PROFILE := debug
bench: export FERROLB_PROFILE := release

e2e: require-root harness helm bins
	$(CARGO) test -p ferrolb-integration -- --test-threads=1

test: require-root lint check-generated unit e2e

demo: require-root harness bins
	integration/demo.sh

bench: require-root harness bins
	$(CARGO) bench --workspace

# The lab's daemon supervision under load, longer than make test runs it.
stress: require-root harness bins
	FERROLB_STRESS_BRINGUPS=$${FERROLB_STRESS_BRINGUPS:-20} FERROLB_STRESS_SPAWNS=$${FERROLB_STRESS_SPAWNS:-2000} \
	  $(CARGO) test -p ferrolb-integration --test lab_stress -- --test-threads=1 --nocapture

clean:
	$(CARGO) clean
