"""Baking: a masked model as a plain Keras model that needs no ssm_keras.

`bake(model)` copies a functional or Sequential model layer by layer, nested
models included:

- Each masked layer becomes its stock Keras layer (the registry's
  counterpart: `MaskedDense` a `Dense`, `MaskedLSTM` an `LSTM`, ...) made
  from its config without the mask arguments and the masked kernels'
  initialisers, with every masked kernel set to `W = W0 * m(s)` (the
  inference mask, computed in NumPy in the variable's dtype: every entry is
  `+-W0` or zero) and every other variable (biases) copied by key.
  `FixedAffineBatchNormalization` becomes a `BatchNormalization` with the
  same weights. A `MaskedComposite` becomes the layer it wraps (keras_hub's
  `TransformerEncoder`, ...), made from its config, with the effective
  kernels in the layers inside it.
- `PerImageStandardization` becomes a stock functional sub-model of
  `keras.ops` calls, `(x - mean(x)) / max(std(x), 1 / sqrt(n))` per image
  (`n = height * width * channels`): the ops of
  `tf.image.per_image_standardization`, so the values are the same.
- Every other layer with weights (a batch norm with its moving statistics,
  a layer left unmasked) is cloned from its config, without this package's
  initialisers (a baseline's `elus` kernels: the layer gets Keras' default,
  and its weights are copied right after); a layer without weights
  (pooling, `Flatten`, activations, `Lambda`) is the same object in both
  models.

A model that diverged is refused (`ExportError`): a non-finite score,
kernel or other weight has no inference value (`check_finite`).

Keras 3 serialises `keras.ops` calls of a functional model, so
`keras.saving.load_model` reads the baked model in a process that never
imports ssm_keras.
"""

import keras
import numpy as np
import tensorflow as tf

from ssm_keras import arguments
from ssm_keras import layers as ssm_layers
from ssm_keras.errors import ExportError
from ssm_keras.layers import base, registry
from ssm_keras.transforms import cloning, dead_units


def check_finite(scope, arrays, what="weights"):
    """Raises `ExportError` naming layer `scope` and the count when `arrays`
    (its `what`) hold NaN or infinities."""
    count = sum(int(np.size(array) - np.count_nonzero(np.isfinite(array))) for array in arrays)
    if count:
        raise ExportError(
            f"layer {scope!r} has {count:,} non-finite values (NaN or infinite) in its {what}: "
            "the model diverged; export a checkpoint from before")


def inference_mask(layer, name="kernel"):
    """The float32 mask `m(s)` of kernel `name` a masked layer uses at
    inference.

    Raises:
        ExportError: the layer is a `bernoulli` mask that samples a fresh
            mask at every inference call (`bernoulli_eval="sample"`), which
            no fixed kernel reproduces; or its scores, `W0` or threshold of
            kernel `name` are not all finite (the model diverged).
    """
    samples = layer.mask_kind == "bernoulli" and layer.bernoulli_eval == "sample"
    if samples and layer.regime == "mask":
        raise ExportError(
            f"layer {layer.mask_scope!r} samples a new Bernoulli mask at every call "
            "(bernoulli_eval='sample'); only deterministic masks can be exported. "
            "Rebuild it with bernoulli_eval='expected'."
        )
    variables = (layer.kernel_variable(name), layer.scores_variable(name),
                 layer.threshold_variable(name))
    check_finite(layer.mask_scope, [variable.numpy() for variable in variables
                                    if variable is not None], f"{name}'s scores or W0")
    return np.asarray(layer.compute_mask_values(name, training=False), dtype=np.float32)


def effective_kernel(layer, name="kernel"):
    """`W = W0 * m(s)` of kernel `name` of a masked layer as a NumPy array in
    the dtype of `W0`'s variable. `m` is in {-1, 0, 1}, so every entry is
    exactly `+-W0` or zero."""
    kernel = layer.kernel_variable(name).numpy()
    return kernel * inference_mask(layer, name).astype(kernel.dtype)


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


def stock_config(layer):
    """The config of a masked layer's stock counterpart: its config without
    the mask arguments and the masked kernels' initialisers (which may be
    ssm_keras classes: a baked model loads without ssm_keras)."""
    config = layer.get_config()
    for key in (*base.MASK_DEFAULTS, *type(layer).initializer_arguments()):
        config.pop(key, None)
    return config


