"""Masked layers: frozen random kernels, trainable scores, effective kernels.

`MaskedDense`, `MaskedConv1D`, `MaskedConv2D` and `MaskedDepthwiseConv2D`
take the arguments of their Keras counterparts (with Keras' defaults) plus
the mask's; `ssm_keras.supermask` turns the Keras layers of any model into
them.

A masked layer holds a frozen initial kernel `W0`, a float32 score tensor `s`
of the same shape, and computes with the effective kernel

    W = W0 * m(s)

where `m` is one of the mask functions of `ssm_keras.masking`. Two regimes:

- `mask` (default): only the scores train; `W0` stays frozen.
- `mask_then_weights`: the mask is frozen (scores no longer train) and the
  kernel trains, still multiplied by the frozen mask: the "supermask as
  initialisation" fine-tuning.

Which variables train is fixed when the layer is built (a variable created
non-trainable gets no gradient from TensorFlow's tape, and
`layer.trainable = True` never unfreezes it); `ssm_keras.models.with_regime`
copies a trained model into the other regime.

The threshold `tau = tau_fraction * max(|s_init|)` of the threshold masks is
fixed when the layer is built and saved with it.
"""

import keras
import tensorflow as tf

from ssm_keras import choices, masking
from ssm_keras import initializers as ssm_initializers
from ssm_keras.choices import BERNOULLI_EVAL_MODES, MASKED_REGIMES

DEFAULT_SCORE_INITIALIZERS = {
    "signed": "glorot_uniform",
    "binary": "glorot_uniform",
    "bernoulli": "zeros",
    "topk": "he_uniform",
    "signed_topk": "he_uniform",
}


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"Unknown {name}. Expected one of {allowed}. Received: {name}={value!r}"
        )


