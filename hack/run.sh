#!/usr/bin/env bash
# Brings up the local control plane, installs the CRDs, applies examples/ and
# runs the operator in the foreground. Ctrl-C stops the operator; the control
# plane keeps running until `hack/testenv.sh down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --quiet
KUBECONFIG="$(hack/testenv.sh up)"
export KUBECONFIG
kubectl="$(dirname "$KUBECONFIG")/kubectl"

"$kubectl" apply --server-side --field-manager=payi-quickstart -f crds/
"$kubectl" wait --for condition=established --timeout=60s -f crds/ >/dev/null
"$kubectl" apply --server-side --field-manager=payi-quickstart -f examples/

cat >&2 <<MSG

The operator runs below; in another terminal:
  export KUBECONFIG=$KUBECONFIG
  $kubectl get payi -A
  $kubectl -n engineering-prod get secret content-creator-prod-payi-key -o jsonpath='{.data.PAYI_API_KEY}' | base64 -d
Stop the control plane afterwards with: hack/testenv.sh down

MSG
exec target/debug/payi-operator run
