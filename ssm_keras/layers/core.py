"""Masked `Dense` and `EinsumDense`."""

import math

import keras

from ssm_keras.layers import registry
from ssm_keras.layers.base import MaskedLayer


class LegacySeed:
    """The package's first four masked layers (dense, 1-D and 2-D
    convolution, depthwise 2-D convolution) took the mask's seed as `seed`,
    and their saved configs say so: `seed` is accepted as `mask_seed`, and
    the Bernoulli seed generator keeps its attribute name."""

    _seed_generator_attribute = "seed_generator"

    def __init__(self, *args, seed=None, **kwargs):
        if seed is not None:
            kwargs.setdefault("mask_seed", seed)
        super().__init__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedDense(LegacySeed, MaskedLayer, keras.layers.Dense):
    """`keras.layers.Dense` computing with `W0 * m(s)`.

    `y = activation(x @ (W0 * m(s)) + b)`, kernel shape `(input_dim, units)`.

    Args:
        units, activation, use_bias, kernel_initializer (of `W0`, default
            `elus`), bias_initializer, ...: as `keras.layers.Dense`.
        mask, tau_fraction, density, score_initializer, train_bias, regime,
            bernoulli_eval, mask_seed (or `seed`): the mask arguments
            (`ssm_keras.layers.base.pop_mask_arguments`).

    Input shape:
        `(batch, ..., input_dim)`.

    Output shape:
        `(batch, ..., units)`.

    Example:

    >>> layer = MaskedDense(10, mask="signed", tau_fraction=0.4, seed=0)
    >>> layer(np.ones((2, 784))).shape
    (2, 10)
    """

    masked_kernels = {"kernel": "kernel_initializer"}
    output_units = "units"


def _axis_labels(term, rank):
    """One label per axis of an einsum term (`.` for the axes `...` covers)."""
    if "..." not in term:
        return list(term)
    head, tail = term.split("...")
    return [*head, *"." * (rank - len(head) - len(tail)), *tail]


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedEinsumDense(MaskedLayer, keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` computing with `W0 * m(s)`.

    `y = activation(einsum(equation, x, W0 * m(s)) + b)`. `W0` and the
    scores are drawn with the fan-in of the kernel axes the equation
    contracts with the input (`abc,cde->abde`: `c`), not Keras'
    `prod(shape[:-1])`.

    Args:
        equation, output_shape, activation, bias_axes, kernel_initializer
            (of `W0`, default `elus`), ...: as `keras.layers.EinsumDense`.
        **kwargs: the mask arguments, `mask_seed` for the seed.

    Example:

    >>> MaskedEinsumDense("abc,cde->abde", (None, 2, 3), mask_seed=0)(np.ones((2, 5, 4))).shape
    (2, 5, 2, 3)
    """

    masked_kernels = {"kernel": "kernel_initializer"}

    def kernel_fan_in(self, name, shape):
        """The product of the kernel's axes that appear in the input and not
        in the output."""
        inputs, rest = self.equation.split(",")
        kernel, outputs = rest.split("->")
        return math.prod(size for letter, size in zip(kernel, shape)
                         if letter in inputs and letter not in outputs)

    @classmethod
    def kernel_uses(cls, layer, name, input_shape, output_shape):
        """The product of the input's axes (batch excluded) that are not the
        kernel's: `abc,cde->abde` uses each kernel entry `b` times."""
        inputs, rest = layer.equation.split(",")
        kernel = rest.split("->")[0]
        labels = _axis_labels(inputs, len(input_shape))
        return math.prod(size for label, size in zip(labels[1:], input_shape[1:])
                         if label not in kernel)
