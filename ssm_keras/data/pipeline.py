"""The tf.data pipelines: training epochs with augmentation, and evaluation.

Batches hold float32 images with raw pixel values in [0, 255] (the model
standardises them) and int64 labels. `make_epoch_dataset` yields one
training epoch each time it is iterated: epoch `e` is the permutation
`stateless_shuffle(range(N), (seed, e))` cut into `ceil(N / batch_size)`
batches, batch `b` augmented with the seed `fold_in((seed, e), b)` (every
epoch, or the first `augment_epochs`), so that a resumed run sees the
batches of an uninterrupted one.
`make_eval_dataset` yields every example once, in order, not augmented.
"""

import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ssm_keras import arguments
from ssm_keras.data.specs import AUGMENTATIONS, DataError

_PAD = 4  # Pixels of zero padding for "crop_flip".


def _crop_flip(images, seed):
    """Pads by `_PAD` zeros, crops back at random and flips half the images.

    A batch at a time: one gather per axis with per-image offsets.
    """
    shape = tf.shape(images)
    size, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [_PAD, _PAD], [_PAD, _PAD], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    top = tf.random.stateless_uniform(
        [size, 1], seeds[0], maxval=2 * _PAD + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [size, 1], seeds[1], maxval=2 * _PAD + 1, dtype=tf.int32
    )
    flip = tf.random.stateless_uniform([size, 1], seeds[2]) < 0.5
    columns = tf.range(width)[tf.newaxis]
    columns = left + tf.where(flip, width - 1 - columns, columns)
    rows = top + tf.range(height)[tf.newaxis]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def flip_translate_rotate(images, seed, max_translation=0.1, max_rotation=math.radians(15.0)):
    """The `"flip_translate_rotate"` augmentation of a batch of images.

    Each image is flipped left-right with probability 1/2, shifted by up to
    `max_translation` of its width and height, and rotated about its centre
    by up to `max_rotation` radians, all drawn uniformly and statelessly from
    `seed`; bilinear interpolation, reflecting at the borders.

    Args:
        images: float NHWC batch.
        seed: shape `[2]` integer tensor; the same seed, the same result.
        max_translation: the largest shift, a fraction of the image size.
        max_rotation: the largest angle, in radians.
    """
    shape = tf.shape(images)
    size = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    sign = tf.where(tf.random.stateless_uniform([size], seeds[0]) < 0.5, -1.0, 1.0)
    shift_x = width * tf.random.stateless_uniform(
        [size], seeds[1], -max_translation, max_translation
    )
    shift_y = height * tf.random.stateless_uniform(
        [size], seeds[2], -max_translation, max_translation
    )
    angle = tf.random.stateless_uniform([size], seeds[3], -max_rotation, max_rotation)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) -> input pixel: undo the shift, the rotation about
    # the centre (cx, cy), then the flip.
    x0 = shift_x + (width - 1) / 2
    y0 = shift_y + (height - 1) / 2
    zeros = tf.zeros_like(angle)
    transforms = tf.stack(
        [
            sign * cos,
            sign * sin,
            sign * (-cos * x0 - sin * y0) + (width - 1) / 2,
            -sin,
            cos,
            sin * x0 - cos * y0 + (height - 1) / 2,
            zeros,
            zeros,
        ],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _to_float(images, labels):
    """Casts a batch to float32 images and int64 labels."""
    return tf.cast(images, tf.float32), tf.cast(labels, tf.int64)


_AUGMENT_FUNCTIONS = {
    "crop_flip": _crop_flip,
    "flip_translate_rotate": flip_translate_rotate,
}


def _check_arrays(images, labels, batch_size: int) -> None:
    """Raises DataError for a batch size below 1 or not one label per image."""
    if batch_size < 1 or len(images) != len(labels):
        raise DataError(
            f"Need batch_size >= 1 and one label per image. Received: "
            f"batch_size={batch_size}, {len(images)} images, {len(labels)} labels"
        )


def _shuffled_batches(images, labels, batch_size, epoch_seeds, augment, augment_epochs):
    """Shuffled, augmented float32 batches of one epoch per element of `epoch_seeds`.

    Each epoch's order and augmentation depend only on its seed (an int64
    pair `(seed, e)`), so equal seeds give equal epochs; epochs `e >=
    augment_epochs` (unless it is None) are not augmented.
    """
    with tf.device("/cpu:0"):  # tf.data runs on the host.
        images, labels = tf.constant(images), tf.constant(labels)
    count = len(labels)
    augment_batch = _AUGMENT_FUNCTIONS.get(augment)

    def epoch(epoch_seed):
        order = tf.random.experimental.stateless_shuffle(tf.range(count), epoch_seed)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        augmented = tf.constant(True) if augment_epochs is None else (
            epoch_seed[1] < augment_epochs)
        return batches.enumerate().map(
            lambda step, indices: (
                indices,
                tf.random.experimental.stateless_fold_in(epoch_seed, step),
                augmented,
            )
        )

    def gather(indices, batch_seed, augmented):
        batch_images, batch_labels = _to_float(tf.gather(images, indices),
                                               tf.gather(labels, indices))
        if augment_batch is None:
            return batch_images, batch_labels
        batch_images = tf.cond(augmented, lambda: augment_batch(batch_images, batch_seed),
                               lambda: batch_images)
        return batch_images, batch_labels

    return (
        epoch_seeds.flat_map(epoch)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def make_eval_dataset(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> tf.data.Dataset:
    """Makes the evaluation dataset: every example once, in order.

    Args:
        images: uint8 array of shape (N, H, W, C).
        labels: integer array of shape (N,).
        batch_size: examples per batch; the last batch may be smaller.

    Returns:
        A dataset of `ceil(N / batch_size)` batches of `(float32 images, int64
        labels)`, the images not augmented.
    """
    _check_arrays(images, labels, batch_size)
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size)
        .map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def make_epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    augment: str = "none",
    augment_epochs: int | None = None,
    seed: int = 0,
    epoch: Callable[[], int],
) -> tf.data.Dataset:
    """Makes a dataset that is, each time it is iterated, one training epoch.

    For `model.fit(dataset, epochs=..., initial_epoch=..., steps_per_epoch=None)`
    with a callback that keeps `epoch()` at the epoch being trained (see
    `callbacks.EpochNumber`): Keras iterates the dataset anew at the start of
    every epoch, and each iteration yields the `ceil(N / batch_size)` batches
    of epoch `epoch()`, shuffled and augmented from `(seed, epoch())` alone
    (augmented while `epoch() < augment_epochs`).
    So every epoch trains exactly its own batches whatever
    `steps_per_execution` (an execution ends early where the epoch's data
    ends), and a run resumed at epoch `e` sees the batches of an
    uninterrupted one.

    Args:
        images: uint8 array of shape (N, H, W, C).
        labels: integer array of shape (N,).
        batch_size: examples per batch; every epoch has ceil(N / batch_size).
        augment: one of `AUGMENTATIONS`.
        augment_epochs: the epochs `0 .. augment_epochs - 1` are augmented,
            the later ones not; None: every epoch.
        seed: seed of the shuffles and the augmentation.
        epoch: returns the (0-based) epoch to yield, read when an iteration
            starts.

    Returns:
        A finite dataset of `(float32 images, int64 labels)` batches, whose
        cardinality is the number of batches of one epoch.
    """
    if augment not in AUGMENTATIONS:
        raise DataError(
            f"Unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}."
        )
    if augment_epochs is not None:
        try:
            augment_epochs = arguments.integer("augment_epochs", augment_epochs, low=1)
        except (TypeError, ValueError) as error:
            raise DataError(f"{error}; None augments every epoch.") from None
    _check_arrays(images, labels, batch_size)
    epoch_seeds = tf.data.Dataset.from_generator(
        lambda: iter([np.array([seed, epoch()], np.int64)]),
        output_signature=tf.TensorSpec((2,), tf.int64),
    )
    batches = _shuffled_batches(images, labels, batch_size, epoch_seeds, augment, augment_epochs)
    # Several workers each make the same epoch in memory and keep their part
    # of every batch: DATA sharding (AUTO would try FILE sharding on the
    # generator's single source and fail).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.apply(
        tf.data.experimental.assert_cardinality(math.ceil(len(labels) / batch_size))
    ).with_options(options)
