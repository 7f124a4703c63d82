#!/usr/bin/env bash
# The operator's OCI image, built and pushed without a container engine.
#
#   hack/image.sh build        static musl binaries -> an OCI image layout (an image
#                              index with one image per platform) in $IMAGE_OUT
#   hack/image.sh push REF     pushes that index to REF (repo:tag) and prints REF@digest
#
# Environment:
#   PLATFORMS        platforms to build, space or comma separated
#                    (default: linux/amd64 linux/arm64)
#   IMAGE_OUT        output directory (default: target/image); it ends up holding
#                      oci/      the OCI image layout (what `push` uploads)
#                      digest    the image index's digest (sha256:...)
#   IMAGE_SOURCE     the org.opencontainers.image.source label
#   SOURCE_DATE_EPOCH  every timestamp in the image (default: the commit's time)
#   REGISTRY_USER, REGISTRY_PASSWORD  (push) credentials for REF's registry;
#                    default GITHUB_ACTOR and GITHUB_TOKEN. No login when empty.
#
# Reproducible: the image holds only the binary and two small files, every tar
# entry has the same owner, mode and time, and the image's times are the commit's.
# Two builds of one commit give the same digest (tests/e2e_image.rs checks it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

repo="$(pwd)"
out="${IMAGE_OUT:-target/image}"
platforms="${PLATFORMS:-linux/amd64 linux/arm64}"
platforms="${platforms//,/ }"
source_url="${IMAGE_SOURCE:-https://github.com/payi/payi-operator}"

log() { echo "image.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Debian/Ubuntu packages this script needs, installed only when missing.
apt_install() {
  command -v apt-get >/dev/null || die "needs $* (Debian/Ubuntu packages); install them by hand"
  local sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  log "installing $*"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

# The Rust target and the C compiler (ring compiles C and assembly) of a platform.
triple_of() {
  case "$1" in
    linux/amd64) echo x86_64-unknown-linux-musl ;;
    linux/arm64) echo aarch64-unknown-linux-musl ;;
    *) die "unsupported platform $1 (linux/amd64 or linux/arm64)" ;;
  esac
}
cc_of() {
  case "$1" in
    linux/amd64) echo musl-gcc ;;
    # No musl cross compiler is packaged; the glibc one compiles ring's
    # freestanding C and links against Rust's self-contained musl objects.
    linux/arm64) echo aarch64-linux-gnu-gcc ;;
  esac
}
# The Debian packages giving a platform's C compiler and the C headers ring includes.
packages_of() {
  case "$1" in
    linux/amd64) echo musl-tools ;;
    linux/arm64) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
  esac
}
cc_ready() {
  case "$1" in
    linux/amd64) command -v musl-gcc >/dev/null ;;
    # Without the cross headers gcc falls back to the host's and fails on <bits/...>.
    linux/arm64) command -v aarch64-linux-gnu-gcc >/dev/null && [[ -f /usr/aarch64-linux-gnu/include/assert.h ]] ;;
  esac
}

# Builds every platform's binary in one cargo run (cached in target/<triple>/release).
build_binaries() {
  local targets=() env=() installed
  installed="$(rustup target list --installed)"
  for platform in $platforms; do
    local triple cc upper lower
    triple="$(triple_of "$platform")"
    cc="$(cc_of "$platform")"
    grep -qx "$triple" <<<"$installed" || rustup target add "$triple" >&2
    # shellcheck disable=SC2046 # one word per package
    cc_ready "$platform" || apt_install $(packages_of "$platform")
    upper="$(tr 'a-z-' 'A-Z_' <<<"$triple")"
    lower="${triple//-/_}"
    targets+=(--target "$triple")
    env+=("CC_$lower=$cc")
    # musl-gcc would link a dynamic executable; rustc's default (cc with Rust's own
    # musl start files) links a static one. The arm64 one needs the cross linker.
    [[ "$platform" == linux/amd64 ]] || env+=("CARGO_TARGET_${upper}_LINKER=$cc")
    # Paths into this checkout and the cargo home end up in panic messages;
    # mapping them to fixed names keeps the binary independent of where it was built.
    env+=("CARGO_TARGET_${upper}_RUSTFLAGS=--remap-path-prefix=$repo=/src --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo")
  done
  # ring's build script reruns when certain variables change (through the cc crate:
  # SOURCE_DATE_EPOCH among them; CARGO_MANIFEST_DIR, which cargo sets for the tests
  # that run this script), and with it everything that depends on ring. So cargo
  # gets the same environment from a shell, a test or CI, without a time that
  # changes with every commit (rustc embeds none anyway).
  local unset=(-u SOURCE_DATE_EPOCH -u OUT_DIR)
  for var in $(compgen -e); do
    case "$var" in CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_* | CARGO_BIN_* | CARGO_TARGET_TMPDIR | CARGO_PRIMARY_PACKAGE | CARGO_RUSTC_CURRENT_DIR) unset+=(-u "$var") ;; esac
  done
  log "cargo build --release ${targets[*]}"
  env "${unset[@]}" "${env[@]}" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin payi-operator "${targets[@]}" >&2
}

