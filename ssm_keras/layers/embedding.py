"""Masked `Embedding`."""

import keras

from ssm_keras.layers import registry
from ssm_keras.layers.base import MaskedLayer


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
