"""ssm_keras: signed supermasks (keep, hide, invert) for Keras 3 on TensorFlow.

The network's random initial weights `W0` stay frozen; a trainable score per
weight decides through a mask `m(s)` in {-1, 0, +1} whether the weight is
inverted, hidden or kept: the layer computes with `W = W0 * m(s)`.
"""

import os
import sys

# oneDNN kernels for convolutions and matrix products on x86 CPUs: measured
# with scripts/benchmark.py (2 AMD EPYC cores, TensorFlow 2.21), masked Conv4
# trained at 181 images/s with them and 142 without, the masked FCN at 35,700
# and 31,400 (README, "Speed"). TensorFlow enables them by itself
# only on CPUs with AVX-512 VNNI or AMX; it reads the variable once, when it
# is first imported, so this works when ssm_keras is imported before
# TensorFlow (as `python -m ssm_keras.train` does). Set
# TF_ENABLE_ONEDNN_OPTS=0 to turn them off. It is set here and not in the
# commands' entry points because those live inside this package: this file
# runs first, and it must import Keras (hence TensorFlow) to register the
# classes that a saved model.keras names, so an entry point would come too
# late.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")



class BackendError(ImportError):
    """Keras is set to a backend other than TensorFlow."""


def _one_line_backend_error(kind, error, traceback, default=sys.excepthook):
    """Prints an uncaught `BackendError` as one `error: ...` line (a command
    started with it, e.g. `python -m ssm_keras.train`, then exits with
    status 1); every other exception as Python does."""
    if isinstance(error, BackendError):
        print(f"error: {error}", file=sys.stderr)
    else:
        default(kind, error, traceback)


_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    sys.excepthook = _one_line_backend_error
    raise BackendError(
        "ssm_keras needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
        f"{_backend!r}. Unset KERAS_BACKEND or set it to 'tensorflow'."
    )

import keras  # noqa: E402  (imported after the backend check on purpose)

if keras.backend.backend() != "tensorflow":
    sys.excepthook = _one_line_backend_error
    raise BackendError(
        "ssm_keras needs the TensorFlow backend of Keras 3, but Keras uses "
        f"{keras.backend.backend()!r} (set in ~/.keras/keras.json?). Set "
        "KERAS_BACKEND=tensorflow."
    )

__version__ = "0.1.0"

# Registers every class a saved model names (the layers and the
# initialisers), so that `import ssm_keras` makes a run's model.keras
# loadable with `keras.saving.load_model`.
from ssm_keras import initializers, layers  # noqa: E402,F401
