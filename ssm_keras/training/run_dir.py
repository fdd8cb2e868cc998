"""A run's directory: what is in it, and never losing a finished run.

Layout of `--model_dir`:

    .lock                   while a process trains the run (see `lock`)
    flags.json, flags.txt   the run's settings (JSON; absl flagfile)
    checkpoint/             state.json + the model.keras it names, after
                            every epoch (see `write_checkpoint`)
      epoch-<N>/            a copy of it after epoch N, kept for
                            `--start_from` (`--keep_checkpoints`)
    logs/                   TensorBoard: train/, validation/, masks/, flags
    history.jsonl           one JSON line per epoch (loss, accuracy, masks)
    model.keras             the trained model
    results.json            test and validation accuracy, remaining weights,
                            per-layer statistics, epochs, wall time, flags;
                            or, for a run stopped by a non-finite loss,
                            `"status": "diverged"` and why
    results.txt             the same, for people

A run is checked against the folder (`check`) before anything is written,
and the folder is written (`start`) only once the data and the model are
known good. All JSON is standard JSON: a non-finite number is written as
`null`.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time

from ssm_keras import files, settings
from ssm_keras.errors import UserError

# Settings that may differ between a run and its continuation: how it is
# started, where its folder is (the folder is the same one however it is
# spelled, or after it was moved), which checkpoints it keeps, and how long
# a worker waits for the others (a late worker's error advises raising it).
_RESTART_KEYS = ("resume", "overwrite", "verbose", "model_dir", "keep_checkpoints",
                 "worker_timeout")
# The files and folders of a run (see the module docstring).
LOCK = ".lock"
FLAGS_JSON = "flags.json"
FLAGS_TEXT = "flags.txt"
CHECKPOINT = "checkpoint"
STATE = "state.json"  # in CHECKPOINT
LOGS = "logs"
HISTORY = "history.jsonl"
MODEL = "model.keras"
RESULTS = "results.json"
RESULTS_TEXT = "results.txt"
# What a run writes besides `flags.json`: a folder without a run that holds
# one of these (an export's `model.keras`) is not a run's to write into.
RUN_FILES = (FLAGS_TEXT, CHECKPOINT, LOGS, HISTORY, MODEL, RESULTS, RESULTS_TEXT)


class RunDirError(UserError):
    """A model directory that cannot be used as asked; the message says why."""


def read_json(path):
    """The JSON in `path`; RunDirError naming the file if it is unreadable."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path} is not readable JSON ({error}).") from None


def is_finished(model_dir):
    """Whether `model_dir` holds a finished run: a readable `results.json`
    with `"status": "finished"` (not a diverged run, not a damaged file)."""
    return finished_results(model_dir) is not None


def finished_results(model_dir):
    """The `results.json` of the finished run in `model_dir`; None where
    `is_finished` is False."""
    try:
        return read_results(model_dir)
    except RunDirError:
        return None


def read_results(model_dir):
    """The `results.json` of the finished run in `model_dir`.

    Raises:
        RunDirError: no such folder, no `results.json` (not a training run,
            or one still running), unreadable JSON, or a status other than
            `finished` (a diverged run).
    """
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise RunDirError(f"model_dir {model_dir} is a file, not a training run's folder")
    if not os.path.isdir(model_dir):
        raise RunDirError(f"model_dir {model_dir} does not exist")
    path = os.path.join(model_dir, RESULTS)
    if not os.path.isfile(path):
        raise RunDirError(f"{model_dir} has no results.json; is it a finished training run?")
    results = read_json(path)
    status = results.get("status") if isinstance(results, dict) else None
    if status != "finished":
        raise RunDirError(f"the run in {model_dir} has status {status!r}, not 'finished'; "
                          "only finished runs can be read")
    _check_result_fields(path, results)
    return results


