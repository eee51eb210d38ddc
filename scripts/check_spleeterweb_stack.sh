#!/usr/bin/env bash
# `pip install xumx` into Spleeter Web v4's whole Python stack (issue 19), checked for real:
#
#   scripts/check_spleeterweb_stack.sh        # XUMX_PYTHON_311=/path/to/python3.11 to choose it
#   KEEP=1 scripts/check_spleeterweb_stack.sh # keep the work folder (venv, logs) afterwards
#
# Builds the stack as Spleeter Web's Dockerfile does: a Python 3.11 venv, `pip install --upgrade
# pip wheel`, `pip install -r requirements.txt` (without the `yt-dlp @ git+...` line, which only
# its git host serves), then `pip install -r requirements-spleeter.txt --no-dependencies`. Then:
# `pip freeze > stack.txt`; `pip check` (recorded: the stack has conflicts of its own); what a
# plain `pip install <this checkout>` would change (a dry run); `pip install <checkout> -c
# stack.txt` (every installed version held); `pip check` again (no conflict that was not there
# before) and `pip freeze` (every line of stack.txt still there); versions before and after;
# what pip resolves with xumx added to requirements.txt instead (a dry run); `import tensorflow,
# torch, xumx` and a separation in one process; `python -m xumx.test` on 60 s of generated music
# with a full-size seeded model (4 stems of exactly the song's length). Downloads several GB
# (torch 2.9.1 from PyPI is a CUDA build): 20-40 minutes, about 8 with the packages cached. Not
# part of CI (tests/test_packaging.py resolves the pins in a dry run).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export XUMX_ROOT="$ROOT"   # scripts below import tests/seeded.py from it

py311="${XUMX_PYTHON_311:-}"
if [ -z "$py311" ]; then
  py311="$(command -v python3.11 2>/dev/null || ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python 2>/dev/null | sort -V | tail -1 || true)"
fi
[ -n "$py311" ] && [ -x "$py311" ] || { echo "no Python 3.11 found: set XUMX_PYTHON_311" >&2; exit 2; }

WORK="$(mktemp -d /tmp/xumx-spleeterweb-stack.XXXXXX)"
if [ "${KEEP:-0}" = 1 ]; then echo "work folder (kept): $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
cd "$WORK"
export XUMX_CACHE="$WORK/cache"   # the ONNX model cache: not the user's

# Spleeter Web's two requirement files at commit f27ed9c (github.com/JeffreyCA/spleeter-web,
# v4; pins only, as data), less the yt-dlp line. SPLEETERWEB_GIT_DIR=<a clone's .git> reads
# them from a clone instead (SPLEETERWEB_REV, default f27ed9c).
if [ -n "${SPLEETERWEB_GIT_DIR:-}" ]; then
  for f in requirements.txt requirements-spleeter.txt; do
    git --git-dir="$SPLEETERWEB_GIT_DIR" show "${SPLEETERWEB_REV:-f27ed9c}:$f" | grep -v '^yt-dlp @' > "$f"
  done
else
  cat > requirements.txt <<'EOF'
azure-storage-blob==12.27.1
boto3==1.43.54
celery==5.3.6
cffi==2.0.0
demucs==4.0.1
Django==4.2.26
django-picklefield==3.4.0
django-storages==1.14.6
django-webpack-loader==1.8.1
djangorestframework==3.16.1
google-api-python-client==2.198.0
gunicorn==23.0.0
h2==4.3.0
kombu==5.6.1
lameenc==1.8.1
mutagen==1.47.0
numpy==1.24.3
protobuf==4.25.5
redis==4.6.0
SQLAlchemy==1.4.54
tensorflow==2.15.1
torch==2.9.1
torchaudio==2.9.1
tzdata==2025.2
validators==0.35.0
whitenoise==6.11.0
yapf==0.43.0
youtube-title-parse==1.0.0
python-magic==0.4.27; sys_platform == 'linux'
python-magic-bin==0.4.14; sys_platform != 'linux'
ffmpeg-python==0.2.0
httpx==0.19.0
norbert==0.2.1
pandas==1.5.3
typer==0.20.0
einops>=0.6.0
beartype>=0.14.0
rotary-embedding-torch>=0.3.0
omegaconf>=2.3.0
EOF
  echo "spleeter==2.4.2" > requirements-spleeter.txt
