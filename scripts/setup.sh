#!/usr/bin/env bash
# One-shot set-up: a Python 3.8-3.10 virtual environment in .venv with xumx (nnabla included)
# and its test extras; a second one in .venv-latest on the newest CPython found (3.11 or newer,
# no nnabla, the newest numpy) for the separation tests; and the ffmpeg binaries.
# --only-venv: .venv and ffmpeg only (what `make demo` needs).
# Safe to re-run: it does nothing when all is in place.
# XUMX_PYTHON / XUMX_PYTHON_LATEST pick the interpreters instead of the search.
set -euo pipefail
cd "$(dirname "$0")/.."
ONLY_VENV=0
for arg in "$@"; do
  case "$arg" in
    --only-venv) ONLY_VENV=1 ;;
    *) echo "[setup] error: unknown option $arg (known: --only-venv)" >&2; exit 2 ;;
  esac
done
VENV=.venv
VENV_LATEST=.venv-latest

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

py_version() {  # "3 13" for a CPython interpreter "$1" (nothing for another implementation)
  "$1" -c 'import sys; sys.implementation.name == "cpython" and print(*sys.version_info[:2])' 2>/dev/null
}

newer_than_nnabla() {  # is "$1" CPython 3.11 or newer?
  local v; v="$(py_version "$1")" && [ -n "$v" ] && [ "${v% *}" = 3 ] && [ "${v#* }" -ge 11 ]
}

find_latest_python() {  # the newest CPython on PATH, in pyenv or from uv (3.11 or newer)
  local c best="" best_minor=-1 minor v
  if [ -n "${XUMX_PYTHON_LATEST:-}" ]; then
    newer_than_nnabla "$XUMX_PYTHON_LATEST" || die "XUMX_PYTHON_LATEST=$XUMX_PYTHON_LATEST is not CPython 3.11 or newer"
    echo "$XUMX_PYTHON_LATEST"; return
  fi
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for c in $(for minor in $(seq 30 -1 11); do command -v "python3.$minor" 2>/dev/null || true; done) \
           $(command -v python3 2>/dev/null || true) \
           $(ls -d "$root"/versions/3.* 2>/dev/null | grep -E '/3\.[0-9]+\.[0-9]+$' | sort -rV | sed 's|$|/bin/python|'); do
    newer_than_nnabla "$c" || continue
    v="$(py_version "$c")"; minor="${v#* }"
    if [ "$minor" -gt "$best_minor" ]; then best="$c"; best_minor="$minor"; fi
  done
  if [ -z "$best" ] && command -v uv >/dev/null 2>&1; then
    say "no CPython 3.11 or newer found; asking uv for the newest"
    uv python install >&2 && c="$(uv python find '>=3.11')" && newer_than_nnabla "$c" && best="$c"
  fi
  [ -n "$best" ] || die "the separation tests need a CPython 3.11 or newer beside 3.8-3.10 and none was found (PATH, pyenv, uv). Install one, e.g. 'pyenv install 3.13' or 'uv python install 3.13', or set XUMX_PYTHON_LATEST=/path/to/python3.13"
  echo "$best"
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

ensure_latest_venv() {  # pip install . (not editable): what a user on a current Python gets
  local stamp="$VENV_LATEST/.xumx-installed" want py
  want="$(cat setup.py scripts/setup.sh | sha1sum | cut -c1-40)"
  py="$(find_latest_python)"
  if [ -x "$VENV_LATEST/bin/python" ] && [ "$(py_version "$VENV_LATEST/bin/python")" = "$(py_version "$py")" ] \
     && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  if ! { [ -x "$VENV_LATEST/bin/python" ] && [ "$(py_version "$VENV_LATEST/bin/python")" = "$(py_version "$py")" ]; }; then
    say "creating $VENV_LATEST with $py ($("$py" --version 2>&1))"
    rm -rf "$VENV_LATEST"
    "$py" -m venv "$VENV_LATEST"
  fi
  say "installing xumx and its test and mpi extras into $VENV_LATEST (no nnabla, the newest numpy)"
  "$VENV_LATEST/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV_LATEST/bin/python" -m pip install -q --upgrade '.[test,mpi]' >&2
  echo "$want" > "$stamp"
}

ensure_ffmpeg
ensure_venv
if [ "$ONLY_VENV" = 1 ]; then
  say "ready: $VENV/bin/python ($("$VENV/bin/python" --version 2>&1))"
  exit 0
fi
ensure_latest_venv
say "ready: $VENV/bin/python ($("$VENV/bin/python" --version 2>&1)) and $VENV_LATEST/bin/python ($("$VENV_LATEST/bin/python" --version 2>&1), numpy $("$VENV_LATEST/bin/python" -c 'import numpy; print(numpy.__version__)'))"
