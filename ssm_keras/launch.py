"""Training runs started as `python -m ssm_keras.train` subprocesses.

The helpers of the scripts that drive many runs (`scripts/reproduce.py`,
`scripts/supermask_init_study.py`): check the training flags passed through
them, build a run's command, and run it unless its folder holds a finished
run (`run_dir.is_finished`).
"""

import dataclasses
import os
import subprocess
import sys

from ssm_keras import run_dir
from ssm_keras.config import TrainConfig

# Training flags the scripts set per run themselves.
SET_PER_RUN = {"model_dir", "seed", "flagfile", "resume", "overwrite", "mask_from"}


def check_training_flags(parser, extra):
    """Stops with a usage error of `parser` (an `argparse.ArgumentParser`)
    unless every argument of `extra` is `--name[=value]` (or `--noname`) of a
    flag of `ssm_keras.train` that the scripts do not set per run themselves
    (`SET_PER_RUN`)."""
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    for argument in extra:
        name = argument[2:].split("=", 1)[0] if argument.startswith("--") else None
        if name is None:
            parser.error(f"unexpected argument {argument!r}; training flags take the "
                         "form --name=value")
        name = name[2:] if name.startswith("no") and name[2:] in names else name
        if name in SET_PER_RUN:
            parser.error(f"{argument}: the script sets --{name} for each run itself")
        if name not in names:
            parser.error(f"{argument}: neither a flag of this script nor of ssm_keras.train "
                         "(python -m ssm_keras.train --help lists those)")


def check_runs_dir(parser, runs_dir):
    """Stops with a usage error of `parser` if `runs_dir` is a file."""
    if os.path.exists(runs_dir) and not os.path.isdir(runs_dir):
        parser.error(f"--runs_dir={runs_dir} is a file; name a folder (it is made if missing)")


def train_command(flagfile, model_dir, seed=None, data_dir=None, extra=()):
    """The `python -m ssm_keras.train` command line of one run."""
    command = [sys.executable, "-m", "ssm_keras.train", f"--flagfile={flagfile}",
               f"--model_dir={model_dir}"]
    if seed is not None:
        command.append(f"--seed={seed}")
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    return command + list(extra)


def subprocess_runner(command):
    """Runs `command`, output to this terminal; returns its exit status."""
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode


def train_if_missing(command, model_dir, runner=subprocess_runner):
    """Runs `command` unless `model_dir` holds a finished run.

    Returns `"finished"` (already there), `"trained"` or `"failed"`.
    """
    if run_dir.is_finished(model_dir):
        return "finished"
    return "trained" if runner(command) == 0 and run_dir.is_finished(model_dir) else "failed"
