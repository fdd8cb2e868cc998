"""The supermask-as-initialisation study (docs/study.md): its runs, and the
summary and plots of the finished ones (the work of `ssm_keras.cli.study`).

Three regimes from the same initial weights (the same `--seed` and the
recipes' `--weight_init`), each one run of `ssm_keras.train`:

1. `weights`: recipe `wrn28_cifar10_weights`, the weights train;
2. `mask`: recipe `wrn28_cifar10_mask`, only a binary mask trains
   (`m = [s > 0]`, that is `sigmoid(s) > 0.5`), with Adam at 0.01 reduced
   on plateaus (the blog's recipe); with `--bernoulli` (the default) also
   `mask_bernoulli`: the same run with a Bernoulli mask (`m ~
   Bernoulli(sigmoid(s))` in training, `[sigmoid(s) > 0.5]` at inference)
   from the same scores (`--score_init` of the binary mask; no threshold,
   so `--tau_fraction` is left at its default), trained as Zhou et al. did:
   SGD at a very large constant learning rate (`--bernoulli_learning_rate`);
3. `mask_then_weights`: recipe `wrn28_cifar10_mask_then_weights` with
   `--mask_from=<out_dir>/mask`: the binary mask of (2) is frozen and its
   surviving weights train with Adam at learning rate 1e-5. The study's
   description takes "the best mask of (2)": this is the mask (2) ends with
   (its `model.keras`); no best-validation checkpoint is kept.
"""

import dataclasses
import os

from ssm_keras import plotting
from ssm_keras.choices import DEFAULT_SCORE_INITIALIZERS
from ssm_keras.experiments import launch
from ssm_keras.settings import recipes_dir, setting
from ssm_keras.training.config import TrainConfig

# Each run of the study, in training order: `{run: (regime, flags before the
# study's training flags, flags after them)}`. The Bernoulli mask starts
# from the binary mask's scores (the binary mask's initialiser, unless the
# study sets `--score_init` for both); it has no threshold, so the
# flagfile's `--tau_fraction` goes back to its default. It trains with SGD
# at `--bernoulli_learning_rate` (added by `training_command`).
RUNS = {
    "weights": ("weights", (), ()),
    "mask": ("mask", (), ()),
    "mask_bernoulli": ("mask", (f"--score_init={DEFAULT_SCORE_INITIALIZERS['binary']}",),
                       ("--mask=bernoulli", f"--tau_fraction={TrainConfig.tau_fraction}",
                        "--optimizer=sgd", "--lr_schedule=constant")),
    "mask_then_weights": ("mask_then_weights", (), ()),
}
# Zhou et al. trained Bernoulli masks with SGD at very large learning rates:
# a sampled mask's gradient per score is tiny. On MNIST (WRN-28-1, 20,000
# images, 2 epochs, seed 0) 1000 reached 92.2% test accuracy, 100 55.9%.
BERNOULLI_LEARNING_RATE = 1000.0
# The runs that train a mask; (3) keeps the binary mask of (2) as it is.
MASK_RUNS = ("mask", "mask_bernoulli")
LABELS = {
    "weights": "1. weights only",
    "mask": "2. mask only (binary)",
    "mask_bernoulli": "2b. mask only (Bernoulli)",
    "mask_then_weights": "3. mask then weights (Adam, lr 1e-5)",
}


@dataclasses.dataclass
class StudyConfig:
    """The settings of the study; the field names are the `ssm_keras.cli.study`
    flags (besides those of `ssm_keras.train`, among them `--seed`: the
    shared initial weights)."""

    out_dir: str = setting("runs/supermask_init", "Folder of the runs and the summary.")
    flags_dir: str = setting(
        recipes_dir(),
        "Folder of the flagfiles wrn28_cifar10_<regime>.flags (default: the shipped recipes).")
    bernoulli: bool = setting(
        True, "Also train regime 2 with a Bernoulli mask, mask_bernoulli (--nobernoulli: the "
        "binary mask only).")
    bernoulli_learning_rate: float = setting(
        BERNOULLI_LEARNING_RATE, "The SGD learning rate of mask_bernoulli.")