def _is_count(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


# What the readers of results.json (export, evaluate, plots, the experiment
# tables) take from it: the check each value must pass, and what it must be.
RESULT_FIELDS = {
    "arch": (lambda value: isinstance(value, str), "a string"),
    "dataset": (lambda value: isinstance(value, str), "a string"),
    "regime": (lambda value: isinstance(value, str), "a string"),
    "mask": (lambda value: value is None or isinstance(value, str), "a string or null"),
    "test_accuracy": (lambda value: _is_number(value) and 0 <= value <= 1,
                      "a number in [0, 1]"),
    "input_shape": (lambda value: isinstance(value, list) and value
                    and all(_is_count(size, 1) for size in value), "a list of positive integers"),
    "num_classes": (lambda value: _is_count(value, 2), "an integer >= 2"),
    "epochs": (lambda value: _is_count(value, 1), "an integer >= 1"),
    "remaining_weights": (lambda value: _is_count(value), "an integer >= 0"),
    "masked_weights": (lambda value: _is_count(value), "an integer >= 0"),
}


def _check_result_fields(path, results):
    """Raises `RunDirError` naming the first field of `RESULT_FIELDS` present
    in `results` with a value a reader cannot use."""
    for key, (valid, expected) in RESULT_FIELDS.items():
        if key in results and not valid(results[key]):
            raise RunDirError(f"{path} is damaged: {key} is {results[key]!r}, not {expected}")


def read_history(model_dir):
    """The records of `history.jsonl`, one per epoch; [] if there is none.

    Raises:
        RunDirError: the file is unreadable, or a line is not JSON.
    """
    path = os.path.join(model_dir, HISTORY)
    if not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path} is not readable JSON lines ({error}).") from None


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT)


# Checkpoints.
def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(folder, save_model, state, keep=False):
    """Writes a checkpoint: a model file, then the `state.json` that names it.

    `save_model(path)` writes the model (with its optimiser state) to a new
    file `model-<epoch>.keras`; then `state.json`, which records that file's
    name and SHA-256, replaces the previous one in one rename; then the
    previous model file is deleted. So at every instant `state.json` names a
    complete model file of its own epoch. With `keep`, both files are also
    copied into `folder/epoch-<epoch>/` (see `keep_checkpoint`).

    Raises:
        RunDirError: the files cannot be written (e.g. a full disk); no
            partial file is left behind.
    """
    name = f"model-{state['epoch']}.keras"
    path = os.path.join(folder, name)
    try:
        os.makedirs(folder, exist_ok=True)
        files.save_atomically(path, save_model, suffix=".keras")
    except OSError as error:
        raise RunDirError(
            f"cannot write the checkpoint {path}: {error.strerror or error}") from None
    files.write_json_atomically(os.path.join(folder, STATE),
                          {**state, "model": name, "model_sha256": _sha256(path)})
    for other in os.listdir(folder):
        if other != name and other.endswith(".keras"):
            files.remove_quietly(os.path.join(folder, other))
    if keep:
        keep_checkpoint(folder, state["epoch"], name)


def kept_checkpoint_dir(folder, epoch):
    return os.path.join(folder, f"epoch-{epoch}")


def keep_checkpoint(folder, epoch, model_name):
    """Copies the checkpoint in `folder` (of epoch `epoch`: `state.json` and
    the model file `model_name`) into `folder/epoch-<epoch>/`, a checkpoint
    folder of its own that the next epochs leave alone. Written as a whole
    or not at all: the copy is made in a hidden folder and renamed; an older
    copy of that epoch (a run continued after a kill) is replaced.

    Raises:
        RunDirError: the copy cannot be written; no partial folder is left.
    """
    kept = kept_checkpoint_dir(folder, epoch)
    temporary = os.path.join(folder, f".epoch-{epoch}.tmp")
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        for name in (model_name, STATE):
            shutil.copy2(os.path.join(folder, name), os.path.join(temporary, name))
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(temporary, kept)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise RunDirError(
            f"cannot keep the checkpoint in {kept}: {error.strerror or error}") from None


