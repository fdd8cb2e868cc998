"""ssm_keras: signed supermasks (keep, hide, invert) for Keras 3 on TensorFlow.

The network's random initial weights `W0` stay frozen; a trainable score per
weight decides through a mask `m(s)` in {-1, 0, +1} whether the weight is
inverted, hidden or kept: the layer computes with `W = W0 * m(s)`.

`import ssm_keras` imports Keras and registers the package's layers and
initialisers, so that `keras.saving.load_model` reads a saved supermask; it
sets no environment variable, installs no import hook and leaves Keras'
global settings as they are. The public names below are loaded on first use.
The one exception to the eager import is the start of one of the package's
own commands (`python -m ssm_keras.train`, `ssm-train`, ...), which set
TensorFlow's options before they import it (`ssm_keras.cli`).
"""

import importlib
import os
import sys

__version__ = "0.1.0"

# The public API: each name and the module that defines it.
_PUBLIC = {
    "supermask": "ssm_keras.transforms.supermasking",
    "with_regime": "ssm_keras.transforms.supermasking",
    "MaskConfig": "ssm_keras.transforms.supermasking",
    "bake": "ssm_keras.transforms.baking",
    "save_compact": "ssm_keras.exporting.compact",
    "load_compact": "ssm_keras.exporting.compact",
    "MaskMonitor": "ssm_keras.training.callbacks",
    "decay_scores_only": "ssm_keras.training.score_decay",
    "SparsityTarget": "ssm_keras.training.sparsity",
    "register": "ssm_keras.layers",
    "MaskedLayer": "ssm_keras.layers",
    "MaskedDense": "ssm_keras.layers",
    "MaskedConv1D": "ssm_keras.layers",
    "MaskedConv2D": "ssm_keras.layers",
    "MaskedDepthwiseConv2D": "ssm_keras.layers",
    "FixedAffineBatchNormalization": "ssm_keras.layers",
}
__all__ = sorted(_PUBLIC)

# The modules whose import registers the classes a saved model names.
_REGISTERING = ("ssm_keras.initializers", "ssm_keras.layers")


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ssm_keras' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__():
    return sorted({*globals(), *__all__})


def _starting_a_command():
    """Whether this process is starting one of the package's commands:
    `python -m ssm_keras.<command>` or an `ssm-<command>` console script."""
    argv = getattr(sys, "orig_argv", sys.argv)
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].startswith("ssm_keras.")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.basename(main_file).startswith("ssm-")


def check_backend(backend):
    """Raises `ImportError` unless Keras' backend `backend` is TensorFlow."""
    if backend != "tensorflow":
        raise ImportError(
            f"ssm_keras needs the TensorFlow backend of Keras 3, but Keras uses {backend!r} "
            "(KERAS_BACKEND, or ~/.keras/keras.json). Set KERAS_BACKEND=tensorflow.")


if not _starting_a_command():
    check_backend(os.environ.get("KERAS_BACKEND", "tensorflow"))
    import keras

    check_backend(keras.backend.backend())
    for _module in _REGISTERING:
        importlib.import_module(_module)
