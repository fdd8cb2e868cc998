"""The masked layers: frozen kernels `W0`, trainable scores `s`, `W = W0 * m(s)`.

The public classes report `ssm_keras.layers` as their module, so that a
saved model names them where users import them from.
"""

from ssm_keras.layers.base import (
    DEFAULT_SCORE_INITIALIZERS,
    FixedAffineBatchNormalization,
    MaskedConv,
    MaskedConv1D,
    MaskedConv2D,
    MaskedDense,
    MaskedDepthwiseConv2D,
    MaskedLayer,
    PerImageStandardization,
    find_layers,
    masked_layers,
    shared_arguments,
)

__all__ = [
    "FixedAffineBatchNormalization", "MaskedConv", "MaskedConv1D", "MaskedConv2D",
    "MaskedDense", "MaskedDepthwiseConv2D", "MaskedLayer", "PerImageStandardization",
    "DEFAULT_SCORE_INITIALIZERS", "find_layers", "masked_layers", "shared_arguments",
]

for _class in (FixedAffineBatchNormalization, MaskedConv, MaskedConv1D, MaskedConv2D,
               MaskedDense, MaskedDepthwiseConv2D, MaskedLayer, PerImageStandardization):
    _class.__module__ = __name__