def find_checkpoint(path):
    """`(state, model path)` of the checkpoint `--start_from=path` names: a
    checkpoint folder (a run's `checkpoint/`, a kept `checkpoint/epoch-N/`)
    or a run folder, whose `checkpoint/` it reads.

    Raises:
        RunDirError: `path` holds no checkpoint, or a damaged one.
    """
    advice = "Start from another checkpoint, or from the start."
    for folder in (path, checkpoint_dir(path)):
        found = read_checkpoint(folder, advice) if os.path.isdir(folder) else None
        if found:
            return found
    raise RunDirError(
        f"--start_from={path} holds no checkpoint: name a run folder, its checkpoint/ folder, "
        "or a checkpoint/epoch-N/ folder it kept (--keep_checkpoints).")


# What to do about a damaged checkpoint of the run itself.
_RESUME_ADVICE = ("Delete the checkpoint folder to train from the last intact state, "
                  "or pass --overwrite to start over.")


def read_checkpoint(folder, advice=_RESUME_ADVICE, verify_model=True):
    """`(state, model path)` of the checkpoint in `folder`, or None if none;
    `advice` ends the message about a damaged one. Without `verify_model`
    the model file is neither looked for nor hashed (a reader of the
    state alone).

    Raises:
        RunDirError: `state.json` is damaged, or the model file it names is
            missing or is not the one it recorded (truncated, replaced).
    """
    state_path = os.path.join(folder, STATE)
    if not os.path.isfile(state_path):
        return None
    state = read_json(state_path)
    problem = _state_problem(state)
    if problem:
        raise RunDirError(f"{state_path} is not a checkpoint state: {problem}. {advice}")
    if "model" not in state:  # written before checkpoints named their model
        return state, os.path.join(folder, MODEL)
    path = os.path.join(folder, str(state["model"]))
    if not verify_model:
        return state, path
    if not os.path.isfile(path):
        raise RunDirError(f"the checkpoint's model file {path} is missing. {advice}")
    if _sha256(path) != state.get("model_sha256"):
        raise RunDirError(
            f"the checkpoint's model file {path} is damaged: it is not the file "
            f"{state_path} recorded (SHA-256 differs). {advice}"
        )
    return state, path


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _state_problem(state):
    """What is wrong with a `state.json` value, or None if it is whole.

    A checkpoint after epoch `e >= 1` holds `e` history records numbered
    `1..e`, so a damaged epoch number cannot pass for the run's progress.
    """
    if not isinstance(state, dict):
        return f"expected a JSON object, found {type(state).__name__}"
    epoch, history = state.get("epoch"), state.get("history", [])
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return f"the epoch number must be an integer >= 1, found {epoch!r}"
    if (not isinstance(history, list) or len(history) != epoch
            or any(not isinstance(entry, dict) or entry.get("epoch") != number
                   for number, entry in enumerate(history, 1))):
        return (f"it says {epoch} epochs were trained, but its history does not list "
                f"epochs 1 to {epoch}")
    wall_time = state.get("wall_time_s")
    if wall_time is not None and not _is_number(wall_time):
        return f"wall_time_s must be a number, found {wall_time!r}"
    saved = state.get("callbacks", [])
    if not isinstance(saved, list) or any(not isinstance(entry, dict) for entry in saved):
        return f"callbacks must be a list of objects, found {saved!r}"
    samplers = state.get("mask_samplers", {})
    if not isinstance(samplers, dict):
        return f"mask_samplers must be an object, found {samplers!r}"
    started = state.get("started_from")
    if started is not None and not isinstance(started, dict):
        return f"started_from must be an object, found {started!r}"
    averages_from = state.get("averages_from", 0)
    if not isinstance(averages_from, int) or isinstance(averages_from, bool) or averages_from < 0:
        return f"averages_from must be an integer >= 0, found {averages_from!r}"
    for key in ("model", "model_sha256"):
        if key in state and not isinstance(state[key], str):
            return f"{key} must be a string, found {state[key]!r}"
    return None


def read_state(model_dir, verify_model=True):
    """The checkpoint state of `model_dir`, or None (see `read_checkpoint`)."""
    checkpoint = read_checkpoint(checkpoint_dir(model_dir), verify_model=verify_model)
    return checkpoint[0] if checkpoint else None


