"""Searches the hyperparameters of a supermask with Keras Tuner.

    python -m ssm_keras.tune --arch=conv2 --signed --tuner=random --max_trials=20 \\
        --directory=tuning --data_dir=../shared/data
    python -m ssm_keras.tune --flagfile=flags/fcn_mnist_signed.flags --tuner=hyperband \\
        --epochs=27 --objective=sparse --sparsity_weight=0.5 --directory=tuning
    python -m ssm_keras.train --flagfile=tuning/<project>/best.flags

Every flag of `ssm_keras.train` sets what all trials share; the search flags
below choose the tuner, the objective and the ranges of the tuned
hyperparameters (a range overrides the training flag of the same name). The
same command started again continues the search. The work is done by
`ssm_keras.tuning.run`.
"""

from absl import flags

from ssm_keras import command, tuning
from ssm_keras import config as ssm_config


def define_flags(flag_values=flags.FLAGS):
    """Defines the flags of `ssm_keras.train` (with `--recipe`) and the
    search flags (one per `SearchConfig` field); `--help` lists the search
    flags and `--recipe`."""
    command.define_flags(ssm_config.TrainConfig, flag_values)
    command.define_recipe_flag(flag_values)
    flags.adopt_module_key_flags(command, flag_values)  # --recipe
    command.define_flags(tuning.SearchConfig, flag_values)
    flags.adopt_module_key_flags(tuning, flag_values)


def run_command(flag_values):
    """Runs the search the parsed flags describe."""
    tuning.run(command.from_flags(tuning.SearchConfig, flag_values),
               command.from_flags(ssm_config.TrainConfig, flag_values))


def cli():
    """The `ssm-tune` console script."""
    command.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
