"""The test accuracy of a shipped pretrained model or of a finished run.

`evaluate(pretrained_name=..., model_dir=..., data_dir=...)` evaluates the
model on the full test split of the data set it was trained on; the
command is `ssm-evaluate` (`config.EvaluateSettings`).

What it runs is the model the export ships: the masked model baked to
stock layers (`transforms.baking.bake`; an entry comes baked) with its dead
units removed (`transforms.dead_units`). Its outputs equal the masked
model's up to float32 round-off, and a conv net left with 1-4% of its
weights has many dead units: the Conv8 entry's baked kernels shrink from
5,275,840 to 1,456,906 weights, and its evaluation takes about half the
time.
"""

import numpy as np

from ssm_keras import data, layers, pretrained
from ssm_keras.errors import ExportError
from ssm_keras.experiments.config import EvaluationError
from ssm_keras.exporting import exporter
from ssm_keras.transforms import baking, dead_units


def check_dataset(recorded, requested, input_shape, num_classes, what):
    """The data set to evaluate `what` on: `requested` or the `recorded` one.

    Raises:
        EvaluationError: neither is known, they differ, it is not one of
            `data.DATASETS`, or its images or classes do not fit the model.
    """
    name = requested or recorded
    if name is None:
        raise EvaluationError(f"{what} does not record its data set; pass --dataset")
    if recorded is not None and requested is not None and requested != recorded:
        raise EvaluationError(
            f"--dataset={requested} does not match {what}, which was trained on {recorded}")
    spec = data.DATASETS.get(name)
    if spec is None:
        raise EvaluationError(
            f"unknown data set {name!r}; expected one of {', '.join(data.DATASETS)}")
    if tuple(spec.image_shape) != tuple(input_shape) or spec.num_classes != num_classes:
        raise EvaluationError(
            f"{name} has {spec.num_classes} classes of {spec.image_shape} images; {what} "
            f"takes {tuple(input_shape)} images and predicts {num_classes} classes")
    return name


def test_accuracy(model, images, labels, batch_size=128):
    """`(correct, total)`: test images whose most probable class is the label."""
    probabilities = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return int(np.sum(np.argmax(probabilities, axis=1) == labels)), len(labels)


def deployable(model):
    """`model` baked (unless it is a stock model already) with its dead units
    removed, or `model` itself when it cannot be baked (a sampling mask,
    non-finite weights) or has not one input of known shape.

    Raises:
        dead_units.PruningError: removing the dead units changed the outputs.
    """
    try:
        baked = baking.bake(model) if layers.masked_layers(model) else model
        return dead_units.prune_dead_units(baked)[0]
    except dead_units.PruningError:
        raise
    except ExportError:
        return model


def _source(pretrained_name, model_dir):
    """`(model, metadata, what)` of a pretrained entry or a finished run."""
    if pretrained_name is not None:
        _, baked, metadata = pretrained.load(pretrained_name)
        return baked, metadata, pretrained_name
    model, results = exporter.load_run(model_dir)
    return model, results, model_dir


def check_recorded(result):
    """Raises `EvaluationError` when `result` (of `evaluate`) classified
    another number of test images correctly than its model records, on the
    same test images: the file changed, or this processor's arithmetic moved
    a borderline image (figures hold with the processor they were measured
    on)."""
    recorded, images = result["recorded_test_accuracy"], result.get("recorded_test_images")
    if recorded is None or (images is not None and images != result["total"]):
        return
    expected = round(recorded * result["total"])
    if result["correct"] != expected:
        raise EvaluationError(
            f"{result['name']}: {result['correct']:,} test images classified right, "
            f"{expected:,} recorded ({result['correct'] - expected:+,}); the model's file "
            "changed, or this processor computes a borderline image otherwise")


def evaluate_settings(settings):
    """`evaluate` of `settings` (`config.EvaluateSettings`), validated first."""
    settings.validate()
    return evaluate(settings.pretrained, settings.model_dir, settings.data_dir,
                    settings.dataset, settings.batch_size)


def evaluate(pretrained_name=None, model_dir=None, data_dir=None, dataset=None,
             batch_size=128):
    """Evaluates a pretrained entry (or a run) on its data set's test split.

    Returns:
        `{"name", "dataset", "correct", "total", "test_accuracy",
        "recorded_test_accuracy", "recorded_test_images"}`; the last is how
        many test images the run's own figure was measured on (fewer than
        `total` for a run trained with `--max_examples`; None for an entry).

    Raises:
        PretrainedError, CompactFileError, RunDirError, ExportError: an
            unknown entry, a damaged file, a run that is not finished.
        EvaluationError, DataError: a data set that does not fit the model,
            or that cannot be read.
    """
    model, metadata, what = _source(pretrained_name, model_dir)
    name = check_dataset(metadata.get("dataset"), dataset, model.input_shape[1:],
                         model.output_shape[-1], what)
    images, labels = data.load_splits(name, data_dir, validation_size=0).test
    correct, total = test_accuracy(deployable(model), images, labels, batch_size)
    return {"name": what, "dataset": name, "correct": correct, "total": total,
            "test_accuracy": correct / total,
            "recorded_test_accuracy": metadata.get("test_accuracy"),
            "recorded_test_images": (metadata.get("examples") or {}).get("test")}
