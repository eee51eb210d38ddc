"""What an audio file's container says about itself, read from a few header bytes without
decoding: which files libsndfile may open (:func:`sndfile_magic`), how many frames a WAV or
AIFF header states (:func:`stated_frames`) and whether an Ogg stream reaches its last page
(:func:`ogg_ends`).

Every reader here touches at most :data:`MAX_CHUNKS` chunk headers or the last
:data:`OGG_TAIL` bytes, whatever the file claims, and answers None where the file does not
say (or says something unreadable): these are facts for messages and warnings, never sizes to
allocate.
"""
import os
import struct
from typing import Optional

#: Chunk headers of a WAV or AIFF file read before giving up on finding its sample count.
MAX_CHUNKS = 64
#: An Ogg page is at most 27 + 255 + 255 * 255 bytes: the last one lies in this tail.
OGG_TAIL = 27 + 255 + 255 * 255
#: Magic bytes of the files libsndfile decodes in-process (the rest goes to ffmpeg, so that
#: no decoder library of libsndfile's (mpg123, Vorbis) prints on the user's terminal).
_RIFF, _AIFF, _FLAC = (b"RIFF", b"RIFX"), (b"AIFF", b"AIFC"), b"fLaC"


def sndfile_magic(path: str) -> bool:
    """Whether ``path`` starts like a WAV (RIFF/RIFX ... WAVE), AIFF or FLAC file."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return (head[:4] in _RIFF and head[8:12] == b"WAVE") or \
        (head[:4] == b"FORM" and head[8:12] in _AIFF) or head[:4] == _FLAC


def stated_frames(path: str, block_align: int) -> Optional[int]:
    """Frames the header of a WAV (its ``data`` chunk's size over ``block_align`` bytes per
    frame) or AIFF file (its ``COMM`` chunk's count) states; None for other files, a size left
    open (0 or 0xFFFFFFFF, as streaming writers leave it) or a header not found."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:4] in _RIFF and head[8:12] == b"WAVE":
                order, wanted = ("<" if head[:4] == b"RIFF" else ">"), b"data"
            elif head[:4] == b"FORM" and head[8:12] in _AIFF:
                order, wanted = ">", b"COMM"
            else:
                return None
            for _ in range(MAX_CHUNKS):
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
                if name == wanted:
                    if wanted == b"COMM":
                        body = f.read(6)
                        return struct.unpack(">I", body[2:6])[0] if len(body) == 6 else None
                    if size in (0, 0xFFFFFFFF) or block_align < 1:
                        return None
                    return size // block_align
                f.seek(size + (size & 1), os.SEEK_CUR)   # chunks are padded to even sizes
    except (OSError, struct.error):
        return None
    return None


def ogg_ends(path: str) -> Optional[bool]:
    """For an Ogg file: whether its last page is whole and ends the stream (the end-of-stream
    flag), as a complete file's does; False for a file cut short; None for other files."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"OggS":
                return None
            size = f.seek(0, os.SEEK_END)
            start = max(size - OGG_TAIL, 0)
            f.seek(start)
            tail = f.read()
    except OSError:
        return None
    at = tail.rfind(b"OggS")
    while at >= 0:   # the last page header whose segment table is there
        if at + 27 <= len(tail) and at + 27 + tail[at + 26] <= len(tail):
            segments = tail[at + 27:at + 27 + tail[at + 26]]
            end = at + 27 + len(segments) + sum(segments)
            return end == len(tail) and bool(tail[at + 5] & 0x04)
        at = tail.rfind(b"OggS", 0, at)
    return False
