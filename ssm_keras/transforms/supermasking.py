"""Any functional or Sequential Keras model as a supermask, and back.

`supermask(model)` copies a model with `keras.models.clone_model`, nested
functional and Sequential sub-models included, and replaces each layer of a
registered type (`ssm_keras.layers.registry`; `ssm_keras.register` adds
one) by its masked counterpart:

| Keras layer                                        | masked layer                          |
| -------------------------------------------------- | ------------------------------------- |
| `Dense`, `EinsumDense`                             | `MaskedDense`, `MaskedEinsumDense`    |
| `Conv1D`, `Conv2D`, `Conv3D`                       | `MaskedConv1D`, ...                   |
| `Conv1DTranspose`, `Conv2DTranspose`, `Conv3DTranspose` | `MaskedConv1DTranspose`, ...     |
| `DepthwiseConv1D`, `DepthwiseConv2D`               | `MaskedDepthwiseConv1D`, ...          |
| `SeparableConv1D`, `SeparableConv2D`               | `MaskedSeparableConv1D`, ...          |
| `Embedding`                                        | `MaskedEmbedding`                     |
| `SimpleRNN`, `LSTM`, `GRU`                         | `MaskedSimpleRNN`, ... (masked cells) |
| `MultiHeadAttention`, `GroupQueryAttention`        | `MaskedMultiHeadAttention`, `MaskedGroupedQueryAttention` (masked projections) |
| `BatchNormalization`                               | `FixedAffineBatchNormalization`       |

Each masked layer computes with `W = W0 * m(s)`: `W0` is drawn afresh
(`kernels="redraw"`, stateless-seeded by `(seed, layer name)`) or is the
layer's current kernel (`kernels="keep"`).

A supermask is frozen everywhere it is not masked: only the scores `s`
train. Biases of masked layers keep their values and stay frozen unless
`train_bias`; batch norms' `gamma` and `beta` unless `train_batch_norm` (a
batch norm stays in training mode: its moving statistics follow the batches
as in any Keras model); every other layer with weights is frozen
(`layer.trainable = False`, sublayers included), a layer left out with
`layers=` too, unless `trainable_layers` names it. A layer set
`trainable=False` before `supermask` stays frozen (its scores too, if it is
masked). `summary(model)` reports, per layer, what is masked, frozen or
trainable.

`with_regime(model, regime)` copies a masked model into the other regime:
`mask_then_weights` freezes the mask and trains the kernels.
"""

import dataclasses
import math
import typing

import keras

from ssm_keras import arguments, choices
from ssm_keras import initializers as ssm_initializers
from ssm_keras import layers as ssm_layers
from ssm_keras.layers import base, composite, registry
from ssm_keras.transforms import cloning

KERNEL_CHOICES = ("redraw", "keep")
_BATCH_NORMS = (keras.layers.BatchNormalization, ssm_layers.FixedAffineBatchNormalization)


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """How masked layers mask: the mask arguments shared by a model.

    Attributes:
        mask: one of `choices.MASK_KINDS`.
        tau_fraction: threshold masks only: `tau = tau_fraction *
            max(|s_init|)`, in [0, 1); None: 0.4.
        density: top-k masks only: the fraction of weights kept, in (0, 1];
            None: 0.5.
        score_initializer: initialiser of the scores; None picks the mask
            kind's default.
        bernoulli_eval: `expected` or `sample` (Bernoulli masks).
        regime: `mask` (scores train) or `mask_then_weights` (kernels train
            under the frozen mask).

    Raises:
        TypeError, ValueError: a setting of the wrong type or out of range,
            naming it (`base.pop_mask_arguments`), or `tau_fraction` /
            `density` given for a mask kind that ignores it
            (`choices.MASK_SHAPE_USERS`, as the training command refuses).
    """

    mask: str = "signed"
    tau_fraction: float | None = None
    density: float | None = None
    score_initializer: str | None = None
    bernoulli_eval: str = "expected"
    regime: str = "mask"

    def __post_init__(self):
        base.pop_mask_arguments(self.layer_arguments())
        for name, kinds in choices.MASK_SHAPE_USERS.items():
            value = getattr(self, name)
            if value is not None and self.mask not in kinds:
                raise base.ignored_argument_error(name, value, self.mask)

    def layer_arguments(self):
        """The masked layers' mask arguments: the settings, None ones as
        the layers' defaults (`base.MASK_DEFAULTS`)."""
        settings = dataclasses.asdict(self)
        for name in choices.MASK_SHAPE_USERS:
            if settings[name] is None:
                settings[name] = base.MASK_DEFAULTS[name]
        return settings


