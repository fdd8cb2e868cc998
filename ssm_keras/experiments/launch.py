"""Training runs started as `python -m ssm_keras.train` subprocesses.

The helpers of the commands that drive many runs (`ssm-reproduce`,
`ssm-study`): take the training flags given to them, build a run's
command, check the settings of every run still to train before the first
starts (`check_runs`), and run each unless its folder holds a finished run
(`run_dir.is_finished`).
"""

import contextlib
import logging
import os
import subprocess
import sys

from ssm_keras import files, settings
from ssm_keras.errors import UserError
from ssm_keras.training import run_dir
from ssm_keras.training.config import TrainConfig

# The program of every run; its flags follow.
TRAIN = (sys.executable, "-m", "ssm_keras.train")
log = logging.getLogger(__name__)

# Training flags the commands set per run themselves.
SET_PER_RUN = {"model_dir", "seed", "resume", "overwrite", "mask_from"}
# Training flags of one run, which would make the command's runs one run's copies.
ONE_RUN_ONLY = {"start_from"}


class LaunchError(UserError):
    """A run the command cannot start: a training flag it sets itself, a runs
    folder that is a file, or settings `ssm_keras.train` would refuse."""


def check_training_arguments(arguments):
    """Raises `LaunchError` for an argument of `arguments` (`--name=value`)
    that sets a training setting the command sets per run (`SET_PER_RUN`),
    or one that belongs to a single run (`ONE_RUN_ONLY`)."""
    for argument in arguments:
        name = argument.removeprefix("--").partition("=")[0]
        if name in SET_PER_RUN:
            raise LaunchError(f"{argument}: the command sets --{name} for each run itself")
        if name in ONE_RUN_ONLY:
            raise LaunchError(f"{argument}: every run of the command would start from that one "
                              "checkpoint; start a run from it with ssm_keras.train")


@contextlib.contextmanager
def writing_into(out_dir):
    """Inside, an `OSError` (a file where a report goes is a folder, a full
    disk, no permission) becomes a `LaunchError` naming the file."""
    try:
        yield
    except OSError as error:
        raise LaunchError(f"cannot write into --out_dir={out_dir}: {error.strerror} "
                          f"({error.filename})") from None


def check_out_dir(out_dir):
    """Raises `LaunchError` if `out_dir`, or the nearest of its parents
    that exists, is a file: no folder could be made there."""
    blocking = files.file_in_the_way(out_dir)
    if blocking:
        where = "" if blocking == os.path.abspath(out_dir) else f": {blocking}"
        raise LaunchError(f"--out_dir={out_dir}{where} is a file; name a folder (it is made "
                          "if missing)")


def train_command(flagfile, model_dir, seed=None, data_dir=None, extra=()):
    """The `python -m ssm_keras.train` command line of one run."""
    command_line = [*TRAIN, f"--flagfile={flagfile}", f"--model_dir={model_dir}"]
    if seed is not None:
        command_line.append(f"--seed={seed}")
    if data_dir:
        command_line.append(f"--data_dir={data_dir}")
    return command_line + list(extra)


def train_config(arguments):
    """The `TrainConfig` that `python -m ssm_keras.train <arguments>` reads
    (`--flagfile=` ones included), not validated; `LaunchError` for an
    unknown flag, a bad value of a flag's type or an unreadable flagfile."""
    try:
        return settings.parse(TrainConfig, arguments)
    except settings.SettingsError as error:
        raise LaunchError(str(error)) from None


def run_config(command_line):
    """The validated `TrainConfig` of the run `command_line` (of
    `train_command`) starts; `UserError` (an unreadable flagfile, a bad
    value) if that run would stop at once."""
    config = train_config(command_line[len(TRAIN):])
    config.validate()
    config.check_inputs_outside_run_folder()
    return config


def check_runs(runs):
    """Checks the settings of every run of `runs` (`{model_dir: command
    line}`) whose folder holds no finished run, before any trains: a
    `LaunchError` names the first run that would stop at once, and why."""
    for model_dir, command_line in runs.items():
        if run_dir.is_finished(model_dir):
            continue
        try:
            run_config(command_line)
        except UserError as error:
            raise LaunchError(f"the run {model_dir} cannot start: {error}") from None


def subprocess_runner(command_line):
    """Runs `command_line`, output to this terminal (logged first); returns
    its exit status."""
    log.info("$ %s", " ".join(command_line))
    return subprocess.run(command_line, check=False).returncode


def train_if_missing(command_line, model_dir, runner=subprocess_runner):
    """Runs `command_line` unless `model_dir` holds a finished run.

    Returns `"finished"` (already there), `"trained"` or `"failed"`.
    """
    if run_dir.is_finished(model_dir):
        return "finished"
    return "trained" if runner(command_line) == 0 and run_dir.is_finished(model_dir) else "failed"
