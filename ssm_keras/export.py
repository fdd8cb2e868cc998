"""Exports a finished training run for serving and for compact storage.

    python -m ssm_keras.export --model_dir=RUN_DIR --out=OUT_DIR \\
        [--formats=keras,saved_model,compact,tflite,tflite_dynamic,tflite_sparse] \\
        [--overwrite] [--noprune_dead_units]
    python -m ssm_keras.export --compact_file=model.ssm --out=OUT_DIR ...

The source is a finished training run (`RUN_DIR` holds `model.keras` and a
`results.json` with `"status": "finished"`) or a compact file written by an
earlier export (so a few-kilobyte `model.ssm` can be shipped and turned into
a SavedModel where it is served). `OUT_DIR` receives, per format:

| format           | output                 | what                                  |
| ---------------- | ---------------------- | ------------------------------------- |
| `keras`          | `model.keras`          | the baked model: stock Keras layers,  |
|                  |                        | kernels `W0 * m`; float32 raw pixels  |
| `saved_model`    | `saved_model/`         | TensorFlow SavedModel; signature      |
|                  |                        | `serve` (also `serving_default`):     |
|                  |                        | uint8 `images` of shape               |
|                  |                        | `(None, H, W, C)` to float32          |
|                  |                        | `probabilities`                       |
| `compact`        | `model.ssm`            | the compact format of                 |
|                  |                        | `ssm_keras.compact`                   |
| `tflite`         | `model.tflite`         | TensorFlow Lite, float32 weights      |
| `tflite_dynamic` | `model_dynamic.tflite` | TensorFlow Lite, int8 weights         |
| `tflite_sparse`  | `model_sparse.tflite`  | TensorFlow Lite, sparse float32       |
|                  |                        | weights                               |

(default: `keras,saved_model,compact`; the TFLite files have the
SavedModel's `serve` signature, see `ssm_keras.tflite`) and `export.json`
with the file sizes, compression ratios, each TFLite file's largest
difference from the baked model on check images (an export whose TFLite
file differs by more than `tflite.TOLERANCE` is refused) and the dead units
removed.

The baked model of the `keras`, `saved_model` and TFLite outputs has its
dead units removed (`pruning.prune_dead_units`; the outputs stay equal)
unless `--noprune_dead_units`; `model.ssm` always stores the whole mask. Neither
`model.keras` nor `saved_model/` needs ssm_keras to load. An existing export
in `OUT_DIR` is only replaced with `--overwrite`; the new files are written to
a temporary folder first and then moved in one by one, so a failed export
loses nothing and a killed one leaves every output whole (the next export
into `OUT_DIR` finishes or removes what it left). `OUT_DIR` may not be, or
contain, the run folder or compact file exported.
"""

import ctypes
import json
import os
import shutil
import tempfile
import zipfile

import keras
import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from ssm_keras import command, compact, pruning, run_dir, tflite
from ssm_keras import layers as ssm_layers
from ssm_keras.baking import ExportError, bake

FORMATS = ("keras", "saved_model", "compact", *tflite.KINDS)
DEFAULT_FORMATS = ("keras", "saved_model", "compact")
BAKED_FORMATS = ("keras", "saved_model", *tflite.KINDS)
OUTPUTS = {
    "keras": "model.keras", "saved_model": "saved_model", "compact": "model.ssm",
    "tflite": "model.tflite", "tflite_dynamic": "model_dynamic.tflite",
    "tflite_sparse": "model_sparse.tflite",
}
SUMMARY = "export.json"
SERVING_DTYPE = tf.uint8


# Reading a run.
def load_run(model_dir):
    """`(model, results)` of a finished run directory.

    Raises:
        RunDirError: no such directory, no or unfinished `results.json`
            (`run_dir.read_results`).
        ExportError: no loadable `model.keras`.
    """
    results = run_dir.read_results(model_dir)
    path = os.path.join(model_dir, run_dir.MODEL)
    if not os.path.isfile(path):
        raise ExportError(f"{model_dir} has no model.keras although its run finished")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise ExportError(f"cannot load {path} ({error})") from None
    return model, results


# Writing the formats.
def check_formats(formats):
    """`formats` as a tuple; ExportError if empty or not a subset of `FORMATS`."""
    formats = tuple(formats)
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ExportError(
            f"unknown format(s) {unknown or list(formats)}; expected a non-empty "
            f"comma-separated subset of {','.join(FORMATS)}"
        )
    return formats