class MaskedLayer(keras.layers.Layer):
    """Shared state and mask logic of the masked layers.

    Subclasses define `_kernel_shape(input_shape)` and
    `_apply_kernel(inputs, kernel)`.

    Args:
        mask: one of `choices.MASK_KINDS`.
        tau_fraction: threshold masks: `tau = tau_fraction * max(|s_init|)`,
            in [0, 1).
        density: top-k masks: the fraction of weights kept, in (0, 1].
        kernel_initializer: initialiser of the frozen kernel `W0`
            (see `ssm_keras.initializers.get`).
        score_initializer: initialiser of the scores; None picks the mask
            kind's default (`glorot_uniform` for threshold masks, `zeros` for
            `bernoulli`, `he_uniform` for top-k).
        use_bias: whether to add a bias.
        bias_initializer: initialiser of the bias.
        train_bias: whether the bias trains; False (the paper's regime)
            keeps it frozen in both regimes.
        activation: activation applied to the output.
        regime: `mask` or `mask_then_weights`.
        bernoulli_eval: how a `bernoulli` mask evaluates: `expected`
            (`sigmoid(s) > 0.5`) or `sample` (a fresh sample, as Zhou et al.).
        seed: int or None. With an int, the initial kernel and scores are
            drawn from stateless RNGs keyed by `(seed, layer name, variable)`,
            so the same seed and name give the same values bit for bit.
    """

    def __init__(
        self,
        mask="signed",
        tau_fraction=0.4,
        density=0.5,
        kernel_initializer="elus",
        score_initializer=None,
        use_bias=True,
        bias_initializer="zeros",
        train_bias=False,
        activation=None,
        regime="mask",
        bernoulli_eval="expected",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_choice("mask", mask, choices.MASK_KINDS)
        _check_choice("regime", regime, MASKED_REGIMES)
        _check_choice("bernoulli_eval", bernoulli_eval, BERNOULLI_EVAL_MODES)
        if not 0.0 <= tau_fraction < 1.0:
            raise ValueError(
                "tau_fraction must be in [0, 1). Received: "
                f"tau_fraction={tau_fraction}"
            )
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1]. Received: density={density}")
        self.mask_kind = mask
        self.tau_fraction = float(tau_fraction)
        self.density = float(density)
        self.kernel_initializer = ssm_initializers.get(kernel_initializer)
        self.score_initializer = ssm_initializers.get(
            score_initializer or DEFAULT_SCORE_INITIALIZERS[mask]
        )
        self.use_bias = bool(use_bias)
        self.bias_initializer = ssm_initializers.get(bias_initializer)
        self.train_bias = bool(train_bias)
        self.activation = keras.activations.get(activation)
        self.regime = regime
        self.bernoulli_eval = bernoulli_eval
        self.seed = seed
        if mask == "bernoulli":
            self.seed_generator = keras.random.SeedGenerator(seed)

    # Subclass interface.
    def _kernel_shape(self, input_shape):
        raise NotImplementedError

    def _apply_kernel(self, inputs, kernel):
        raise NotImplementedError

    def _make_input_spec(self, input_shape):
        """The `keras.InputSpec` of the built layer."""
        return keras.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})

    def seeded_initializer(self, role):
        """The initialiser that draws the variable `role` (`kernel`, `scores`
        or `bias`): the configured one, seeded by `(seed, name, role)` when
        the layer has a seed."""
        initializer = {
            "kernel": self.kernel_initializer,
            "scores": self.score_initializer,
            "bias": self.bias_initializer,
        }[role]
        if self.seed is None:
            return initializer
        seed = ssm_initializers.derive_seed(self.seed, self.name, role)
        return ssm_initializers.with_seed(initializer, seed)

    def build(self, input_shape):
        shape = self._kernel_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.seeded_initializer("kernel"),
            trainable=self.regime == "mask_then_weights",
        )
        self.scores = self.add_weight(
            name="scores",
            shape=shape,
            initializer=self.seeded_initializer("scores"),
            trainable=self.regime == "mask",
            dtype="float32",
            autocast=False,
        )
        if self.mask_kind in choices.THRESHOLD_KINDS:
            self.threshold = self.add_weight(
                name="threshold",
                shape=(),
                initializer=self._initial_threshold,
                dtype="float32",
                trainable=False,
                autocast=False,
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self._output_channels(shape),),
                initializer=self.seeded_initializer("bias"),
                trainable=self.train_bias,
            )
        self.input_spec = self._make_input_spec(input_shape)

    def _output_channels(self, kernel_shape):
        return kernel_shape[-1]

    def _initial_threshold(self, shape, dtype=None):
        """`tau = tau_fraction * max(|s_init|)`, fixed for the whole run."""
        scores = tf.convert_to_tensor(self.scores)
        return tf.cast(self.tau_fraction * tf.reduce_max(tf.abs(scores)), dtype)

    # The mask and the effective kernel.
    def _samples_mask(self, training):
        return (
            self.mask_kind == "bernoulli"
            and self.regime == "mask"
            and (training or self.bernoulli_eval == "sample")
        )

    def compute_mask_values(self, training=False):
        """The float32 mask `m(s)`, with the straight-through gradient.

        `bernoulli` masks sample while training (in the `mask` regime) and,
        at inference, as `bernoulli_eval` says; otherwise they are
        `[sigmoid(s) > 0.5]`.
        """
        if self.mask_kind == "bernoulli" and not self._samples_mask(training):
            mask = masking.expected_bernoulli_mask(self.scores)
        else:
            mask = masking.compute_mask(
                self.mask_kind,
                self.scores,
                threshold=getattr(self, "threshold", None),
                density=self.density,
                seed=getattr(self, "seed_generator", None),
            )
        if self.regime == "mask_then_weights":
            mask = tf.stop_gradient(mask)
        return mask

    def effective_kernel(self, training=False):
        """`W = W0 * m(s)` in the layer's compute dtype.

        The mask is in {-1, 0, 1}, so casting it before the product is exact.
        Threshold masks compute `W` in one fused pass
        (`masking.threshold_masked_kernel`), with the same values and
        straight-through gradients.
        """
        if self.mask_kind in choices.THRESHOLD_KINDS:
            scores = self.scores
            if self.regime == "mask_then_weights":
                scores = tf.stop_gradient(scores)
            return masking.threshold_masked_kernel(
                self.mask_kind, self.kernel, scores, self.threshold,
                frozen_kernel=not self.kernel.trainable,
            )
        mask = self.compute_mask_values(training)
        return self.kernel * tf.cast(mask, self.compute_dtype)

    def mask_counts(self):
        """Kept (+1), inverted (-1), hidden (0), remaining and total entries.

        Uses the inference mask (for `bernoulli` with `bernoulli_eval =
        "sample"`: one sample).
        """
        return masking.mask_counts(self.compute_mask_values(training=False))

    def call(self, inputs, training=None):
        outputs = self._apply_kernel(inputs, self.effective_kernel(bool(training)))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        config = {
            "mask": self.mask_kind,
            "tau_fraction": self.tau_fraction,
            "density": self.density,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "score_initializer": keras.initializers.serialize(self.score_initializer),
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "train_bias": self.train_bias,
            "activation": keras.activations.serialize(self.activation),
            "regime": self.regime,
            "bernoulli_eval": self.bernoulli_eval,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("kernel_initializer", "score_initializer", "bias_initializer"):
            config[key] = keras.initializers.deserialize(config[key])
        config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="ssm_keras")