fi

V="$WORK/venv/bin/python"
step() { echo "== $* ($(date +%H:%M:%S))"; }
pipq() { "$V" -m pip "$@" >> "$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log" >&2; exit 1; }; }
versions() {  # the packages issue 19 is about, as installed in the venv
  "$V" - <<'PYEOF'
import importlib.metadata as md
def v(n):
    try:
        return md.version(n)
    except md.PackageNotFoundError:
        return "-"
print("  " + ", ".join(f"{n} {v(n)}" for n in ("numpy", "protobuf", "ml-dtypes", "torch",
      "tensorflow", "onnxruntime", "onnx", "xumx")))
PYEOF
}

step "Spleeter Web's stack: $("$py311" --version) venv, its Dockerfile's three pip commands"
"$py311" -m venv "$WORK/venv"
start=$SECONDS
pipq install --upgrade pip wheel
pipq install -r requirements.txt
pipq install -r requirements-spleeter.txt --no-dependencies
echo "  built in $(( SECONDS - start )) s ($("$V" -m pip --version | cut -d' ' -f1-2))"
"$V" -m pip freeze > stack.txt
echo "  $(wc -l < stack.txt) packages installed (pip freeze > stack.txt)"
"$V" -m pip check > check-before.txt 2>&1 && echo "  pip check: no conflict" ||
  { echo "  pip check: $(wc -l < check-before.txt) line(s), the stack's own:"; sed 's/^/    /' check-before.txt; }
echo "  versions before:"; versions

step "plain pip install <checkout> into it, nothing held: what it would change (a dry run)"
"$V" -m pip install --dry-run --quiet --report plain.json "$ROOT" >> "$WORK/pip.log" 2>&1 ||
  { tail -30 "$WORK/pip.log" >&2; exit 1; }
"$V" - <<'PYEOF'
import json
import re
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()   # noqa: E731
stack = {norm(n): v for n, v in (ln.split("==") for ln in open("stack.txt").read().split() if "==" in ln)}
picked = {norm(i["metadata"]["name"]): i["metadata"]["version"]
          for i in json.load(open("plain.json"))["install"]}
changed = [f"{k} {stack[k]} -> {v}" for k, v in sorted(picked.items()) if k in stack]
print(f"  would change {len(changed)} of the stack's packages: {', '.join(changed) or 'none'}; "
      f"onnxruntime {picked.get('onnxruntime', '-')}")
PYEOF

step "pip install <checkout> -c stack.txt (every installed version held)"
start=$SECONDS
pipq install "$ROOT" -c stack.txt
echo "  installed in $(( SECONDS - start )) s"
"$V" -m pip freeze | grep -v '^xumx' > freeze-after.txt
"$V" -m pip check > check-after.txt 2>&1 || true
echo "  versions after:"; versions
new="$(grep -vxF -f check-before.txt check-after.txt || true)"
[ -z "$new" ] || { echo "  pip check: NEW conflicts:"; echo "$new" | sed 's/^/    /'; exit 1; }
echo "  pip check: $(wc -l < check-after.txt) line(s), none new"
changed="$(grep -vxF -f freeze-after.txt stack.txt || true)"
[ -z "$changed" ] || { echo "  packages of the stack changed or removed:"; echo "$changed" | sed 's/^/    /'; exit 1; }
echo "  added: $(grep -vxF -f stack.txt freeze-after.txt | tr '\n' ' ')"
echo "  every package of the stack kept its version"

step "xumx added to requirements.txt instead: the Dockerfile's install, resolved (a dry run)"
start=$SECONDS
"$V" -m pip install --dry-run --ignore-installed --quiet --report joint.json -r requirements.txt \
  "$ROOT" >> "$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log" >&2; exit 1; }
