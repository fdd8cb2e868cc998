"""Initialisers for frozen weights and trainable scores, and stateless seeding.

The frozen weights `W0` and the trainable scores `s` have separate
initialisers. Besides every Keras built-in (by name, e.g. `glorot_uniform`),
three from the supermask literature, with `fan_in = prod(shape[:-1])`
(`kh * kw * in_channels` for a conv kernel):

| name                      | `W0`                                         |
| ------------------------- | -------------------------------------------- |
| `elus` (ELU, scaled)      | `sqrt(factor / fan_in) * sign(N(0, 1))`      |
| `elu`                     | `U(-b, b)`, `b = sqrt(4.5 / fan_in)` (variance `1.5 / fan_in`) |
| `signed_kaiming_constant` | `gain / sqrt(fan_in) * sign(N(0, 1))`, gain `sqrt(2)` |

The masked layers draw a kernel with its true fan-in (the inputs one output
sees) where that is not `prod(shape[:-1])`: `DepthwiseKernel` (a depthwise kernel's
window, `kh * kw`) and `FanInKernel` (any fan-in: an einsum kernel's
contracted axes, a transposed convolution's `prod(window) * in_channels`).

Reproducibility: `derive_seed(seed, layer_name, role)` hashes a run seed and a
variable's identity into an int, and `with_seed` gives an initialiser that
int. Keras draws seeded initial values with stateless RNG ops, so a seed alone
rebuilds every initial weight and score bit for bit.
"""

import hashlib
import math
import secrets

import keras
import numpy as np

from ssm_keras import arguments
from ssm_keras.choices import INITIALIZERS

ELUS_DEFAULT_FACTOR = 6.0


def fan_in(shape):
    """`prod(shape[:-1])`: inputs per output unit of a dense or conv kernel."""
    if len(shape) < 2:
        raise ValueError(
            f"fan_in needs a kernel shape of rank >= 2. Received: shape={shape}"
        )
    return math.prod(shape[:-1])


class _SeededInitializer(keras.initializers.Initializer):
    """Holds an int seed: given, or drawn once so that calls agree."""

    def __init__(self, seed=None):
        if seed is not None:
            seed = arguments.integer("seed", seed)
        self._init_seed = seed
        self.seed = seed if seed is not None else secrets.randbelow(2**31)

    def get_config(self):
        return {"seed": self._init_seed}


@keras.saving.register_keras_serializable(package="ssm_keras")
class SignedConstant(_SeededInitializer):
    """Signed constant: `W0 = sqrt(factor / fan_in) * sign(N(0, 1))`.

    `factor = 6` is the He standard deviation `sqrt(2 / fan_in)` times
    `sqrt(3)` (the signed-supermask paper's FCN and Conv nets); its ResNets
    used 3 (ResNet-20, -110) and 2.6 (ResNet-56). `factor = 2` is edge-popup's
    `signed_kaiming_constant` with the ReLU gain `sqrt(2)`.

    Args:
        factor: a finite float > 0, the squared scale times `fan_in`
            (`init_factor` of `supermask`).
        seed: int or None.

    Raises:
        ValueError: when a kernel is drawn, if `c` is not a normal float32
            (`2**-126 <= c <= 3.4e38`): an overflowing `c` is `inf`, a
            subnormal one loses its precision, a smaller one is 0.
    """

    def __init__(self, factor=ELUS_DEFAULT_FACTOR, seed=None):
        self.factor = arguments.number("init_factor", factor, low=0, low_open=True,
                                        high_open=True)
        super().__init__(seed)

    def scale(self, shape):
        """The constant `c = sqrt(factor / fan_in)` of a kernel of `shape`,
        checked to be a normal float32."""
        inputs = fan_in(shape)
        c = math.sqrt(self.factor / inputs)
        limits = np.finfo(np.float32)
        if not float(limits.tiny) <= c <= float(limits.max):
            raise ValueError(
                f"init_factor={self.factor!r} gives |W0| = sqrt(init_factor / fan_in) = "
                f"sqrt({self.factor!r} / {inputs}) = {c:.3g}, which is not a normal float32 "
                f"(between {float(limits.tiny):.3g} and {float(limits.max):.3g}); the "
                "signed-supermask paper uses 2 to 6")
        return c

    def __call__(self, shape, dtype=None):
        normal = keras.random.normal(shape, dtype="float32", seed=self.seed)
        signs = keras.ops.where(normal >= 0, 1.0, -1.0)
        return keras.ops.cast(signs * self.scale(shape), dtype or "float32")

    def get_config(self):
        return {"factor": self.factor, **super().get_config()}


