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

import dataclasses

from absl import app, flags

from ssm_keras import train, tuning

HELP = {
    "tuner": "random, bayesian (needs scipy and scikit-learn) or hyperband "
             "(max_epochs = --epochs).",
    "max_trials": "random, bayesian: the number of trials (a continued search runs the rest).",
    "directory": "Required: the folder of the search's project folders.",
    "project_name": "The search's folder in --directory "
                    "(default: <arch>-<mask>-<dataset>-seed<seed>-<tuner>).",
    "objective": "val_accuracy, or sparse: val_accuracy - sparsity_weight * remaining fraction "
                 "of the weights. Both on the validation split, at a trial's last epoch.",
    "sparsity_weight": "--objective=sparse: accuracy given up per unit of remaining fraction.",
    "learning_rate_range": "LOW:HIGH of --learning_rate (log scale; equal ends fix it).",
    "weight_decay_range": "LOW:HIGH of --weight_decay (log scale; equal ends fix it).",
    "tau_fraction_range": "LOW:HIGH of --tau_fraction, threshold masks "
                          "(linear; equal ends fix it).",
    "density_range": "LOW:HIGH of --density, top-k masks (log scale; equal ends fix it).",
    "init_factor_range": "LOW:HIGH of --init_factor, elus weights (log scale; equal ends fix it).",
    "hyperband_factor": "hyperband: the reduction factor of epochs and trials per round.",
    "hyperband_iterations": "hyperband: how many times to run the whole Hyperband schedule.",
}

USER_ERRORS = (*train.USER_ERRORS, tuning.TuneError)


def define_search_flags(flag_values=flags.FLAGS):
    """Defines one absl flag per `SearchConfig` field (not at import time)."""
    definers = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                float: flags.DEFINE_float, str: flags.DEFINE_string}
    for field in dataclasses.fields(tuning.SearchConfig):
        definer = definers[train.base_type(field.type)]
        definer(field.name, field.default, HELP[field.name], flag_values=flag_values)


def define_flags(flag_values=flags.FLAGS):
    """Defines the flags of `ssm_keras.train` and the search flags."""
    train.define_flags(flag_values)
    define_search_flags(flag_values)


def search_from_flags(flag_values=flags.FLAGS):
    """A `SearchConfig` from parsed flags."""
    return train.dataclass_from_flags(tuning.SearchConfig, flag_values)


def main(argv):
    train.refuse_arguments(argv)
    train.exit_on_user_error(
        lambda: tuning.run(search_from_flags(), train.config_from_flags()), USER_ERRORS
    )


def cli():
    """The `ssm-tune` console script."""
    define_flags()
    app.run(main, flags_parser=train.parse_flags)


if __name__ == "__main__":
    cli()
