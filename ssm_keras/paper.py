"""The figures of the paper's table (Koster et al. 2022, "Signing the
Supermask: Keep, Hide, Invert"), per network and data set: the test accuracy
of the network trained normally (the baseline), of its signed supermask, and
the weights the signed supermask keeps.

`ssm-reproduce` sets its table beside these; `ssm-plots` draws the figure of
a run's own setting beside its curves (`figure_of_run`).
"""

import typing

from ssm_keras.training.config import resolved_mask_kind


class PaperRow(typing.NamedTuple):
    """A row of the paper's table: the means of the test accuracy (%) and of
    the remaining weights of the signed supermask."""

    model: str
    data: str
    baseline_accuracy: float
    signed_accuracy: float
    remaining_percent: float
    remaining_count: str


PAPER = {
    "fcn_mnist": PaperRow("FCN", "MNIST", 97.42, 97.48, 3.77, "10.1K"),
    "conv2_cifar10": PaperRow("Conv2", "CIFAR-10", 68.79, 68.37, 0.60, "25.8K"),
    "conv4_cifar10": PaperRow("Conv4", "CIFAR-10", 74.50, 77.40, 2.91, "69.8K"),
    "conv6_cifar10": PaperRow("Conv6", "CIFAR-10", 75.91, 79.17, 2.36, "54.3K"),
    "conv8_cifar10": PaperRow("Conv8", "CIFAR-10", 72.24, 80.91, 1.17, "62.0K"),
    "resnet20_cifar10": PaperRow("ResNet-20", "CIFAR-10", 84.91, 81.68, 21.13, "52.8K"),
    "resnet20x2_cifar10": PaperRow("ResNet-20x2", "CIFAR-10", 86.80, 84.42, 7.69, "76.9K"),
    "resnet20x3_cifar10": PaperRow("ResNet-20x3", "CIFAR-10", 87.32, 84.89, 4.06, "89.3K"),
    "resnet56_cifar100": PaperRow("ResNet-56", "CIFAR-100", 68.04, 60.01, 29.39, "247K"),
    "resnet110_cifar100": PaperRow("ResNet-110", "CIFAR-100", 62.70, 46.42, 20.64, "351K"),
}


class PaperFigure(typing.NamedTuple):
    """What the paper reports for one setting: the test accuracy (%), and
    for a signed supermask the weights it keeps (%, else None)."""

    test_accuracy: float
    remaining_percent: float | None


def network(arch, dataset, width=None):
    """The key of `PAPER` for a network: `resnet20x2_cifar10` for
    `--arch=resnet20 --width=2 --dataset=cifar10`."""
    widened = f"x{width}" if width and width > 1 else ""
    return f"{arch}{widened}_{dataset}"


def figure_of_run(flags):
    """The paper's figure for the setting of a run (its flags, as in
    `flags.json`): the baseline's for `--regime=weights`, the signed
    supermask's for a signed mask; None where the paper has none (another
    network, mask kind or regime)."""
    row = PAPER.get(network(flags.get("arch"), flags.get("dataset"), flags.get("width")))
    if row is None:
        return None
    if flags.get("regime") == "weights":
        return PaperFigure(row.baseline_accuracy, None)
    mask = flags.get("mask")
    if (flags.get("regime") == "mask" and mask is not None
            and resolved_mask_kind(mask, flags.get("signed")) == "signed"):
        return PaperFigure(row.signed_accuracy, row.remaining_percent)
    return None
