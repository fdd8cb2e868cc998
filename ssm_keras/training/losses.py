"""Training losses: the exact cross-entropy, and the paper's clipped one.

The models end in a float32 softmax. For labels `y` and probabilities `p`:

- `crossentropy`: `-log p_y`, exact. Keras 3 computes it from the logits
  behind the softmax, so it is unbounded and never saturates.
- `clipped_crossentropy`: `-log(clip(p_y, eps, 1 - eps))` with `eps = 1e-7`,
  what tf.keras 2's `CategoricalCrossentropy` computed on probabilities and
  so what the signed-supermask paper's code trained with. It is at most
  `-log(1e-7) = 16.12`, and a sample whose `p_y` is clipped has gradient
  zero: `d clip(p) / dp = [eps < p < 1 - eps]`.
"""

import keras
import tensorflow as tf

from ssm_keras.choices import LOSSES

EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="ssm_keras")
class ClippedSparseCrossentropy(keras.losses.Loss):
    """`-log(clip(p_y, epsilon, 1 - epsilon))` from probabilities `p`.

    Computed explicitly from the probabilities, in float32 whatever the
    policy: Keras' own cross-entropies replace a softmax output by its logits
    and would not clip.

    Args:
        epsilon: the clipping bound (tf.keras 2's `backend.epsilon()`).

    Example:

    >>> loss = ClippedSparseCrossentropy()
    >>> float(loss([0, 1], [[1.0, 0.0], [0.5, 0.5]]))  # (-log(1 - 1e-7) - log 0.5) / 2
    0.34657...
    """

    def __init__(self, epsilon=EPSILON, name="clipped_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 < epsilon < 0.5:
            raise ValueError(f"epsilon must be in (0, 0.5). Received: epsilon={epsilon}")
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        probabilities = tf.cast(y_pred, tf.float32)
        labels = tf.cast(tf.reshape(y_true, tf.shape(probabilities)[:-1]), tf.int32)
        true_probability = tf.gather(probabilities, labels, axis=-1, batch_dims=labels.shape.rank)
        return -tf.math.log(tf.clip_by_value(true_probability, self.epsilon, 1 - self.epsilon))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def get(name):
    """The Keras loss named `name` (one of `LOSSES`) for integer labels."""
    if name == "crossentropy":
        return keras.losses.SparseCategoricalCrossentropy()
    if name == "clipped_crossentropy":
        return ClippedSparseCrossentropy()
    raise ValueError(f"Unknown loss. Allowed: {', '.join(LOSSES)}. Received: loss={name!r}")