# Settings.
def resolved(flags):
    """`flags` with the file and folder settings (`settings.PATH_SETTINGS`) as
    absolute, normalised paths."""
    return {key: os.path.realpath(os.path.expanduser(value))
            if key in settings.PATH_SETTINGS and isinstance(value, str) and value else value
            for key, value in flags.items()}


def _differences(saved, wanted, allow_epochs, defaults):
    ignored = set(_RESTART_KEYS) | ({"epochs"} if allow_epochs else set())
    # A run saved before a setting existed trained with its default.
    saved = {**{key: value for key, value in defaults.items() if key not in saved}, **saved}
    saved, wanted = resolved(saved), resolved(wanted)
    return [f"--{key}: {saved.get(key)!r} -> {wanted.get(key)!r}"
            for key in sorted(set(saved) | set(wanted))
            if key not in ignored and saved.get(key) != wanted.get(key)]


# The lock.
@contextlib.contextmanager
def lock(model_dir):
    """Holds `model_dir`'s lock while the block runs; creates the folder.

    The lock is an exclusive `flock` on `model_dir/.lock`, released by the
    operating system when the process ends, however it ends. While held,
    the file names the holder; it is removed when the block ends, as are
    the folders this call created if the block left them empty.

    Raises:
        RunDirError: another process holds the lock (the message names it),
            or the folder cannot be created or written.
    """
    created = files.first_missing_folder(model_dir)
    try:
        os.makedirs(model_dir, exist_ok=True)
        file = open(os.path.join(model_dir, LOCK), "a+", encoding="utf-8")
    except OSError as error:
        raise RunDirError(
            f"--model_dir={model_dir} cannot be used as a run folder: "
            f"{error.strerror or error}"
            + (f" ({error.filename})" if error.filename else "") + "."
        ) from None
    path = os.path.join(model_dir, LOCK)
    try:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder before may have removed the file as it let go.
            if os.fstat(file.fileno()).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise RunDirError(
                f"--model_dir={model_dir} is in use by {holder}. Wait for it to end, "
                "or choose another --model_dir."
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()} on {socket.gethostname()}, started "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({' '.join(sys.argv)})\n")
        file.flush()
        try:
            yield
        finally:
            files.remove_quietly(path)  # still locked: no one else holds this file
            files.remove_created_folders(model_dir, created)
    finally:
        file.close()


