"""Exporting a finished run or a compact file: baked for serving, compact for storage.

`export_run(model_dir, out_dir, names)` and `export_compact(path, out_dir,
names)` write the files of the formats `names` (`formats.FORMATS`) and
`export.json` (sizes, compression ratios, each runtime file's difference from
the baked model, the dead units removed) into `out_dir`, all through a staging folder
(`ssm_keras.exporting.staging`), so a failed or killed export loses nothing. The
files and their checks are described in docs/export.md; the command is
`ssm-export` (`config.ExportSettings`, `export`).
"""

import os
import shutil
import zipfile

import keras
import tensorflow as tf

from ssm_keras import files, models
from ssm_keras import layers as ssm_layers
from ssm_keras.errors import ExportError
from ssm_keras.exporting import compact, formats, staging
from ssm_keras.settings import comma_separated
from ssm_keras.training import run_dir
from ssm_keras.transforms import cloning

SUMMARY = "export.json"


def outputs():
    """`{format name: the file or folder it writes}` of every registered format."""
    return {name: export_format.output for name, export_format in formats.FORMATS.items()}


def known_outputs():
    """Every name an export writes into its folder."""
    return (*outputs().values(), SUMMARY)


def export(settings):
    """Runs the export `settings` (`config.ExportSettings`) describe; returns the
    summary (`export_run`, `export_compact`)."""
    settings.validate()
    arguments = (settings.out_dir, parse_formats(settings.formats), settings.overwrite,
                 settings.prune_dead_units)
    if settings.model_dir is not None:
        return export_run(settings.model_dir, *arguments)
    return export_compact(settings.compact_file, *arguments)


# Reading a run.
def load_run(model_dir):
    """`(model, results)` of a finished run directory.

    Raises:
        RunDirError: no such directory, no or unfinished `results.json`
            (`run_dir.read_results`).
        ExportError: no loadable `model.keras`.
    """
    results = run_dir.read_results(model_dir)
    return load_model(model_dir), results


def load_model(model_dir):
    """The `model.keras` of a finished run directory (uncompiled);
    ExportError if there is none or it cannot be loaded."""
    path = os.path.join(model_dir, run_dir.MODEL)
    if not os.path.isfile(path):
        raise ExportError(f"{model_dir} has no model.keras although its run finished")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise ExportError(f"cannot load {path} ({error})") from None


# Writing the formats.
def parse_formats(text):
    """`"keras, compact"` -> `("keras", "compact")`, checked (`formats.check_formats`)."""
    return formats.check_formats(comma_separated(text))


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


def _summary(model, source, folder, names, checks):
    """The `export.json` content: sizes, compression ratios and `checks`.

    `float32_kernel_bytes = 4 * masked weights`; `compact_ratio[name] =
    bytes of name / bytes of model.ssm`, for the other exported files and,
    when the model has masked layers, for their float32 kernels.
    """
    masked = ssm_layers.masked_layers(model)
    weights = models.masked_weight_count(model)
    written = {name: formats.FORMATS[name].output for name in names}
    sizes = {output: file_size(os.path.join(folder, output)) for output in written.values()}
    summary = {
        "source": source,
        "formats": list(names),
        "bytes": sizes,
        "masked_weights": weights,
        "remaining_weights": sum(layer.mask_counts()["remaining"] for layer in masked),
        "float32_kernel_bytes": 4 * weights,
        **checks,
    }
    if "compact" in written:
        compact_bytes = sizes[written["compact"]]
        references = {"float32_kernels": 4 * weights, **sizes} if weights else dict(sizes)
        del references[written["compact"]]
        summary["compact_ratio"] = {
            name: round(size / compact_bytes, 2) for name, size in references.items()
        }
    return summary


def _write_formats(model, metadata, folder, names, prune_dead_units):
    """Writes the outputs of the formats `names` into `folder` and checks
    each that a runtime runs against the baked model; returns what was
    checked: the dead units removed, and `max_difference` and `tolerance`
    per checked format."""
    job = formats.ExportJob(model, metadata, folder, prune_dead_units)
    differences = {}
    try:
        for name in names:
            export_format = formats.FORMATS[name]
            path = os.path.join(folder, export_format.output)
            export_format.write(job, path)
            if export_format.tolerance is not None:
                differences[name] = formats.check_agreement(export_format, path,
                                                            *job.agreement_check)
    finally:
        job.clean_up()
    return {**job.checks, "max_difference": differences,
            "tolerance": {name: formats.FORMATS[name].tolerance for name in differences}}


