"""The export formats, one registry entry each.

An `ExportFormat` names the file (or folder) it writes into an export
folder and how it writes it from an `ExportJob` (the trained masked model,
its baked copy, the metadata). A format that a runtime runs also says how to
load its file as `predict(uint8 images) -> probabilities` and how far those
may differ from the baked model's:

    |p_format - p_baked| <= tolerance * max(1, |p_baked|)   for every output

(absolute for probabilities, relative for outputs beyond 1: logits), which
every export checks on `CHECK_IMAGES` random images (and refuses the
file otherwise); the inference benchmark (`ssm-benchmark-inference`) runs
every such format. Formats that need optional packages (`requires`) are
available once they are installed. A new format is one `register` call:

    register(ExportFormat(
        name="my_format", output="model.my", write=lambda job, path: ...,
        runtime="My runtime", load=lambda path, threads: predict, tolerance=1e-5))

| format           | output                 | runtime                              |
| ---------------- | ---------------------- | ------------------------------------ |
| `keras`          | `model.keras`          | Keras (`keras.saving.load_model`)    |
| `saved_model`    | `saved_model/`         | TensorFlow (`tf.saved_model.load`)   |
| `compact`        | `model.ssm`            | none: it rebuilds the Keras model    |
| `tflite`         | `model.tflite`         | LiteRT / TFLite, float32             |
| `tflite_dynamic` | `model_dynamic.tflite` | LiteRT / TFLite, int8 weights        |
| `tflite_sparse`  | `model_sparse.tflite`  | LiteRT / TFLite, sparse float32      |
| `onnx`           | `model.onnx`           | ONNX Runtime (`pip install ssm_keras[onnx]`) |
"""

import dataclasses
import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from ssm_keras.errors import ExportError
from ssm_keras.exporting import compact, onnx_file, tflite
from ssm_keras.transforms import dead_units
from ssm_keras.transforms.baking import bake

SERVING_DTYPE = tf.uint8
CHECK_IMAGES = 64


