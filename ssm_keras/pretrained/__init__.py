"""Trained signed supermasks shipped with the package (`catalog`), and the
writer of their files (`make`, its settings in `config`)."""

from ssm_keras.pretrained.catalog import (
    FOLDER,
    SUFFIX,
    PretrainedError,
    load,
    names,
    path,
)

__all__ = ["FOLDER", "SUFFIX", "PretrainedError", "load", "names", "path"]
