"""Installs ssm_keras: signed supermasks for Keras 3 on TensorFlow."""

import setuptools

setuptools.setup(
    name="ssm_keras",
    version="0.1.0",
    description=(
        "Signed supermasks (keep, hide, invert) for Keras 3 on TensorFlow: "
        "train masks over frozen random weights, tune, export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["ssm_keras", "ssm_keras.*"]),
    package_data={"ssm_keras": ["pretrained_models/*.ssm"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "keras-tuner[bayesian]>=1.4",
        "absl-py>=1.0",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "ssm-train=ssm_keras.train:cli",
            "ssm-export=ssm_keras.export:cli",
            "ssm-tune=ssm_keras.tune:cli",
            "ssm-plots=ssm_keras.plots:cli",
            "ssm-evaluate=ssm_keras.evaluate:cli",
        ],
    },
)
