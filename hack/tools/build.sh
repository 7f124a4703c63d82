#!/usr/bin/env bash
# Builds a Go tool pinned in hack/tools/<tool>/go.mod from the Go module proxy,
# into a cache outside the repository keyed by the pinned version, and prints the
# path of the binary on stdout (everything else goes to stderr). The tools:
#   helm   (default) lints, renders, packages and pushes charts/payi-operator
#   crane  assembles, pushes and unpacks the OCI image; serves the tests' registry
#
#   helm="$(hack/tools/build.sh)" && "$helm" lint charts/payi-operator
#   crane="$(hack/tools/build.sh crane)" && "$crane" version
#
# A cache hit is an awk, a sha256sum and a string comparison: milliseconds.
# The cache root is $PAYI_CACHE_DIR, else $XDG_CACHE_HOME/payi-operator, else
# ~/.cache/payi-operator, the same root hack/testenv/build.sh uses.
set -euo pipefail

tool="${1:-helm}"
case "$tool" in
  helm) module=helm.sh/helm/v3; package=helm.sh/helm/v3/cmd/helm ;;
  crane) module=github.com/google/go-containerregistry; package=github.com/google/go-containerregistry/cmd/crane ;;
  *) echo "build.sh: unknown tool '$tool' (helm or crane)" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/$tool"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

module_version() { # <go.mod> <module path>
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}

version="$(module_version "$mod/go.mod" "$module")"
[[ -n "$version" ]] || { echo "build.sh: cannot read the pinned $tool version from $mod/go.mod" >&2; exit 1; }

cache_root="${PAYI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/payi-operator}"
bin_dir="$cache_root/tools/$tool-$version"
bin="$bin_dir/$tool"
# The stamp records the whole dependency graph: an edited go.sum rebuilds even
# when the tool's version stays the same.
stamp_want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)"

if [[ -x "$bin" && -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$stamp_want" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin_dir"
# Test binaries or scripts started together may all miss the cache: one builds,
# the others wait for it and then take the fast path (flock is util-linux; where
# it is missing, concurrent builds still end with the same binary).
if command -v flock >/dev/null; then
  exec 9>"$bin_dir/.lock"
  flock 9
  if [[ -x "$bin" && -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$stamp_want" ]]; then
    echo "$bin"
    exit 0
  fi
fi
rm -f "$bin_dir/.stamp"
echo "build.sh: building $tool $version into $bin_dir (first run: a few minutes)" >&2

ldflags="-s -w"
if [[ "$tool" == helm ]]; then
  # Helm's own Makefile stamps the release version and the Kubernetes minor of its
  # client-go (the default .Capabilities.KubeVersion and the deprecation lint's
  # target); the same values are stamped here so `helm version` and `helm lint`
  # behave as a release binary does. The commit is not known without a git
  # checkout, so it is left empty.
  client_go="$(cd "$mod" && go list -m -f '{{.Version}}' k8s.io/client-go)"
  k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
  ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
  ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
fi

start=$SECONDS
# Build to a temporary name and rename, so an interrupted build never leaves a
# half-written binary behind the expected path.
(cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp.$$" "$package")
mv -f "$bin.tmp.$$" "$bin"

echo "$stamp_want" > "$bin_dir/.stamp"
echo "build.sh: built $tool $version in $((SECONDS - start))s" >&2
echo "$bin"
