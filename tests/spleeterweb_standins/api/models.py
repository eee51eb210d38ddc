"""Stand-in of Spleeter Web's api.models: only the OutputFormat enum (Django's IntegerChoices
there), with its values: 0 WAV, 1 FLAC, 192/256/320 MP3 kbit/s."""
import enum


class OutputFormat(enum.IntEnum):
    WAV = 0
    FLAC = 1
    MP3_192 = 192
    MP3_256 = 256
    MP3_320 = 320
