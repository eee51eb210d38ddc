#!/usr/bin/env bash
# One-shot set-up: a Python 3.8-3.10 virtual environment in .venv with xumx and its test
# extras, and the ffmpeg binaries. Safe to re-run: it does nothing when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv

say() { echo "[setup] $*" >&2; }
die() { echo "[setup] error: $*" >&2; exit 1; }

supported() {  # is "$1" a Python interpreter between 3.8 and 3.10?
  "$1" -c 'import sys; sys.exit(not ((3, 8) <= sys.version_info[:2] <= (3, 10)))' 2>/dev/null
}

find_python() {
  local c v
  if [ -n "${XUMX_PYTHON:-}" ]; then
    supported "$XUMX_PYTHON" || die "XUMX_PYTHON=$XUMX_PYTHON is not Python 3.8-3.10"
    echo "$XUMX_PYTHON"; return
  fi
  for c in python3.10 python3.9 python3.8 python3 python; do
    if command -v "$c" >/dev/null 2>&1 && supported "$(command -v "$c")"; then
      command -v "$c"; return
    fi
  done
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for v in 3.10 3.9 3.8; do
    for c in $(ls -d "$root"/versions/"$v".* 2>/dev/null | sort -rV); do
      if supported "$c/bin/python"; then echo "$c/bin/python"; return; fi
    done
  done
  if command -v uv >/dev/null 2>&1; then
    say "no Python 3.8-3.10 found; asking uv for 3.10"
    uv python install 3.10 >&2 && c="$(uv python find 3.10)" && supported "$c" && { echo "$c"; return; }
  fi
  die "nnabla needs Python 3.8, 3.9 or 3.10 and none was found (PATH, pyenv, uv). Install one, e.g. 'pyenv install 3.10', or set XUMX_PYTHON=/path/to/python3.10"
}

ensure_ffmpeg() {
  if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then return; fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing ffmpeg with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >&2 ||
      die "apt-get could not install ffmpeg; install the Debian package 'ffmpeg' by hand"
  else
    die "ffmpeg and ffprobe are needed (musdb, mp3 input/output): install them, e.g. 'sudo apt-get install ffmpeg' or 'conda install -c conda-forge ffmpeg'"
  fi
}

ensure_venv() {
  local stamp="$VENV/.xumx-installed" want
  want="$(cat setup.py scripts/setup.sh | sha1sum | cut -c1-40)"
  if [ -x "$VENV/bin/python" ] && supported "$VENV/bin/python" && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  if ! { [ -x "$VENV/bin/python" ] && supported "$VENV/bin/python"; }; then
    local py; py="$(find_python)"
    say "creating $VENV with $py ($("$py" --version 2>&1))"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  say "installing xumx and its test extras into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e '.[test,mpi]' >&2
  echo "$want" > "$stamp"
}

ensure_ffmpeg
ensure_venv
say "ready: $VENV/bin/python ($("$VENV/bin/python" --version 2>&1))"
