#!/usr/bin/env bash
# A CycloneDX SBOM of the operator binary, from Cargo.lock, by cargo-cyclonedx
# (the CycloneDX project's own tool, installed from crates.io at the version pinned
# below and cached like the Go tools). Prints the SBOM's path:
#
#   sbom="$(hack/sbom.sh)"     # target/sbom/payi-operator.cdx.json
#
# The SBOM lists what the image's binary is built from: the crates of the
# payi-operator binary for the image's Linux targets, without dev-dependencies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=0.5.9
out="${SBOM_OUT:-target/sbom}"
cache_root="${PAYI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/payi-operator}"
root="$cache_root/tools/cargo-cyclonedx-$version"
bin="$root/bin/cargo-cyclonedx"

if [[ ! -x "$bin" ]]; then
  echo "sbom.sh: installing cargo-cyclonedx $version into $root (first run: a few minutes)" >&2
  cargo install --locked --quiet cargo-cyclonedx --version "$version" --root "$root" >&2
fi

# cargo-cyclonedx writes next to Cargo.toml; the result is moved under target/.
name=payi-operator.cdx
"$bin" cyclonedx --format json --spec-version 1.5 --target x86_64-unknown-linux-musl \
  --override-filename "$name" >&2
mkdir -p "$out"
mv -f "$name.json" "$out/$name.json"
echo "$out/$name.json"
