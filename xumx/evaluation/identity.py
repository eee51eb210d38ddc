"""What made an evaluation's scores, recorded in ``<eval_dir>/identity.json``: the model's
files (their SHA-256, :class:`xumx.modelfiles.ModelFiles`), the separation settings and the
chunking. A run reuses the scores of an eval folder only when its identity is the same."""
import glob
import json
import os

from .. import files
from ..config import ChunkConfig, SeparationConfig
from ..errors import EvalError
from .report import BASELINE

IDENTITY = "identity.json"

#: How each field of an identity is named in the message of a refused folder.
IDENTITY_WORDS = {"model_sha256": "the model file", "sidecar_sha256": "the model's .json sidecar",
                  "umx": "--umx-infer", "sample_rate": "the model's rate", "targets": "--targets",
                  "niter": "--niter", "softmask": "--softmask", "alpha": "--alpha",
                  "residual_model": "--residual-model", "chunk_dur": "--chunk-dur",
                  "overlap": "--overlap", "precision": "--precision"}
#: What a field missing from an older record means (records before the field existed).
IDENTITY_DEFAULTS = {"precision": SeparationConfig().precision}


def identity_of(model, separator, separation: SeparationConfig, chunking: ChunkConfig) -> dict:
    """What makes the model's scores: the SHA-256 of ``model``'s files (a
    :class:`~xumx.modelfiles.ModelFiles`: the ``.h5``, or for UMX each target's
    ``<target>.h5``; and their ``.json`` sidecars, None where absent), the rate the model runs
    at, the targets, Wiener settings and precision of ``separation``, and the chunking. Only JSON types,
    so that it compares equal to itself read back."""
    digests = model.digests()
    if model.umx:
        weights = {label: w for label, w, _ in digests}
        sidecars = {label: s for label, _, s in digests}
    else:
        (_, weights, sidecars), = digests
    return {"model_sha256": weights, "sidecar_sha256": sidecars, "umx": bool(model.umx),
            "sample_rate": int(separator.sample_rate), "targets": list(separator.targets),
            "niter": int(separation.niter), "softmask": bool(separation.softmask),
            "alpha": float(separation.alpha), "residual_model": bool(separation.residual_model),
            "chunk_dur": float(chunking.chunk_dur), "overlap": float(chunking.overlap),
            "precision": str(separation.precision)}


def _shown(value) -> str:
    if isinstance(value, str) and len(value) == 64:   # a SHA-256
        return f"SHA-256 {value[:12]}..."
    if isinstance(value, dict):
        return ", ".join(f"{k} {_shown(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)


def check_identity(eval_dir: str, identity: dict, model: str) -> None:
    """Refuse ``eval_dir`` (EvalError, one line) when it holds model scores made by another
    identity (:func:`identity_of`), or model scores with no record of what made them; else
    record ``identity`` there (from then on its scores are this identity's)."""
    path = os.path.join(eval_dir, IDENTITY)
    advice = f"pick another --eval-dir, or delete {eval_dir} to score again"
    try:
        with open(path) as f:
            recorded = json.load(f)["identity"]
        if not isinstance(recorded, dict):
            raise TypeError("not a JSON object")
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalError(f"{path}: cannot read the record of what made the scores of {eval_dir} "
                        f"({e}): {advice}") from None
    if recorded is None:
        scored = [p for p in glob.glob(os.path.join(glob.escape(eval_dir), "*", "*.json"))
                  if os.path.basename(os.path.dirname(p)) != BASELINE]
        if scored:
            raise EvalError(f"--eval-dir {eval_dir} holds scores with no record of the model and "
                            f"settings that made them ({IDENTITY}): {advice}")
        files.write_text(path, json.dumps({"identity": identity, "model": model}, indent=2) + "\n")
        return
    there = {key: recorded.get(key, IDENTITY_DEFAULTS.get(key)) for key in identity}
    differs = [f"{IDENTITY_WORDS.get(key, key)}: {_shown(there[key])} there, {_shown(value)} now"
               for key, value in identity.items() if there[key] != value]
    if differs:
        raise EvalError(f"--eval-dir {eval_dir} holds the scores of another model or other "
                        f"settings ({'; '.join(differs)}): {advice}")


