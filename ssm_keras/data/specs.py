"""What a data set is: its spec, the in-memory splits and the data error."""

import dataclasses

import numpy as np

from ssm_keras.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset (`mirrors_keep_labels`:
    whether a left-right mirrored image shows the same class, as a mirrored
    shoe or truck does and a mirrored digit does not)."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mirrors_keep_labels: bool = True


DATASETS = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, mirrors_keep_labels=False),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10),
    "cifar100": DatasetSpec("cifar100", (32, 32, 3), 100),
}

AUGMENTATIONS = ("none", "crop_flip", "flip_translate_rotate")

Arrays = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Splits:
    """A dataset held in memory: uint8 NHWC images and int64 labels."""

    spec: DatasetSpec
    train: Arrays
    validation: Arrays
    test: Arrays
    source: str


class DataError(UserError):
    """A data set cannot be found or read; the message says why."""
