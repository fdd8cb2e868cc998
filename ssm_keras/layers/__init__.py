"""The masked layers: frozen kernels `W0`, trainable scores `s`, `W = W0 * m(s)`.

| module           | layers                                                       |
| ---------------- | ------------------------------------------------------------ |
| `base`           | `MaskedLayer` (the mixin and its hooks), `MaskedContainer`   |
| `core`           | `MaskedDense`, `MaskedEinsumDense`                           |
| `convolutional`  | `MaskedConv1D/2D/3D`, `MaskedConv1D/2D/3DTranspose`, `MaskedDepthwiseConv1D/2D`, `MaskedSeparableConv1D/2D` |
| `embedding`      | `MaskedEmbedding`, `MaskedReversibleEmbedding` (Keras 3.12+, not exported) |
| `recurrent`      | `MaskedSimpleRNN`, `MaskedLSTM`, `MaskedGRU` and their cells |
| `attention`      | `MaskedMultiHeadAttention`, `MaskedGroupedQueryAttention`    |
| `composite`      | `MaskedComposite`: any layer with the registered layers inside it masked |
| `normalization`  | `FixedAffineBatchNormalization`                              |
| `preprocessing`  | `PerImageStandardization`                                    |
| `registry`       | stock type <-> masked type; `register`                       |

The public classes report `ssm_keras.layers` as their module, so that a
saved model names them where users import them from.
"""

from ssm_keras.choices import DEFAULT_SCORE_INITIALIZERS
from ssm_keras.layers.attention import (
    MaskedGroupedQueryAttention,
    MaskedMultiHeadAttention,
)
from ssm_keras.layers.base import (
    MaskedContainer,
    MaskedLayer,
    find_layers,
    masked_kernels,
    masked_layers,
    named_variables,
)
from ssm_keras.layers.composite import MaskedComposite
from ssm_keras.layers.convolutional import (
    MaskedConv1D,
    MaskedConv1DTranspose,
    MaskedConv2D,
    MaskedConv2DTranspose,
    MaskedConv3D,
    MaskedConv3DTranspose,
    MaskedDepthwiseConv1D,
    MaskedDepthwiseConv2D,
    MaskedSeparableConv1D,
    MaskedSeparableConv2D,
)
from ssm_keras.layers.core import MaskedDense, MaskedEinsumDense
from ssm_keras.layers.embedding import MaskedEmbedding
from ssm_keras.layers.normalization import FixedAffineBatchNormalization
from ssm_keras.layers.preprocessing import PerImageStandardization
from ssm_keras.layers.recurrent import (
    MaskedGRU,
    MaskedGRUCell,
    MaskedLSTM,
    MaskedLSTMCell,
    MaskedSimpleRNN,
    MaskedSimpleRNNCell,
)
from ssm_keras.layers.registry import register

_CLASSES = (
    FixedAffineBatchNormalization, MaskedComposite, MaskedContainer, MaskedConv1D,
    MaskedConv1DTranspose,
    MaskedConv2D, MaskedConv2DTranspose, MaskedConv3D, MaskedConv3DTranspose, MaskedDense,
    MaskedDepthwiseConv1D, MaskedDepthwiseConv2D, MaskedEinsumDense, MaskedEmbedding,
    MaskedGRU, MaskedGRUCell, MaskedGroupedQueryAttention, MaskedLSTM, MaskedLSTMCell,
    MaskedLayer, MaskedMultiHeadAttention, MaskedSeparableConv1D, MaskedSeparableConv2D,
    MaskedSimpleRNN, MaskedSimpleRNNCell, PerImageStandardization,
)

__all__ = [
    "DEFAULT_SCORE_INITIALIZERS", "FixedAffineBatchNormalization", "MaskedComposite",
    "MaskedContainer",
    "MaskedConv1D", "MaskedConv1DTranspose", "MaskedConv2D", "MaskedConv2DTranspose",
    "MaskedConv3D", "MaskedConv3DTranspose", "MaskedDense", "MaskedDepthwiseConv1D",
    "MaskedDepthwiseConv2D", "MaskedEinsumDense", "MaskedEmbedding", "MaskedGRU",
    "MaskedGRUCell", "MaskedGroupedQueryAttention", "MaskedLSTM", "MaskedLSTMCell",
    "MaskedLayer", "MaskedMultiHeadAttention", "MaskedSeparableConv1D",
    "MaskedSeparableConv2D", "MaskedSimpleRNN", "MaskedSimpleRNNCell",
    "PerImageStandardization", "find_layers", "masked_kernels", "masked_layers",
    "named_variables", "register",
]

for _class in _CLASSES:
    _class.__module__ = __name__
