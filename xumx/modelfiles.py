"""Which files a model is: resolved once from what the user named, hashed once, carried everywhere.

A model is named by a weights file (``x-umx.h5``), a training run's folder (its
``best_xumx.h5``), an Open-Unmix (UMX) folder of ``<target>.h5`` files, or nothing (the
published weights, downloaded once into the cache: :mod:`xumx.pretrained`). :meth:`ModelFiles.resolve`
turns any of these into one :class:`ModelFiles` value; the separator, the model cache, the
exporter and the evaluation's identity record all take it, so the rules (``<folder>/<target>.h5``,
a run's best weights) are written here only and the files are hashed once
(:func:`xumx.digests.file_digest`).
"""
import hashlib
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .config import DEFAULT_SOURCES
from .errors import ConfigError

#: The files of a training run's folder: the best weights (what ``--model RUN_FOLDER`` reads)
#: and the checkpoint (what ``--resume RUN_FOLDER`` reads).
BEST_NAME, CHECKPOINT_NAME = "best_xumx.h5", "checkpoint.h5"
#: The extension of parameter files.
H5 = ".h5"


@dataclass(frozen=True)
class ModelFiles:
    """A model on disk.

    ``path``: the X-UMX weights file, or the UMX folder. ``umx``: independent Open-Unmix
    networks, one ``<target>.h5`` per target in ``path``, for ``targets`` (in that order).
    ``run``: the training run's folder the weights came from (None otherwise).
    ``published``: the published weights from the cache.
    """
    path: str
    umx: bool = False
    targets: Tuple[str, ...] = ()
    run: Optional[str] = None
    published: bool = False

    # ------------------------------------------------------------------ resolving
    @classmethod
    def resolve(cls, model=None, umx: Optional[bool] = None,
                targets: Optional[Sequence[str]] = None, quiet: bool = True) -> "ModelFiles":
        """The model that ``model`` names (see the module docstring).

        ``umx``: True reads ``model`` as a UMX folder, False as X-UMX weights, None decides by
        what ``model`` is (a folder without ``best_xumx.h5`` that holds ``.h5`` files is a UMX
        folder). ``targets``: the UMX files to read (default: the published sources present in
        the folder, else every ``.h5`` in it). Nothing is read here but folder listings; a
        missing or unusable file is reported when the model is read (:meth:`read`). Raises
        DownloadError (the published weights) or ConfigError (UMX without a folder).
        """
        if model is None or model == "":
            if umx:
                raise ConfigError("--umx-infer needs --model: a folder of <target>.h5 UMX files")
            from .pretrained import fetch_published
            return cls(fetch_published(quiet), published=True)
        path = os.path.expanduser(os.fspath(model))
        if os.path.isdir(path):
            best = os.path.join(path, BEST_NAME)
            if not umx and os.path.isfile(best):
                return cls(best, run=path)
            if umx is None:   # a run's folder (its checkpoint) is not a UMX folder
                umx = bool(_h5_names(path)) and not os.path.isfile(
                    os.path.join(path, CHECKPOINT_NAME))
        if not umx:   # a run's best weights named as a file still carry the run's name
            best_of_run = os.path.basename(path) == BEST_NAME
            return cls(path, run=(os.path.dirname(os.path.abspath(path)) if best_of_run
                                  else None))
        if targets:
            chosen = tuple(targets)
        else:
            names = _h5_names(path) if os.path.isdir(path) else []
            chosen = tuple(s for s in DEFAULT_SOURCES if s in names) or tuple(names) \
                or DEFAULT_SOURCES
        return cls(path, umx=True, targets=chosen)

    def with_targets(self, targets: Sequence[str]) -> "ModelFiles":
        """The same UMX folder read for other ``targets`` (an X-UMX file: itself)."""
        if not self.umx:
            return self
        return ModelFiles(self.path, True, tuple(targets), self.run, self.published)

    # ------------------------------------------------------------------ the files
    @property
    def files(self) -> Tuple[str, ...]:
        """The parameter files, in source order."""
        if self.umx:
            return tuple(os.path.join(self.path, f"{t}{H5}") for t in self.targets)
        return (self.path,)

    @property
    def name(self) -> str:
        """A short name for tables and plots: the run's folder, the UMX folder or the weights
        file's name without extension."""
        base = self.run or (self.path if self.umx else os.path.splitext(self.path)[0])
        return os.path.basename(os.path.normpath(base)) or "model"

    def digests(self) -> List[Tuple[str, str, Optional[str]]]:
        """[(target or '', SHA-256 of the parameter file, SHA-256 of its .json sidecar or None)]
        for each file (hashed once per file version: :func:`xumx.digests.file_digest`).
        Raises OSError for a file that cannot be read."""
        from .digests import file_digest
        from .weights import sidecar_path
        out = []
        for label, path in zip(self.targets if self.umx else ("",), self.files):
            side = sidecar_path(path)
            out.append((label, file_digest(path), file_digest(side) if os.path.isfile(side)
                        else None))
        return out

    @property
    def sha256(self) -> str:
        """One SHA-256 naming the model's content: its files and sidecars, and for UMX the
        targets they are read for (not where they lie)."""
        h = hashlib.sha256(("umx:" + ",".join(self.targets) if self.umx else "xumx").encode())
        for label, weights, side in self.digests():
            h.update(f"/{label}:{weights}:{side or '-'}".encode())
        return h.hexdigest()

    def read(self):
        """(config, {parameter name: float32 array}), every check of :mod:`xumx.weights` made
        before a value is read; raises WeightsError (one line naming the file)."""
        from .weights import read_parameters
        return read_parameters(self.files, self.targets if self.umx else None,
                               where=self.path)

    def stated_rate(self) -> Optional[int]:
        """The sample rate the sidecar of an X-UMX file states (None: no sidecar or no rate;
        UMX folders: None)."""
        if self.umx:
            return None
        from .weights import stated_rate
        return stated_rate(self.path)

    def __str__(self):
        return self.path


def _h5_names(folder: str) -> List[str]:
    """The names (without ``.h5``) of the parameter files in ``folder``, sorted."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    return sorted(n[:-len(H5)] for n in entries
                  if n.endswith(H5) and os.path.isfile(os.path.join(folder, n)))
