"""Baking: a masked model as a plain Keras model that needs no ssm_keras.

`bake(model)` copies a functional or Sequential model layer by layer, nested
models included:

- `MaskedDense`, `MaskedConv1D`, `MaskedConv2D`, `MaskedDepthwiseConv2D`
  become `keras.layers.Dense`, `Conv1D`, `Conv2D`, `DepthwiseConv2D` with
  the same configuration and the kernel `W = W0 * m(s)` (the inference mask);
  a bias is copied as is. `FixedAffineBatchNormalization` becomes a
  `BatchNormalization` with the same weights.
- `PerImageStandardization` becomes a stock functional sub-model of
  `keras.ops` calls, `(x - mean(x)) / max(std(x), 1 / sqrt(n))` per image
  (`n = height * width * channels`): the ops of
  `tf.image.per_image_standardization`, so the values are the same.
- Every other layer (batch norm with its moving statistics, pooling,
  `Flatten`, `Add`, activations) is cloned from its config with its weights.

Keras 3 serialises `keras.ops` calls of a functional model, so
`keras.saving.load_model` reads the baked model in a process that never
imports ssm_keras.
"""

import keras
import numpy as np
import tensorflow as tf

from ssm_keras import layers as ssm_layers
from ssm_keras.errors import ExportError
from ssm_keras.transforms import cloning, dead_units


def inference_mask(layer):
    """The float32 mask `m(s)` a masked layer uses at inference.

    Raises:
        ExportError: the layer is a `bernoulli` mask that samples a fresh
            mask at every inference call (`bernoulli_eval="sample"`), which
            no fixed kernel reproduces.
    """
    samples = layer.mask_kind == "bernoulli" and layer.bernoulli_eval == "sample"
    if samples and layer.regime == "mask":
        raise ExportError(
            f"layer {layer.name!r} samples a new Bernoulli mask at every call "
            "(bernoulli_eval='sample'); only deterministic masks can be exported. "
            "Rebuild it with bernoulli_eval='expected'."
        )
    return np.asarray(layer.compute_mask_values(training=False), dtype=np.float32)


def effective_kernel(layer):
    """`W = W0 * m(s)` of a masked layer as a float32 NumPy array.

    `m` is in {-1, 0, 1}, so every entry is exactly `+-W0` or zero.
    """
    return layer.kernel.numpy().astype(np.float32) * inference_mask(layer)


def standardization_model(image_shape, name="standardize"):
    """Per-image standardisation from stock `keras.ops`, as a functional model.

    `y = (x - mean(x)) / max(std(x), 1 / sqrt(n))` over each image's
    `n = height * width * channels` values, with `1 / sqrt(n)` rounded to
    float32 by `tf.math.rsqrt` as `tf.image.per_image_standardization` does.

    Args:
        image_shape: `(height, width, channels)`.
        name: the model's (layer's) name.
    """
    images = keras.Input(shape=tuple(image_shape), name=f"{name}_images")
    axes = tuple(range(1, len(image_shape) + 1))
    min_std = float(tf.math.rsqrt(tf.constant(float(np.prod(image_shape)), tf.float32)))
    mean = keras.ops.mean(images, axis=axes, keepdims=True)
    std = keras.ops.std(images, axis=axes, keepdims=True)
    standardized = keras.ops.divide(
        keras.ops.subtract(images, mean), keras.ops.maximum(std, min_std)
    )
    return keras.Model(images, standardized, name=name)


# The stock Keras layer of each masked layer type, and the arguments that
# the two share besides name, dtype, activation and bias.
_CONV_ARGUMENTS = ("kernel_size", "strides", "padding", "dilation_rate")
STOCK_COUNTERPARTS = {
    ssm_layers.MaskedDense: (keras.layers.Dense, ("units",)),
    ssm_layers.MaskedConv1D: (keras.layers.Conv1D, ("filters", "groups", *_CONV_ARGUMENTS)),
    ssm_layers.MaskedConv2D: (keras.layers.Conv2D, ("filters", "groups", *_CONV_ARGUMENTS)),
    ssm_layers.MaskedDepthwiseConv2D: (
        keras.layers.DepthwiseConv2D, ("depth_multiplier", *_CONV_ARGUMENTS)),
}


def _plain_layer(layer):
    """The stock layer that replaces `layer` in the baked model (no weights yet)."""
    if type(layer) in STOCK_COUNTERPARTS:
        stock, arguments = STOCK_COUNTERPARTS[type(layer)]
        return stock(**{argument: getattr(layer, argument) for argument in arguments},
                     **ssm_layers.shared_arguments(layer))
    if isinstance(layer, ssm_layers.PerImageStandardization):
        return standardization_model(layer.input.shape[1:], name=layer.name)
    if isinstance(layer, ssm_layers.FixedAffineBatchNormalization):
        return keras.layers.BatchNormalization.from_config(layer.get_config())
    if isinstance(layer, ssm_layers.MaskedLayer):
        raise ExportError(
            f"layer {layer.name!r} is a {type(layer).__name__}, which bake() "
            f"cannot convert (it converts {', '.join(t.__name__ for t in STOCK_COUNTERPARTS)})."
        )
    return layer.__class__.from_config(layer.get_config())


def _baked_weights(layer):
    """The weights of `layer`'s baked copy: `[W0 * m, bias]` for masked layers."""
    if isinstance(layer, ssm_layers.MaskedLayer):
        bias = [layer.bias.numpy()] if layer.use_bias else []
        return [effective_kernel(layer), *bias]
    return layer.get_weights()


def bake(model, prune_dead_units=False):
    """A copy of a functional or Sequential masked model made of stock Keras
    layers only, nested models included: the counterpart of
    `tfmot.sparsity.keras.strip_pruning`.

    Each masked layer becomes its Keras layer (`MaskedDense` a `Dense`, ...)
    with the effective kernel `W0 * m(s)`; all other weights (biases, batch
    norms' parameters and moving statistics) are copied. The baked model
    takes the same inputs and computes the same outputs, and
    `keras.saving.load_model` reads it without ssm_keras.

    With `prune_dead_units`, hidden units and channels that a trained mask
    left without inputs or outputs are removed where that keeps the outputs
    equal (`ssm_keras.transforms.dead_units.prune_dead_units`, which also reports what
    each layer lost; the export does this by default).

    Raises:
        ExportError: a layer cannot be baked (a sampling Bernoulli mask, or
            a masked layer type without a stock counterpart).
    """
    baked, pairs = cloning.clone_layers(model, _plain_layer)
    for layer, baked_layer in pairs:
        weights = _baked_weights(layer)
        if weights:
            baked_layer.set_weights(weights)
    if prune_dead_units:
        baked, _ = dead_units.prune_dead_units(baked)
    return baked
