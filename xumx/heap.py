"""The C heap under numpy's large temporaries: glibc keeps freed memory unless asked.

A chunk's work allocates and frees arrays of tens of megabytes on several threads (the Wiener
filter's workers, onnxruntime's, the stem writer). glibc's malloc serves many of them from its
heaps rather than from fresh mappings once a large block has been freed, and keeps what is freed
there, growing over a long song (docs/onnx-engine.md, "Memory"). :func:`trim`
hands the free memory back after each chunk and between a chunk's stages (so that what one
stage freed does not stay resident under the next one's peak); :func:`limit_arenas` (the command lines only: it
is a process-wide setting) caps the number of heaps; :func:`reuse_large_blocks` (the training
command line) keeps a training step's large temporaries in the heaps from one step to the next.
All do nothing where the C library is not glibc.
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


#: Allocations up to this size come from the heaps under :func:`reuse_large_blocks`.
LARGE_BLOCK = 1 << 30


def reuse_large_blocks() -> bool:
    """Serve allocations up to :data:`LARGE_BLOCK` from the heaps and keep what is freed there
    (glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``; a process-wide setting, for the
    training command line). Every training step allocates and frees the same temporaries of
    tens of megabytes; glibc maps each one above 32 MB afresh and the kernel zeroes its pages
    at first touch (about 0.5 s of system time per step at hidden 512, on the step's serial
    part: docs/training-speed.md); kept in the heap they are reused, and the peak is the
    step's own. Returns whether the C library took the setting."""
    libc = _libc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3   # glibc's mallopt parameters
    return bool(libc.mallopt(m_mmap_threshold, LARGE_BLOCK)) \
        and bool(libc.mallopt(m_trim_threshold, 2 * LARGE_BLOCK))
