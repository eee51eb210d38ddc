"""The published X-UMX weights: a user cache, download, SHA-1 check.

Cache folder: ``$XUMX_CACHE`` if set, else ``$XDG_CACHE_HOME/xumx``, else ``~/.cache/xumx``
(in a container, point ``XUMX_CACHE`` at a volume so that the download and the built ONNX model
outlive the container). The download streams to a temporary file in that folder, is verified
against the published SHA-1, and only then renamed to ``x-umx.h5``; a failed or wrong download
leaves nothing behind. The cached file's SHA-1 is checked through :func:`xumx.digests.file_digest`,
so an unchanged file is not read again on every load.
"""
import hashlib
import os
from typing import Callable, Optional

from .cachedir import cache_dir  # noqa: F401  (where the weights go)
from .digests import file_digest
from .errors import DownloadError
from .files import os_reason, replacing

#: Where the published weights live and their SHA-1 (the file Spleeter Web verifies).
PUBLISHED_URL = "https://nnabla.org/pretrained-models/ai-research-code/x-umx/x-umx.h5"
PUBLISHED_SHA1 = "6414e08527d37bd1d08130c4b87255830af819bf"
FILENAME = "x-umx.h5"


def manual_hint(url: str = PUBLISHED_URL, sha1: str = PUBLISHED_SHA1) -> str:
    return (f"download it by hand (curl -LO {url}; sha1sum {os.path.basename(url)} "
            f"must print {sha1}) and pass --model {os.path.basename(url)}")


def _failed_download(url: str, sha1: str, error: BaseException) -> DownloadError:
    reason = getattr(error, "reason", None) or error
    return DownloadError(f"cannot download the published X-UMX weights from {url} "
                         f"({reason}); {manual_hint(url, sha1)}")


def published_model(url: str = PUBLISHED_URL, sha1: str = PUBLISHED_SHA1,
                    folder: Optional[str] = None, opener: Optional[Callable] = None,
                    timeout: float = 30.0, progress: Optional[Callable[[int, Optional[int]], None]] = None
                    ) -> str:
    """Path of the published weights in the cache, downloading and verifying them if needed.

    ``opener(url, timeout=...)`` returns a file-like response (default: urllib's urlopen).
    ``progress(nb_bytes, total_or_None)`` is called per block. Raises DownloadError.
    """
    folder = folder or cache_dir()
    if opener is None:
        import urllib.request   # only to download (about 15 ms of start-up otherwise)
        opener = urllib.request.urlopen
    path = os.path.join(folder, FILENAME)
    if os.path.isfile(path) and file_digest(path, "sha1") == sha1:
        return path
    try:
        with replacing(path, durable=True) as tmp:   # in place only when whole and verified
            h = hashlib.sha1()
            with open(tmp, "wb") as out:
                try:
                    resp = opener(url, timeout=timeout)
                except (OSError, ValueError) as e:   # URLError, timeouts, HTTP errors are OSErrors
                    raise _failed_download(url, sha1, e) from None
                with resp:
                    total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
                    total = int(total) if total else None
                    while True:
                        try:
                            block = resp.read(1 << 20)
                        except (OSError, ValueError) as e:
                            raise _failed_download(url, sha1, e) from None
                        if not block:
                            break
                        out.write(block)
                        h.update(block)
                        if progress is not None:
                            progress(len(block), total)
            if h.hexdigest() != sha1:
                raise DownloadError(f"the download from {url} has SHA-1 {h.hexdigest()}, not {sha1} "
                                    f"(damaged or changed); {manual_hint(url, sha1)}")
    except OSError as e:   # the cache cannot be written: a full disk, no permission
        raise DownloadError(f"cannot write the model cache {folder} ({os_reason(e)}); "
                            f"set XUMX_CACHE to another folder or {manual_hint(url, sha1)}") from None
    return path


def fetch_published(quiet: bool = False) -> str:
    """The published weights' path in the cache (downloaded once, with a byte bar on stderr
    unless ``quiet``). Raises DownloadError."""
    from .progress import progress_bar
    bars = []

    def progress(nb, total):   # a bar once bytes arrive (none when offline)
        if not bars:
            bars.append(progress_bar(total, FILENAME, quiet, "B", leave=False, lines=False,
                                     unit_scale=True))
        bars[0].update(nb)
    try:
        return published_model(progress=progress)
    finally:
        for bar in bars:
            bar.close()