def _check_destination(out_dir, overwrite, source):
    """Raises ExportError if `out_dir` is a file, is or contains `source`
    (the run folder or compact file exported), is a training run's folder,
    finished or not (whose `model.keras` an export would replace, or a
    finishing run replace the export's, even with `overwrite`),
    or holds an export and `overwrite` is False."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"--out_dir={out_dir} exists and is not a directory")
    if files.inside(source, out_dir):
        raise ExportError(
            f"--out_dir={out_dir} is or contains the source {source}; an export there would "
            "replace what it is made from. Choose another --out_dir"
        )
    run_files = [name for name in (run_dir.RESULTS, run_dir.FLAGS_JSON)
                 if os.path.lexists(os.path.join(out_dir, name))]
    if run_files:
        raise ExportError(
            f"--out_dir={out_dir} is a training run's folder (it holds {run_files[0]}), where "
            f"the run keeps its {run_dir.MODEL}: an export there would replace it, or be "
            "replaced when the run ends. Choose another --out_dir"
        )
    existing = staging.existing(out_dir, known_outputs())
    if existing and not overwrite:
        raise ExportError(
            f"{out_dir} already holds an export ({', '.join(existing)}); "
            "pass --overwrite to replace it"
        )


def recover(out_dir):
    """Finishes or deletes the staging folders a killed export left in
    `out_dir` (`staging.recover`); the first step of every export."""
    staging.recover(out_dir, known_outputs())


def _export(model, metadata, source, out_dir, names, prune_dead_units):
    """Writes the export into a staging folder inside `out_dir`, then swaps
    it in: a failure before the swap leaves `out_dir` as it was (not there,
    if it was not), and so does a kill (see `recover`). Every output computes in float32, whatever
    policy the model was trained under (`cloning.in_float32`). A model the
    formats do not describe is refused first (`formats.check_exportable`)."""
    formats.check_exportable(model)
    model = cloning.in_float32(model)
    folder, finished = None, False
    created = files.first_missing_folder(out_dir)
    try:
        folder = staging.new_staging_folder(out_dir)
        checks = _write_formats(model, metadata, folder, names, prune_dead_units)
        summary = _summary(model, source, folder, names, checks)
        files.write_json_atomically(os.path.join(folder, SUMMARY), summary)
        staging.mark_ready(folder, [*(formats.FORMATS[name].output for name in names), SUMMARY])
        staging.finish(folder, out_dir, known_outputs())
        finished = True
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise ExportError(f"cannot write the export to {out_dir}: "
                          f"{error.strerror or error}{where}") from None
    except tf.errors.OpError as error:  # from writing the SavedModel
        raise ExportError(f"cannot write the export to {out_dir}: {error.message}") from None
    finally:
        if folder and os.path.isdir(folder) and not staging.is_ready(folder):
            shutil.rmtree(folder, ignore_errors=True)
        if not finished:
            files.remove_created_folders(out_dir, created)
    return summary


def export_run(model_dir, out_dir, names=None, overwrite=False,
               prune_dead_units=True):
    """Exports a finished training run into `out_dir`.

    Args:
        model_dir: a run directory (`model.keras`, `results.json`).
        out_dir: created if missing.
        names: the formats to write, names of `formats.FORMATS` (default:
            `formats.default_formats()`).
        overwrite: replace an export already in `out_dir` (all of its
            files, also those of formats not written now); without it an
            existing export is an error and nothing is written.
        prune_dead_units: remove the dead units of the baked model
            (`dead_units.prune_dead_units`) before writing the baked formats.

    Returns:
        The summary also written to `out_dir/export.json`.

    Raises:
        RunDirError: a run that is not finished (`run_dir.read_results`).
        ExportError: bad formats, an existing export without `overwrite`, a
            run that cannot be exported (a model the formats do not
            describe: `formats.check_exportable`), or a file that disagrees
            with the baked model or that its runtime cannot run
            (`formats.check_agreement`).
    """
    names = formats.check_formats(formats.default_formats() if names is None else names)
    results = run_dir.read_results(model_dir)  # the source first: a mistyped one is named
    recover(out_dir)
    _check_destination(out_dir, overwrite, model_dir)
    model = load_model(model_dir)
    return _export(model, _run_metadata(results), os.path.abspath(model_dir), out_dir, names,
                   prune_dead_units)


def export_compact(compact_path, out_dir, names=None, overwrite=False,
                   prune_dead_units=True):
    """Exports the model of a compact file, e.g. a SavedModel from `model.ssm`.

    Arguments and result as `export_run`; the compact file's metadata is
    kept. Raises ExportError (`CompactFileError`) for a damaged file.
    """
    names = formats.check_formats(formats.default_formats() if names is None else names)
    loaded = compact.load_compact(compact_path)  # the source first: a mistyped one is named
    recover(out_dir)
    _check_destination(out_dir, overwrite, compact_path)
    source = os.path.abspath(compact_path)
    return _export(loaded.masked_model, loaded.metadata, source, out_dir, names,
                   prune_dead_units)
