"""X-UMX (CrossNet-Open-Unmix) for Spleeter Web v4, served by the ``xumx`` package.

Drop this file into Spleeter Web as ``api/separators/x_umx_separator.py`` and apply
``spleeter-web-f27ed9c.patch`` (see README.md beside it). It has the interface of Spleeter
Web's other separators: ``XUMXSeparator(cpu_separation, output_format, softmask, alpha,
iterations)``, ``create_static_mix(parts, input_path, output_path)`` and
``separate_into_parts(input_path, output_path)``.

- No nnabla: ``xumx`` separates with ONNX Runtime and numpy.
- The whole song goes through ``xumx`` in one call, which cuts it into overlapping chunks and
  cross-fades them (no seams), in bounded memory; the stems have the song's length.
- ``cpu_separation`` (Spleeter Web's ``CPU_SEPARATION`` setting) chooses the device: False
  asks for the GPU, which needs ``onnxruntime-gpu``; a GPU that cannot be used raises one line
  (``xumx.errors.EngineError``), it never falls back to the CPU silently.
- The published weights are fetched into ``pretrained_models/x-umx.h5`` and checked with
  Spleeter Web's own downloader, as its separators did up to v3.
- Nothing is loaded in the constructor: the model is loaded where the separation runs (a
  celery worker keeps it between tasks; a GPU task's forked process loads its own).
"""
from pathlib import Path
from typing import Dict

import numpy as np
from spleeter.audio.adapter import AudioAdapter

from api.models import OutputFormat
from api.separators.util import download_and_verify
from xumx.api import separate_args_dict

#: The published X-UMX weights (Sony's) and their SHA-1.
MODEL_URL = 'https://nnabla.org/pretrained-models/ai-research-code/x-umx/x-umx.h5'
MODEL_SHA1 = '6414e08527d37bd1d08130c4b87255830af819bf'

#: The stems X-UMX writes (the names Spleeter Web's 4-stem mixes use).
SOURCES = ('bass', 'drums', 'vocals', 'other')


def codec_of(output_format: int):
    """(file extension, ffmpeg bitrate or None) of one of Spleeter Web's output formats:
    WAV (0) and FLAC (1) are lossless, any other value is an MP3 bitrate in kbit/s."""
    if output_format == OutputFormat.WAV.value:
        return 'wav', None
    if output_format == OutputFormat.FLAC.value:
        return 'flac', None
    return 'mp3', f'{int(output_format)}k'


class XUMXSeparator:
    """Separates a song into bass, drums, vocals and other with X-UMX (the ``xumx`` package)."""

    def __init__(self,
                 cpu_separation: bool,
                 output_format=OutputFormat.MP3_256.value,
                 softmask=False,
                 alpha=1.0,
                 iterations=1):
        """
        :param cpu_separation: True: separate on the CPU; False: on the GPU (CUDA device 0)
        :param output_format: an OutputFormat value (0 WAV, 1 FLAC, 192/256/320 MP3 kbit/s)
        :param softmask: ratio masks instead of magnitudes for the Wiener filter
        :param alpha: exponent of the soft masks
        :param iterations: Wiener filter iterations (0: the network's estimates as they are)
        """
        self.model_dir = Path('pretrained_models')
        self.model_file_path = self.model_dir / 'x-umx.h5'
        self.context = 'cpu' if cpu_separation else 'cudnn'
        self.softmask = bool(softmask)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.audio_format, self.audio_bitrate = codec_of(output_format)
        self.sample_rate = 44100
        self.audio_adapter = AudioAdapter.default()

    def get_estimates(self, input_path) -> Dict[str, np.ndarray]:
        """{source: (samples, channels) float32} of the song at ``input_path`` (a path or the
        URL of remote storage), at :attr:`sample_rate`, each of the song's length."""
        download_and_verify(MODEL_URL, MODEL_SHA1, self.model_dir, self.model_file_path)
        audio, _ = self.audio_adapter.load(str(input_path), sample_rate=self.sample_rate)
        if audio.ndim == 2 and audio.shape[1] > 2:
            print(f'{audio.shape[1]} channels: separating the first two')
            audio = audio[:, :2]
        print(f'Separating {input_path} with X-UMX on {self.context}...')
        return separate_args_dict(audio, {
            'model': str(self.model_file_path),
            'umx_infer': False,
            'targets': list(SOURCES),
            'softmask': self.softmask,
            'alpha': self.alpha,
            'residual_model': False,
            'niter': self.iterations,
            'rate': self.sample_rate,
            'context': self.context,
        })

    def create_static_mix(self, parts, input_path: str, output_path: Path):
        """Separates the song and writes the sum of the parts asked for.

        :param parts: {part name: keep it?}; names other than X-UMX's sources are ignored
        :param input_path: path or URL of the song
        :param output_path: path of the file to write
        """
        estimates = self.get_estimates(input_path)
        mix = np.zeros_like(next(iter(estimates.values())))
        for name, source in estimates.items():
            if parts.get(name):
                mix += source
        print(f'Exporting to {output_path}...')
        self.audio_adapter.save(str(output_path), mix, self.sample_rate,
                                self.audio_format, self.audio_bitrate)

    def separate_into_parts(self, input_path: str, output_path: str):
        """Separates the song and writes ``<source>.<ext>`` for each source into the folder
        ``output_path``.

        :param input_path: path or URL of the song
        :param output_path: folder to write the stems into
        """
        estimates = self.get_estimates(input_path)
        for name, source in estimates.items():
            filename = f'{name}.{self.audio_format}'
            print(f'Exporting {filename}...')
            self.audio_adapter.save(str(Path(output_path) / filename), source, self.sample_rate,
                                    self.audio_format, self.audio_bitrate)
