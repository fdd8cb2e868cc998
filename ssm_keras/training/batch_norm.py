"""Batch-norm statistics of the network that is evaluated.

A `bernoulli` mask trains on sampled masks, so the moving means and
variances of its batch-norm layers are those of sampled networks, while
evaluation (`bernoulli_eval=expected`) uses the expected mask
`[sigmoid(s) > 0.5]`, another network: its layers see other activations, and
a model that fits its training batches can predict one class at evaluation.
`recalibrate` re-estimates the statistics under the evaluated masks, as
"precise BN" does: every batch-norm layer normalises with its batch's
statistics while every masked layer uses its inference mask, and each
layer's moving mean and variance become the average over `batches` fixed
training batches (no augmentation):

    mu = (1/K) sum_k mean_k(x),  sigma^2 = (1/K) sum_k var_k(x)

`RecalibrateBatchNorm` does it before every validation of a run; training
does it before the final evaluation, so the saved model (and every export
made from it) holds these statistics. The same helps any model after a
short run: with Keras' momentum 0.99 a few hundred steps leave the moving
statistics far from the data's (`recalibrates` with `setting=True`).
"""

import keras
import numpy as np

from ssm_keras import data
from ssm_keras import layers as ssm_layers

# Training batches the statistics are averaged over.
RECALIBRATION_BATCHES = 50


def needs_recalibration(model):
    """Whether `model` evaluates other masks than it trained with: a
    `bernoulli` mask in training that evaluates its expected mask, and
    batch-norm layers whose statistics depend on it."""
    sampled = any(layer.mask_kind == "bernoulli" and layer.regime == "mask"
                  and layer.bernoulli_eval == "expected"
                  for layer in ssm_layers.masked_layers(model))
    return sampled and bool(ssm_layers.find_layers(model, keras.layers.BatchNormalization))


def recalibrates(model, setting):
    """Whether `model` gets its statistics re-estimated for `setting`
    (`--recalibrate_batch_norm`): None, as `needs_recalibration`; True, when
    it has batch-norm layers; False, never."""
    if setting is None:
        return needs_recalibration(model)
    return setting and bool(ssm_layers.find_layers(model, keras.layers.BatchNormalization))


def _statistics_model(model):
    """`model` (the same layers and weights) with its batch-norm layers
    called in training mode and every other layer in inference mode."""

    def call(layer, *args, **kwargs):
        kwargs["training"] = isinstance(layer, keras.layers.BatchNormalization)
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                    call_function=call)


def recalibrate(model, images, batch_size, batches=RECALIBRATION_BATCHES, seed=0):
    """Sets every batch-norm layer's moving statistics to those of its
    inputs under the evaluated masks (see the module docstring).

    Args:
        model: a functional Keras model.
        images: training images (uint8, as the data sets give them).
        batch_size: images per batch.
        batches: how many batches to average over (fewer if `images` holds
            fewer); drawn without replacement with `seed`.
    """
    norms = ssm_layers.find_layers(model, keras.layers.BatchNormalization)
    if not norms or len(images) == 0:
        return
    count = min(len(images), batches * batch_size)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[:count])
    dataset = data.make_eval_dataset(images[chosen], np.zeros(count, np.int64), batch_size)
    statistics_model = _statistics_model(model)
    momenta = [layer.momentum for layer in norms]
    try:
        for index, (batch, _) in enumerate(dataset):
            for layer in norms:  # the running average of the batches so far
                layer.momentum = 1.0 - 1.0 / (index + 1)
            statistics_model(batch)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """`recalibrate(model, images, batch_size)` before every evaluation in
    `fit` (the validation after each epoch)."""

    def __init__(self, images, batch_size):
        super().__init__()
        self.images = images
        self.batch_size = batch_size

    def on_test_begin(self, logs=None):
        recalibrate(self.model, self.images, self.batch_size)
