#!/usr/bin/env bash
# Builds promtool from the Prometheus module pinned in hack/tools/promtool/go.mod,
# from the Go module proxy, into a cache outside the repository keyed by the
# pinned version, and prints the path of the binary on stdout (everything else
# goes to stderr). The same scheme as hack/tools/build.sh uses for Helm.
#
#   promtool="$(hack/tools/promtool.sh)" && "$promtool" check rules charts/payi-operator/files/verifier-rules.yaml
#
# The Prometheus module is large: the first build downloads a few hundred modules
# and compiles them (see docs/gateway.md for the time it took); a cache hit is
# milliseconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/promtool"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

module="github.com/prometheus/prometheus"
version="$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod")"
[[ -n "$version" ]] || { echo "promtool.sh: cannot read the pinned $module version from $mod/go.mod" >&2; exit 1; }

cache_root="${PAYI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/payi-operator}"
bin_dir="$cache_root/tools/promtool-$version"
bin="$bin_dir/promtool"
stamp_want="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -d' ' -f1)"

fresh() { [[ -x "$bin" && -f "$bin_dir/.stamp" && "$(cat "$bin_dir/.stamp")" == "$stamp_want" ]]; }
if fresh; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin_dir"
if command -v flock >/dev/null; then
  exec 9>"$bin_dir/.lock"
  flock 9
  if fresh; then
    echo "$bin"
    exit 0
  fi
fi
rm -f "$bin_dir/.stamp"
echo "promtool.sh: building promtool from $module $version into $bin_dir (first run: several minutes)" >&2

# Prometheus tags its Go module v0.3<minor>.<patch> for release 3.<minor>.<patch>
# (v0.316.0 is 3.16.0); stamp the release version the way its Makefile (promu) does.
IFS=. read -r _ module_minor patch <<<"${version#v}"
release="3.$((10#$module_minor - 300)).$patch"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"

start=$SECONDS
(cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp.$$" "$module/cmd/promtool")
mv -f "$bin.tmp.$$" "$bin"
echo "$stamp_want" > "$bin_dir/.stamp"
echo "promtool.sh: built promtool $release in $((SECONDS - start))s" >&2
echo "$bin"