class MaskedDense(MaskedLayer):
    """Dense layer with a frozen kernel and a trainable mask.

    `y = activation(x @ (W0 * m(s)) + b)`

    Args:
        units: positive int, the output size.
        **kwargs: the `MaskedLayer` arguments (`mask`, `tau_fraction`,
            `density`, initialisers, `use_bias`, `regime`, `seed`, ...).

    Input shape:
        `(batch, ..., input_dim)`.

    Output shape:
        `(batch, ..., units)`.

    Example:

    >>> layer = MaskedDense(10, mask="signed", tau_fraction=0.4, seed=0)
    >>> layer(np.ones((2, 784))).shape
    (2, 10)
    """

    def __init__(self, units, **kwargs):
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive int. Received: units={units!r}")
        super().__init__(**kwargs)
        self.units = units

    def _kernel_shape(self, input_shape):
        return (input_shape[-1], self.units)

    def _apply_kernel(self, inputs, kernel):
        return keras.ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class MaskedConv(MaskedLayer):
    """Shared arguments and output shape of the masked convolutions.

    Channels last only. `padding` is `valid` (Keras' default) or `same`, and
    also `causal` for one spatial dimension (the input is left-padded by
    `dilation_rate * (kernel_size - 1)` steps, then convolved `valid`).

    Args:
        rank: the number of spatial dimensions (1 or 2).
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints.
        padding: `valid`, `same` (or `causal` if `rank` is 1).
        dilation_rate: int or tuple of `rank` ints; with `strides > 1` it
            must be 1.
        **kwargs: the `MaskedLayer` arguments.
    """

    def __init__(self, rank, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 **kwargs):
        paddings = ("valid", "same", "causal") if rank == 1 else ("valid", "same")
        _check_choice("padding", padding, paddings)
        super().__init__(**kwargs)
        self.rank = rank
        self.kernel_size = _positive_tuple("kernel_size", kernel_size, rank)
        self.strides = _positive_tuple("strides", strides, rank)
        self.dilation_rate = _positive_tuple("dilation_rate", dilation_rate, rank)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "strides > 1 is not compatible with dilation_rate > 1. Received: "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        self.padding = padding

    def _make_input_spec(self, input_shape):
        return keras.InputSpec(ndim=self.rank + 2, axes={-1: input_shape[-1]})

    def _padded(self, inputs):
        """`(inputs, padding)` for `keras.ops.conv`: causal padding done here."""
        if self.padding != "causal":
            return inputs, self.padding
        left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
        return keras.ops.pad(inputs, [[0, 0], [left, 0], [0, 0]]), "valid"

    def _convolve(self, inputs, kernel):
        raise NotImplementedError

    def _apply_kernel(self, inputs, kernel):
        inputs, padding = self._padded(inputs)
        return self._convolve(inputs, kernel, padding)

    def compute_output_shape(self, input_shape):
        if self.padding == "causal":
            return (input_shape[0], _causal_steps(input_shape[1], self.strides[0]),
                    self._output_channels(self._kernel_shape(input_shape)))
        kernel = keras.KerasTensor(self._ungrouped_kernel_shape(input_shape))
        return self._convolve(keras.KerasTensor(input_shape), kernel, self.padding).shape

    def _ungrouped_kernel_shape(self, input_shape):
        """A kernel shape with the output shape of this layer's kernel and
        all input channels (what `keras.ops.conv`'s shape inference takes)."""
        return self._kernel_shape(input_shape)

    def get_config(self):
        config = {
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
        }
        return {**super().get_config(), **config}


