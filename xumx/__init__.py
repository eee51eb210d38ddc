"""xumx: CrossNet-Open-Unmix (X-UMX) music source separation in NNabla.

Importing the package is cheap: nnabla, musdb and audio libraries load only when used.
"""
__version__ = "1.0.0"

from .config import ModelConfig, SeparationConfig  # noqa: E402,F401  (public)
from .errors import XumxError  # noqa: E402,F401  (public)

__all__ = ["ModelConfig", "SeparationConfig", "Separator", "load_separator", "OpenUnmixCrossNet",
           "separate", "separate_args_dict", "get_separator", "XumxError", "__version__"]


def __getattr__(name):
    # lazy public surface, so `import xumx` does not import nnabla
    if name in ("Separator", "load_separator"):
        from . import separator
        return getattr(separator, name)
    if name == "OpenUnmixCrossNet":
        from .model import OpenUnmixCrossNet
        return OpenUnmixCrossNet
    if name in ("separate", "separate_args_dict", "get_separator"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
