"""Inference of exported models: file bytes, latency, throughput, accuracy
(the measurements of `ssm_keras.cli.benchmark_inference`; its settings are
`config.InferenceConfig`).

Every finished run of `--runs` (signed supermasks and the baselines of the
same architectures, `--regime=weights`) and every shipped entry of
`--pretrained` (`ssm_keras.pretrained`) is exported with
`ssm_keras.exporting` into `--work_dir` (an export there is replaced
only with `--overwrite`) in every format (dead units removed
from the baked model unless `--noprune_dead_units`, each TFLite file checked
against it), and each runtime format is measured on the real test set of
its data set:

| format           | runtime                                               |
| ---------------- | ----------------------------------------------------- |
| `keras`          | `keras.saving.load_model`, called in a `tf.function`  |
|                  | on float32 raw pixels                                 |
| `saved_model`    | `tf.saved_model.load(...).serve` on uint8 images      |
| `tflite`,        | LiteRT's interpreter (TensorFlow Lite's where LiteRT  |
| `tflite_dynamic`,| is not installed; `--tflite_threads` threads, XNNPACK |
| `tflite_sparse`  | as it applies it by default) on uint8 images          |
| `onnx`           | ONNX Runtime, CPU, where `ssm_keras[onnx]` is installed |

(every registered format that a runtime runs: `ssm_keras.exporting.formats`)

- *batch-1 latency*: the median over single calls, each on one test image
  (cycling through the first 256), for about `--seconds` after warm-up;
- *batch-128 throughput*: `128 * calls / seconds` on a fixed batch of 128
  test images, the median over `--windows` windows of about `--seconds`;
- *test accuracy*: over the whole test set, in that runtime;
- *bytes*: the exported file (or folder); `model.ssm` (no runtime: it
  rebuilds the Keras model) is listed with its bytes only.

All formats of all runs are measured in one process, one after the other.
"""

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time

import keras
import numpy as np

from ssm_keras import data, pretrained
from ssm_keras.experiments import measurement
from ssm_keras.experiments.config import InferenceBenchmarkError
from ssm_keras.exporting import compact, exporter, formats, staging
from ssm_keras.training import run_dir

LATENCY_IMAGES = 256
THROUGHPUT_BATCH = 128


def runtime_formats():
    """The registered formats a runtime runs whose packages are installed
    (`formats.FORMATS`, in their order)."""
    return [name for name, export_format in formats.FORMATS.items()
            if export_format.load is not None and export_format.available()]


# Measurements.
def batch_1_latency_us(predict, images, seconds):
    """Median microseconds of single-image calls over about `seconds`."""
    singles = [images[index:index + 1] for index in range(min(LATENCY_IMAGES, len(images)))]
    for single in singles[:8]:
        predict(single)
    timings, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(timings) < 10:
        single = singles[len(timings) % len(singles)]
        begin = time.perf_counter()
        predict(single)
        timings.append(time.perf_counter() - begin)
    return 1e6 * statistics.median(timings)


def accuracy(predict, images, labels, batch_size=500):
    """The fraction of `images` whose most probable class is their label."""
    correct = sum(
        int(np.sum(np.argmax(predict(images[start:start + batch_size]), axis=1)
                   == labels[start:start + batch_size]))
        for start in range(0, len(images), batch_size))
    return correct / len(images)


# The sources: `(label, record, export)`, `record` holding what the run or
# entry recorded and `export(out_dir, formats, overwrite, prune_dead_units)`
# writing its export.
def run_source(path):
    """A finished run directory as a source."""
    return (os.path.abspath(path), run_dir.read_results(path),
            lambda *arguments: exporter.export_run(path, *arguments))


def pretrained_source(name):
    """A shipped entry as a source (its compact file's metadata is the record)."""
    file = pretrained.path(name)
    header, _ = compact.read_compact(file)
    return (name, header["metadata"],
            lambda *arguments: exporter.export_compact(file, *arguments))


def short_names(labels):
    """`{label: name}`: a shipped entry's name, and for a run directory the
    fewest last parts of its path that no other label ends with too, e.g.
    `fcn_mnist_signed/seed0` beside `fcn_mnist_baseline/seed0`."""
    parts = {label: [part for part in os.path.normpath(label).split(os.sep) if part]
             for label in labels}  # without the root of an absolute path
    names = {}
    for label, own in parts.items():
        count = 1
        while count < len(own) and any(other[-count:] == own[-count:]
                                       for key, other in parts.items() if key != label):
            count += 1
        names[label] = "/".join(own[-count:])
    return names


