"""Masked `Embedding` and `ReversibleEmbedding`."""

import keras

from ssm_keras.layers import registry
from ssm_keras.layers.base import EffectiveKernel, MaskedLayer


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedEmbedding(MaskedLayer, keras.layers.Embedding):
    """`keras.layers.Embedding` looking rows up in `W0 * m(s)`.

    `y[..., :] = (W0 * m(s))[x[...], :]`, table shape `(input_dim,
    output_dim)`; its variables are `embeddings`, `embeddings_scores` and
    `embeddings_threshold`. `W0` is drawn as a dense kernel on one-hot
    inputs (fan-in `input_dim`); `embeddings_initializer` defaults to `elus`.

    Example:

    >>> MaskedEmbedding(1000, 16, mask_seed=0)(np.zeros((2, 5), "int32")).shape
    (2, 5, 16)
    """

    masked_kernels = {"embeddings": "embeddings_initializer"}

    @classmethod
    def kernel_uses(cls, layer, name, input_shape, output_shape):
        """A lookup multiplies nothing."""
        return 0


# keras.layers.ReversibleEmbedding is in Keras 3.12 and later (keras_hub's
# ReversibleEmbedding, BERT's token embedding, renames it there).
if hasattr(keras.layers, "ReversibleEmbedding"):

    @keras.saving.register_keras_serializable(package="ssm_keras")
    @registry.register
    class MaskedReversibleEmbedding(MaskedLayer, keras.layers.ReversibleEmbedding):
        """`keras.layers.ReversibleEmbedding` with masked `embeddings` and,
        untied (`tie_weights=False`), masked `reverse_embeddings` (fan-in
        `output_dim`; variables `reverse_embeddings_scores`,
        `reverse_embeddings_threshold`). `call(x, reverse=True)` projects
        with the transposed effective embeddings (tied) or the effective
        reverse embeddings.

        Example:

        >>> layer = MaskedReversibleEmbedding(100, 16, mask_seed=0)
        >>> layer(layer(np.zeros((2, 5), "int32")), reverse=True).shape
        (2, 5, 100)
        """

        masked_kernels = {"embeddings": "embeddings_initializer"}
        reverse_embeddings = EffectiveKernel("reverse_embeddings")

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not self.tie_weights:
                object.__setattr__(self, "masked_kernels",
                                   {**self.masked_kernels,
                                    "reverse_embeddings": "embeddings_initializer"})

        @classmethod
        def kernel_uses(cls, layer, name, input_shape, output_shape):
            """A lookup multiplies nothing (the reverse projection is
            another call)."""
            return 0
