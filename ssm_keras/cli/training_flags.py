"""The training flags of the commands that drive many runs (`reproduce`,
`study`): every flag of `ssm-train`, passed on to each run."""

import dataclasses

from ssm_keras.cli import shell
from ssm_keras.experiments import launch
from ssm_keras.training.config import TrainConfig


def define(flag_values):
    """Defines every flag of `ssm-train` (one per `TrainConfig` field) in
    `flag_values`."""
    shell.define_flags(TrainConfig, flag_values)


def given(flag_values, own=()):
    """`--name=value` (absl's spelling) of every training flag given on the
    command line, but those in `own` (the command reads them itself);
    `launch.LaunchError` for one the command sets per run."""
    arguments = [flag_values[field.name].serialize() for field in dataclasses.fields(TrainConfig)
                 if flag_values[field.name].present and field.name not in own]
    launch.check_training_arguments(arguments)
    return arguments
