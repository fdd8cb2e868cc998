"""Makes saved models loadable after `import ssm_keras`, without importing Keras early.

A saved `model.keras` names its layers and initialisers by their registered
names (`ssm_keras>MaskedDense`, ...), which `keras.saving.load_model` finds only
once `ssm_keras.layers` and `ssm_keras.initializers` have been imported. Those
import Keras and TensorFlow (seconds), which `import ssm_keras.config` must not
cost. So `import ssm_keras` calls `register_when_keras_loads()`: with Keras
already imported it imports them at once; otherwise it puts a finder on
`sys.meta_path` that, the first time anything imports `keras`, lets Keras load
and then imports them. Either way `import ssm_keras` and `import keras`, in
either order, make `keras.saving.load_model` work.
"""

import importlib
import importlib.abc
import importlib.util
import sys

REGISTERING_MODULES = ("ssm_keras.initializers", "ssm_keras.layers")


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


def backend_error(message):
    """A `BackendError`, which an uncaught raise prints as one line."""
    sys.excepthook = _one_line_backend_error
    return BackendError(message)


def register_now():
    """Imports the modules that register the saved classes, after checking
    that Keras runs on TensorFlow (the Keras config file can choose another
    backend even when `KERAS_BACKEND` is unset)."""
    keras = sys.modules["keras"]
    if keras.backend.backend() != "tensorflow":
        raise backend_error(
            "ssm_keras needs the TensorFlow backend of Keras 3, but Keras uses "
            f"{keras.backend.backend()!r} (set in ~/.keras/keras.json?). Set "
            "KERAS_BACKEND=tensorflow."
        )
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _LoadThenRegister(importlib.abc.Loader):
    """Keras' own loader, with `register_now()` once Keras has loaded."""

    def __init__(self, loader, finder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        register_now()

    def __getattr__(self, name):  # the rest (resources, is_package, ...) is Keras' loader's
        return getattr(self._loader, name)


class _KerasImportFinder(importlib.abc.MetaPathFinder):
    """Finds `keras` through the other finders and gives it `_LoadThenRegister`,
    which takes this finder off `sys.meta_path` once Keras has loaded (until
    then `importlib.util.find_spec("keras")`, as TensorFlow calls it, may ask
    more than once)."""

    def __init__(self):
        self._finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _LoadThenRegister(spec.loader, self)
        return spec


def register_when_keras_loads():
    """`register_now()` now if Keras is imported, else when it is."""
    if "keras" in sys.modules:
        register_now()
    elif not any(isinstance(finder, _KerasImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KerasImportFinder())
