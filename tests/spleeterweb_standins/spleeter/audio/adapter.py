"""Stand-in of spleeter's AudioAdapter (spleeter needs TensorFlow): the call forms of
``AudioAdapter.default()``, ``load`` and ``save``, with soundfile doing the work. ``load`` does
not resample (the test's input is at the rate asked for; anything else is an error here).
Each ``save`` appends one JSON line to ``$SPLEETERWEB_STANDIN_LOG``: path, shape, dtype, rate,
codec, bitrate."""
import json
import os

import numpy as np
import soundfile as sf

#: soundfile's (format, subtype) for each codec Spleeter Web passes
FORMATS = {'wav': ('WAV', 'FLOAT'), 'flac': ('FLAC', 'PCM_24'), 'mp3': ('MP3', None)}


class AudioAdapter:
    @classmethod
    def default(cls):
        return cls()

    def load(self, path, offset=None, duration=None, sample_rate=None, dtype=np.float32):
        data, rate = sf.read(str(path), dtype='float32', always_2d=True)
        if sample_rate is not None and int(sample_rate) != rate:
            raise ValueError(f'stand-in load: {path} is at {rate} Hz, asked for {sample_rate}')
        return data.astype(dtype), rate

    def save(self, path, data, sample_rate, codec=None, bitrate=None):
        fmt, subtype = FORMATS[codec]
        sf.write(str(path), data, sample_rate, format=fmt, subtype=subtype)
        log = os.environ.get('SPLEETERWEB_STANDIN_LOG')
        if log:
            with open(log, 'a') as f:
                f.write(json.dumps({'path': str(path), 'shape': list(np.shape(data)),
                                    'dtype': str(np.asarray(data).dtype), 'rate': sample_rate,
                                    'codec': codec, 'bitrate': bitrate}) + '\n')
