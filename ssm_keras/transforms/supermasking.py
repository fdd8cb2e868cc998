"""Any functional or Sequential Keras model as a supermask, and back.

`supermask(model)` copies a model with `keras.models.clone_model`, nested
functional and Sequential sub-models included, and replaces its Keras
layers by their masked counterparts:

| Keras layer              | masked layer                    |
| ------------------------ | ------------------------------- |
| `Dense`                  | `MaskedDense`                   |
| `Conv1D`                 | `MaskedConv1D`                  |
| `Conv2D`                 | `MaskedConv2D`                  |
| `DepthwiseConv2D`        | `MaskedDepthwiseConv2D`         |
| `BatchNormalization`     | `FixedAffineBatchNormalization` |

Each masked layer computes with `W = W0 * m(s)`: `W0` is drawn afresh
(`kernels="redraw"`, stateless-seeded by `(seed, layer name)`) or is the
layer's current kernel (`kernels="keep"`); only the scores `s` train.
Biases and the batch norms' `gamma` and `beta` keep their values and stay
frozen unless `train_bias` / `train_batch_norm` say otherwise; the batch
norms' moving statistics are updated in training as in any Keras model.
Every other layer is copied with its weights and left as it is (a
`LayerNormalization` still trains, say; freeze it yourself if the regime
should exclude it).

`with_regime(model, regime)` copies a masked model into the other regime:
`mask_then_weights` freezes the mask and trains the kernels.
"""

import dataclasses

import keras

from ssm_keras import choices
from ssm_keras import initializers as ssm_initializers
from ssm_keras import layers as ssm_layers
from ssm_keras.transforms import cloning

KERNEL_CHOICES = ("redraw", "keep")


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """How masked layers mask: the `MaskedLayer` arguments shared by a model.

    Attributes:
        mask: one of `choices.MASK_KINDS`.
        tau_fraction: threshold masks: `tau = tau_fraction * max(|s_init|)`.
        density: top-k masks: the fraction of weights kept.
        score_initializer: initialiser of the scores; None picks the mask
            kind's default.
        bernoulli_eval: `expected` or `sample` (Bernoulli masks).
        regime: `mask` (scores train) or `mask_then_weights` (kernels train
            under the frozen mask).
    """

    mask: str = "signed"
    tau_fraction: float = 0.4
    density: float = 0.5
    score_initializer: str | None = None
    bernoulli_eval: str = "expected"
    regime: str = "mask"


def _conv_arguments(layer):
    return dict(kernel_size=layer.kernel_size, strides=layer.strides,
                padding=layer.padding, dilation_rate=layer.dilation_rate)


# The masked counterpart of each maskable Keras layer type (exact types: a
# subclass may compute something else), made from the layer and the masked
# layers' keyword arguments.
MASKED_COUNTERPARTS = {
    keras.layers.Dense: lambda layer, kwargs: ssm_layers.MaskedDense(layer.units, **kwargs),
    keras.layers.Conv1D: lambda layer, kwargs: ssm_layers.MaskedConv1D(
        layer.filters, groups=layer.groups, **_conv_arguments(layer), **kwargs),
    keras.layers.Conv2D: lambda layer, kwargs: ssm_layers.MaskedConv2D(
        layer.filters, groups=layer.groups, **_conv_arguments(layer), **kwargs),
    keras.layers.DepthwiseConv2D: lambda layer, kwargs: ssm_layers.MaskedDepthwiseConv2D(
        depth_multiplier=layer.depth_multiplier, **_conv_arguments(layer), **kwargs),
}


def _is_clonable(model):
    """Whether `clone_model` can copy `model` layer by layer: a Sequential or
    a functional model (Keras' class `Functional`, or a subclass of it)."""
    return isinstance(model, keras.Sequential) or any(
        cls.__name__ == "Functional" for cls in type(model).__mro__
    )


