"""ssm_keras: signed supermasks (keep, hide, invert) for Keras 3 on TensorFlow.

The network's random initial weights `W0` stay frozen; a trainable score per
weight decides through a mask `m(s)` in {-1, 0, +1} whether the weight is
inverted, hidden or kept: the layer computes with `W = W0 * m(s)`.
"""

import os

# oneDNN kernels for convolutions and matrix products on x86 CPUs: measured
# with ssm-benchmark (2 AMD EPYC cores, TensorFlow 2.21), masked Conv4
# trained at 181 images/s with them and 142 without, the masked FCN at 35,700
# and 31,400 (docs/speed.md). TensorFlow enables them by itself only on CPUs
# with AVX-512 VNNI or AMX; it reads the variable once, when it is first
# imported, so this works when ssm_keras is imported before TensorFlow (as
# `python -m ssm_keras.train` does). Set TF_ENABLE_ONEDNN_OPTS=0 to turn them
# off. It is set here, in the first file of the package that runs, and not in
# the commands' entry points, which would come after their own imports.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from ssm_keras import registration  # noqa: E402  (light: imports no Keras)

_backend = os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise registration.backend_error(
        "ssm_keras needs the TensorFlow backend of Keras 3, but KERAS_BACKEND="
        f"{_backend!r}. Unset KERAS_BACKEND or set it to 'tensorflow'."
    )

__version__ = "0.1.0"

# The public API, imported on first use: `ssm_keras.supermask`, ...
_PUBLIC = {
    "supermask": "supermasking",
    "with_regime": "supermasking",
    "MaskConfig": "supermasking",
    "bake": "baking",
    "save_compact": "compact",
    "load_compact": "compact",
    "MaskMonitor": "callbacks",
    "decay_scores_only": "score_decay",
    "MaskedLayer": "layers",
    "MaskedDense": "layers",
    "MaskedConv1D": "layers",
    "MaskedConv2D": "layers",
    "MaskedDepthwiseConv2D": "layers",
    "FixedAffineBatchNormalization": "layers",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ssm_keras' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"ssm_keras.{_PUBLIC[name]}"), name)


def __dir__():
    return sorted({*globals(), *__all__})

# Registers every class a saved model names (the layers and the
# initialisers) when Keras is imported, so that `import ssm_keras` makes a
# run's model.keras loadable with `keras.saving.load_model`, while
# `import ssm_keras.config` imports neither Keras nor TensorFlow.
registration.register_when_keras_loads()