def measure(source, name, work_dir, settings, test):
    """Exports one source into `<work_dir>/<name>` and measures every format:
    `(model record, rows)`."""
    label, results, export = source
    out_dir = os.path.join(work_dir, name)
    measured = runtime_formats()
    summary = export(out_dir, (*measured, "compact"), True, settings.prune_dead_units)
    images, labels = test
    batch = images[:THROUGHPUT_BATCH]
    model = {"run": label, "name": name, "arch": results["arch"],
             "dataset": results["dataset"], "regime": results["regime"],
             "mask": results.get("mask"),
             "recorded_test_accuracy": results["test_accuracy"],
             "remaining_weights": results.get("remaining_weights"),
             "dead_units_removed": sum(entry["units_removed"]
                                       for entry in summary.get("dead_units", [])),
             "baked_parameters": sum(entry["weights_after"]
                                     for entry in summary.get("dead_units", [])) or None,
             "max_difference": summary["max_difference"]}
    rows = []
    for format_name in measured:
        export_format = formats.FORMATS[format_name]
        file_name = export_format.output
        predict = export_format.load(os.path.join(out_dir, file_name), settings.tflite_threads)
        rows.append({
            "run": model["run"], "format": format_name, "runtime": export_format.runtime,
            "file": file_name, "bytes": summary["bytes"][file_name],
            "batch_1_latency_us": batch_1_latency_us(predict, images, settings.seconds),
            "batch_128_images_per_s": measurement.images_per_second(
                predict, batch, settings.windows, settings.seconds),
            "test_accuracy": accuracy(predict, images, labels),
        })
        keras.utils.clear_session()
    compact_file = formats.FORMATS["compact"].output
    rows.append({"run": model["run"], "format": "compact", "runtime": None,
                 "file": compact_file, "bytes": summary["bytes"][compact_file]})
    return model, rows


def check_work_dir(work_dir, names, overwrite):
    """Raises `InferenceBenchmarkError` if a folder `<work_dir>/<name>` of
    `names` is a file, or holds an export and `overwrite` is False."""
    for name in names:
        out_dir = os.path.join(work_dir, name)
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise InferenceBenchmarkError(f"--work_dir: {out_dir} is a file; the exports of "
                                          f"{name} go into a folder there")
        existing = staging.existing(out_dir, exporter.known_outputs())
        if existing and not overwrite:
            raise InferenceBenchmarkError(
                f"--work_dir: {out_dir} already holds an export ({', '.join(existing)}); "
                "choose another --work_dir or pass --overwrite")


def _test_split(results, data_dir, cache):
    """The real test set of the run's data set (loaded once per data set)."""
    name = results["dataset"]
    if name not in cache:
        splits = data.load_splits(name, data_dir, validation_size=0)
        cache[name] = splits.test
    return cache[name]


def format_table(models, rows):
    """The markdown table: one row per run and format, each model named
    (`short_names`)."""
    lines = [
        "| arch | model | test accuracy (run) | format | runtime | bytes | batch-1 latency "
        "| batch-128 img/s | test accuracy |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    by_run = {model["run"]: model for model in models}
    for row in rows:
        model = by_run[row["run"]]
        kind = (f"{model['name']}: " + (
            "baseline (weights trained)" if model["regime"] == "weights" else
            f"{model['mask']} supermask, {model['remaining_weights']:,} weights remain, "
            f"{model['dead_units_removed']:,} dead units removed"))
        measured = ("| - | - | - |" if row["runtime"] is None else
                    f"| {row['batch_1_latency_us']:,.1f} us "
                    f"| {row['batch_128_images_per_s']:,.0f} "
                    f"| {100 * row['test_accuracy']:.2f}% |")
        lines.append(
            f"| {model['arch']} | {kind} | {100 * model['recorded_test_accuracy']:.2f}% "
            f"| {row['file']} | {row['runtime'] or '-'} | {row['bytes']:,} {measured}")
    return "\n".join(lines)


def run(settings):
    """Measures every run of `settings.runs` and every entry of
    `settings.pretrained`; returns the JSON dict. An export already in
    `settings.work_dir` is replaced only if `settings.overwrite`."""
    machine = measurement.machine_info()
    sources = ([pretrained_source(name) for name in settings.entry_names()]
               + [run_source(path) for path in settings.run_dirs()])
    names = short_names([label for label, _, _ in sources])
    if settings.work_dir:
        check_work_dir(settings.work_dir, names.values(), settings.overwrite)
    tests = {}
    for _, results, _ in sources:  # the data before any export: a missing folder fails at once
        _test_split(results, settings.data_dir, tests)
    models, rows = [], []
    with contextlib.ExitStack() as stack:
        work_dir = settings.work_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="benchmark_inference-"))
        for source in sources:
            test = _test_split(source[1], settings.data_dir, tests)
            model, measured = measure(source, names[source[0]], work_dir, settings, test)
            models.append(model)
            rows += measured
    recorded = {**dataclasses.asdict(settings), "runs": settings.run_dirs(),
                "pretrained": settings.entry_names()}
    return {"machine": measurement.finish_machine_info(machine), "settings": recorded,
            "models": models, "results": rows}
