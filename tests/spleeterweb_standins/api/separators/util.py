"""Stand-in of Spleeter Web's api.separators.util: download_and_verify without the network.
Each call is recorded in CALLS; the file must be where the real function would leave it."""
from pathlib import Path

CALLS = []


def download_and_verify(model_url, expected_sha1, model_dir, model_file_path):
    CALLS.append((model_url, expected_sha1, str(model_dir), str(model_file_path)))
    if not Path(model_file_path).is_file():
        raise FileNotFoundError(f'stand-in download: no file at {model_file_path}')