def _has_kernel(layer):
    """Whether `layer` is of a registered type, holds a layer of one (a
    composite layer) or holds a kernel (a weight named `kernel`,
    `depthwise_kernel`, ...): what `supermask` masks by default, refusing
    the kernel layers it cannot mask."""
    return (registry.masked_class_of(layer) is not None or composite.is_composite(layer)
            or any(variable.name.endswith("kernel") for variable in layer.weights))


def _names(layers, leaves, argument, allowed="a collection of layer names"):
    """The set of layer names `layers` (an argument of `supermask`: a
    collection or an iterator of names) gives."""
    try:
        names = None if isinstance(layers, str) else list(layers)
    except TypeError:  # not iterable
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{argument} must be {allowed}. Received: {argument}={layers!r}")
    names = set(names)
    unknown = sorted(names - {layer.name for layer in leaves})
    if unknown:
        raise ValueError(f"{argument} names layers the model does not have: {unknown}")
    return names


def _selector(layers, leaves):
    """`is_selected(layer)` for the `layers` argument of `supermask`."""
    if layers is None:
        return _has_kernel
    if callable(layers):
        return layers
    names = _names(layers, leaves, "layers",
                   "None, a collection of layer names or a predicate layer -> bool")
    return lambda layer: layer.name in names


def _why_not_exact(layer, train_bias):
    """Why masking `layer` would not compute what it computes, or None."""
    if isinstance(layer, (ssm_layers.MaskedLayer, ssm_layers.MaskedContainer)):
        return (f"it is masked already ({type(layer).__name__}); with_regime changes a "
                "supermask's regime, and layers= leaves its masked layers out")
    cls = registry.masked_type(type(layer))
    if cls is None and composite.is_composite(layer):
        return composite.unmaskable_reason(layer, train_bias)
    if cls is None:
        maskable = ", ".join(stock.__name__ for stock, _ in registry.entries())
        return (
            f"its type {type(layer).__name__} has no masked counterpart (maskable: "
            f"{maskable}); pass layers= to leave it as it is, or register a masked "
            "layer for it (ssm_keras.register)"
        )
    config = cls.counterpart_config(layer)
    reason = base.unmaskable_reason(config, cls.initializer_arguments(), layer.dtype_policy)
    if reason:
        return reason
    for key in ("bias_regularizer", "bias_constraint"):
        if train_bias and config.get(key) is not None:
            return f"it has a {key.replace('_', ' ')} and train_bias=True"
    return None


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


def _deserialization_reason(error):
    """What went wrong inside Keras' `from_config`, without the config it
    prints: the text after "Exception encountered:", before "Full object
    config"."""
    text = str(error).split("Exception encountered:")[-1]
    return text.split("Full object config")[0].strip().rstrip(".")


def masked_counterpart(layer, kernel_initializer=None, **mask_arguments):
    """The (unbuilt) masked counterpart of the stock `layer`, made from its
    config: `kernel_initializer` (None: the layer's own) for every masked
    kernel, and the mask arguments (`mask`, `mask_seed`, ...). A composite
    layer becomes a `MaskedComposite`, built as `layer` is."""
    cls = registry.masked_type(type(layer))
    if cls is None:
        return ssm_layers.MaskedComposite.around(layer, kernel_initializer, **mask_arguments)
    config = cls.counterpart_config(layer)
    if kernel_initializer is not None:
        config.update({argument: kernel_initializer for argument in cls.initializer_arguments()})
    return cls.from_config({**config, **mask_arguments})


def _sublayer_paths(layer, prefix=""):
    """The paths (`block/inner`) of the layers inside `layer` that hold
    variables, in order."""
    paths = []
    for sublayer in layer._layers:
        if sublayer.weights:
            path = f"{prefix}{sublayer.name}"
            paths += [path, *_sublayer_paths(sublayer, f"{path}/")]
    return paths


def _renamed_sublayers(stock, copy):
    """`(stock path, copy path)` of the first sublayer whose name differs
    between a layer and its copy made from its config, or None."""
    pairs = zip(_sublayer_paths(stock), _sublayer_paths(copy))
    return next(((before, after) for before, after in pairs if before != after), None)


