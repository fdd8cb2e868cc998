"""Training runs started as `python -m ssm_keras.train` subprocesses.

The helpers of the commands that drive many runs (`ssm_keras.reproduce`,
`ssm_keras.study`): take the training flags given to them, build a run's
command, check the settings of every run still to train before the first
starts (`check_runs`), and run each unless its folder holds a finished run
(`run_dir.is_finished`).
"""

import contextlib
import dataclasses
import os
import subprocess
import sys

from absl import flags

from ssm_keras import command, run_dir, train
from ssm_keras.config import TrainConfig
from ssm_keras.errors import UserError

# The program of every run; its flags follow.
TRAIN = (sys.executable, "-m", "ssm_keras.train")
# Training flags the commands set per run themselves.
SET_PER_RUN = {"model_dir", "seed", "resume", "overwrite", "mask_from"}


class LaunchError(UserError):
    """A run the command cannot start: a training flag it sets itself, a runs
    folder that is a file, or settings `ssm_keras.train` would refuse."""


def define_training_flags(flag_values):
    """Defines every flag of `ssm_keras.train` (one per `TrainConfig` field)
    in `flag_values`: the command passes those given on to each run."""
    command.define_flags(TrainConfig, flag_values)


def training_flags(flag_values, own=()):
    """`--name=value` (absl's spelling) of every `ssm_keras.train` flag given
    on the command line, but those in `own` (the command reads them itself).

    Raises `LaunchError` for a flag the command sets per run (`SET_PER_RUN`).
    """
    given = []
    for field in dataclasses.fields(TrainConfig):
        flag = flag_values[field.name]
        if not flag.present or field.name in own:
            continue
        if field.name in SET_PER_RUN:
            raise LaunchError(f"{flag.serialize()}: the command sets --{field.name} for each "
                              "run itself")
        given.append(flag.serialize())
    return given


@contextlib.contextmanager
def writing_into(runs_dir):
    """Inside, an `OSError` (a file where a report goes is a folder, a full
    disk, no permission) becomes a `LaunchError` naming the file."""
    try:
        yield
    except OSError as error:
        raise LaunchError(f"cannot write into --runs_dir={runs_dir}: {error.strerror} "
                          f"({error.filename})") from None


def check_runs_dir(runs_dir):
    """Raises `LaunchError` if `runs_dir`, or the nearest of its parents
    that exists, is a file: no folder could be made there."""
    existing = os.path.abspath(runs_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(runs_dir) else f": {existing}"
        raise LaunchError(f"--runs_dir={runs_dir}{where} is a file; name a folder (it is made "
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
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    try:
        flag_values([TRAIN[-1], *arguments])
    except flags.Error as error:
        raise LaunchError(str(error).removeprefix("ERROR:: ")) from None
    except UnicodeDecodeError as error:
        raise LaunchError(f"a flagfile is not UTF-8 text ({error})") from None
    return command.from_flags(TrainConfig, flag_values)


def run_config(command_line):
    """The validated `TrainConfig` of the run `command_line` (of
    `train_command`) starts; `UserError` (an unreadable flagfile, a bad
    value) if that run would stop at once."""
    config = train_config(command_line[len(TRAIN):])
    config.validate()
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
    """Runs `command_line`, output to this terminal; returns its exit status."""
    print("$ " + " ".join(command_line), flush=True)
    return subprocess.run(command_line, check=False).returncode


def train_if_missing(command_line, model_dir, runner=subprocess_runner):
    """Runs `command_line` unless `model_dir` holds a finished run.

    Returns `"finished"` (already there), `"trained"` or `"failed"`.
    """
    if run_dir.is_finished(model_dir):
        return "finished"
    return "trained" if runner(command_line) == 0 and run_dir.is_finished(model_dir) else "failed"