def selected_runs(settings):
    """The runs of the study, in training order (`mask_bernoulli` with `--bernoulli`)."""
    return [run for run in RUNS if settings.bernoulli or run != "mask_bernoulli"]


def run_folder(out_dir, run):
    """`<out_dir>/<run>`: the folder of one run."""
    return os.path.join(out_dir, run)


def training_command(settings, seed, data_dir, extra, run):
    """The training command of one run, with the training flags `extra`
    after the recipe's and the run's defaults (`RUNS`), and the run's own
    after them (the Bernoulli mask, trained with SGD at the constant
    `--bernoulli_learning_rate`); (3) takes its mask from (2), the binary
    one."""
    regime, defaults, own = RUNS[run]
    flagfile = os.path.join(settings.flags_dir, f"wrn28_cifar10_{regime}.flags")
    if run == "mask_bernoulli":
        own = (*own, f"--learning_rate={settings.bernoulli_learning_rate}")
    more = [*defaults, *extra, *own]
    schedules = [flag.split("=", 1)[1] for flag in more if flag.startswith("--lr_schedule=")]
    if schedules and schedules[-1] != "plateau":
        # The mask flagfile's plateau settings would be refused as ignored.
        more += [f"--plateau_patience={TrainConfig.plateau_patience}",
                 f"--plateau_factor={TrainConfig.plateau_factor}"]
    if regime == "mask_then_weights":
        more.append(f"--mask_from={run_folder(settings.out_dir, 'mask')}")
    return launch.train_command(flagfile, run_folder(settings.out_dir, run), seed, data_dir,
                                more)


def study_curves(histories):
    """Validation-accuracy curves; regime 3 starts after regime 2's last epoch.

    Args:
        histories: `{run: history records}` of the finished runs.
    """
    curves = []
    for run in RUNS:
        history = histories.get(run)
        if not history:
            continue
        offset = len(histories.get("mask", [])) if run == "mask_then_weights" else 0
        data = plotting.curve_data(history)
        if "val_accuracy" in data:
            curves.append({"label": LABELS[run],
                           "epochs": [epoch + offset for epoch in data["epoch"]],
                           "values": data["val_accuracy"]})
    return curves


def utilisation_series(runs):
    """Per-layer utilisation of each finished mask run (`MASK_RUNS`).

    Returns:
        dicts with `label`, `totals` (each masked layer's number of weights)
        and `kept_percent` (`100 * remaining / total` of that layer).
    """
    series = []
    for run in MASK_RUNS:
        if run in runs:
            data = plotting.composition_data(runs[run][0]["layers"])
            series.append({"label": LABELS[run], "totals": data["totals"],
                           "kept_percent": data["remaining"]})
    return series


def summary_rows(runs):
    """One row per finished run: accuracies (%), remaining weights, epochs."""
    rows = []
    for run in RUNS:
        if run not in runs:
            continue
        results, _ = runs[run]
        best = results.get("best_validation_accuracy")
        rows.append({
            "run": run,
            "test_accuracy": 100 * results["test_accuracy"],
            "best_validation_accuracy": None if best is None else 100 * best,
            "remaining_percent": results["remaining_percent"],
            "epochs": results["epochs"],
        })
    return rows


def study_title(config):
    """`Wide ResNet-28-<width> on <dataset>`, of a run's `TrainConfig`."""
    return f"Wide ResNet-28-{config.width} on {config.dataset}"


def format_summary(title, rows, extra):
    """The markdown summary: one row per finished run."""
    lines = [
        f"Supermask as initialisation: {title}, every run from the same initial weights. "
        + (f"Flags: the flagfiles with {' '.join(extra)}." if extra else "Flags: the flagfiles'."),
        "",
        "| run | test accuracy | best validation accuracy | remaining weights | epochs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        best = row["best_validation_accuracy"]
        lines.append(
            f"| {LABELS[row['run']]} | {row['test_accuracy']:.2f}% "
            f"| {'-' if best is None else f'{best:.2f}%'} "
            f"| {row['remaining_percent']:.2f}% | {row['epochs']} |")
    return "\n".join(lines) + "\n"
