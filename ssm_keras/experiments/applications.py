"""Every image model of `keras.applications` through `ssm_keras.supermask`
(the checks of `ssm-check-applications`).

For each model (built with `weights=None`, 10 classes, no classifier
activation, at the smallest of 32x32 and 75x75 that it accepts): supermask
it (signed mask, `elus` kernels, seed 0); train one SGD step on 8 random
images and check that the scores of every masked kernel moved and no kernel
`W0` did; bake it and compare the baked model's outputs with the masked
model's; write a compact file, load it and compare effective kernels (bit
for bit) and outputs. A model that `supermask` refuses is recorded with its
one-line reason. Each record also holds the seconds the check took and the
process's peak resident memory.

`check_in_subprocess` runs `check_one` in a process of its own (memory).
"""

import dataclasses
import hashlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time

from ssm_keras import files
from ssm_keras.errors import UserError
from ssm_keras.settings import comma_separated, setting

SIZES = (32, 75)
# The program of the process that checks one model, named by its argument.
CHECK_ONE = ("import json, sys; from ssm_keras.experiments import applications; "
             "print(json.dumps(applications.check_one(sys.argv[1])))")
REPORTS = ("applications.json", "applications.md")

log = logging.getLogger(__name__)


class ApplicationsError(UserError):
    """A bad setting of the check: unknown models, a bad timeout, reports
    that exist without `overwrite`."""


@dataclasses.dataclass
class ApplicationsSettings:
    """The settings of `ssm-check-applications`."""

    out_dir: str | None = setting(None, "Required: folder for applications.json and .md.")
    models: str = setting("", "Comma-separated model names (default: all).")
    timeout: float = setting(1800.0, "Seconds per model (> 0).")
    overwrite: bool = setting(False, "Replace the applications.json and .md in --out_dir.")

    def model_names(self):
        """The models of `models`, or every application."""
        return comma_separated(self.models) or application_names()

    def validate(self):
        """Raises `ApplicationsError` for the first bad setting."""
        if not self.out_dir:
            raise ApplicationsError("give --out_dir, the folder for applications.json and .md")
        known = application_names()
        unknown = [name for name in self.model_names() if name not in known]
        if unknown:
            raise ApplicationsError(f"--models: {', '.join(unknown)} not in keras.applications; "
                                    f"choose from {', '.join(known)}")
        if not self.timeout > 0:
            raise ApplicationsError(f"--timeout={self.timeout}: give the seconds per model, > 0")
        existing = [path for path in self.report_paths() if os.path.exists(path)]
        if existing and not self.overwrite:
            raise ApplicationsError(f"{', '.join(existing)} exists; choose another --out_dir or "
                                    "pass --overwrite")

    def report_paths(self):
        """`applications.json` and `applications.md` in `out_dir`."""
        return [os.path.join(self.out_dir, name) for name in REPORTS]


def check_all(settings):
    """Checks the models of `settings` one by one, each in a process of its
    own, rewriting the reports after each (and logging its line); returns
    the records."""
    settings.validate()
    files.make_folder("out_dir", settings.out_dir)
    json_path, table_path = settings.report_paths()
    records = []
    for name in settings.model_names():
        record = check_in_subprocess(name, settings.timeout)
        records.append(record)
        log.info("%s: %s %s", name, record["status"], record.get("reason", ""))
        files.write_json_atomically(json_path, records)
        files.write_text_atomically(table_path, markdown(records))
    return records


def application_names():
    """Every image model of `keras.applications`, by name."""
    import keras

    return sorted(
        name for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name))
    )


def _build(name):
    """The application with weights=None at the smallest size it accepts."""
    import keras

    builder = getattr(keras.applications, name)
    errors = []
    for size in SIZES:
        try:
            return builder(weights=None, input_shape=(size, size, 3), classes=10,
                           classifier_activation=None), size
        except (ValueError, TypeError) as error:
            errors.append(str(error).splitlines()[0])
    raise ValueError("; ".join(errors))


def _digest(variable):
    """SHA-256 of a variable's value: whether it changed, without a copy of it."""
    return hashlib.sha256(variable.numpy().tobytes()).digest()


