"""How saturated a network starts: its logits at initialisation, on real images.

    ssm-initial-logits --data_dir=../shared/data
    ssm-initial-logits --archs=conv6 --init_factors=6,3,2 --seeds=0,1

What is measured: `ssm_keras.experiments.initial_logits`.
"""

from absl import flags

from ssm_keras.cli import shell
from ssm_keras.experiments import config


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `InitialLogitsSettings` field in `flag_values`."""
    shell.define_flags(config.InitialLogitsSettings, flag_values)
    flags.adopt_module_key_flags(config, flag_values)


def run_command(flag_values):
    """Measures and writes what the parsed flags name; returns the rows."""
    from ssm_keras.experiments import initial_logits

    return initial_logits.run(shell.from_flags(config.InitialLogitsSettings, flag_values))


def cli():
    """The `ssm-initial-logits` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
