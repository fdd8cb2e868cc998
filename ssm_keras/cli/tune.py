"""Searches the hyperparameters of a supermask with Keras Tuner.

    python -m ssm_keras.tune --arch=conv2 --signed --tuner=random --max_trials=20 \\
        --out_dir=tuning --data_dir=../shared/data
    python -m ssm_keras.tune --flagfile=flags/fcn_mnist_signed.flags --tuner=hyperband \\
        --epochs=27 --objective=sparse --sparsity_weight=0.5 --out_dir=tuning
    python -m ssm_keras.train --flagfile=tuning/<project>/best.flags

Every flag of `ssm_keras.train` sets what all trials share; the search flags
below choose the tuner, the objective and the ranges of the tuned
hyperparameters (a range overrides the training flag of the same name). The
same command started again continues the search. The work is done by
`ssm_keras.tuning.searching.run`.
"""

from absl import flags

from ssm_keras.cli import shell
from ssm_keras.training import config as ssm_config
from ssm_keras.tuning import config as search_config


def define_flags(flag_values=flags.FLAGS):
    """Defines the flags of `ssm_keras.train` (with `--recipe`) and the
    search flags (one per `SearchConfig` field); `--help` lists the search
    flags and `--recipe`."""
    shell.define_flags(ssm_config.TrainConfig, flag_values)
    shell.define_recipe_flag(flag_values)
    flags.adopt_module_key_flags(shell, flag_values)  # --recipe
    shell.define_flags(search_config.SearchConfig, flag_values)
    flags.adopt_module_key_flags(search_config, flag_values)


def run_command(flag_values):
    """Runs the search the parsed flags describe."""
    from ssm_keras.tuning import searching

    searching.run(shell.from_flags(search_config.SearchConfig, flag_values),
                  shell.from_flags(ssm_config.TrainConfig, flag_values))


def cli():
    """The `ssm-tune` console script."""
    shell.main(define_flags, run_command,
               on_interrupt="interrupted; the same command continues the search")


if __name__ == "__main__":
    cli()
