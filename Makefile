# Entry points for people and CI. The scripts under hack/ do the work.
.PHONY: test run crds lint build bench bench-verifier bench-gateway bench-ledger testenv-up testenv-down image image-push chart-push sbom release-check

## Everything CI runs: format, lints, unit and end-to-end tests on a local control plane.
test:
	hack/test.sh

## A local control plane, the CRDs and examples/, and the operator in the foreground.
run:
	hack/run.sh

## Regenerate the committed CRD YAML (crds/ and the Helm chart's copy) from the code.
crds:
	cargo run --quiet -- crd --out-dir crds
	cargo run --quiet -- crd --out-dir charts/payi-operator/crds

## Scale benchmark on a fresh local control plane (PAYI_BENCH_APPS, default 10000; PAYI_BENCH_CONCURRENCY
## passes --concurrency to the operator): baseline, cold start, restart; see docs/benchmark.md.
bench:
	hack/testenv.sh down
	KUBECONFIG="$$(hack/testenv.sh up)" cargo bench --bench scale; status=$$?; hack/testenv.sh down; exit $$status

## The gateway verifier: index memory per key, and wrk against it and a static nginx; see docs/benchmark.md.
bench-verifier:
	cargo bench --bench verifier_index --bench verifier_http

## The metering gateway against the provider simulator: added latency (open loop), wrk next to nginx
## proxy_pass, memory per open stream and at 10,000 keys; see docs/benchmark.md.
bench-gateway:
	cargo bench --bench gateway

## The ledger's charge throughput against a real Redis: batched against one event per round trip,
## on loopback and with 0.5 ms added each way; see docs/benchmark.md.
bench-ledger:
	cargo bench --bench ledger_charge

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

build:
	cargo build --release

testenv-up:
	hack/testenv.sh up

testenv-down:
	hack/testenv.sh down

# Release artifacts (docs/release.md). REGISTRY, IMAGE, CHART_REPO and PLATFORMS
# may come from the environment or the command line.
REGISTRY ?= ghcr.io
IMAGE ?= payi/payi-operator
CHART_REPO ?= payi/charts
PLATFORMS ?= linux/amd64 linux/arm64
VERSION := $(shell awk -F'"' '/^version = / { print $$2; exit }' Cargo.toml)

## The operator image as an OCI layout in target/image (static musl binaries, no container engine).
image:
	PLATFORMS="$(PLATFORMS)" hack/image.sh build

## Push target/image to $(REGISTRY)/$(IMAGE):$(VERSION).
image-push:
	hack/image.sh push "$(REGISTRY)/$(IMAGE):$(VERSION)"

## Package the chart and push it to oci://$(REGISTRY)/$(CHART_REPO)/payi-operator.
chart-push:
	hack/chart.sh push "oci://$(REGISTRY)/$(CHART_REPO)"

## CycloneDX SBOM of the binary from Cargo.lock, in target/sbom/.
sbom:
	hack/sbom.sh

## A release tag (TAG=v1.2.3) must name the version in Cargo.toml.
release-check:
	@test "$(TAG)" = "v$(VERSION)" || { echo "tag '$(TAG)' is not v$(VERSION), the version in Cargo.toml" >&2; exit 1; }
