#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests
# against a real control plane, which this script starts (building it on first
# use) and stops again, even when a test fails. A control plane that was already
# running when this script began is reused and left running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings (with and without fault injection)"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features fault-injection -- -D warnings

started=false
if ! hack/testenv.sh status 2>/dev/null; then
  started=true
fi
echo "==> control plane"
KUBECONFIG="$(hack/testenv.sh up)"
export KUBECONFIG
if $started; then
  trap 'hack/testenv.sh down' EXIT
fi

echo "==> helm (built once, cached)"
helm="$(hack/tools/build.sh)"
export PAYI_HELM="$helm"

# The chart's recording rules, exactly the file its PrometheusRule renders.
echo "==> promtool check rules, promtool test rules (promtool built once, cached)"
promtool="$(hack/tools/promtool.sh)"
"$promtool" check rules charts/payi-operator/files/verifier-rules.yaml charts/payi-operator/files/gateway-rules.yaml \
  charts/payi-operator/files/limits-rules.yaml examples/envoy-ai-gateway/rules.yaml
"$promtool" test rules tests/promtool/verifier-rules.test.yaml tests/promtool/gateway-rules.test.yaml \
  tests/promtool/limits-rules.test.yaml tests/promtool/envoy-ai-gateway-rules.test.yaml

# The operator image (tests/e2e_image.rs pushes and runs it). Its release build
# for x86_64-unknown-linux-musl is the slow part: minutes cold, cached in target/
# after; run here so its time shows as its own step and the tests hit the cache.
echo "==> operator image for linux/amd64 (hack/image.sh; release build cached in target/)"
PLATFORMS=linux/amd64 IMAGE_OUT=target/e2e-image/main hack/image.sh build

# Install the chart (everything but the CRDs, which the tests apply from crds/)
# into payi-system, and run the operator under test as the chart's
# ServiceAccount: the end-to-end tests then prove its RBAC is sufficient.
echo "==> install the Helm chart's objects into payi-system"
kubectl="$(dirname "$KUBECONFIG")/kubectl"
"$kubectl" create namespace payi-system --dry-run=client -o yaml | "$kubectl" apply --server-side -f - >/dev/null
"$helm" template payi-operator charts/payi-operator --namespace payi-system --set gateway.enabled=true \
  | "$kubectl" apply --server-side --field-manager=payi-tests --force-conflicts -f - >/dev/null
export PAYI_TEST_OPERATOR_AS=system:serviceaccount:payi-system:payi-operator
export PAYI_TEST_LEASE_NAMESPACE=payi-system
# The verifier under test (tests/e2e_verifier.rs) runs as the chart's verifier ServiceAccount.
export PAYI_TEST_VERIFIER_AS=system:serviceaccount:payi-system:payi-operator-verifier
# The gateway under test (tests/e2e_gateway.rs) runs as the chart's gateway ServiceAccount.
export PAYI_TEST_GATEWAY_AS=system:serviceaccount:payi-system:payi-operator-gateway

# Debian packages the end-to-end tests run for real: nginx (the verifier behind
# auth_request), redis-server and redis-sentinel (the limits ledger, its failover;
# redis-cli comes with redis-server), openssl (the ledger TLS tests' throwaway CA). Installed once.
echo "==> nginx, redis-server, redis-sentinel, openssl (hack/tools/apt.sh; installed when missing)"
hack/tools/apt.sh nginx redis-server redis-sentinel openssl >/dev/null

# The provider SDKs the gateway's tests drive (openai, anthropic, payi from PyPI),
# in a cached virtual environment; made here so its time shows as its own step.
echo "==> provider SDKs venv (hack/tools/sdk-venv.sh; cached)"
hack/tools/sdk-venv.sh >/dev/null

echo "==> cargo test (unit and end-to-end; operator runs as $PAYI_TEST_OPERATOR_AS)"
# fault-injection compiles the PAYI_CRASH_AT crash points into the binary the crash tests run.
cargo test --features fault-injection --lib --bins --tests --no-fail-fast -- "$@"
