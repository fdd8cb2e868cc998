"""Trained signed supermasks shipped with the package, a few kilobytes each.

    from ssm_keras import pretrained
    pretrained.names()                       # ['conv2_cifar10_signed_seed0', ...]
    masked, baked, metadata = pretrained.load("fcn_mnist_signed_seed0")
    metadata["test_accuracy"], metadata["command"]

Each entry is a compact file (`ssm_keras.exporting.compact`) in the package folder
`entries/`, named `<entry>.ssm`, written by
`ssm-make-pretrained` from a finished training run. Its metadata holds
what the run recorded: `dataset`, `arch`, `input_shape`, `num_classes`,
`regime`, `mask`, `test_accuracy` (on the data set's full test split),
`remaining_weights`, `masked_weights`, `epochs`, `seed`, `recipe` (the
flagfile and every training setting) and `command` (the command that trained
it, as run in a checkout: its `--flagfile=flags/NAME.flags` is `--recipe=NAME`
with the package installed). `load` rebuilds the masked model with the
trained mask exactly and the baked model (stock Keras layers); `python -m ssm_keras.cli.evaluate
--pretrained=NAME --data_dir=DIR` measures the test accuracy again. Only
`load` imports Keras: the commands name and check entries before they load it.
"""

import os

from ssm_keras.errors import UserError

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "entries")
SUFFIX = ".ssm"


class PretrainedError(UserError):
    """An unknown entry name."""


def names():
    """The shipped entries, sorted."""
    if not os.path.isdir(FOLDER):
        return []
    return sorted(name[:-len(SUFFIX)] for name in os.listdir(FOLDER) if name.endswith(SUFFIX))


def path(name):
    """The compact file of entry `name`.

    Raises:
        PretrainedError: no such entry (the message lists the entries).
    """
    known = names()
    if name not in known:
        raise PretrainedError(
            f"no pretrained model {name!r}; the shipped ones are: {', '.join(known) or 'none'}")
    return os.path.join(FOLDER, name + SUFFIX)


def load(name):
    """`(masked model, baked model, metadata)` of entry `name`.

    Raises:
        PretrainedError: no such entry.
        compact.CompactFileError: its file is damaged.
    """
    from ssm_keras.exporting import compact

    return compact.load_compact(path(name))