def copy_stock_weights(stock, masked, kernels="redraw"):
    """Copies the stock layer's biases and other variables into its masked
    counterpart, matched by key (`named_variables`; a `MaskedComposite`'s
    are those of the layer it wraps); its kernels too, as `W0`, with
    `kernels="keep"`.

    Raises:
        ValueError: the counterpart, made from the stock layer's config, has
            other variables than the scores and thresholds it adds.
    """
    leaves = base.masked_leaves(masked)
    kernel_ids = {id(leaf.kernel_variable(name)) for leaf in leaves for name in leaf.masked_kernels}
    mask_ids = {id(variable) for leaf in leaves for name in leaf.masked_kernels
                for variable in (leaf.scores_variable(name), leaf.threshold_variable(name))}
    if isinstance(masked, ssm_layers.MaskedComposite):
        masked = masked.layer
    masked_variables = ssm_layers.named_variables(masked)
    stock_variables = ssm_layers.named_variables(stock)
    differing = sorted((stock_variables.keys() - masked_variables.keys()) | {
        key for key, variable in masked_variables.items()
        if key not in stock_variables and id(variable) not in mask_ids})
    renamed = _renamed_sublayers(stock, masked) if differing else None
    if renamed:
        raise ValueError(
            f"cannot supermask layer {stock.name!r}: its sublayer {renamed[0]!r} has a name "
            f"Keras made up, which a copy made from its config does not keep ({renamed[1]!r}); "
            "name the sublayers it makes (e.g. keras.layers.Dense(..., name=\"inner\")).")
    if differing:
        raise ValueError(
            f"cannot supermask layer {stock.name!r}: made from its config, it does not have "
            f"the same variables (differing: {differing}); its get_config() leaves out "
            "something it was made with.")
    for key, variable in stock_variables.items():
        if id(masked_variables[key]) not in kernel_ids or kernels == "keep":
            masked_variables[key].assign(variable)