def _is_package_initializer(key, value):
    """Whether config entry `key: value` is an initialiser of this package."""
    return (key.endswith("initializer") and isinstance(value, dict)
            and str(value.get("module", "")).startswith("ssm_keras"))


def _without_package_initializers(config):
    """A layer config without the initialisers of this package, nested
    configs (a wrapper's layer, a cell) included: the layer made from it
    gets Keras' default initialisers, and loads without ssm_keras."""
    if isinstance(config, dict):
        return {key: _without_package_initializers(value) for key, value in config.items()
                if not _is_package_initializer(key, value)}
    if isinstance(config, list):
        return [_without_package_initializers(value) for value in config]
    return config


def _plain_layer(layer):
    """The stock layer that replaces `layer` in the baked model (no weights yet)."""
    stock = registry.stock_type(type(layer))
    if stock is not None:
        return stock.from_config(stock_config(layer))
    if isinstance(layer, ssm_layers.MaskedComposite):
        return layer.stock_layer()
    if isinstance(layer, ssm_layers.PerImageStandardization):
        return standardization_model(layer.input.shape[1:], name=layer.name)
    if isinstance(layer, ssm_layers.FixedAffineBatchNormalization):
        return keras.layers.BatchNormalization.from_config(layer.get_config())
    if isinstance(layer, (ssm_layers.MaskedLayer, ssm_layers.MaskedContainer)):
        raise ExportError(
            f"layer {layer.name!r} is a {type(layer).__name__}, which is not registered "
            "(ssm_keras.register), so bake() does not know its stock counterpart."
        )
    if cloning.weightless(layer):
        return cloning.weightless_copy(layer)
    return layer.__class__.from_config(_without_package_initializers(cloning.layer_config(layer)))


def _copy_baked_weights(layer, baked_layer):
    """The baked copy's weights: the effective kernels of a masked layer (or
    of the masked layers inside a `MaskedComposite`) and its other
    variables, matched by key; any other layer's weights as they are."""
    composite = isinstance(layer, ssm_layers.MaskedComposite)
    if registry.stock_type(type(layer)) is None and not composite:
        if layer.weights:
            values = layer.get_weights()
            check_finite(layer.name, values)
            baked_layer.set_weights(values)
        return
    kernels = {id(leaf.kernel_variable(name)): effective_kernel(leaf, name)
               for leaf in base.masked_leaves(layer) for name in leaf.masked_kernels}
    variables = ssm_layers.named_variables(layer.layer if composite else layer)
    sources = {key: variables[key] for key in ssm_layers.named_variables(baked_layer)}
    values = {key: kernels[id(source)] if id(source) in kernels else source.numpy()
              for key, source in sources.items()}
    check_finite(layer.name, values.values())
    for key, variable in ssm_layers.named_variables(baked_layer).items():
        variable.assign(values[key])


def bake(model, prune_dead_units=False, check_inputs=None):
    """A copy of a functional or Sequential masked model made of stock Keras
    layers only, nested models included: the counterpart of
    `tfmot.sparsity.keras.strip_pruning`.

    Each masked layer becomes its Keras layer (`MaskedDense` a `Dense`, ...)
    with the effective kernels `W0 * m(s)`; all other weights (biases, batch
    norms' parameters and moving statistics) are copied. The baked model
    takes the same inputs and computes the same outputs, and
    `keras.saving.load_model` reads it without ssm_keras.

    With `prune_dead_units`, hidden units and channels that a trained mask
    left without inputs or outputs are removed where that keeps the outputs
    equal (`ssm_keras.transforms.dead_units.prune_dead_units`, which also reports what
    each layer lost; the export does this by default). The pruned model is
    checked against the baked one on `check_inputs` (default: random raw
    pixels, for a model of one input of known shape; pass them for any
    other).

    Raises:
        ExportError: a layer cannot be baked (a sampling Bernoulli mask, a
            masked layer type without a stock counterpart, or non-finite
            weights or scores: the model diverged).
        ValueError: the model is not a built functional or Sequential model
            (`cloning.check_copyable`).
    """
    cloning.check_copyable(model, "bake")
    prune_dead_units = arguments.boolean("prune_dead_units", prune_dead_units)
    baked = cloning.copy_model(model, _plain_layer, _copy_baked_weights)
    if prune_dead_units:
        baked, _ = dead_units.prune_dead_units(baked, check_inputs=check_inputs)
    return baked
