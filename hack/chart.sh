#!/usr/bin/env bash
# Packages charts/payi-operator and pushes it to an OCI registry.
#
#   hack/chart.sh push oci://REGISTRY/REPOSITORY   prints the pushed chart's reference
#
# The chart lands at oci://REGISTRY/REPOSITORY/payi-operator:<chart version>.
# Environment:
#   CHART_OUT        where the packaged .tgz goes (default: target/chart)
#   PLAIN_HTTP=1     talk plain HTTP to the registry (the tests' loopback registry)
#   REGISTRY_USER, REGISTRY_PASSWORD  credentials; default GITHUB_ACTOR and
#                    GITHUB_TOKEN. No login when empty.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "chart.sh: $*" >&2; exit 1; }
[[ "${1:-}" == push && $# == 2 && "$2" == oci://* ]] || die "usage: hack/chart.sh push oci://REGISTRY/REPOSITORY"
dest="$2"
out="${CHART_OUT:-target/chart}"
user="${REGISTRY_USER:-${GITHUB_ACTOR:-}}"
password="${REGISTRY_PASSWORD:-${GITHUB_TOKEN:-}}"
flags=()
[[ "${PLAIN_HTTP:-}" != 1 ]] || flags+=(--plain-http)

helm="$(hack/tools/build.sh)"
rm -rf "$out"
mkdir -p "$out"
"$helm" lint --strict charts/payi-operator >&2
"$helm" package charts/payi-operator --destination "$out" >&2
chart=("$out"/payi-operator-*.tgz)

if [[ -n "$password" ]]; then
  host="${dest#oci://}"
  "$helm" registry login "${host%%/*}" --username "$user" --password-stdin "${flags[@]}" <<<"$password" >&2
fi
# helm push reports "Pushed: <ref>" and "Digest: <digest>" on stderr.
"$helm" push "${chart[0]}" "$dest" "${flags[@]}" 2>&1 | tee "$out/push.log" >&2
ref="$(sed -n 's/^Pushed: //p' "$out/push.log")"
digest="$(sed -n 's/^Digest: //p' "$out/push.log")"
[[ -n "$ref" && -n "$digest" ]] || die "helm push did not report what it pushed"
echo "${ref%:*}@$digest"