"$V" - <<'PYEOF'
import json
import re
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()   # noqa: E731


def frozen(path):   # {name: version} of a pip freeze
    pins = (ln.split("==") for ln in open(path).read().split() if "==" in ln)
    return {norm(n): v for n, v in pins}


stack, after = frozen("stack.txt"), frozen("freeze-after.txt")
picked = {norm(i["metadata"]["name"]): i["metadata"]["version"]
          for i in json.load(open("joint.json"))["install"]}
unfrozen = ("xumx", "pip", "setuptools", "wheel")   # pip freeze leaves the last three out
differ = {k: (v, after.get(k)) for k, v in picked.items() if k not in unfrozen and v != after.get(k)}
print(f"  {len(picked)} packages; same versions as the stack + xumx installed above: "
      f"{'yes' if not differ else 'no: ' + str(differ)}")
print("  " + ", ".join(f"{k} {picked.get(k, '-')}" for k in
                       ("numpy", "protobuf", "ml-dtypes", "torch", "tensorflow", "onnxruntime", "onnx")))
assert "onnx" not in picked and picked["protobuf"] == stack["protobuf"] == "4.25.5", picked
PYEOF
echo "  resolved in $(( SECONDS - start )) s"

step "import tensorflow, torch, xumx in one process, then separate 5 s there"
"$V" - <<'PYEOF'
import os
import sys
import time
t = time.time()
import tensorflow, torch   # noqa: E401
before = set(sys.modules)
import xumx
print(f"  imported in {time.time() - t:.1f} s: tensorflow {tensorflow.__version__}, torch "
      f"{torch.__version__}, xumx {xumx.__version__} ({os.path.dirname(xumx.__file__)})")
import numpy as np
from xumx.config import ModelConfig
from xumx.separator import Separator
sys.path.insert(0, os.path.join(os.environ["XUMX_ROOT"], "tests"))   # the seeded parameters
from seeded import random_arrays
from xumx.weights import save_model
save_model("x-umx.h5", ModelConfig(), random_arrays(ModelConfig(), seed=0))
audio = (0.1 * np.random.RandomState(0).standard_normal((44100 * 5, 2))).astype(np.float32)
t = time.time()
out = Separator.load("x-umx.h5").separate(audio)
t = time.time() - t
assert list(out) == ["bass", "drums", "vocals", "other"] and all(v.shape == audio.shape for v in out.values())
watched = ("onnx", "ml_dtypes", "nnabla", "google.protobuf")
by_xumx = sorted(m for m in set(sys.modules) - before if any(m == p or m.startswith(p + ".")
                                                             for p in watched))
assert not any(m == "onnx" or m.startswith("onnx.") for m in sys.modules), "onnx was imported"
print(f"  separated 5 s beside them in {t:.1f} s (ONNX model built from the weights, then "
      f"cached): {list(out)}; loaded by xumx among {', '.join(watched)}: {by_xumx or 'none'}")
PYEOF

step "python -m xumx.test on 60 s of generated music, full-size seeded model"
"$V" - <<'PYEOF'
import numpy as np
import soundfile as sf
from xumx.synth import song_stems
mix = sum(song_stems(np.random.RandomState(1), 60.0, 44100).values())
sf.write("song.wav", (0.5 * mix / np.abs(mix).max()).astype(np.float32), 44100, subtype="FLOAT")
PYEOF
start=$(date +%s%N)
"$V" -m xumx.test song.wav --model x-umx.h5 --outdir out | sed 's/^/  /'
echo "  $(( ($(date +%s%N) - start) / 1000000 )) ms from process start to exit (the model cached by the step above)"
"$V" - <<'PYEOF'
import os
import soundfile as sf
n = sf.info("song.wav").frames
stems = {f: sf.info(os.path.join("out/song", f)).frames for f in sorted(os.listdir("out/song"))}
assert sorted(stems) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"], stems
assert set(stems.values()) == {n}, (n, stems)
print(f"  4 stems of {n} frames each (the song's length): {', '.join(stems)}")
PYEOF
echo "Spleeter Web stack + xumx: ok"
