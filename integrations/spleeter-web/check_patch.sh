#!/usr/bin/env bash
# Checks that spleeter-web-f27ed9c.patch applies to Spleeter Web at commit f27ed9c, that the
# patched modules and x_umx_separator.py compile there, and that what xumx's test stands in for
# (tests/spleeterweb_standins: the OutputFormat values, download_and_verify's parameters) is
# what Spleeter Web has.
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
STANDINS="$HERE/../../tests/spleeterweb_standins" python3 - <<'PYEOF'
import ast, os
def tree(path):
    with open(path) as f:
        return ast.parse(f.read())
def enum_values(path):
    cls = next(n for n in ast.walk(tree(path)) if isinstance(n, ast.ClassDef) and n.name == "OutputFormat")
    out = {}
    for st in cls.body:
        if isinstance(st, ast.Assign):
            v = st.value.elts[0] if isinstance(st.value, ast.Tuple) else st.value
            out[st.targets[0].id] = ast.literal_eval(v)
    return out
def params(path, name):
    fn = next(n for n in ast.walk(tree(path)) if isinstance(n, ast.FunctionDef) and n.name == name)
    return [a.arg for a in fn.args.args]
theirs, ours = "api", os.path.join(os.environ["STANDINS"], "api")
a, b = enum_values(f"{theirs}/models.py"), enum_values(f"{ours}/models.py")
assert a == b, ("OutputFormat differs", a, b)
a, b = (params(f"{x}/separators/util.py", "download_and_verify") for x in (theirs, ours))
assert a == b, ("download_and_verify differs", a, b)
print("stand-ins match: OutputFormat", sorted(enum_values("api/models.py").items(), key=lambda kv: kv[1]),
      "; download_and_verify" + str(tuple(a)))
PYEOF