def supermask(
    model,
    mask="signed",
    *,
    kernels="redraw",
    kernel_initializer="elus",
    init_factor=None,
    seed=0,
    layers=None,
    trainable_layers=(),
    tau_fraction=None,
    density=None,
    score_initializer=None,
    bernoulli_eval="expected",
    regime="mask",
    train_bias=False,
    train_batch_norm=False,
):
    """A copy of a functional or Sequential model as a supermask.

    Every selected layer (by default every layer with a kernel) becomes its
    masked counterpart, computing with `W = W0 * m(s)`; batch norms get
    frozen `gamma` and `beta` (unless `train_batch_norm`); every other layer
    is copied with its weights and frozen, unless `trainable_layers` names
    it. Nested functional and Sequential models are masked too.

    Args:
        model: a built functional or Sequential `keras.Model`.
        mask: the mask kind, one of `choices.MASK_KINDS`.
        kernels: `redraw` (`W0` drawn by `kernel_initializer`, seeded by
            `(seed, layer name)`) or `keep` (`W0` is the layer's current
            kernel, e.g. pretrained weights).
        kernel_initializer: initialiser of `W0` for `redraw` (a name of
            `ssm_keras.initializers.get` or an initialiser).
        init_factor: the `factor` of the `elus` initialiser (default 6), a
            finite number > 0 that gives a normal float32 `|W0|`; only with
            `kernels="redraw"` and `kernel_initializer="elus"`.
        seed: an integer (Python's or NumPy's); seeds `W0` (`redraw`) and
            the scores. None draws them unseeded (not reproducible).
        layers: None (every layer with a kernel), a collection or an
            iterator of layer names, or a predicate `layer -> bool`; it must
            select at least one layer. The others stay as they are, frozen.
        trainable_layers: names of layers left unmasked that keep training
            (a `LayerNormalization`, a batch norm, a classifier head).
        tau_fraction, density, score_initializer, bernoulli_eval, regime:
            the `MaskConfig` settings (`tau_fraction`, `density`: None for
            the default; each only for the mask kinds it shapes).
        train_bias: whether the masked layers' biases train.
        train_batch_norm: whether the batch norms' `gamma` and `beta` train.

    Returns:
        A new model of the same kind, names and outputs' shapes; the input
        model is unchanged.

    Raises:
        ValueError: a setting is not allowed, the model is not built, no
            layer is selected, or a selected layer cannot be masked exactly
            (the message names it and says why).
        TypeError: a setting of the wrong type (a string for a number).

    Example:

    >>> masked = ssm_keras.supermask(model, "signed", seed=0)
    >>> print(ssm_keras.transforms.supermasking.summary(masked).table)
    >>> masked.compile("sgd", "sparse_categorical_crossentropy")
    >>> masked.fit(x, y)
    """
    cloning.check_copyable(model, "supermask")
    train_bias = arguments.boolean("train_bias", train_bias)
    train_batch_norm = arguments.boolean("train_batch_norm", train_batch_norm)
    arguments.choice("kernels", kernels, KERNEL_CHOICES)
    if kernels == "keep" and not (isinstance(kernel_initializer, str)
                                  and kernel_initializer == "elus"):
        raise ValueError(
            "kernel_initializer draws W0 with kernels='redraw'; kernels='keep' keeps the "
            f"layers' kernels. Received: kernel_initializer={kernel_initializer!r}")
    if seed is not None:
        seed = arguments.integer("seed", seed)
    if init_factor is not None:
        arguments.number("init_factor", init_factor, low=0, low_open=True, high_open=True)
        if kernels == "keep":
            raise ValueError(
                "init_factor is the factor of the elus initialiser that draws W0 with "
                "kernels='redraw'; kernels='keep' keeps the layers' kernels. Received: "
                f"init_factor={init_factor!r}")
        if kernel_initializer != "elus":
            raise ValueError(
                "init_factor is the factor of the elus initialiser; kernel_initializer="
                f"{kernel_initializer!r} draws W0 without it. Received: "
                f"init_factor={init_factor!r}")
    mask_config = MaskConfig(mask, tau_fraction, density, score_initializer,
                             bernoulli_eval, regime)
    leaves = cloning.leaf_layers(model)
    is_selected = _selector(layers, leaves)
    selected = [layer for layer in leaves if is_selected(layer)]
    if not selected:
        raise ValueError(
            f"supermask would mask no layer of {model.name!r}: "
            + ("it has no layer with a kernel." if layers is None else
               f"layers= selects none. Received: layers={layers!r}"))
    _check_masked_layers(selected, train_bias)
    selected_ids = {id(layer) for layer in selected}
    trainable_names = _names(trainable_layers, leaves, "trainable_layers")
    masked_and_trainable = sorted(trainable_names & {layer.name for layer in selected})
    if masked_and_trainable:
        raise ValueError(
            f"trainable_layers names masked layers {masked_and_trainable}, whose scores "
            "train; it names layers left unmasked that keep training")
    mask_arguments = dict(**mask_config.layer_arguments(), train_bias=train_bias,
                          mask_seed=seed)
    initializer = (ssm_initializers.get(kernel_initializer, init_factor)
                   if kernels == "redraw" else None)

    def convert(layer):
        if id(layer) in selected_ids:
            return masked_counterpart(layer, initializer, **mask_arguments)
        if type(layer) in _BATCH_NORMS:
            trains = train_batch_norm or layer.name in trainable_names
            target = keras.layers.BatchNormalization if trains else _BATCH_NORMS[1]
            return target.from_config(cloning.layer_config(layer))
        if cloning.weightless(layer):
            return cloning.weightless_copy(layer)
        return layer.__class__.from_config(cloning.layer_config(layer))

    def convert_or_refuse(layer):
        try:
            return convert(layer)
        except TypeError as error:  # Keras' from_config wraps what went wrong
            raise ValueError(
                f"cannot copy layer {layer.name!r} ({type(layer).__name__}) from its config: "
                f"{_deserialization_reason(error)}. A custom function or class in a layer "
                "must be registered (keras.saving.register_keras_serializable), and a custom "
                "layer's get_config must return every argument of its __init__.") from None

    def copy_weights(old, new):
        if id(old) in selected_ids:
            copy_stock_weights(old, new, kernels)
            return
        cloning.copy_weights_in_order(old, new)
        if old.name in trainable_names:
            new.trainable = True
        elif new.weights and type(new) not in _BATCH_NORMS:
            cloning.freeze(new)

    return cloning.copy_model(model, convert_or_refuse, copy_weights)


