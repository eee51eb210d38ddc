#!/usr/bin/env bash
# Checks that spleeter-web-f27ed9c.patch applies to Spleeter Web at commit f27ed9c and that the
# patched modules and x_umx_separator.py compile there.
#
#   integrations/spleeter-web/check_patch.sh PATH   # PATH: a clone of github.com/JeffreyCA/spleeter-web
#                                                   # (its work tree or its bare git directory)
# COMMIT=<sha> checks against another commit (default f27ed9c).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 1 ] || { echo "usage: $0 SPLEETER_WEB_CLONE" >&2; exit 2; }
GIT_DIR_ARG="$1"
[ -d "$GIT_DIR_ARG/.git" ] && GIT_DIR_ARG="$GIT_DIR_ARG/.git"
COMMIT="${COMMIT:-f27ed9c}"
git --git-dir="$GIT_DIR_ARG" cat-file -e "$COMMIT^{commit}" 2>/dev/null \
  || { echo "$1: no commit $COMMIT there (fetch it first)" >&2; exit 1; }
WORK="$(mktemp -d /tmp/xumx-sw-patch.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
git --git-dir="$GIT_DIR_ARG" archive "$COMMIT" api | tar -x -C "$WORK"
cd "$WORK"
git apply --check "$HERE/spleeter-web-f27ed9c.patch"
echo "git apply --check: ok against $COMMIT"
git apply "$HERE/spleeter-web-f27ed9c.patch"
cp "$HERE/x_umx_separator.py" api/separators/x_umx_separator.py
python3 -m py_compile api/tasks.py api/serializers.py api/separators/x_umx_separator.py
echo "patched api/tasks.py, api/serializers.py and api/separators/x_umx_separator.py compile"
grep -n "XUMXSeparator" api/tasks.py
