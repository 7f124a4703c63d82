#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from the Go modules pinned in hack/testenv/{kube,etcd}, into a cache outside the
# repository keyed by the pinned versions. Prints the directory holding the binaries.
#
# A cache hit costs one `go list`-free grep and a checksum comparison: seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

module_version() { # <go.mod> <module path>
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}

k8s_version="$(module_version "$here/kube/go.mod" k8s.io/kubernetes)"
etcd_version="$(module_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || { echo "build.sh: cannot read pinned versions" >&2; exit 1; }

cache_root="${PAYI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/payi-operator}"
bin_dir="$cache_root/testenv/$k8s_version-etcd-$etcd_version"
# The stamp records the exact dependency graph, so an edited go.sum rebuilds even
# when the headline versions stay the same.
stamp_want="$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" | sha256sum | cut -d' ' -f1)"

if [[ -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$stamp_want" ]]; then
  echo "$bin_dir"
  exit 0
fi

mkdir -p "$bin_dir"
rm -f "$bin_dir/.stamp"
echo "build.sh: building Kubernetes $k8s_version and etcd $etcd_version into $bin_dir (first run: several minutes)" >&2

minor="${k8s_version#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

start=$SECONDS
(cd "$here/kube" && go build -trimpath -ldflags "-s -w $kube_ldflags" -o "$bin_dir/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd" go.etcd.io/etcd/server/v3)

echo "$stamp_want" > "$bin_dir/.stamp"
echo "build.sh: built in $((SECONDS - start))s" >&2
echo "$bin_dir"
