#!/usr/bin/env bash
# Makes sure Debian packages the tests or benchmarks run are installed, and
# prints nothing on stdout but the path of the first command asked for.
#
#   nginx="$(hack/tools/apt.sh nginx)"      # the verifier's end-to-end test
#   wrk="$(hack/tools/apt.sh wrk)"          # make bench-verifier
#
# Each argument is a command that the Debian package of the same name installs.
# A command already on PATH (or in /usr/sbin) is used as it is: no network.
# Otherwise `apt-get update` runs once per call and the packages are installed
# non-interactively; that needs root (or sudo without a password).
set -euo pipefail

find_command() {
  command -v "$1" 2>/dev/null || { [[ -x "/usr/sbin/$1" ]] && echo "/usr/sbin/$1"; } || true
}

missing=()
for name in "$@"; do
  [[ -n "$(find_command "$name")" ]] || missing+=("$name")
done

if ((${#missing[@]})); then
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "apt.sh: ${missing[*]} missing, and installing needs root or sudo" >&2; exit 1; }
    sudo=(sudo -n)
  fi
  # Several test binaries may ask at once; dpkg has its own lock, but waiting on
  # ours keeps the second caller from failing on it.
  lock="${TMPDIR:-/tmp}/payi-operator-apt.lock"
  exec 9>"$lock"
  command -v flock >/dev/null && flock 9
  still=()
  for name in "${missing[@]}"; do
    [[ -n "$(find_command "$name")" ]] || still+=("$name")
  done
  if ((${#still[@]})); then
    echo "apt.sh: installing ${still[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${still[@]}" >&2
  fi
fi

for name in "$@"; do
  path="$(find_command "$name")"
  [[ -n "$path" ]] || { echo "apt.sh: $name is still missing after apt-get install" >&2; exit 1; }
done
find_command "$1"
