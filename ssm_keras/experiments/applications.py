"""Every image model of `keras.applications`, and keras_hub backbones,
through `ssm_keras.supermask` (the checks of `ssm-check-applications`).

For each model (an application built with `weights=None`, 10 classes, no
classifier activation, at the smaller of 32x32 and 75x75 that it accepts;
a keras_hub backbone of `HUB_BACKBONES` with random weights): supermask it
(signed mask, `elus` kernels, seed 0); take one SGD step on 8 random inputs
for the loss `sum_k <y_k, r_k>` (`y_k` an output, `r_k` a fixed random
normal projection of its shape) and check that the scores of every masked
kernel moved and no kernel `W0` did; bake it and compare the baked model's
outputs with the masked model's; write a compact file, load it and compare
effective kernels (bit for bit) and outputs. Outputs agree when each differs
from the masked model's by at most 1e-4 of its scale, `max |y_k|`; a record
holds the largest difference and the largest scale. A model that
`supermask` refuses is recorded with its one-line reason. Each record also
holds the seconds the check took and the process's peak resident memory.

`check_in_subprocess` runs `check_one` in a process of its own (memory).
"""

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from ssm_keras import files
from ssm_keras.errors import UserError
from ssm_keras.settings import comma_separated, setting

SIZES = (32, 75)
HUB_PREFIX = "keras_hub."
# keras_hub backbones checked on request (`--models=keras_hub.BertBackbone`):
# random weights at the size of a published model.
HUB_BACKBONES = {
    # bert_small_en_uncased's size: 4 layers of width 512.
    "keras_hub.BertBackbone": {
        "vocabulary_size": 30522, "num_layers": 4, "num_heads": 8, "hidden_dim": 512,
        "intermediate_dim": 2048, "max_sequence_length": 512},
    # ViT-Ti/16's size at 224x224: 12 layers of width 192, 3 heads.
    "keras_hub.ViTBackbone": {
        "image_shape": (224, 224, 3), "patch_size": 16, "num_layers": 12, "num_heads": 3,
        "hidden_dim": 192, "mlp_dim": 768},
}
SEQUENCE_LENGTH = 128  # tokens of the BERT inputs
BATCH = 8
# The program of the process that checks one model, named by its argument.
CHECK_ONE = ("import json, sys; from ssm_keras.experiments import applications; "
             "print(json.dumps(applications.check_one(sys.argv[1])))")
REPORTS = ("applications.json", "applications.md")
# The longest wait for one model's check: `subprocess.run` polls its pipes
# with a timeout in milliseconds that must fit a C int.
MAX_TIMEOUT = 2_000_000

log = logging.getLogger(__name__)


class ApplicationsError(UserError):
    """A bad setting of the check: unknown models, a bad timeout, reports
    that exist without `overwrite`."""


@dataclasses.dataclass
class ApplicationsSettings:
    """The settings of `ssm-check-applications`."""

    out_dir: str | None = setting(None, "Required: folder for applications.json and .md.")
    models: str = setting("", "Comma-separated model names: keras.applications names and "
                               f"{', '.join(HUB_BACKBONES)} (default: every application).")
    timeout: float = setting(1800.0, "Seconds per model (> 0).")
    overwrite: bool = setting(False, "Replace the applications.json and .md in --out_dir.")

    def model_names(self):
        """The models of `models`, or every application."""
        return comma_separated(self.models) or application_names()

    def validate(self):
        """Raises `ApplicationsError` for the first bad setting."""
        if not self.out_dir:
            raise ApplicationsError("give --out_dir, the folder for applications.json and .md")
        known = application_names() + list(HUB_BACKBONES)
        unknown = [name for name in self.model_names() if name not in known]
        if unknown:
            raise ApplicationsError(f"--models: {', '.join(unknown)} not in keras.applications "
                                    f"or {', '.join(HUB_BACKBONES)}; choose from "
                                    f"{', '.join(known)}")
        hub = [name for name in self.model_names() if name in HUB_BACKBONES]
        if hub and importlib.util.find_spec("keras_hub") is None:
            raise ApplicationsError(f"--models: checking {', '.join(hub)} needs keras_hub, "
                                    "which is not installed: pip install 'ssm_keras[hub]'")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ApplicationsError(f"--timeout={self.timeout}: give the seconds per model, > 0 "
                                    f"and at most {MAX_TIMEOUT:,} (23 days)")
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
    the records.

    Raises:
        ApplicationsError: a bad setting, or, once every model is checked
            and recorded, models that did not pass (refused, failed, error).
    """
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
    failing = [f"{record['model']} ({record['status']})" for record in records
               if record["status"] != "passed"]
    if failing:
        raise ApplicationsError(f"{len(failing)} of {len(records)} models did not pass: "
                                f"{', '.join(failing)}; see {table_path}")
    return records


def application_names():
    """Every image model of `keras.applications`, by name."""
    import keras

    return sorted(
        name for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name))
    )


def _build(name):
    """The model `name` and its input size: an application with
    weights=None at the smallest size it accepts, or a keras_hub backbone."""
    import keras

    if name in HUB_BACKBONES:
        import keras_hub

        config = HUB_BACKBONES[name]
        model = getattr(keras_hub.models, name.removeprefix(HUB_PREFIX))(**config)
        return model, config.get("image_shape", (SEQUENCE_LENGTH,))[0]
    builder = getattr(keras.applications, name)
    errors = []
    for size in SIZES:
        try:
            return builder(weights=None, input_shape=(size, size, 3), classes=10,
                           classifier_activation=None), size
        except (ValueError, TypeError) as error:
            errors.append(str(error).splitlines()[0])
    raise ValueError("; ".join(errors))


def _inputs(name, size, rng):
    """A batch of random inputs for the model `name`: images in [0, 255], or
    a BERT backbone's token ids, segment ids and padding mask."""
    if name == "keras_hub.BertBackbone":
        vocabulary = HUB_BACKBONES[name]["vocabulary_size"]
        return {"token_ids": rng.integers(0, vocabulary, (BATCH, size)).astype("int32"),
                "segment_ids": rng.integers(0, 2, (BATCH, size)).astype("int32"),
                "padding_mask": np.ones((BATCH, size), "int32")}
    return rng.uniform(0, 255, (BATCH, size, size, 3)).astype("float32")


