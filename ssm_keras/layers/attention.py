"""Masked attention: `MultiHeadAttention` and `GroupQueryAttention` with
masked projections.

The stock layer builds its query, key, value (gate) and output projections,
all `EinsumDense`; the masked layer replaces them, at build, by
`MaskedEinsumDense`s of the same configs and input shapes, seeded as
`<layer>/<projection>` (`attention/query`). Each projection's kernel is
masked with its fan-in, the model dimension for query, key, value and gate,
`heads * head_dim` for the output. The attention arithmetic itself (softmax
of `Q K^T`, times `V`) has no weights and is the stock layer's.

The stock layers take `seed` for their dropout; the mask's seed is
`mask_seed`.
"""

import math

import keras

from ssm_keras.layers import registry
from ssm_keras.layers.base import MaskedContainer
from ssm_keras.layers.core import MaskedEinsumDense


class _MaskedAttention(MaskedContainer):
    sublayer_attributes = ("_query_dense", "_key_dense", "_value_dense", "_gate_dense",
                           "_output_dense")

    def __init__(self, *args, **kwargs):
        arguments = self._pop_container_arguments(kwargs)
        super().__init__(*args, **kwargs)
        self._set_mask_arguments(arguments)

    @classmethod
    def sublayer_uses(cls, layer, sublayer, leaf_class, name, input_shape):
        """A projection's kernel is used once per position of its input; the
        output projection's input has the query's positions (`input_shape`,
        the query's shape: Keras builds the output projection with unknown
        positions)."""
        if sublayer is layer._output_dense:
            return math.prod(input_shape[1:-1])
        return super().sublayer_uses(layer, sublayer, leaf_class, name, input_shape)

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        for attribute in self.sublayer_attributes:
            stock = getattr(self, attribute, None)
            if stock is None:
                continue
            # Keras makes the stock projections trainable even in a frozen layer.
            masked = self._masked_copy(MaskedEinsumDense, stock, trainable=self.trainable)
            masked.build_from_config(stock.get_build_config())
            self._tracker.untrack(stock)
            setattr(self, attribute, masked)


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedMultiHeadAttention(_MaskedAttention, keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with masked projections.

    Example:

    >>> layer = MaskedMultiHeadAttention(num_heads=2, key_dim=8, mask_seed=0)
    >>> layer(np.ones((2, 5, 16)), np.ones((2, 7, 16))).shape
    (2, 5, 16)
    """


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedGroupedQueryAttention(_MaskedAttention, keras.layers.GroupQueryAttention):
    """`keras.layers.GroupQueryAttention` with masked projections."""
