"""`FixedAffineBatchNormalization`: the batch norm of a supermask."""

import keras


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
