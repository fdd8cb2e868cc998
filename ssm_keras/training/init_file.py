"""Init files: the initial kernels and scores of a model, shared by many runs.

All experiments of a comparison must start from the same initial weights and
scores. A seed already reproduces them (see `ssm_keras.initializers`); an init
file stores them explicitly, so that runs with other code or other seeds can
share one start.

Format (`.npz`, NumPy's zip of arrays): for every kernel a layer of a
registered type (`ssm_keras.layers.registry`) masks, or would mask in a
plain model, `<scope>/<kernel>` (`dense_1/kernel`,
`lstm/lstm_cell/recurrent_kernel`; the scope is the layer's name, or
`container/sublayer`); for masked layers also its scores
(`<scope>/scores`, `<scope>/recurrent_scores`, ...) and, for threshold
masks, its threshold (`<scope>/threshold`, ...); plus `__meta__`, a JSON
string with `format`, `version`, `arch` and `settings`, the run's settings
that drew these arrays (`START_SETTINGS`; files written before it have
none). A masked model's init file also
initialises the plain model of the same architecture (its kernels), which
is how the baseline starts from the same `W0`.
"""

import dataclasses
import json
import os
import zipfile

import keras
import numpy as np

from ssm_keras import files
from ssm_keras import layers as ssm_layers
from ssm_keras.errors import UserError
from ssm_keras.layers import base, registry
from ssm_keras.training.config import REGIME_DEFAULTS

FORMAT = "ssm_keras.init"
VERSION = 1


# The settings that draw a run's start, which a run from an init file takes
# from the file instead.
START_SETTINGS = ("weight_init", "init_factor", "score_init", "tau_fraction")


def start_settings(config):
    """`{setting: value}` of `START_SETTINGS` in a `TrainConfig` (the weights'
    only for `--regime=weights`, which draws no scores)."""
    names = START_SETTINGS[:2] if config.regime == "weights" else START_SETTINGS
    return {name: getattr(config, name) for name in names}


def given_start_settings(config):
    """Those of `start_settings(config)` set away from their defaults (the
    regime's, `REGIME_DEFAULTS`, for the weights' initialiser)."""
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    defaults.update(REGIME_DEFAULTS.get(config.regime, {}))
    return {name: value for name, value in start_settings(config).items()
            if value != defaults[name]}


class InitFileError(UserError):
    """An init file that is missing, corrupt or made for another model."""


def _variables(model):
    """`{key: variable}` of the kernels, scores and thresholds an init file
    holds for `model`."""
    found = {}
    for layer in ssm_layers.find_layers(model, keras.layers.Layer):
        found.update((f"{scope}/{name}", kernel) for scope, name, kernel in registry.kernels(layer))
        for leaf in base.masked_leaves(layer):
            for name in leaf.masked_kernels:
                for variable in (leaf.scores_variable(name), leaf.threshold_variable(name)):
                    if variable is not None:
                        found[f"{leaf.mask_scope}/{variable.name}"] = variable
    return found


def save_init(model, path, arch, settings):
    """Writes the model's current kernels and scores to `path` (.npz), through
    a temporary file and a rename, so that a kill leaves no partial file;
    `settings` (`start_settings`) are those that drew them.

    An existing file is never overwritten: if it holds exactly these arrays
    (the file a killed run with the same settings wrote) it is kept as it
    is; otherwise InitFileError. InitFileError too if the file cannot be
    written (no partial file is left behind).
    """
    arrays = {key: np.asarray(variable.numpy()) for key, variable in _variables(model).items()}
    if os.path.exists(path):
        if not _holds(path, arch, arrays):
            raise InitFileError(
                f"Init file {path} already exists; it is not overwritten. "
                "Choose another path or remove it first."
            )
        return
    meta = {"format": FORMAT, "version": VERSION, "arch": arch, "settings": settings}

    def write(temporary):
        with open(temporary, "wb") as file:
            np.savez(file, __meta__=np.array(json.dumps(meta)), **arrays)

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        files.save_atomically(path, write)
    except OSError as error:
        raise InitFileError(
            f"--save_init_file={path} cannot be written: {error.strerror or error}"
            + (f" ({error.filename})" if error.filename else "") + "."
        ) from None


def _holds(path, arch, arrays):
    """Whether the init file `path` is of `arch` and holds exactly `arrays`."""
    try:
        meta, found = read_init(path)
    except InitFileError:
        return False
    return (meta["arch"] == arch and found.keys() == arrays.keys()
            and all(np.array_equal(found[key], value) for key, value in arrays.items()))


def read_init(path):
    """Returns `(meta, arrays)` of an init file; InitFileError if unreadable."""
    if not os.path.isfile(path):
        raise InitFileError(f"Init file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        raise InitFileError(
            f"Init file {path} is not a readable ssm_keras init file ({error})."
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), str):
        raise InitFileError(
            f"Init file {path} has malformed metadata: expected a JSON object with "
            f"format, version and arch. Received: {str(meta)[:200]}"
        )
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise InitFileError(
            f"Init file {path} has format {meta.get('format')!r} version "
            f"{meta.get('version')!r}; expected {FORMAT!r} version {VERSION}."
        )
    return meta, arrays


def load_init(model, path, arch, settings):
    """Assigns the kernels and scores stored in `path` to a built model.

    Raises:
        InitFileError: the file is missing or corrupt, was written for
            another architecture, was drawn with other values of `settings`
            (the run's `given_start_settings`, which the file replaces), or
            lacks or mis-shapes a variable.
    """
    meta, arrays = read_init(path)
    if meta["arch"] != arch:
        raise InitFileError(
            f"Init file {path} was written for arch={meta['arch']!r}, "
            f"not arch={arch!r}."
        )
    recorded = meta.get("settings")
    recorded = recorded if isinstance(recorded, dict) else {}
    differing = [name for name, value in settings.items()
                 if name in recorded and recorded[name] != value]
    if differing:
        raise InitFileError(
            f"Init file {path} was drawn with "
            f"{', '.join(f'--{name}={recorded[name]}' for name in differing)}, and the run "
            "starts from its arrays, not from "
            f"{', '.join(f'--{name}={settings[name]}' for name in differing)}: pass the "
            "file's settings, or leave out --init_file.")
    assignments = []
    for key, variable in _variables(model).items():
        if key not in arrays:
            raise InitFileError(
                f"Init file {path} has no {key!r}; was it written for another "
                "model (other mask kind, width or classes)?"
            )
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise InitFileError(
                f"Init file {path}: {key!r} has shape {arrays[key].shape}, "
                f"the model needs {tuple(variable.shape)} (other width, "
                "input shape or number of classes?)."
            )
        if not np.issubdtype(arrays[key].dtype, np.floating):
            raise InitFileError(
                f"Init file {path}: {key!r} holds {arrays[key].dtype} values; kernels "
                "and scores are real floating-point numbers."
            )
        if not np.all(np.isfinite(arrays[key])):
            raise InitFileError(
                f"Init file {path}: {key!r} holds NaN or infinite values; a run "
                "started from it cannot learn."
            )
        assignments.append((variable, arrays[key]))
    for variable, value in assignments:
        variable.assign(value)
