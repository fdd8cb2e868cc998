"""Trains a signed supermask (or a baseline) from the command line.

    python -m ssm_keras.train --arch=conv4 --signed --data_dir=../shared/data
    python -m ssm_keras.train --flagfile=flags/fcn_mnist_signed.flags
    ssm-train --recipe=fcn_mnist_signed --data_dir=../shared/data   # the same, installed

Every flag is a field of `ssm_keras.training.config.TrainConfig`; flags given after
`--flagfile` override it; `--recipe=NAME` reads the shipped flagfile
`ssm_keras/recipes/NAME.flags` first. The work is done by `ssm_keras.training.trainer.run`.
"""

from absl import flags

from ssm_keras.cli import shell
from ssm_keras.training import config as ssm_config


def define_flags(flag_values=flags.FLAGS):
    """Defines one absl flag per `TrainConfig` field and `--recipe` (not at
    import time)."""
    shell.define_flags(ssm_config.TrainConfig, flag_values)
    shell.define_recipe_flag(flag_values)
    flags.adopt_module_key_flags(ssm_config, flag_values)
    flags.adopt_module_key_flags(shell, flag_values)  # --recipe


def run_command(flag_values):
    """Trains the run the parsed flags describe."""
    from ssm_keras.training import trainer

    trainer.run(shell.from_flags(ssm_config.TrainConfig, flag_values))


def cli():
    """The `ssm-train` console script."""
    shell.main(define_flags, run_command,
               on_interrupt="interrupted; the same command resumes the run from its last "
               "finished epoch")


if __name__ == "__main__":
    cli()