# Checking and starting a run.
def check(model_dir, flags, resume=False, overwrite=False, defaults=None):
    """Whether a run with `flags` (a dict) may use `model_dir`; writes nothing.

    A setting missing from the folder's `flags.json` (a run saved before
    the setting existed) counts as its value in `defaults` (a dict).

    - empty or new, or holding none of the files a run writes
      (`RUN_FILES`): a fresh run;
    - an unfinished run with the same flags: resumed from its checkpoint;
    - a finished run: refused, unless `overwrite` (replaced by `start`) or
      `resume` (continued for more epochs from its checkpoint: one whose
      checkpoint is gone is refused); `overwrite` never replaces a folder
      of other files;
    - a run that diverged, or a run with other flags: refused unless
      `overwrite`.

    Returns:
        The checkpoint state to resume from, or None for a fresh run.

    Raises:
        RunDirError: the run is refused, or a file in the folder is damaged.
    """
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise RunDirError(f"--model_dir={model_dir} is a file, not a folder.")
    results_path = os.path.join(model_dir, RESULTS)
    flags_path = os.path.join(model_dir, FLAGS_JSON)
    if overwrite:
        others = [name for name in os.listdir(model_dir) if name != LOCK] if os.path.isdir(
            model_dir) else []
        if others and not os.path.isfile(flags_path):
            raise RunDirError(
                f"--model_dir={model_dir} holds files but no run ({', '.join(sorted(others)[:5])}"
                "); --overwrite only replaces a run. Choose another --model_dir."
            )
        return None
    if not os.path.isfile(flags_path):
        if resume:
            raise RunDirError(f"--resume: --model_dir={model_dir} holds no run to resume.")
        in_the_way = [name for name in RUN_FILES
                      if os.path.lexists(os.path.join(model_dir, name))]
        if in_the_way:
            raise RunDirError(
                f"--model_dir={model_dir} holds no run, but files a run writes "
                f"({', '.join(in_the_way)}), which it would replace; they are not overwritten. "
                "Choose another --model_dir.")
        return None
    saved = read_json(flags_path)
    if not isinstance(saved, dict):
        raise RunDirError(
            f"{flags_path} is damaged (a JSON {type(saved).__name__}, not the run's settings). "
            "Pass --overwrite to replace the run, or choose another --model_dir."
        )
    results = read_json(results_path) if os.path.isfile(results_path) else None
    status = results.get("status") if isinstance(results, dict) else None
    if status == "diverged":
        raise RunDirError(
            f"--model_dir={model_dir} holds a run that diverged ({results.get('message')}). "
            "Pass --overwrite to replace it (with, e.g., a smaller --learning_rate), or "
            "choose another --model_dir."
        )
    if results is not None and not resume:
        raise RunDirError(
            f"--model_dir={model_dir} holds a finished run; it is not overwritten. "
            "Pass --overwrite to replace it, --resume with a larger --epochs to "
            "continue it, or choose another --model_dir."
        )
    differences = _differences(saved, flags, allow_epochs=resume, defaults=defaults or {})
    state = read_state(model_dir)
    if results is not None and not state:
        raise RunDirError(
            f"--resume continues a run from its checkpoint, and the finished run in "
            f"--model_dir={model_dir} has none ({CHECKPOINT}/ is gone); it is not trained "
            "over. Choose another --model_dir, or pass --overwrite to replace the run."
        )
    if differences:
        done = f", with {state['epoch']} epochs trained" if state else ""
        raise RunDirError(
            f"--model_dir={model_dir} holds a run with other settings{done} "
            f"({'; '.join(differences)}). Use the same flags to resume it, "
            "another --model_dir, or --overwrite to delete it and start again."
        )
    epochs = saved.get("epochs")
    if saved.get("lr_schedule") == "cosine" and flags["epochs"] != epochs:
        raise RunDirError(
            f"--model_dir={model_dir} holds a run with --lr_schedule=cosine, which decays "
            f"the learning rate to 0 over its --epochs={epochs}; continued to "
            f"--epochs={flags['epochs']} it would train at the schedule of its first "
            f"{epochs}. Resume it with --epochs={epochs}, or start a new run for the "
            "longer schedule.")
    if results is not None and flags["epochs"] <= state["epoch"]:
        raise RunDirError(
            f"--model_dir={model_dir} already trained {state['epoch']} epochs; "
            f"--resume needs --epochs larger than that. Received: --epochs={flags['epochs']}"
        )
    return state


def start(model_dir, flags, overwrite=False):
    """Writes the run's settings into `model_dir`, after `check` passed and
    the run's inputs were loaded; with `overwrite`, first deletes everything
    in it but the lock."""
    if overwrite:
        for name in os.listdir(model_dir):
            if name != LOCK:
                path = os.path.join(model_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
    files.write_json_atomically(os.path.join(model_dir, FLAGS_JSON), flags)
    files.write_text_atomically(os.path.join(model_dir, FLAGS_TEXT), reproducing_flagfile(flags))


# How a run was started, not what it trains: a flagfile that reproduces it
# leaves them out (`--overwrite` in it would replace the run it reproduces).
_INVOCATION_KEYS = ("resume", "overwrite")


def reproducing_flagfile(flags):
    """`flags.txt`: the flagfile of the run's settings `flags`, its paths
    absolute (`resolved`), so that it works from any folder, and without
    `--resume` and `--overwrite`."""
    return to_flagfile({key: value for key, value in resolved(flags).items()
                        if key not in _INVOCATION_KEYS})


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
