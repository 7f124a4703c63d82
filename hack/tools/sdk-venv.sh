#!/usr/bin/env bash
# Makes the Python virtual environment with the provider SDKs pinned in
# hack/tools/sdk/requirements.txt (openai, anthropic, payi) that the gateway's
# end-to-end tests drive it with (tests/sdk/drive.py), and prints the path of its
# python on stdout (everything else goes to stderr).
#
#   python="$(hack/tools/sdk-venv.sh)" && "$python" tests/sdk/drive.py list
#
# The environment lives outside the repository, in the cache root
# hack/tools/build.sh uses ($PAYI_CACHE_DIR, else $XDG_CACHE_HOME/payi-operator,
# else ~/.cache/payi-operator), under tools/sdk-venv-<key>. The key is a hash of
# requirements.txt and of the interpreter that made it, so editing the pins, or a
# machine whose python3 is another one, builds a new environment; nothing is ever
# upgraded in place.
#
# Cost: a cache hit is one python3 start and a sha256sum, tens of milliseconds. A
# cold build (venv, then pip installing about thirty pinned wheels from PyPI with
# an empty pip cache) took 12 s here; with pip's own cache warm it is about 6 s.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/sdk/requirements.txt"
[[ -f "$requirements" ]] || { echo "sdk-venv.sh: $requirements is missing" >&2; exit 1; }

has_venv() { # <python>: can it make a virtual environment with pip in it?
  "$1" -c 'import venv, ensurepip' >/dev/null 2>&1
}

# The interpreter: python3 on PATH (pyenv's on the development machines), else
# Debian's. Debian splits `venv`'s ensurepip into python3-venv; it is installed
# through apt.sh when neither interpreter can make a venv. apt.sh takes command
# names and checks each is on PATH afterwards; python3-venv installs no command,
# so that last check of its fails by design and the module is checked here instead.
python="$(command -v python3 || true)"
if [[ -z "$python" ]] || ! has_venv "$python"; then
  if [[ -x /usr/bin/python3 ]] && has_venv /usr/bin/python3; then
    python=/usr/bin/python3
  else
    echo "sdk-venv.sh: ${python:-python3} cannot make a virtual environment (no venv or ensurepip); installing Debian's python3-venv" >&2
    apt_log="$("$here/apt.sh" python3-venv 2>&1 >/dev/null || true)"
    python=/usr/bin/python3
    has_venv "$python" || {
      echo "$apt_log" >&2
      echo "sdk-venv.sh: $python still has no venv/ensurepip after installing python3-venv (apt.sh needs root or sudo)" >&2
      exit 1
    }
  fi
fi

identity="$("$python" -c 'import sys; print(sys.version); print(sys.executable)')"
key="$( { cat "$requirements"; echo "$identity"; } | sha256sum | cut -c1-16)"

cache_root="${PAYI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/payi-operator}"
venv="$cache_root/tools/sdk-venv-$key"
out="$venv/bin/python"

ready() { [[ -x "$out" && -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$key" ]]; }

if ready; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root/tools"
# Test binaries started together may all miss the cache: one builds, the others
# wait for it and then take the fast path (flock is util-linux; where it is
# missing, concurrent builds may collide, so a lone caller is assumed).
if command -v flock >/dev/null; then
  exec 9>"$venv.lock"
  flock 9
  if ready; then
    echo "$out"
    exit 0
  fi
fi

# No stamp: nothing or a half-made environment (an interrupted build) is there.
# The stamp is written last, so a build that stops midway is redone whole.
rm -rf "$venv"
start=$SECONDS
echo "sdk-venv.sh: making the SDK environment $venv with $python (first run: a few seconds to a minute)" >&2
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off -q \
  -r "$requirements" >&2
"$venv/bin/python" -c 'import openai, anthropic, payi' >&2
echo "$key" > "$venv/.stamp"
echo "sdk-venv.sh: made $venv in $((SECONDS - start))s" >&2
echo "$out"
