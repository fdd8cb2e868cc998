"""What a run records when it ends: `results.json` and `results.txt`, the
trained `model.keras`, `history.jsonl`, and the one line for people that
closes its log (the layout: `ssm_keras.training.run_dir`).
"""

import json
import os
import platform

import keras
import tensorflow as tf

from ssm_keras import files
from ssm_keras.training import run_dir, statistics


def summary_line(results):
    """One line for people: accuracy and remaining weights, and for a
    `--start_from` run the checkpoint its first epochs come from."""
    what = (f"{results['mask']} supermask" if results["regime"] == "mask"
            else "baseline" if results["regime"] == "weights" else "mask then weights")
    started = results.get("started_from")
    origin = ""
    if started:
        epochs = "epoch 1" if started["epoch"] == 1 else f"epochs 1-{started['epoch']}"
        origin = f" ({epochs} from {started['checkpoint']})"
    return (
        f"{results['arch']} {what} on {results['dataset']}: test accuracy "
        f"{100 * results['test_accuracy']:.2f}%, remaining weights "
        f"{results['remaining_weights']:,} / {results['masked_weights']:,} "
        f"({results['remaining_percent']:.2f}%), {results['epochs']} "
        f"epoch{'' if results['epochs'] == 1 else 's'} in "
        f"{results['wall_time_s']:.0f} s{origin}"
    )


def collect(config, model, splits, history, wall_time, evaluations):
    """The results dict of a finished run, as `results.json` holds it: the
    test and validation figures of `evaluations` (`{"test": {"loss",
    "accuracy"}, "validation": ... or None}`), the mask statistics of
    `model` (`statistics.summarize`), the best validation accuracy of
    `history` (one dict per epoch), the wall time, the environment and the
    settings of `config`."""
    summary = statistics.summarize(model)
    validation = evaluations["validation"]
    return {
        "status": "finished",
        "arch": config.arch,
        "dataset": config.dataset,
        "data_source": splits.source,
        "input_shape": list(splits.spec.image_shape),
        "num_classes": splits.spec.num_classes,
        "regime": config.regime,
        "mask": config.mask_kind if config.masked else None,
        "test_accuracy": evaluations["test"]["accuracy"],
        "test_loss": evaluations["test"]["loss"],
        "validation_accuracy": validation["accuracy"] if validation else None,
        "best_validation_accuracy": max(
            (entry.get("val_accuracy", 0.0) for entry in history), default=None
        ) if validation else None,
        **{key: summary[key] for key in ("masked_weights", "remaining_weights",
                                         "remaining_percent", "kept", "inverted", "hidden")},
        "layers": summary["layers"],
        "epochs": len(history),
        "wall_time_s": wall_time,
        "examples": {"train": len(splits.train[1]), "validation": len(splits.validation[1]),
                     "test": len(splits.test[1])},
        "environment": {
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "devices": [device.name for device in tf.config.list_logical_devices()],
        },
        "flags": config.to_dict(),
    }


def write(model_dir, model, results):
    """Writes `model.keras` (in one rename, so a full disk leaves no half
    file), `results.json` and `results.txt` (the summary line and a row of
    kept, inverted and hidden percentages per masked layer) of a finished run.

    Raises:
        RunDirError: `model.keras` cannot be written.
    """
    path = os.path.join(model_dir, run_dir.MODEL)
    try:
        files.save_atomically(path, model.save, suffix=".keras")
    except OSError as error:
        raise run_dir.RunDirError(f"cannot write {path}: {error.strerror or error}") from None
    files.write_json_atomically(os.path.join(model_dir, run_dir.RESULTS), results)
    lines = [summary_line(results), ""]
    lines.append(f"{'layer':<28}{'weights':>12}{'kept':>9}{'inverted':>10}{'hidden':>9}")
    for record in results["layers"]:
        lines.append(
            f"{record['name']:<28}{record['total']:>12,}{100 * record['kept_fraction']:>8.2f}%"
            f"{100 * record['inverted_fraction']:>9.2f}%{100 * record['hidden_fraction']:>8.2f}%"
        )
    files.write_text_atomically(os.path.join(model_dir, run_dir.RESULTS_TEXT),
                                "\n".join(lines) + "\n")


def write_history(model_dir, history):
    """Writes `history.jsonl`, one standard JSON line per epoch of `history`."""
    text = "".join(json.dumps(files.plain_json(entry), allow_nan=False) + "\n"
                   for entry in history)
    files.write_text_atomically(os.path.join(model_dir, run_dir.HISTORY), text)


def start_record(checkpoint):
    """`{"started_from": ...}` for the results of a `--start_from` run (by
    its `callbacks.RunCheckpoint`), `{}` for other runs."""
    return {"started_from": checkpoint.started_from} if checkpoint.started_from else {}


def write_divergence(model_dir, config, checkpoint, error):
    """The `results.json` of a run stopped by `callbacks.Diverged` (`checkpoint`:
    the run's `callbacks.RunCheckpoint`, for its history and start).

    A finished run that diverged when continued (`--resume`) keeps its
    records, which still describe its `model.keras`: nothing is written,
    and False returned (True otherwise)."""
    if run_dir.is_finished(model_dir):
        return False
    files.write_json_atomically(os.path.join(model_dir, run_dir.RESULTS), {
        "status": "diverged", "message": str(error), "epoch": error.epoch,
        "arch": config.arch, "dataset": config.dataset, "flags": config.to_dict(),
        **start_record(checkpoint),
    })
    write_history(model_dir, checkpoint.history)
    return True
