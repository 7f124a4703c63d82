#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end tests
# against a real control plane, which this script starts (building it on first
# use) and stops again, even when a test fails. A control plane that was already
# running when this script began is reused and left running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

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

echo "==> cargo test (unit and end-to-end)"
cargo test --all-targets --no-fail-fast -- "$@"
