"""Installs ssm_keras: signed supermasks for Keras 3 on TensorFlow."""

import pathlib
import re

import setuptools


HERE = pathlib.Path(__file__).resolve().parent


def package_version():
    """`__version__` of ssm_keras/__init__.py, read as text: importing the
    package would import Keras and TensorFlow before they are installed."""
    init = HERE / "ssm_keras" / "__init__.py"
    match = re.search(r'^__version__ = "([^"]+)"$', init.read_text(encoding="utf-8"), re.M)
    if match is None:
        raise RuntimeError(f"no __version__ = \"...\" line in {init}")
    return match.group(1)


setuptools.setup(
    name="ssm_keras",
    version=package_version(),
    description=(
        "Signed supermasks (keep, hide, invert) for Keras 3 on TensorFlow: "
        "train masks over frozen random weights, tune, export."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["ssm_keras", "ssm_keras.*"]),
    package_data={"ssm_keras": ["pretrained/entries/*.ssm", "recipes/*.flags"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        # Tested with Keras 3.15.1 (and TensorFlow 2.21): Keras 3 only.
        "keras>=3.0,<4",
        "tensorflow-datasets>=4.9",
        "keras-tuner[bayesian]>=1.4",
        "absl-py>=1.0",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "matplotlib>=3.7",
    ],
    extras_require={
        # pytest-xdist: scripts/test.sh runs the suite in two processes.
        "test": ["pytest>=7", "pytest-xdist>=3"],
        # --formats=onnx: tf2onnx converts, ONNX Runtime checks and runs the file.
        "onnx": ["tf2onnx>=1.16", "onnxruntime>=1.17"],
        # TFLite files run in LiteRT, TensorFlow Lite's successor, where it is installed.
        "litert": ["ai-edge-litert>=1.2"],
        # keras_hub's models (BertBackbone, ViTBackbone, ...) through supermask;
        # tested with keras-hub 0.32.0, which keeps Keras 3.15.1 and TF 2.21.
        "hub": ["keras-hub>=0.20"],
    },
    entry_points={
        "console_scripts": [
            f"ssm-{command.replace('_', '-')}=ssm_keras.cli.{command}:cli" for command in (
                "train", "tune", "export", "plots", "evaluate", "reproduce", "benchmark",
                "benchmark_inference", "study", "check_applications", "initial_logits",
                "make_pretrained")
        ],
    },
)