def with_regime(model, regime):
    """A copy of a masked model, with the same weights, in another regime.

    For "supermask as initialisation": take a model trained in the `mask`
    regime, `with_regime(model, "mask_then_weights")`, compile and train:
    its mask is frozen and its kernels train. Nested models too.

    Raises:
        ValueError: `regime` is not one of `choices.MASKED_REGIMES`, the
            model is not a built functional or Sequential model
            (`cloning.check_copyable`), or it has no masked layers.
    """
    arguments.choice("regime", regime, choices.MASKED_REGIMES)
    cloning.check_copyable(model, "with_regime")
    if not ssm_layers.masked_layers(model):
        raise ValueError(
            f"with_regime needs a masked model (see ssm_keras.supermask), and {model.name!r} "
            "has no masked layers.")

    def clone_layer(layer):
        if cloning.weightless(layer):
            return cloning.weightless_copy(layer)
        config = cloning.layer_config(layer)
        if isinstance(layer, (ssm_layers.MaskedLayer, ssm_layers.MaskedContainer)):
            config["regime"] = regime
        return layer.__class__.from_config(config)

    def copy_weights(old_layer, new_layer):
        """The regime changes which variables of a masked layer train, and so
        their order in `weights`: they are copied by key. Other layers keep
        their order, and their variables may have no names of their own
        (`add_weight` without one: `variable_18`): they are copied in order."""
        if not isinstance(old_layer, (ssm_layers.MaskedLayer, ssm_layers.MaskedContainer)):
            cloning.copy_weights_in_order(old_layer, new_layer)
            return
        new_variables = ssm_layers.named_variables(new_layer)
        for key, variable in ssm_layers.named_variables(old_layer).items():
            new_variables[key].assign(variable)

    return cloning.copy_model(model, clone_layer, copy_weights)


class LayerSummary(typing.NamedTuple):
    """What `summary` returns: one dict per layer with weights, and the
    text table of them."""

    rows: list
    table: str


def _status(masked, trainable):
    if not trainable:
        return "frozen"
    return "masked" if masked else "trainable"


def summary(model):
    """Per layer with weights: whether it is masked, frozen or trainable,
    how many weights it has and how many remain.

    Each row: `layer` (name), `class`, `status` (`masked`: it has masked
    kernels and something of it trains; `trainable`: unmasked, and some of
    its weights train; `frozen`: nothing of it trains), `weights` (the
    entries it computes with: kernels, biases, batch-norm parameters and
    statistics; scores and thresholds not counted), `trainable` (entries
    that train: scores, and whatever else trains), `masked` (entries of
    masked kernels) and `remaining` (masked entries the inference mask keeps
    or inverts, `m != 0`). A batch norm's moving statistics follow the
    batches in training whatever its status.

    Returns:
        `LayerSummary(rows, table)`: `print(summary(model).table)`.
    """
    rows = []
    for layer in cloning.leaf_layers(model):
        if not layer.weights:
            continue
        leaves = base.masked_leaves(layer)
        mask_variables = [variable for leaf in leaves for name in leaf.masked_kernels
                          for variable in (leaf.scores_variable(name),
                                           leaf.threshold_variable(name))
                          if variable is not None]
        masked = sum(math.prod(leaf.kernel_variable(name).shape)
                     for leaf in leaves for name in leaf.masked_kernels)
        trainable = sum(math.prod(variable.shape) for variable in layer.trainable_weights)
        rows.append({
            "layer": layer.name,
            "class": type(layer).__name__,
            "status": _status(masked, trainable),
            "weights": sum(math.prod(v.shape) for v in layer.weights)
            - sum(math.prod(v.shape) for v in mask_variables),
            "trainable": trainable,
            "masked": masked,
            "remaining": sum(leaf.mask_counts()["remaining"] for leaf in leaves),
        })
    return LayerSummary(rows, _table(rows))


def _table(rows):
    """The rows as aligned text, with a total line; `remaining` also as a
    percentage of `masked` (`-` for a layer without masked kernels)."""
    def remaining(row):
        if not row["masked"]:
            return "-"
        return f"{row['remaining']:,} ({100 * row['remaining'] / row['masked']:.1f}%)"

    totals = {key: sum(row[key] for row in rows)
              for key in ("weights", "trainable", "masked", "remaining")}
    lines = [("layer", "class", "status", "weights", "trainable", "masked", "remaining")]
    for row in [*rows, {"layer": "total", "class": "", "status": "", **totals}]:
        lines.append((row["layer"], row["class"], row["status"], f"{row['weights']:,}",
                      f"{row['trainable']:,}", f"{row['masked']:,}", remaining(row)))
    widths = [max(len(line[column]) for line in lines) for column in range(7)]
    return "\n".join(
        "  ".join(cell.ljust(width) if column < 3 else cell.rjust(width)
                  for column, (cell, width) in enumerate(zip(line, widths))).rstrip()
        for line in lines)
