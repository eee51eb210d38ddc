"""xumx: CrossNet-Open-Unmix (X-UMX) music source separation, trained in NNabla, served by ONNX
Runtime.

    from xumx import Separator
    sep = Separator.load()                    # the published weights; device="cuda" for a GPU
    stems = sep.separate(audio, rate=44100)   # {'bass': (T, 2), 'drums': ..., 'vocals': ..., 'other': ...}

:class:`Separator` is the API (:mod:`xumx.separator`). The function forms that Spleeter Web and
the published code call (``separate``, ``separate_args_dict``) are thin calls of it
(:mod:`xumx.api`). Importing the package is cheap: onnxruntime, nnabla, musdb and the audio
libraries load only when used, and separation never imports nnabla (:mod:`xumx.training`).
"""
__version__ = "1.1.0"

from .config import ChunkConfig, ModelConfig, SeparationConfig  # noqa: E402,F401  (public)
from .errors import XumxError  # noqa: E402,F401  (public)

__all__ = ["Separator", "ModelFiles", "SeparationConfig", "ChunkConfig", "ModelConfig",
           "XumxError", "separate", "separate_args_dict", "__version__"]


def __getattr__(name):
    # a lazy public surface, so that `import xumx` loads no numpy-heavy module
    if name == "Separator":
        from .separator import Separator
        return Separator
    if name == "ModelFiles":
        from .modelfiles import ModelFiles
        return ModelFiles
    if name in ("separate", "separate_args_dict"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'xumx' has no attribute {name!r}")
