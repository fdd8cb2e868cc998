"""Checks every image model of `keras.applications` (or keras_hub backbones)
through `ssm_keras.supermask`.

    ssm-check-applications --out_dir=applications            # all applications
    ssm-check-applications --out_dir=applications --models=MobileNetV2,ResNet50
    ssm-check-applications --out_dir=hub --models=keras_hub.BertBackbone,keras_hub.ViTBackbone

Each model is checked in a process of its own as `ssm_keras.experiments.applications`
describes; after each, `--out_dir/applications.json` and `applications.md` hold
the records so far (replacing those of an earlier check only with
`--overwrite`). It exits with status 1, naming them, when a model did not
pass (refused, failed, or an error such as a timeout).
"""


from absl import flags

from ssm_keras.cli import shell
from ssm_keras.experiments import applications


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `ApplicationsSettings` field in `flag_values`."""
    shell.define_flags(applications.ApplicationsSettings, flag_values)
    flags.adopt_module_key_flags(applications, flag_values)


def run_command(flag_values):
    """Checks the models one by one, writing the records after each; returns them."""
    return applications.check_all(shell.from_flags(applications.ApplicationsSettings,
                                                   flag_values))


def cli():
    """The `ssm-check-applications` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
