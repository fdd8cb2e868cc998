"""Writes the compact files that `ssm_keras.pretrained` ships, from finished runs.

    ssm-make-pretrained --recipe_flagfile=flags/fcn_mnist_signed.flags \
        --runs=runs/fcn_mnist_signed_seed0,runs/fcn_mnist_signed_seed1

What each file holds, and how the runs are checked first:
`ssm_keras.pretrained.make`.
"""

from absl import flags

from ssm_keras.cli import shell
from ssm_keras.pretrained import config


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `MakeSettings` field in `flag_values`."""
    shell.define_flags(config.MakeSettings, flag_values)
    flags.adopt_module_key_flags(config, flag_values)


def run_command(flag_values):
    """Writes the compact file of every run the parsed flags name."""
    from ssm_keras.pretrained import make

    return make.make(shell.from_flags(config.MakeSettings, flag_values))


def cli():
    """The `ssm-make-pretrained` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
