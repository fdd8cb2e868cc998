"""A run's directory: what is in it, and never losing a finished run.

Layout of `--model_dir`:

    flags.json, flags.txt   the run's settings (JSON; absl flagfile)
    checkpoint/             model.keras + state.json after every epoch
    logs/                   TensorBoard: train/, validation/, masks/, flags
    history.jsonl           one JSON line per epoch (loss, accuracy, masks)
    model.keras             the trained model
    results.json            test and validation accuracy, remaining weights,
                            per-layer statistics, epochs, wall time, flags
    results.txt             the same, for people
"""

import json
import os
import shutil

# Settings that may differ between a run and its continuation.
_RESTART_KEYS = ("resume", "overwrite", "verbose")


class RunDirError(Exception):
    """A model directory that cannot be used as asked; the message says why."""


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, "checkpoint")


def read_state(model_dir):
    """The checkpoint `state.json` of `model_dir`, or None if there is none."""
    path = os.path.join(checkpoint_dir(model_dir), "state.json")
    return read_json(path) if os.path.isfile(path) else None


def _differences(saved, wanted, allow_epochs):
    ignored = set(_RESTART_KEYS) | ({"epochs"} if allow_epochs else set())
    return [f"--{key}: {saved.get(key)!r} -> {wanted.get(key)!r}"
            for key in sorted(set(saved) | set(wanted))
            if key not in ignored and saved.get(key) != wanted.get(key)]


def prepare(model_dir, flags, resume=False, overwrite=False):
    """Makes `model_dir` ready for a run with `flags` (a dict).

    - empty or new: a fresh run;
    - an unfinished run with the same flags: resumed from its checkpoint;
    - a finished run: refused, unless `overwrite` (deletes it) or `resume`
      (continues it for more epochs);
    - a run with other flags: refused unless `overwrite`.

    Returns:
        The checkpoint `state.json` dict to resume from, or None.
    """
    results_path = os.path.join(model_dir, "results.json")
    flags_path = os.path.join(model_dir, "flags.json")
    finished = os.path.isfile(results_path)
    if overwrite and os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    elif os.path.isfile(flags_path):
        saved = read_json(flags_path)
        if finished and not resume:
            raise RunDirError(
                f"--model_dir={model_dir} holds a finished run; it is not overwritten. "
                "Pass --overwrite to replace it, --resume with a larger --epochs to "
                "continue it, or choose another --model_dir."
            )
        differences = _differences(saved, flags, allow_epochs=resume)
        if differences:
            raise RunDirError(
                f"--model_dir={model_dir} holds a run with other settings "
                f"({'; '.join(differences)}). Use the same flags to resume it, "
                "--overwrite to replace it, or another --model_dir."
            )
        state = read_state(model_dir)
        if finished and state and flags["epochs"] <= state["epoch"]:
            raise RunDirError(
                f"--model_dir={model_dir} already trained {state['epoch']} epochs; "
                f"--resume needs --epochs larger than that. Received: --epochs={flags['epochs']}"
            )
        _write_flags(model_dir, flags)
        return state
    elif resume:
        raise RunDirError(f"--resume: --model_dir={model_dir} holds no run to resume.")
    os.makedirs(model_dir, exist_ok=True)
    _write_flags(model_dir, flags)
    return None


def _write_flags(model_dir, flags):
    with open(os.path.join(model_dir, "flags.json"), "w", encoding="utf-8") as file:
        json.dump(flags, file, indent=2)
    with open(os.path.join(model_dir, "flags.txt"), "w", encoding="utf-8") as file:
        file.write(to_flagfile(flags))


def to_flagfile(flags):
    """The absl flagfile text of a settings dict (None values left out)."""
    lines = []
    for key, value in flags.items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{key}" if value else f"--no{key}")
        else:
            lines.append(f"--{key}={value}")
    return "\n".join(lines) + "\n"