@dataclasses.dataclass
class ExportJob:
    """What the formats of one export are written from.

    Attributes:
        masked: the trained masked model, computing in float32.
        metadata: what the compact file keeps (the run's record).
        folder: the folder the outputs are written into.
        prune_dead_units: remove dead units from the baked model.
    """

    masked: keras.Model
    metadata: dict
    folder: str
    prune_dead_units: bool = True
    checks: dict = dataclasses.field(default_factory=dict)
    _saved_model: str | None = None

    @functools.cached_property
    def baked(self):
        """The stock-layer model (`bake`), its dead units removed if asked
        (the report in `checks["dead_units"]`), checked against `masked`."""
        baked = bake(self.masked)
        if self.prune_dead_units:
            baked, self.checks["dead_units"] = dead_units.prune_dead_units(baked)
        shape = (4, *self.masked.input_shape[1:])
        images = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
        expected = np.asarray(self.masked(images, training=False))
        if not np.allclose(np.asarray(baked(images, training=False)), expected, atol=1e-6):
            raise ExportError("the baked model's predictions differ from the trained model's")
        return baked

    @functools.cached_property
    def agreement_check(self):
        """`(images, expected)`: the `CHECK_IMAGES` uint8 images every
        format's file is checked on (`check_images`) and the baked model's
        outputs on them, computed once for all formats (`check_agreement`)."""
        images = check_images(self.masked.input_shape[1:])
        return images, np.asarray(self.baked(images.astype(np.float32), training=False))

    def saved_model(self):
        """A SavedModel of the baked model (`save_saved_model`): the
        `saved_model` output if it was written, else one made once in a
        temporary folder (removed by `clean_up`)."""
        output = os.path.join(self.folder, FORMATS["saved_model"].output)
        if os.path.isdir(output):
            return output
        if self._saved_model is None:
            self._saved_model = tempfile.mkdtemp(prefix="saved_model-", dir=self.folder)
            save_saved_model(self.baked, self._saved_model)
        return self._saved_model

    def clean_up(self):
        """Removes the temporary SavedModel, if one was made."""
        if self._saved_model is not None:
            shutil.rmtree(self._saved_model, ignore_errors=True)
            self._saved_model = None


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: its `--formats` name.
        output: the file or folder it writes in the export folder.
        write: `write(job, path)` writes the output of an `ExportJob`.
        runtime: the runtime that runs the file (None: nothing runs it).
        load: `load(path, threads)` -> `predict(uint8 images)` ->
            probabilities, in that runtime.
        tolerance: the largest probability difference from the baked model
            an export accepts, relative for outputs beyond 1 (None: not
            checked; it is the baked model).
        requires: the modules it needs beyond TensorFlow.
        extra: the pip extra that installs them.
        default: written when no formats are named.
        known_errors: what the runtime is known to compute wrongly, said
            when a file disagrees with the baked model.
    """

    name: str
    output: str
    write: Callable
    runtime: str | None = None
    load: Callable | None = None
    tolerance: float | None = None
    requires: tuple = ()
    extra: str | None = None
    default: bool = False
    known_errors: str = ""

    def available(self):
        """Whether every module of `requires` can be imported."""
        return all(importlib.util.find_spec(module) is not None for module in self.requires)


FORMATS = {}


def register(export_format):
    """Adds `export_format` to `FORMATS` (by its name, which must be new);
    returns it."""
    if export_format.name in FORMATS:
        raise ValueError(f"an export format named {export_format.name!r} is registered already")
    FORMATS[export_format.name] = export_format
    return export_format


def default_formats():
    """The names of the formats written when none are named."""
    return tuple(name for name, export_format in FORMATS.items() if export_format.default)


def check_formats(names):
    """`names` as a tuple; `ExportError` if empty, not a subset of `FORMATS`,
    or naming a format whose packages are not installed."""
    names = tuple(names)
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ExportError(
            f"unknown format(s) {unknown or list(names)}; expected a non-empty "
            f"comma-separated subset of {','.join(FORMATS)}")
    for name in names:
        export_format = FORMATS[name]
        if not export_format.available():
            raise ExportError(
                f"--formats={name} needs {' and '.join(export_format.requires)}: "
                f"pip install 'ssm_keras[{export_format.extra}]'")
    return names


def check_agreement(export_format, path, images, expected):
    """The largest `|p_format - p_baked|` over uint8 `images`, on which the
    baked model gives `expected`; `ExportError` if any output differs by
    more than the format's tolerance times `max(1, |p_baked|)` (relative for
    outputs beyond 1: logits), if the outputs differ in shape or are not
    finite, or if the runtime cannot run the file."""
    try:
        predicted = np.asarray(export_format.load(path, None)(images))
    except (AttributeError, NameError, MemoryError):
        raise  # errors of the code or the machine, not of the file
    except Exception as error:  # the runtimes' own types, e.g. ONNX Runtime's InvalidGraph
        reason = " ".join(str(error).split())[:300]
        raise ExportError(
            f"{export_format.runtime} cannot run the {export_format.name} file written for "
            f"this model ({type(error).__name__}: {reason}); nothing was exported") from error
    refusal = f"the {export_format.name} file disagrees with the baked model"
    if export_format.known_errors:
        refusal += f" ({export_format.known_errors})"
    if predicted.shape != expected.shape:
        raise ExportError(f"{refusal}: its outputs have shape {predicted.shape}, the baked "
                          f"model's {expected.shape}; nothing was exported")
    if not (np.isfinite(predicted).all() and np.isfinite(expected).all()):
        raise ExportError(f"{refusal}: not every output on {len(images)} check images is "
                          "finite; nothing was exported")
    differences = np.abs(predicted - expected)
    excess = differences / (export_format.tolerance * np.maximum(1.0, np.abs(expected)))
    if not excess.max() <= 1.0:
        raise ExportError(
            f"{refusal}: its outputs differ by up to {differences.max():.3g} on {len(images)} "
            f"check images, {excess.max():.3g} times the tolerance {export_format.tolerance:g} "
            "(relative beyond 1); nothing was exported")
    return float(differences.max())


def check_exportable(model):
    """Refuses (`ExportError`) a model the formats do not describe: their
    files take one input of raw pixels of a known shape (uint8 in the
    SavedModel's signature, cast to float32) and give one output, and each
    is checked on random such images. Says how to serve any other model."""
    problems = []
    if len(model.inputs) != 1:
        problems.append(f"{len(model.inputs)} inputs")
    else:
        shape, dtype = tuple(model.inputs[0].shape), str(model.inputs[0].dtype)
        if None in shape[1:]:
            problems.append(f"an input of shape {shape}, with sizes left open")
        if "float" not in dtype and dtype != "uint8":
            problems.append(f"an input of dtype {dtype}, not pixels (float or uint8)")
    if len(model.outputs) != 1:
        problems.append(f"{len(model.outputs)} outputs")
    if problems:
        raise ExportError(
            "the export writes models of one input of raw pixels of a known shape and one "
            f"output; model {model.name!r} has {' and '.join(problems)}. Serve it as "
            "ssm_keras.bake(masked).export(path) (a SavedModel; bake(masked, "
            "prune_dead_units=True, check_inputs=your_inputs) also removes its dead units) "
            "and store its mask with ssm_keras.save_compact(masked, path)")


def check_images(input_shape, count=CHECK_IMAGES, seed=0):
    """`count` uint8 images of `input_shape`, uniform in [0, 255], fixed by `seed`."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *input_shape)).astype(np.uint8)


# The SavedModel: what TensorFlow Serving, TFLite and ONNX are made from.
def save_saved_model(baked, path):
    """Writes a SavedModel whose `serve` signature takes raw uint8 images.

    `serve(images)`: `images` uint8 of shape `(None, H, W, C)` are cast to
    float32 and fed to the baked model, whose first layers standardise (and
    flatten) them; it returns `{"probabilities": (None, classes) float32}`.
    TF-Serving's `serving_default` is the same function.
    """
    spec = tf.TensorSpec((None, *baked.input_shape[1:]), SERVING_DTYPE, name="images")
    archive = keras.export.ExportArchive()
    archive.track(baked)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: {"probabilities": baked(tf.cast(images, tf.float32), training=False)},
        input_signature=[spec],
    )
    archive.write_out(path, verbose=False)


