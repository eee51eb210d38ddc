#!/usr/bin/env bash
# Spleeter Web's X-UMX call, checked for real in two worlds:
#   - Python 3.11 with Spleeter Web v4's pins (numpy 1.24.3, protobuf 4.25.5): a fresh venv
#     outside the repository with `pip install <checkout>` (scripts/check_install.sh), the call
#     of scripts/spleeterweb_call.py WITHOUT the caller's three nnabla lines;
#   - .venv (Python 3.8-3.10, nnabla; `make setup`), the call unchanged, WITH the three lines;
# on 65 s of generated music (three 30 s chunks) and a full-size seeded model, then prints the
# signal-to-error ratio between the two worlds' stems (>= 60 dB expected).
#
#   scripts/check_spleeterweb.sh          # XUMX_PYTHON_311=/path/to/python3.11 to choose it
#   scripts/check_spleeterweb.sh --stack  # then Spleeter Web's whole stack (TensorFlow, torch):
#                                         # scripts/check_spleeterweb_stack.sh, GBs, 20-40 min
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export XUMX_ROOT="$ROOT"   # scripts below import tests/seeded.py from it
STACK=0
for arg in "$@"; do
  case "$arg" in
    --stack) STACK=1 ;;
    *) echo "unknown option $arg (known: --stack)" >&2; exit 2 ;;
  esac
done

py311="${XUMX_PYTHON_311:-}"
if [ -z "$py311" ]; then
  py311="$(command -v python3.11 2>/dev/null || ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python 2>/dev/null | sort -V | tail -1 || true)"
fi
[ -n "$py311" ] && [ -x "$py311" ] || { echo "no Python 3.11 found: set XUMX_PYTHON_311" >&2; exit 2; }

WORK="$(mktemp -d /tmp/xumx-spleeterweb.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
printf 'numpy==1.24.3\nprotobuf==4.25.5\n' > "$WORK/constraints.txt"
echo "== Python 3.11 with Spleeter Web's pins: $(cat "$WORK/constraints.txt" | tr '\n' ' ')"
"$ROOT/scripts/check_install.sh" "$WORK/venv311" "$py311" -c "$WORK/constraints.txt"

V311="$WORK/venv311/bin/python"
cd "$WORK"
"$V311" - <<'PYEOF'
import os
import sys
import numpy as np
import soundfile as sf
from xumx.config import ModelConfig
from xumx.synth import song_stems
sys.path.insert(0, os.path.join(os.environ["XUMX_ROOT"], "tests"))   # the seeded parameters
from seeded import random_arrays
from xumx.weights import save_model
os.makedirs("pretrained_models")
save_model("pretrained_models/x-umx.h5", ModelConfig(), random_arrays(ModelConfig(), seed=0))
mix = sum(song_stems(np.random.RandomState(1), 65.0, 44100).values())
sf.write("song.wav", (0.5 * mix / np.abs(mix).max()).astype(np.float32), 44100, subtype="FLOAT")
PYEOF
echo "== the call, Python 3.11 (installed package), without the nnabla lines"
"$V311" "$ROOT/scripts/spleeterweb_call.py" pretrained_models/x-umx.h5 song.wav stems311.npz
if [ -x "$ROOT/.venv/bin/python" ]; then
  echo "== the call, .venv ($("$ROOT/.venv/bin/python" --version)), unchanged: with the nnabla lines"
  PYTHONPATH="$ROOT" "$ROOT/.venv/bin/python" "$ROOT/scripts/spleeterweb_call.py" \
    pretrained_models/x-umx.h5 song.wav stems310.npz --nnabla-lines 2> >(grep -v "\[nnabla\]\[INFO\]" >&2)
  "$V311" - <<'PYEOF'
import numpy as np
a, b = np.load("stems311.npz"), np.load("stems310.npz")
dbs = {k: 10 * np.log10(np.sum(b[k].astype(float) ** 2) / np.sum((a[k].astype(float) - b[k]) ** 2))
       for k in b.files}
print("SER between the two worlds (dB):", ", ".join(f"{k} {v:.1f}" for k, v in dbs.items()))
assert sorted(a.files) == sorted(b.files) and min(dbs.values()) >= 60, dbs
PYEOF
else
  echo "(no .venv: run make setup to compare with Python 3.10 and nnabla)"
fi
echo "Spleeter Web call: ok"
if [ "$STACK" = 1 ]; then
  "$ROOT/scripts/check_spleeterweb_stack.sh"
fi