def parse_formats(text):
    """`"keras, compact"` -> `("keras", "compact")`, checked."""
    return check_formats(name.strip() for name in text.split(",") if name.strip())


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
        fn=lambda images: {
            "probabilities": baked(tf.cast(images, tf.float32), training=False)
        },
        input_signature=[spec],
    )
    archive.write_out(path, verbose=False)


def _check_baked(model, baked):
    """Raises ExportError unless the baked model predicts as the masked one."""
    shape = (4, *model.input_shape[1:])
    images = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    if not np.allclose(np.asarray(baked(images, training=False)), expected, atol=1e-6):
        raise ExportError("the baked model's predictions differ from the trained model's")


def _run_metadata(results):
    """What a compact file keeps of a run's `results.json`."""
    keys = ("dataset", "arch", "input_shape", "num_classes", "regime", "mask", "test_accuracy")
    return {key: results[key] for key in keys if key in results}


def file_size(path):
    """The size in bytes of a file, or of all files under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _summary(model, source, folder, formats, checks):
    """The `export.json` content: sizes, compression ratios and `checks`.

    `float32_kernel_bytes = 4 * masked weights`; `compact_ratio[name] =
    bytes of name / bytes of model.ssm`, for the float32 kernels and for
    the other exported files.
    """
    masked = ssm_layers.masked_layers(model)
    weights = sum(int(np.prod(layer.kernel.shape)) for layer in masked)
    sizes = {OUTPUTS[name]: file_size(os.path.join(folder, OUTPUTS[name])) for name in formats}
    summary = {
        "source": source,
        "formats": list(formats),
        "bytes": sizes,
        "masked_weights": weights,
        "remaining_weights": sum(layer.mask_counts()["remaining"] for layer in masked),
        "float32_kernel_bytes": 4 * weights,
        **checks,
    }
    if "compact" in formats:
        compact_bytes = sizes[OUTPUTS["compact"]]
        references = {"float32_kernels": 4 * weights, **sizes}
        del references[OUTPUTS["compact"]]
        summary["compact_ratio"] = {
            name: round(size / compact_bytes, 2) for name, size in references.items()
        }
    return summary


def _baked_for_export(model, prune_dead_units):
    """`(baked model, checks)`: the baked model, its dead units removed if
    asked, checked against `model`; `checks` holds the pruning report."""
    baked = bake(model)
    checks = {}
    if prune_dead_units:
        baked, report = pruning.prune_dead_units(baked)
        checks["dead_units"] = report
    _check_baked(model, baked)
    return baked, checks


def _write_tflite(baked, folder, formats):
    """Writes the TFLite files of `formats`, converted from the SavedModel in
    `folder` (written there for them when it is not an output), and checks
    each against `baked`: `{"tflite_max_difference": {kind: difference},
    "tflite_tolerance": {kind: tolerance}}`."""
    saved_model = os.path.join(folder, OUTPUTS["saved_model"])
    if "saved_model" not in formats:
        saved_model = tempfile.mkdtemp(prefix="saved_model-", dir=folder)
        save_saved_model(baked, saved_model)
    images = tflite.check_images(baked.input_shape[1:])
    differences = {}
    for kind in formats:
        if kind in tflite.KINDS:
            path = os.path.join(folder, OUTPUTS[kind])
            with open(path, "wb") as file:
                file.write(tflite.convert(saved_model, kind))
            differences[kind] = tflite.check_agreement(path, baked, kind, images)
    if "saved_model" not in formats:
        shutil.rmtree(saved_model)
    return {"tflite_max_difference": differences,
            "tflite_tolerance": {kind: tflite.TOLERANCE[kind] for kind in differences}}


def _write_formats(model, metadata, folder, formats, prune_dead_units):
    """Writes the files of `formats` into `folder`; returns what was checked
    (the dead units removed, the TFLite files' differences)."""
    checks = {}
    if any(name in BAKED_FORMATS for name in formats):
        baked, checks = _baked_for_export(model, prune_dead_units)
    if "keras" in formats:
        baked.save(os.path.join(folder, OUTPUTS["keras"]))
    if "saved_model" in formats:
        save_saved_model(baked, os.path.join(folder, OUTPUTS["saved_model"]))
    if any(name in tflite.KINDS for name in formats):
        checks.update(_write_tflite(baked, folder, formats))
    if "compact" in formats:
        compact.save_compact(model, os.path.join(folder, OUTPUTS["compact"]), metadata)
    return checks


def _existing_outputs(out_dir):
    if not os.path.isdir(out_dir):
        return []
    names = (*OUTPUTS.values(), SUMMARY)
    return [name for name in names if os.path.lexists(os.path.join(out_dir, name))]


def _inside(path, folder):
    """Whether `path` is `folder` or lies under it (both resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _check_destination(out_dir, overwrite, source):
    """Raises ExportError if `out_dir` is a file, is or contains `source`
    (the run folder or compact file exported), or holds an export and
    `overwrite` is False."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"--out {out_dir} exists and is not a directory")
    if _inside(source, out_dir):
        raise ExportError(
            f"--out {out_dir} is or contains the source {source}; an export there would "
            "replace what it is made from. Choose another --out"
        )
    existing = _existing_outputs(out_dir)
    if existing and not overwrite:
        raise ExportError(
            f"{out_dir} already holds an export ({', '.join(existing)}); "
            "pass --overwrite to replace it"
        )


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


# The swap: a staging folder `.export-*` in `out_dir` receives the new
# export; the file `READY` in it (the list of its outputs) marks it
# complete. Then each output replaces the old one by a rename, the old
# outputs of other formats are deleted, and the staging folder goes. A
# staging folder that a killed export left behind is finished by the next
# export into `out_dir` if it was complete, else deleted; until then every
# output in `out_dir` is a complete file or folder, old or new.
STAGING_PREFIX = ".export-"
READY = "READY"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_LIBC = ctypes.CDLL(None, use_errno=True)


def _exchange(first, second):
    """Swaps two paths in one step (Linux `renameat2`); False if not available."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                       _RENAME_EXCHANGE)
    return result == 0


def _move_in(new, old):
    """Puts `new` where `old` is, replacing it; `old` never misses for
    files, nor for folders where `renameat2` can exchange them."""
    if os.path.isdir(new) and os.path.isdir(old) and not os.path.islink(old):
        if _exchange(new, old):
            shutil.rmtree(new)  # now the old folder
            return
        aside = new + ".old"
        os.rename(old, aside)  # a moment without `old`; `recover` would finish it
        os.rename(new, old)
        shutil.rmtree(aside)
    else:
        os.replace(new, old)


def _finish_swap(staging, out_dir):
    """Moves a complete staging folder's outputs into `out_dir`; deletes it."""
    with open(os.path.join(staging, READY), encoding="utf-8") as file:
        names = json.load(file)
    for name in names:
        if os.path.lexists(os.path.join(staging, name)):
            _move_in(os.path.join(staging, name), os.path.join(out_dir, name))
    for name in _existing_outputs(out_dir):
        if name not in names:
            _remove(os.path.join(out_dir, name))
    shutil.rmtree(staging)


def recover(out_dir):
    """Finishes or deletes the staging folders a killed export left in `out_dir`."""
    if not os.path.isdir(out_dir):
        return
    for name in sorted(os.listdir(out_dir)):
        staging = os.path.join(out_dir, name)
        if not name.startswith(STAGING_PREFIX) or not os.path.isdir(staging):
            continue
        try:
            ready = os.path.isfile(os.path.join(staging, READY))
            if ready:
                _finish_swap(staging, out_dir)
            else:
                shutil.rmtree(staging)
        except (OSError, ValueError) as error:
            raise ExportError(f"cannot clean up {staging}, left by an earlier export "
                              f"({error}); remove it by hand") from None


def _export(model, metadata, source, out_dir, formats, prune_dead_units):
    """Writes the export into a staging folder inside `out_dir`, then swaps
    it in: a failure before the swap leaves `out_dir` as it was, and so
    does a kill (see `recover`)."""
    staging = None
    try:
        os.makedirs(out_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir)
        checks = _write_formats(model, metadata, staging, formats, prune_dead_units)
        summary = _summary(model, source, staging, formats, checks)
        with open(os.path.join(staging, SUMMARY), "w", encoding="utf-8") as file:
            json.dump(summary, file, indent=2, allow_nan=False)
        with open(os.path.join(staging, READY), "w", encoding="utf-8") as file:
            json.dump([*(OUTPUTS[name] for name in formats), SUMMARY], file)
        _finish_swap(staging, out_dir)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise ExportError(f"cannot write the export to {out_dir}: "
                          f"{error.strerror or error}{where}") from None
    except tf.errors.OpError as error:  # from writing the SavedModel
        raise ExportError(f"cannot write the export to {out_dir}: {error.message}") from None
    finally:
        if staging and os.path.isdir(staging) and not os.path.isfile(
                os.path.join(staging, READY)):
            shutil.rmtree(staging, ignore_errors=True)
    return summary


def export_run(model_dir, out_dir, formats=DEFAULT_FORMATS, overwrite=False,
               prune_dead_units=True):
    """Exports a finished training run into `out_dir`.

    Args:
        model_dir: a run directory (`model.keras`, `results.json`).
        out_dir: created if missing.
        formats: a subset of `FORMATS`.
        overwrite: replace an export already in `out_dir` (all of its
            files, also those of formats not written now); without it an
            existing export is an error and nothing is written.
        prune_dead_units: remove the dead units of the baked model
            (`pruning.prune_dead_units`) before writing the baked formats.

    Returns:
        The summary also written to `out_dir/export.json`.

    Raises:
        RunDirError: a run that is not finished (`run_dir.read_results`).
        ExportError: bad formats, an existing export without `overwrite`, a
            run that cannot be exported, or a TFLite file that disagrees
            with the baked model (`tflite.TFLiteError`).
    """
    formats = check_formats(formats)
    recover(out_dir)
    _check_destination(out_dir, overwrite, model_dir)
    model, results = load_run(model_dir)
    return _export(model, _run_metadata(results), os.path.abspath(model_dir), out_dir, formats,
                   prune_dead_units)


def export_compact(compact_path, out_dir, formats=DEFAULT_FORMATS, overwrite=False,
                   prune_dead_units=True):
    """Exports the model of a compact file, e.g. a SavedModel from `model.ssm`.

    Arguments and result as `export_run`; the compact file's metadata is
    kept. Raises ExportError (`CompactFileError`) for a damaged file.
    """
    formats = check_formats(formats)
    recover(out_dir)
    _check_destination(out_dir, overwrite, compact_path)
    loaded = compact.load_compact(compact_path)
    source = os.path.abspath(compact_path)
    return _export(loaded.masked_model, loaded.metadata, source, out_dir, formats,
                   prune_dead_units)


# Command line.
def define_flags(flag_values=flags.FLAGS):
    """Defines the command's flags in `flag_values`."""
    flags.DEFINE_string(
        "model_dir", None, "Finished training run directory to export.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "compact_file", None, "Compact file (.ssm) to export instead of a run.",
        flag_values=flag_values,
    )
    flags.DEFINE_string("out", None, "Output directory.", flag_values=flag_values)
    flags.DEFINE_string(
        "formats", ",".join(DEFAULT_FORMATS), f"Comma-separated subset of {','.join(FORMATS)}.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "prune_dead_units", True,
        "Remove the hidden units whose incoming or outgoing weights are all zero from the "
        "baked model (keras, saved_model and TFLite outputs); the outputs stay equal.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace an export already in --out.", flag_values=flag_values
    )
    flags.mark_flag_as_required("out", flag_values=flag_values)
    flags.mark_flags_as_mutual_exclusive(
        ["model_dir", "compact_file"], required=True, flag_values=flag_values
    )


def _report(summary):
    lines = [f"{name}: {size:,} bytes" for name, size in summary["bytes"].items()]
    lines.append(
        f"float32 kernels: {summary['float32_kernel_bytes']:,} bytes "
        f"({summary['remaining_weights']:,} of {summary['masked_weights']:,} "
        "masked weights remain)"
    )
    lines += [
        f"model.ssm is {ratio}x smaller than {name}"
        for name, ratio in summary.get("compact_ratio", {}).items()
    ]
    lines += [
        f"{OUTPUTS[kind]} agrees with the baked model: probabilities differ by at most "
        f"{difference:.2g} (tolerance {summary['tflite_tolerance'][kind]:g})"
        for kind, difference in summary.get("tflite_max_difference", {}).items()
    ]
    if "dead_units" in summary:
        lines += pruning.format_report(summary["dead_units"])
    return "\n".join(lines)


def run_command(flag_values):
    """Runs the export the parsed flags describe and prints a size report."""
    logging.set_verbosity(logging.WARNING)  # writing a SavedModel logs every step
    formats = parse_formats(flag_values.formats)
    if flag_values.model_dir is not None:
        summary = export_run(flag_values.model_dir, flag_values.out, formats,
                             flag_values.overwrite, flag_values.prune_dead_units)
    else:
        summary = export_compact(flag_values.compact_file, flag_values.out, formats,
                                 flag_values.overwrite, flag_values.prune_dead_units)
    print(_report(summary))


def cli():
    """The `ssm-export` console script."""
    command.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
