"""What an audio file's container says about itself, read from a few header bytes without
decoding: which files libsndfile may open (:func:`sndfile_magic`), how many frames a WAV or
AIFF header states (:func:`stated_frames`), how many samples an mp3's Xing or Info header
states (:func:`xing_samples`) and whether an Ogg stream reaches its last page
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


#: Bytes of an mp3 searched for its first frame (after any ID3v2 tag).
MP3_SEARCH = 1 << 16
#: Samples per frame of MPEG audio by (version is MPEG-1, layer): layer III of MPEG-2 and
#: 2.5 has half as many.
_SAMPLES_PER_FRAME = {(True, 1): 384, (True, 2): 1152, (True, 3): 1152,
                      (False, 1): 384, (False, 2): 1152, (False, 3): 576}


def xing_samples(path: str) -> Optional[int]:
    """Samples per channel that an mp3's Xing (VBR) or Info (CBR) header states: its frame
    count times the samples per frame, less the encoder's delay and padding of a LAME tag;
    None when the file has no such header."""
    try:
        with open(path, "rb") as f:
            head = f.read(10)
            start = 0
            if head[:3] == b"ID3" and len(head) == 10:   # syncsafe size, plus a footer
                size = 0
                for b in head[6:10]:
                    size = (size << 7) | (b & 0x7F)
                start = 10 + size + (10 if head[5] & 0x10 else 0)
            f.seek(start)
            data = f.read(MP3_SEARCH)
    except OSError:
        return None
    at = next((i for i in range(len(data) - 3)
               if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0), None)
    if at is None:
        return None
    version, layer = (data[at + 1] >> 3) & 3, 4 - ((data[at + 1] >> 1) & 3)
    if version == 1 or layer == 4:   # reserved values: no frame here
        return None
    frame = data[at:at + 200]
    tag = max(frame.find(b"Xing"), frame.find(b"Info"))
    if tag < 0 or len(frame) < tag + 12:
        return None
    flags = struct.unpack(">I", frame[tag + 4:tag + 8])[0]
    if not flags & 1:
        return None
    frames = struct.unpack(">I", frame[tag + 8:tag + 12])[0]
    total = frames * _SAMPLES_PER_FRAME[version == 3, layer]
    lame = tag + 8 + 4 * sum(bool(flags & b) for b in (1, 2, 8)) + (100 if flags & 4 else 0)
    gap = data[at + lame + 21:at + lame + 24]
    if len(gap) == 3 and data[at + lame:at + lame + 4] in (b"LAME", b"Lavc", b"Lavf", b"L3.9"):
        total -= (gap[0] << 4 | gap[1] >> 4) + ((gap[1] & 0x0F) << 8 | gap[2])
    return max(total, 0)