# The single layer: the binary at /payi-operator, and /etc/passwd and /etc/group
# naming the non-root user 65532 the image runs as (as distroless images do).
layer_tar() { # <binary> <tarball>
  local root
  root="$(mktemp -d)"
  install -m 0755 "$1" "$root/payi-operator"
  install -d -m 0755 "$root/etc"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
  tar --create --file "$2" --directory "$root" --format=ustar --sort=name \
    --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    etc payi-operator
  rm -rf "$root"
}

# A registry on loopback for the duration of this script: crane edits images
# in a registry, and the finished index is pulled from it into $out/oci.
start_registry() {
  local log_file="$work/registry.log" port=""
  "$crane" registry serve --address 127.0.0.1:0 2>"$log_file" &
  registry_pid=$!
  for _ in $(seq 100); do
    port="$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$log_file")"
    [[ -n "$port" ]] && break
    kill -0 "$registry_pid" 2>/dev/null || die "crane registry serve exited: $(cat "$log_file")"
    sleep 0.1
  done
  [[ -n "$port" ]] || die "crane registry serve did not start"
  registry="127.0.0.1:$port"
}

build() {
  command -v jq >/dev/null || apt_install jq
  local version revision created
  version="$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)"
  license="$(awk -F'"' '/^license = / { print $2; exit }' Cargo.toml)"
  revision="$(git rev-parse HEAD)"
  epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
  created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
  [[ -z "$(git status --porcelain --untracked-files=no)" ]] \
    || log "warning: the work tree has changes; the image is labelled with $revision all the same"

  build_binaries

  work="$(mktemp -d)"
  registry_pid=""
  trap '[[ -z "$registry_pid" ]] || kill "$registry_pid" 2>/dev/null; rm -rf "$work"' EXIT
  start_registry

  local repo_ref="$registry/payi-operator" manifests=()
  for platform in $platforms; do
    local arch="${platform#linux/}" triple ref
    triple="$(triple_of "$platform")"
    layer_tar "target/$triple/release/payi-operator" "$work/$arch.tar"
    ref="$repo_ref:$arch"
    "$crane" append --oci-empty-base --new_layer "$work/$arch.tar" --new_tag "$ref" >/dev/null
    # Same entrypoint, arguments, user and port as the Dockerfile.
    "$crane" mutate "$ref" --tag "$ref" --set-platform "$platform" \
      --entrypoint /payi-operator --cmd run,--leader-election,--log-format=json \
      --user 65532:65532 --exposed-ports 8080/tcp \
      --label "org.opencontainers.image.source=$source_url" \
      --label "org.opencontainers.image.version=$version" \
      --label "org.opencontainers.image.revision=$revision" \
      --label "org.opencontainers.image.licenses=$license" \
      --label "org.opencontainers.image.created=$created" \
      --label "org.opencontainers.image.title=payi-operator" >/dev/null
    # crane leaves the config's times at zero; the commit's time says more and is as stable.
    "$crane" config "$ref" | jq -c --arg t "$created" '.created = $t | .history |= map(.created = $t)' \
      | "$crane" edit config "$ref" --tag "$ref" >/dev/null
    manifests+=(--manifest "$repo_ref@$("$crane" digest "$ref")")
  done
  "$crane" index append "${manifests[@]}" --tag "$repo_ref:index" >/dev/null

  rm -rf "$out/oci"
  mkdir -p "$out"
  "$crane" pull --format=oci "$repo_ref:index" "$out/oci"
  "$crane" digest "$repo_ref:index" >"$out/digest"
  log "built $out/oci for ${platforms// /, }: $(cat "$out/digest")"
}

push() { # <repo:tag>
  local ref="$1" host="${1%%/*}" user="${REGISTRY_USER:-${GITHUB_ACTOR:-}}" password="${REGISTRY_PASSWORD:-${GITHUB_TOKEN:-}}"
  [[ -f "$out/digest" ]] || die "no image in $out; run 'make image' first"
  if [[ -n "$password" ]]; then
    "$crane" auth login "$host" --username "$user" --password-stdin <<<"$password" >&2
  fi
  # The layout holds one entry, the image index, which crane pushes as is
  # (--index would wrap the layout's own index.json around it: another digest).
  "$crane" push "$out/oci" "$ref" >&2
  # The digest was fixed at build time; the registry must agree.
  local pushed
  pushed="$("$crane" digest "$ref")"
  [[ "$pushed" == "$(cat "$out/digest")" ]] || die "$ref has digest $pushed, the build made $(cat "$out/digest")"
  echo "${ref%:*}@$pushed"
}

crane="$(hack/tools/build.sh crane)"
case "${1:-build}" in
  build) build ;;
  push) [[ $# == 2 ]] || die "usage: hack/image.sh push REPOSITORY:TAG"; push "$2" ;;
  *) die "usage: hack/image.sh build | push REPOSITORY:TAG" ;;
esac