def _causal_steps(steps, stride):
    return None if steps is None else -(-steps // stride)


class _MaskedFilterConv(MaskedConv):
    """A masked convolution with `filters` outputs in `groups` groups, kernel
    `(*kernel_size, in_channels / groups, filters)`: the channels split into
    `groups` equal parts, each convolved with its `filters / groups` filters
    (`groups = in_channels = filters` is a depthwise convolution)."""

    def __init__(self, rank, filters, kernel_size, groups=1, **kwargs):
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"filters must be a positive int. Received: filters={filters!r}"
            )
        if not isinstance(groups, int) or groups <= 0 or filters % groups:
            raise ValueError(
                "groups must be a positive int that divides filters. Received: "
                f"groups={groups!r}, filters={filters}"
            )
        super().__init__(rank, kernel_size, **kwargs)
        self.filters = filters
        self.groups = groups

    def _kernel_shape(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"groups must divide the input channels. Received: groups={self.groups}, "
                f"input channels={input_shape[-1]}"
            )
        return (*self.kernel_size, input_shape[-1] // self.groups, self.filters)

    def _ungrouped_kernel_shape(self, input_shape):
        return (*self.kernel_size, input_shape[-1], self.filters)

    def _convolve(self, inputs, kernel, padding):
        return keras.ops.conv(inputs, kernel, strides=self.strides, padding=padding,
                              dilation_rate=self.dilation_rate)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups}


@keras.saving.register_keras_serializable(package="ssm_keras")
class MaskedConv1D(_MaskedFilterConv):
    """1-D convolution (channels last) with a frozen kernel and a trainable mask.

    `y = activation(conv1d(x, W0 * m(s)) + b)`, kernel shape
    `(k, in_channels, filters)`.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or tuple of one int.
        strides, padding (`valid`, `same` or `causal`), dilation_rate,
            groups: as `keras.layers.Conv1D`.
        **kwargs: the `MaskedLayer` arguments.

    Input shape:
        `(batch, steps, channels)`.

    Output shape:
        `(batch, new_steps, filters)`.

    Example:

    >>> MaskedConv1D(8, 3, padding="causal", seed=0)(np.ones((2, 20, 4))).shape
    (2, 20, 8)
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(1, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="ssm_keras")
class MaskedConv2D(_MaskedFilterConv):
    """2-D convolution (channels last) with a frozen kernel and a trainable mask.

    `y = activation(conv2d(x, W0 * m(s)) + b)`, kernel shape
    `(kh, kw, in_channels, filters)`.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or pair of ints.
        strides, padding (`valid` or `same`), dilation_rate, groups: as
            `keras.layers.Conv2D`.
        **kwargs: the `MaskedLayer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, new_height, new_width, filters)`.

    Example:

    >>> layer = MaskedConv2D(64, 3, padding="same", seed=0)
    >>> layer(np.ones((2, 32, 32, 3))).shape
    (2, 32, 32, 64)
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(2, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="ssm_keras")
class MaskedDepthwiseConv2D(MaskedConv):
    """Depthwise 2-D convolution (channels last) with a frozen kernel and a
    trainable mask.

    `y = activation(depthwise_conv2d(x, W0 * m(s)) + b)`, kernel shape
    `(kh, kw, in_channels, depth_multiplier)`: each input channel is
    convolved with its own `depth_multiplier` filters, so an output sees
    `fan_in = kh * kw` inputs. The kernel and the scores are drawn as a
    `(kh, kw, 1, in_channels * depth_multiplier)` tensor and reshaped, so that
    fan-in-scaled initialisers (`elus`: `c = sqrt(factor / fan_in)`) use
    that fan-in.

    Args:
        kernel_size: int or pair of ints.
        depth_multiplier: positive int, outputs per input channel.
        strides, padding (`valid` or `same`), dilation_rate: as
            `keras.layers.DepthwiseConv2D`.
        **kwargs: the `MaskedLayer` arguments.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, new_height, new_width, channels * depth_multiplier)`.

    Example:

    >>> MaskedDepthwiseConv2D(3, padding="same", seed=0)(np.ones((2, 8, 8, 4))).shape
    (2, 8, 8, 4)
    """

    def __init__(self, kernel_size, depth_multiplier=1, **kwargs):
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise ValueError(
                "depth_multiplier must be a positive int. Received: "
                f"depth_multiplier={depth_multiplier!r}"
            )
        super().__init__(2, kernel_size, **kwargs)
        self.depth_multiplier = depth_multiplier

    def _kernel_shape(self, input_shape):
        return (*self.kernel_size, input_shape[-1], self.depth_multiplier)

    def _output_channels(self, kernel_shape):
        return kernel_shape[-2] * kernel_shape[-1]

    def seeded_initializer(self, role):
        initializer = super().seeded_initializer(role)
        if role == "bias":
            return initializer
        return ssm_initializers.DepthwiseKernel(initializer)

    def _convolve(self, inputs, kernel, padding):
        return keras.ops.depthwise_conv(inputs, kernel, strides=self.strides,
                                        padding=padding, dilation_rate=self.dilation_rate)

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier}