# Runtimes: `load(path, threads)` -> `predict(uint8 images)` -> probabilities.
def _load_keras(path, threads):
    model = keras.saving.load_model(path)
    call = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False))
    return lambda images: call(tf.constant(images)).numpy()


def _load_saved_model(path, threads):
    loaded = tf.saved_model.load(path)  # held by the closure: its variables must live
    return lambda images: loaded.serve(tf.constant(images))["probabilities"].numpy()


def _write_tflite(kind):
    def write(job, path):
        with open(path, "wb") as file:
            file.write(tflite.convert(job.saved_model(), kind))
    return write


register(ExportFormat(
    name="keras", output="model.keras", write=lambda job, path: job.baked.save(path),
    runtime="Keras", load=_load_keras, default=True))
register(ExportFormat(
    name="saved_model", output="saved_model",
    write=lambda job, path: save_saved_model(job.baked, path),
    runtime="SavedModel", load=_load_saved_model, default=True))
register(ExportFormat(
    name="compact", output="model.ssm",
    write=lambda job, path: compact.save_compact(job.masked, path, job.metadata), default=True))
for _kind, _runtime in tflite.RUNTIMES.items():
    register(ExportFormat(
        name=_kind, output=tflite.OUTPUTS[_kind], write=_write_tflite(_kind),
        runtime=_runtime, load=tflite.predictor, tolerance=tflite.TOLERANCE[_kind],
        known_errors=tflite.KNOWN_ERRORS.get(_kind, "")))
register(ExportFormat(
    name="onnx", output="model.onnx",
    write=lambda job, path: onnx_file.write(job.baked, path, SERVING_DTYPE),
    runtime="ONNX Runtime", load=onnx_file.predictor, tolerance=onnx_file.TOLERANCE,
    requires=onnx_file.REQUIRES, extra="onnx"))
