"""Masked layers: frozen random kernels, trainable scores, effective kernels.

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
    """Shared state and mask logic of `MaskedDense` and `MaskedConv2D`.

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
        use_bias: whether to add a bias (frozen in both regimes).
        bias_initializer: initialiser of the bias.
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
        use_bias=False,
        bias_initializer="zeros",
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

    def _seeded(self, initializer, role):
        if self.seed is None:
            return initializer
        seed = ssm_initializers.derive_seed(self.seed, self.name, role)
        return ssm_initializers.with_seed(initializer, seed)

    def build(self, input_shape):
        shape = self._kernel_shape(input_shape)
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self._seeded(self.kernel_initializer, "kernel"),
            trainable=self.regime == "mask_then_weights",
        )
        self.scores = self.add_weight(
            name="scores",
            shape=shape,
            initializer=self._seeded(self.score_initializer, "scores"),
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
                shape=(shape[-1],),
                initializer=self._seeded(self.bias_initializer, "bias"),
                trainable=False,
            )

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
            `density`, initialisers, `regime`, `seed`, ...).

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


@keras.saving.register_keras_serializable(package="ssm_keras")
class MaskedConv2D(MaskedLayer):
    """2-D convolution (channels last) with a frozen kernel and a trainable mask.

    `y = activation(conv2d(x, W0 * m(s)) + b)`, kernel shape
    `(kh, kw, in_channels, filters)`.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or pair of ints.
        strides: int or pair of ints.
        padding: `same` or `valid`.
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

    def __init__(self, filters, kernel_size=3, strides=1, padding="same", **kwargs):
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                f"filters must be a positive int. Received: filters={filters!r}"
            )
        _check_choice("padding", padding, ("same", "valid"))
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        self.padding = padding

    def _kernel_shape(self, input_shape):
        return (*self.kernel_size, input_shape[-1], self.filters)

    def _apply_kernel(self, inputs, kernel):
        return keras.ops.conv(
            inputs, kernel, strides=self.strides, padding=self.padding
        )

    def compute_output_shape(self, input_shape):
        return keras.ops.conv(
            keras.KerasTensor(input_shape),
            keras.KerasTensor(self._kernel_shape(input_shape)),
            strides=self.strides,
            padding=self.padding,
        ).shape

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
        }
        return {**super().get_config(), **config}


def _pair(name, value):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(
            f"{name} must be a positive int or a pair of them. Received: {name}={value!r}"
        )
    return pair


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


def find_layers(model, types):
    """The layers of `model` that are instances of `types`, in order,
    nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, types):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(find_layers(layer, types))
    return found


def masked_layers(model):
    """All `MaskedLayer`s of a model, in order, nested models included."""
    return find_layers(model, MaskedLayer)