def _positive_tuple(name, value, rank):
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(
            f"{name} must be a positive int or a tuple of {rank} of them. "
            f"Received: {name}={value!r}"
        )
    return values


@keras.saving.register_keras_serializable(package="ssm_keras")
class FixedAffineBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation whose scale `gamma` and offset `beta` never train.

    `y = gamma * (x - mean) / sqrt(var + epsilon) + beta`, with batch
    statistics while training and moving averages at inference, exactly as
    `keras.layers.BatchNormalization` (which it is, with the same arguments
    and variables), except that `gamma` and `beta` are created
    non-trainable: the batch norm of a supermask in the paper's regime,
    where only scores train. (Setting a Keras batch norm `trainable=False`
    instead would also freeze its statistics: it then always normalises with
    the moving averages.)
    """

    def add_weight(self, *args, **kwargs):
        if kwargs.get("name") in ("gamma", "beta"):
            kwargs["trainable"] = False
        return super().add_weight(*args, **kwargs)


@keras.saving.register_keras_serializable(package="ssm_keras")
class PerImageStandardization(keras.layers.Layer):
    """`(x - mean(x)) / max(std(x), 1 / sqrt(n))` per image, as
    `tf.image.per_image_standardization`; the models' first layer, so that
    they take raw pixels."""

    def call(self, inputs):
        standardized = tf.image.per_image_standardization(tf.cast(inputs, "float32"))
        return tf.cast(standardized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def shared_arguments(layer):
    """The arguments a masked layer and its Keras counterpart share besides
    the kernel's shape: name, dtype policy, activation, bias use and activity
    regulariser (`supermask` and `bake` convert one into the other)."""
    return dict(name=layer.name, dtype=layer.dtype_policy, activation=layer.activation,
                use_bias=layer.use_bias, activity_regularizer=layer.activity_regularizer)


def find_layers(model, types):
    """The layers of `model` that are instances of `types`, in order,
    nested models included, each once."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, types):
            found[id(layer)] = layer
        elif hasattr(layer, "layers"):
            found.update((id(inner), inner) for inner in find_layers(layer, types))
    return list(found.values())


def masked_layers(model):
    """All `MaskedLayer`s of a model, in order, nested models included."""
    return find_layers(model, MaskedLayer)
