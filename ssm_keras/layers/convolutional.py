"""Masked convolutions: plain, transposed, depthwise and separable; 1-D to 3-D.

Each takes the arguments of its Keras layer (any `padding`, `data_format`,
`groups`, ...) plus the mask arguments, and computes what the Keras layer
computes with `W0 * m(s)`. Fan-ins, which `elus` and the other fan-in-scaled
initialisers of `W0` and the scores use:

| kernel                                        | fan-in                          |
| --------------------------------------------- | ------------------------------- |
| convolution `(*window, in / groups, filters)` | `prod(window) * in / groups`    |
| transposed `(*window, filters, in)`           | `prod(window) * in`             |
| depthwise `(*window, in, multiplier)`         | `prod(window)`                  |
| separable: depthwise, then pointwise `(1.., in * multiplier, filters)` | `prod(window)`, `in * multiplier` |
"""

import math

import keras

from ssm_keras import initializers as ssm_initializers
from ssm_keras.layers import registry
from ssm_keras.layers.base import MaskedLayer
from ssm_keras.layers.core import LegacySeed


class _MaskedConv(MaskedLayer):
    masked_kernels = {"kernel": "kernel_initializer"}
    output_units = "filters"


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedConv1D(LegacySeed, _MaskedConv, keras.layers.Conv1D):
    """`keras.layers.Conv1D` computing with `W0 * m(s)`.

    `y = activation(conv1d(x, W0 * m(s)) + b)`, kernel shape
    `(k, in_channels / groups, filters)`; `padding="causal"` too.

    Example:

    >>> MaskedConv1D(8, 3, padding="causal", seed=0)(np.ones((2, 20, 4))).shape
    (2, 20, 8)
    """


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedConv2D(LegacySeed, _MaskedConv, keras.layers.Conv2D):
    """`keras.layers.Conv2D` computing with `W0 * m(s)`.

    `y = activation(conv2d(x, W0 * m(s)) + b)`, kernel shape
    `(kh, kw, in_channels / groups, filters)`.

    Example:

    >>> MaskedConv2D(64, 3, padding="same", seed=0)(np.ones((2, 32, 32, 3))).shape
    (2, 32, 32, 64)
    """


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedConv3D(_MaskedConv, keras.layers.Conv3D):
    """`keras.layers.Conv3D` computing with `W0 * m(s)`; kernel shape
    `(kd, kh, kw, in_channels / groups, filters)`; the seed is `mask_seed`."""


class _MaskedConvTranspose(MaskedLayer):
    """A transposed convolution's kernel is `(*window, filters, in_channels)`:
    each output sees `prod(window) * in_channels` weights (Keras' rule would
    count `prod(window) * filters`), and each kernel entry is used once per
    input position."""

    masked_kernels = {"kernel": "kernel_initializer"}

    def kernel_fan_in(self, name, shape):
        return math.prod(shape[:-2]) * shape[-1]

    @classmethod
    def kernel_uses(cls, layer, name, input_shape, output_shape):
        spatial = slice(2, None) if layer.data_format == "channels_first" else slice(1, -1)
        return math.prod(input_shape[spatial])


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedConv1DTranspose(_MaskedConvTranspose, keras.layers.Conv1DTranspose):
    """`keras.layers.Conv1DTranspose` computing with `W0 * m(s)`."""


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedConv2DTranspose(_MaskedConvTranspose, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` computing with `W0 * m(s)`."""


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedConv3DTranspose(_MaskedConvTranspose, keras.layers.Conv3DTranspose):
    """`keras.layers.Conv3DTranspose` computing with `W0 * m(s)`."""


class _DepthwiseFanIn:
    """Depthwise kernels `(*window, channels, multiplier)` are drawn with
    fan-in `prod(window)` by `ssm_keras.initializers.DepthwiseKernel` (as
    the first `MaskedDepthwiseConv2D` drew them, bit for bit)."""

    depthwise_kernels = ()

    def kernel_fan_in(self, name, shape):
        if name in self.depthwise_kernels:
            return math.prod(shape[:-2])
        return super().kernel_fan_in(name, shape)

    def _shaped_initializer(self, name, shape, initializer):
        if name in self.depthwise_kernels:
            return ssm_initializers.DepthwiseKernel(initializer)
        return super()._shaped_initializer(name, shape, initializer)


class _LegacyDepthwise(LegacySeed):
    """The first `MaskedDepthwiseConv2D` called its initialiser
    `kernel_initializer`; Keras' calls it `depthwise_initializer`."""

    def __init__(self, *args, kernel_initializer=None, **kwargs):
        if kernel_initializer is not None:
            kwargs.setdefault("depthwise_initializer", kernel_initializer)
        super().__init__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedDepthwiseConv1D(_DepthwiseFanIn, MaskedLayer, keras.layers.DepthwiseConv1D):
    """`keras.layers.DepthwiseConv1D` computing with `W0 * m(s)`; kernel
    `(k, channels, depth_multiplier)`, fan-in `k`."""

    masked_kernels = {"kernel": "depthwise_initializer"}
    depthwise_kernels = ("kernel",)


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedDepthwiseConv2D(_LegacyDepthwise, _DepthwiseFanIn, MaskedLayer,
                            keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` computing with `W0 * m(s)`.

    `y = activation(depthwise_conv2d(x, W0 * m(s)) + b)`, kernel shape
    `(kh, kw, in_channels, depth_multiplier)`: each input channel is
    convolved with its own `depth_multiplier` filters, so an output sees
    `fan_in = kh * kw` inputs.

    Example:

    >>> MaskedDepthwiseConv2D(3, padding="same", seed=0)(np.ones((2, 8, 8, 4))).shape
    (2, 8, 8, 4)
    """

    masked_kernels = {"kernel": "depthwise_initializer"}
    depthwise_kernels = ("kernel",)


class _MaskedSeparable(_DepthwiseFanIn, MaskedLayer):
    masked_kernels = {"depthwise_kernel": "depthwise_initializer",
                      "pointwise_kernel": "pointwise_initializer"}
    depthwise_kernels = ("depthwise_kernel",)


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedSeparableConv1D(_MaskedSeparable, keras.layers.SeparableConv1D):
    """`keras.layers.SeparableConv1D` with a masked depthwise and a masked
    pointwise kernel: `depthwise_kernel`, `depthwise_scores`,
    `depthwise_threshold`, `pointwise_kernel`, `pointwise_scores`,
    `pointwise_threshold`."""


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedSeparableConv2D(_MaskedSeparable, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with a masked depthwise and a masked
    pointwise kernel (see `MaskedSeparableConv1D`)."""
