"""Image classification data: local files or tensorflow_datasets to tf.data.

- `specs`: what a data set is (`DatasetSpec`, `DATASETS`, `Splits`,
  `DataError`, the names of the `AUGMENTATIONS`);
- `formats`: parsers of the original files (IDX, CIFAR python and binary,
  image folders) into NumPy arrays;
- `sources`: where the arrays come from (local folders and archives, the
  cache, tensorflow_datasets) and `load_splits`, with the validation split;
- `pipeline`: the tf.data pipelines, `make_epoch_dataset` for training and
  `make_eval_dataset` for evaluation.

Example:

    splits = load_splits("cifar10", data_dir="../shared/data")
    train = make_epoch_dataset(*splits.train, 128, augment="crop_flip",
                               epoch=lambda: 0)
"""

import importlib

from ssm_keras.data.specs import (
    AUGMENTATIONS,
    DATASETS,
    Arrays,
    DataError,
    DatasetSpec,
    Splits,
)

# The loaders and the pipelines import TensorFlow, so they load on first use:
# `ssm_keras.training.config` needs only `specs` and stays free of TensorFlow.
_LAZY = {
    "load_splits": "ssm_keras.data.sources",
    "make_epoch_dataset": "ssm_keras.data.pipeline",
    "make_eval_dataset": "ssm_keras.data.pipeline",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "Arrays",
    "DataError",
    "DatasetSpec",
    "Splits",
    "load_splits",
    "make_epoch_dataset",
    "make_eval_dataset",
]