@keras.saving.register_keras_serializable(package="ssm_keras")
class ScaledUniform(_SeededInitializer):
    """`W0 ~ U(-b, b)` with `b = sqrt(3 * variance_factor / fan_in)`.

    With the default `variance_factor = 1.5` this is the `elu` baseline
    initialisation of the signed-supermask paper (variance `1.5 / fan_in`).
    """

    def __init__(self, variance_factor=1.5, seed=None):
        self.variance_factor = arguments.number("variance_factor", variance_factor, low=0,
                                                low_open=True, high_open=True)
        super().__init__(seed)

    def __call__(self, shape, dtype=None):
        bound = math.sqrt(3.0 * self.variance_factor / fan_in(shape))
        return keras.random.uniform(
            shape, -bound, bound, dtype=dtype or "float32", seed=self.seed
        )

    def get_config(self):
        return {"variance_factor": self.variance_factor, **super().get_config()}


@keras.saving.register_keras_serializable(package="ssm_keras")
class DepthwiseKernel(keras.initializers.Initializer):
    """Draws a depthwise kernel `(kh, kw, channels, multiplier)` with the
    fan-in of a depthwise convolution, `kh * kw`.

    `inner` draws a `(kh, kw, 1, channels * multiplier)` tensor, which is
    reshaped: Keras' fan-in of the depthwise shape, `kh * kw * channels`,
    counts inputs that an output never sees.

    Args:
        inner: an initialiser (name, config or instance).
    """

    def __init__(self, inner):
        self.inner = get(inner)

    def __call__(self, shape, dtype=None):
        *window, channels, multiplier = shape
        values = self.inner((*window, 1, channels * multiplier), dtype=dtype)
        return keras.ops.reshape(values, shape)

    def get_config(self):
        return {"inner": keras.initializers.serialize(self.inner)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.initializers.deserialize(config["inner"]))


@keras.saving.register_keras_serializable(package="ssm_keras")
class FanInKernel(keras.initializers.Initializer):
    """Draws a kernel with a given fan-in: `inner` draws a
    `(fan_in, size / fan_in)` matrix, which is reshaped to the kernel's shape.

    Keras' fan-in, `prod(shape[:-1])`, is wrong for kernels whose last axis
    is not the only output axis: an einsum kernel `(d, heads, head_dim)` has
    fan-in `d`, a transposed convolution's `(*window, filters, in_channels)`
    has `prod(window) * in_channels`. Entries of i.i.d. initialisers are
    identically distributed either way; only fan-in-scaled ones (`elus`,
    Glorot, He) change scale.

    Args:
        inner: an initialiser (name, config or instance).
        fan_in: positive int that divides the kernel's size.
    """

    def __init__(self, inner, fan_in):
        self.fan_in = arguments.integer("fan_in", fan_in, low=1)
        self.inner = get(inner)

    def __call__(self, shape, dtype=None):
        size = math.prod(shape)
        if size % self.fan_in:
            raise ValueError(
                f"fan_in must divide the kernel's size. Received: fan_in={self.fan_in}, "
                f"shape={tuple(shape)}")
        values = self.inner((self.fan_in, size // self.fan_in), dtype=dtype)
        return keras.ops.reshape(values, shape)

    def get_config(self):
        return {"inner": keras.initializers.serialize(self.inner), "fan_in": self.fan_in}

    @classmethod
    def from_config(cls, config):
        return cls(keras.initializers.deserialize(config["inner"]), config["fan_in"])


def get(identifier, factor=None):
    """Resolves an initialiser name, config or instance.

    Args:
        identifier: one of `choices.INITIALIZERS`, any Keras initialiser name, a
            serialised config dict, or an `Initializer`.
        factor: for `elus` only, its `factor` (default 6).

    Raises:
        ValueError: unknown name, naming it and what is allowed.
    """
    if isinstance(identifier, keras.initializers.Initializer):
        return identifier
    if identifier == "elus":
        return SignedConstant(factor if factor is not None else ELUS_DEFAULT_FACTOR)
    if identifier == "elu":
        return ScaledUniform()
    if identifier == "signed_kaiming_constant":
        return SignedConstant(factor=2.0)
    try:
        initializer = keras.initializers.get(identifier)
    except (ValueError, TypeError):
        initializer = None
    if initializer is None:
        raise ValueError(
            f"Unknown initializer. Expected one of {INITIALIZERS} or a Keras "
            "initializer name such as 'glorot_uniform', 'he_normal', 'zeros'. "
            f"Received: {identifier!r}"
        )
    return initializer


def derive_seed(seed, *names):
    """A 31-bit int from a run seed and names, e.g. `(0, "dense_1", "kernel")`."""
    key = "/".join([str(int(seed)), *names]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


def with_seed(initializer, seed):
    """A copy of `initializer` with int `seed`; unseeded kinds come back as is."""
    config = initializer.get_config()
    if "seed" not in config:
        return initializer
    return initializer.__class__.from_config({**config, "seed": seed})