def _step(model, inputs, rng):
    """One SGD step (rate 0.1) on `sum_k <y_k, r_k>` over the outputs `y_k`
    with random normal `r_k`; returns that loss."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outputs = keras.tree.flatten(model(inputs, training=True))
        loss = sum(tf.reduce_sum(output * rng.normal(size=output.shape).astype("float32"))
                   for output in outputs)
    gradients = tape.gradient(loss, model.trainable_variables)
    keras.optimizers.SGD(0.1).apply(gradients, model.trainable_variables)
    return float(loss)


def _outputs(model, inputs):
    """`model`'s outputs for `inputs`, one array per output."""
    import keras

    return [np.asarray(output) for output in keras.tree.flatten(model.predict(inputs, verbose=0))]


def _digest(variable):
    """SHA-256 of a variable's value: whether it changed, without a copy of it."""
    return hashlib.sha256(variable.numpy().tobytes()).digest()


def _finish(record, start):
    """`record` with the seconds since `start` and the peak resident memory."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {**record, "seconds": round(time.time() - start, 1),
            "peak_memory_mib": round(peak_kib / 1024)}


def check_one(name):
    """The record of one model (runs in the current process)."""
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
    record["masked_weights"] = int(sum(np.prod(layer.scores_variable(kernel).shape)
                                       for layer, kernel in kernels))
    rng = np.random.default_rng(0)
    inputs = _inputs(name, size, rng)
    before = [(_digest(layer.scores_variable(kernel)), _digest(layer.kernel_variable(kernel)))
              for layer, kernel in kernels]
    record["loss"] = _step(masked, inputs, rng)
    record["scores_moved"] = sum(
        _digest(layer.scores_variable(kernel)) != scores
        for (layer, kernel), (scores, _) in zip(kernels, before))
    record["kernels_frozen"] = all(
        _digest(layer.kernel_variable(kernel)) == digest
        for (layer, kernel), (_, digest) in zip(kernels, before))
    del before
    outputs = _outputs(masked, inputs)
    baked = ssm_keras.bake(masked)
    record["baked_is_stock"] = not any(
        type(layer).__module__.startswith("ssm_keras") for layer in baked._flatten_layers())
    baked_outputs = _outputs(baked, inputs)
    del baked
    record["baked_max_abs_difference"], baked_agree = _compare(baked_outputs, outputs)
    record["output_scale"] = max(_scale(output) for output in outputs)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.ssm")
        record["compact_bytes"] = ssm_keras.save_compact(masked, path)
        loaded = ssm_keras.load_compact(path)
    by_scope = {layer.mask_scope: layer for layer in layers.masked_layers(loaded.masked_model)}
    record["compact_kernels_equal"] = all(
        np.array_equal(by_scope[layer.mask_scope].effective_kernel(kernel).numpy(),
                       layer.effective_kernel(kernel).numpy()) for layer, kernel in kernels)
    record["compact_max_abs_difference"], compact_agree = _compare(
        _outputs(loaded.masked_model, inputs), outputs)
    passed = (record["scores_moved"] == len(kernels) and record["kernels_frozen"]
              and record["baked_is_stock"] and record["compact_kernels_equal"]
              and baked_agree and compact_agree)
    record["status"] = "passed" if passed else "failed"
    return _finish(record, start)


def _scale(output):
    """`max |y|` of an output (1 for an output of zeros)."""
    return float(np.max(np.abs(output))) or 1.0


def _compare(got, expected):
    """`(largest absolute difference, agree)` of two lists of outputs, which
    agree when every output differs by at most 1e-4 of its scale."""
    differences = []
    for output, reference in zip(got, expected, strict=True):
        if output.shape != reference.shape:
            return float("inf"), False
        differences.append(float(np.max(np.abs(output - reference))))
    agree = all(difference <= 1e-4 * _scale(reference)
                for difference, reference in zip(differences, expected))
    return max(differences), agree


def markdown(records):
    """The markdown table of the records, one row per model."""
    lines = [
        "| model | input | parameters | status | masked layers | masked weights | "
        "largest output difference: baked, compact (output scale) | compact bytes | seconds | "
        "peak memory (MiB) | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in records:
        if record["status"] in ("passed", "failed"):
            difference = (f"{record['baked_max_abs_difference']:.1e}, "
                          f"{record['compact_max_abs_difference']:.1e} "
                          f"({record['output_scale']:.3g})")
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
        return {"model": name, "status": "error", "seconds": round(time.time() - start, 1),
                "reason": f"over {timeout:.0f} s"}
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"model": name, "status": "error", "seconds": round(time.time() - start, 1),
            "reason": " ".join(result.stderr.strip().splitlines()[-1:])}