def _check_clonable(model, what="model"):
    if not _is_clonable(model):
        raise ValueError(
            f"{what} {model.name!r} is a subclassed keras.Model "
            f"({type(model).__name__}), whose layers keras.models.clone_model "
            "cannot see; build it as a functional or Sequential model to "
            "supermask it."
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_clonable(layer, what="sub-model")


def _has_kernel(layer):
    """Whether `layer` holds a kernel (`kernel`, `depthwise_kernel`, ...)."""
    return type(layer) in MASKED_COUNTERPARTS or any(
        variable.name.endswith("kernel") for variable in layer.weights)


def _selector(layers, leaves):
    """`is_selected(layer)` for the `layers` argument of `supermask`."""
    if layers is None:
        return _has_kernel
    if callable(layers):
        return layers
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise ValueError(
            "layers must be None, a collection of layer names or a predicate "
            f"layer -> bool. Received: layers={layers!r}"
        )
    names = set(layers)
    unknown = sorted(names - {layer.name for layer in leaves})
    if unknown:
        raise ValueError(f"layers names layers the model does not have: {unknown}")
    return lambda layer: layer.name in names


def _why_not_exact(layer, train_bias):
    """Why masking `layer` would not compute what it computes, or None."""
    if type(layer) not in MASKED_COUNTERPARTS:
        return (
            f"its type {type(layer).__name__} has no masked counterpart (maskable: "
            f"{', '.join(kind.__name__ for kind in MASKED_COUNTERPARTS)}); pass "
            "layers= to leave it as it is"
        )
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"masked convolutions are channels_last (data_format={layer.data_format!r})"
    for attribute in ("kernel_regularizer", "kernel_constraint",
                      "depthwise_regularizer", "depthwise_constraint"):
        if getattr(layer, attribute, None) is not None:
            what = attribute.replace("depthwise", "kernel").replace("_", " ")
            return f"it has a {what}, which a mask of a frozen kernel cannot honour"
    for attribute in ("bias_regularizer", "bias_constraint"):
        if train_bias and getattr(layer, attribute, None) is not None:
            return f"it has a {attribute.replace('_', ' ')} and train_bias=True"
    if getattr(layer, "lora_enabled", False):
        return "it has LoRA weights"
    return None


def _kernel_initializer(layer):
    """The initialiser a Keras layer drew its kernel with."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.depthwise_initializer
    return layer.kernel_initializer


def _check_masked_layers(selected, train_bias):
    seen = {}
    for layer in selected:
        reason = _why_not_exact(layer, train_bias)
        if reason:
            raise ValueError(f"cannot supermask layer {layer.name!r}: {reason}.")
        if layer.name in seen:
            raise ValueError(
                f"cannot supermask layer {layer.name!r}: two masked layers share "
                "the name (in different sub-models), and masked layers are "
                "seeded and stored by name; give them distinct names."
            )
        seen[layer.name] = layer


def supermask(
    model,
    mask="signed",
    *,
    kernels="redraw",
    kernel_initializer="elus",
    init_factor=None,
    seed=0,
    layers=None,
    tau_fraction=0.4,
    density=0.5,
    score_initializer=None,
    bernoulli_eval="expected",
    regime="mask",
    train_bias=False,
    train_batch_norm=False,
):
    """A copy of a functional or Sequential model as a supermask.

    Every selected layer (by default every layer with a kernel) becomes its
    masked counterpart, computing with `W = W0 * m(s)`; batch norms get
    frozen `gamma` and `beta` (unless `train_batch_norm`); all other layers
    are copied with their weights. Nested functional and Sequential models
    are masked too.

    Args:
        model: a built functional or Sequential `keras.Model`.
        mask: the mask kind, one of `choices.MASK_KINDS`.
        kernels: `redraw` (`W0` drawn by `kernel_initializer`, seeded by
            `(seed, layer name)`) or `keep` (`W0` is the layer's current
            kernel, e.g. pretrained weights).
        kernel_initializer: initialiser of `W0` for `redraw` (a name of
            `ssm_keras.initializers.get` or an initialiser).
        init_factor: the `factor` of the `elus` initialiser (default 6).
        seed: int; seeds `W0` (`redraw`) and the scores. None draws them
            unseeded (not reproducible).
        layers: None (every layer with a kernel), a collection of layer
            names, or a predicate `layer -> bool`; the others stay as they are.
        tau_fraction, density, score_initializer, bernoulli_eval, regime:
            the `MaskConfig` settings.
        train_bias: whether the masked layers' biases train.
        train_batch_norm: whether the batch norms' `gamma` and `beta` train.

    Returns:
        A new model of the same kind, names and outputs' shapes; the input
        model is unchanged.

    Raises:
        ValueError: a setting is not allowed, or a selected layer cannot be
            masked exactly (the message names it and says why).

    Example:

    >>> masked = ssm_keras.supermask(model, "signed", seed=0)
    >>> masked.compile("sgd", "sparse_categorical_crossentropy")
    >>> masked.fit(x, y)
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"supermask takes a keras.Model. Received: {type(model).__name__}")
    if kernels not in KERNEL_CHOICES:
        raise ValueError(
            f"kernels must be one of {KERNEL_CHOICES}. Received: kernels={kernels!r}"
        )
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
    _check_clonable(model)
    mask_config = MaskConfig(mask, tau_fraction, density, score_initializer,
                             bernoulli_eval, regime)
    leaves = cloning.leaf_layers(model)
    is_selected = _selector(layers, leaves)
    selected = [layer for layer in leaves if is_selected(layer)]
    _check_masked_layers(selected, train_bias)
    initializer = ssm_initializers.get(kernel_initializer, init_factor)
    selected_ids = {id(layer) for layer in selected}

    def masked_kwargs(layer):
        return dict(
            **ssm_layers.shared_arguments(layer),
            bias_initializer=layer.bias_initializer,
            train_bias=train_bias,
            kernel_initializer=initializer if kernels == "redraw" else _kernel_initializer(layer),
            seed=seed,
            **dataclasses.asdict(mask_config),
        )

    def convert(layer):
        if id(layer) in selected_ids:
            return MASKED_COUNTERPARTS[type(layer)](layer, masked_kwargs(layer))
        if type(layer) is keras.layers.BatchNormalization and not train_batch_norm:
            return ssm_layers.FixedAffineBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    clone, pairs = cloning.clone_layers(model, convert)
    for old, new in pairs:
        if id(old) not in selected_ids:
            new.set_weights(old.get_weights())
            continue
        if kernels == "keep":
            new.kernel.assign(old.kernel)
        if new.use_bias:
            new.bias.assign(old.bias)
    return clone


def with_regime(model, regime):
    """A copy of a masked model, with the same weights, in another regime.

    For "supermask as initialisation": take a model trained in the `mask`
    regime, `with_regime(model, "mask_then_weights")`, compile and train:
    its mask is frozen and its kernels train. Nested models too.

    Raises:
        ValueError: `regime` is not one of `choices.MASKED_REGIMES`.
    """
    if regime not in choices.MASKED_REGIMES:
        raise ValueError(
            f"regime must be one of {choices.MASKED_REGIMES}. Received: regime={regime!r}"
        )

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, ssm_layers.MaskedLayer):
            config["regime"] = regime
        return layer.__class__.from_config(config)

    clone, pairs = cloning.clone_layers(model, clone_layer)
    # The regime changes the order of trainable and frozen variables, so
    # weights are copied by name, not by position.
    for old_layer, new_layer in pairs:
        old_weights = {weight.name: weight for weight in old_layer.weights}
        for weight in new_layer.weights:
            weight.assign(old_weights[weight.name])
    return clone
