"""The C heap under numpy's large temporaries: glibc keeps freed memory unless asked.

A chunk's work allocates and frees arrays of tens of megabytes on several threads (the Wiener
filter's workers, onnxruntime's, the stem writer). glibc's malloc serves many of them from its
heaps rather than from fresh mappings once a large block has been freed, and keeps what is freed
there, growing over a long song (docs/onnx-engine.md, "Memory"). :func:`trim`
hands the free memory back after each chunk and between a chunk's stages (so that what one
stage freed does not stay resident under the next one's peak); :func:`limit_arenas` (the command lines only: it
is a process-wide setting) caps the number of heaps. Both do nothing where the C library is not
glibc.
"""
import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError, TypeError):
        return None


def trim():
    """Give the heaps' free memory back to the operating system (glibc's ``malloc_trim``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_arenas(count: int = 2):
    """Let glibc's malloc use at most ``count`` heaps for the whole process (a process-wide
    setting, for the command lines): one heap per allocating thread (up to 8 per core) keeps
    more freed memory (docs/onnx-engine.md, "Memory")."""
    libc = _libc()
    if libc is not None:
        m_arena_max = -8   # glibc's M_ARENA_MAX
        libc.mallopt(m_arena_max, int(count))