def _finish(record, start):
    """`record` with the seconds since `start` and the peak resident memory."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {**record, "seconds": round(time.time() - start, 1),
            "peak_memory_mib": round(peak_kib / 1024)}


def check_one(name):
    """The record of one application (runs in the current process)."""
    import keras
    import numpy as np

    import ssm_keras
    from ssm_keras import layers

    start = time.time()
    model, size = _build(name)
    record = {"model": name, "input_size": size, "parameters": int(model.count_params())}
    try:
        masked = ssm_keras.supermask(model, seed=0)
    except ValueError as error:
        return _finish({**record, "status": "refused", "reason": str(error)}, start)
    del model
    kernels = layers.masked_kernels(masked)
    record["masked_layers"] = len(layers.masked_layers(masked))
    record["masked_kernels"] = len(kernels)
    record["masked_weights"] = int(sum(np.prod(layer.scores_variable(name).shape)
                                       for layer, name in kernels))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, size, size, 3)).astype("float32")
    labels = rng.integers(0, 10, 8)
    before = [(_digest(layer.scores_variable(name)), _digest(layer.kernel_variable(name)))
              for layer, name in kernels]
    masked.compile(optimizer=keras.optimizers.SGD(0.1),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    record["loss"] = float(masked.train_on_batch(images, labels))
    record["scores_moved"] = sum(
        _digest(layer.scores_variable(name)) != scores
        for (layer, name), (scores, _) in zip(kernels, before))
    record["kernels_frozen"] = all(
        _digest(layer.kernel_variable(name)) == kernel
        for (layer, name), (_, kernel) in zip(kernels, before))
    del before
    outputs = masked.predict(images, verbose=0)
    baked = ssm_keras.bake(masked)
    record["baked_is_stock"] = not any(
        type(layer).__module__.startswith("ssm_keras") for layer in baked._flatten_layers())
    baked_outputs = baked.predict(images, verbose=0)
    del baked
    scale = float(np.max(np.abs(outputs))) or 1.0
    record["baked_max_abs_difference"] = float(np.max(np.abs(baked_outputs - outputs)))
    record["output_scale"] = scale
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.ssm")
        record["compact_bytes"] = ssm_keras.save_compact(masked, path)
        loaded = ssm_keras.load_compact(path)
    by_scope = {layer.mask_scope: layer for layer in layers.masked_layers(loaded.masked_model)}
    record["compact_kernels_equal"] = all(
        np.array_equal(by_scope[layer.mask_scope].effective_kernel(name).numpy(),
                       layer.effective_kernel(name).numpy()) for layer, name in kernels)
    loaded_outputs = loaded.masked_model.predict(images, verbose=0)
    record["compact_max_abs_difference"] = float(np.max(np.abs(loaded_outputs - outputs)))
    passed = (record["scores_moved"] == len(kernels) and record["kernels_frozen"]
              and record["baked_is_stock"] and record["compact_kernels_equal"]
              and record["baked_max_abs_difference"] <= 1e-4 * scale
              and record["compact_max_abs_difference"] <= 1e-4 * scale)
    record["status"] = "passed" if passed else "failed"
    return _finish(record, start)


def markdown(records):
    """The markdown table of the records, one row per model."""
    lines = [
        "| model | input | parameters | status | masked layers | masked weights | "
        "max output difference (baked, compact) / output scale | compact bytes | seconds | "
        "peak memory (MiB) | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in records:
        if record["status"] in ("passed", "failed"):
            difference = (f"{record['baked_max_abs_difference']:.1e}, "
                          f"{record['compact_max_abs_difference']:.1e} / "
                          f"{record['output_scale']:.1f}")
            lines.append(
                f"| {record['model']} | {record['input_size']} | {record['parameters']:,} | "
                f"{record['status']} | {record['masked_layers']} | "
                f"{record['masked_weights']:,} | {difference} | "
                f"{record['compact_bytes']:,} | {record['seconds']} | "
                f"{record['peak_memory_mib']:,} | |")
        else:
            lines.append(
                f"| {record['model']} | {record.get('input_size', '')} | "
                f"{record.get('parameters', 0):,} | {record['status']} | | | | | "
                f"{record.get('seconds', '')} | {record.get('peak_memory_mib', '')} | "
                f"{record.get('reason', '')} |")
    return "\n".join(lines) + "\n"


def check_in_subprocess(name, timeout):
    """The record of `check_one(name)` run in a new process; an `error`
    record with the last line of its stderr if it fails, or after `timeout`
    seconds."""
    start = time.time()
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHECK_ONE, name], capture_output=True, text=True,
            timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "error", "reason": f"over {timeout:.0f} s"}
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"model": name, "status": "error", "seconds": round(time.time() - start, 1),
            "reason": " ".join(result.stderr.strip().splitlines()[-1:])}
