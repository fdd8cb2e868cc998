"""ssm_keras: signed supermasks (keep, hide, invert) for Keras 3 on TensorFlow.

The network's random initial weights `W0` stay frozen; a trainable score per
weight decides through a mask `m(s)` in {-1, 0, +1} whether the weight is
inverted, hidden or kept: the layer computes with `W = W0 * m(s)`.
"""

import os

_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        "ssm_keras needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
        f"{_backend!r}. Unset KERAS_BACKEND or set it to 'tensorflow'."
    )

import keras  # noqa: E402  (imported after the backend check on purpose)

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "ssm_keras needs the TensorFlow backend of Keras 3, but Keras uses "
        f"{keras.backend.backend()!r} (set in ~/.keras/keras.json?). Set "
        "KERAS_BACKEND=tensorflow."
    )

__version__ = "0.1.0"
