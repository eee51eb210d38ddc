"""Where xumx keeps what it downloads and builds: the published weights, the built ONNX models
and the memo of file digests.

``$XUMX_CACHE`` if set, else ``$XDG_CACHE_HOME/xumx``, else ``~/.cache/xumx``. In a container,
point ``XUMX_CACHE`` at a volume so that they outlive it; a cache that cannot be written costs
time (the model is built in memory), not the run.
"""
import os


def cache_dir() -> str:
    """The cache folder (see the module docstring); it may not exist yet."""
    if os.environ.get("XUMX_CACHE"):
        return os.path.expanduser(os.environ["XUMX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xumx")
