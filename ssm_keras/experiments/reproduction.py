"""Reproduction of the paper's table: its numbers, the experiments, and
the table and plots of finished runs (the work of `ssm_keras.cli.reproduce`).

Experiments are the names of the shipped recipes (`ssm_keras/recipes/`)
that belong to the paper's results table (Koster et al., ICLR 2022),
`<model>_<data>_signed` and `<model>_<data>_baseline`, and the recipes found
with `ssm_keras.tune`, `<model>_<data>_signed_tuned` (`TUNED`; a row of their
own in the table).

`compressed_schedule(settings, K)` runs a flagfile's schedule K times
shorter, with the same path of learning rate and weight decay:
`--epochs=ceil(E / K)`, `--lr_decay_epochs=D / K` (exponential schedules) or
`--plateau_patience=ceil(P / K)` (plateau schedules) for the flagfile's `E`,
`D` and `P` (so K = 5 makes the paper's 100 epochs with decay every 10 into
20 epochs with decay every 2).

`aggregate` and `format_table`: per model, the mean and sample standard
deviation over seeds (`sqrt(sum (x - mean)^2 / (n - 1))`) of the test
accuracy and of the remaining weights, next to the paper's numbers, with the
epochs trained (so a shortened schedule shows). `write_plots`
(`ssm_keras.plotting`):

- `<out_dir>/accuracy_vs_remaining.png`: test accuracy against remaining
  weights, ours (mean and standard deviation) and the paper's;
- `<out_dir>/validation_accuracy.png`: mean validation-accuracy curve per
  experiment, with a band of one standard deviation;
- `<out_dir>/<experiment>/mask_composition.png`: per-layer kept, inverted
  and hidden weights, averaged over seeds;
- every run directory: `mask_composition.png` and `training_curves.png`.
"""

import dataclasses
import math
import os

from ssm_keras import plotting
from ssm_keras.errors import UserError
from ssm_keras.experiments import launch
from ssm_keras.paper import PAPER
from ssm_keras.settings import comma_separated, recipes_dir, setting
from ssm_keras.training import run_dir as run_folder

VARIANTS = ("signed", "baseline")
# Flagfiles of recipes found with ssm_keras.tune (variant `signed_tuned`).
TUNED = ("fcn_mnist_signed_tuned",)
# Settings that say where and how fast a run went, not what it trained.
NOT_RECIPE = {"epochs", "model_dir", "data_dir", "seed", "resume", "overwrite", "verbose",
              "strategy", "tpu", "jit_compile", "steps_per_execution", "run_eagerly"}
# Flags that `--compress` derives from each flagfile.
COMPRESSED = ("epochs", "lr_decay_epochs", "plateau_patience")
EXPERIMENTS = tuple(f"{model}_{variant}" for model in PAPER for variant in VARIANTS)
ALLOWED = EXPERIMENTS + TUNED


class ReproduceError(UserError):
    """A bad setting of `ssm_keras.cli.reproduce`."""


@dataclasses.dataclass
class ReproduceConfig:
    """The settings of a reproduction; the field names are the
    `ssm_keras.cli.reproduce` flags (besides those of `ssm_keras.train`)."""

    experiments: str = setting(
        ",".join(EXPERIMENTS),
        "Comma-separated names of shipped recipes (default: the whole table).")
    seeds: str = setting("0,1,2", "Comma-separated seeds.")
    out_dir: str = setting("runs/reproduce", "Folder of the runs, the table and the plots.")
    flags_dir: str = setting(
        recipes_dir(),
        "Folder of the flagfiles <experiment>.flags (default: the shipped recipes).")
    compress: int = setting(
        1, "Run each flagfile's schedule this many times shorter (1: as it is).")
    aggregate_only: bool = setting(
        False, "Train nothing; write the table and plots of the finished runs.")

    def experiment_names(self):
        """The experiments of `--experiments`; `ReproduceError` for an unknown
        one or none."""
        names = comma_separated(self.experiments)
        if not names:
            raise ReproduceError(f"--experiments is empty; choose from {', '.join(ALLOWED)}")
        unknown = sorted(set(names) - set(ALLOWED))
        if unknown:
            raise ReproduceError(f"--experiments: unknown experiments {unknown}; choose from "
                                 f"{', '.join(ALLOWED)}")
        return names

    def seed_numbers(self):
        """The seeds of `--seeds`; `ReproduceError` unless they are integers."""
        try:
            return [int(seed) for seed in self.seeds.split(",")]
        except ValueError:
            raise ReproduceError(f"--seeds={self.seeds}: give comma-separated integers, "
                                 "e.g. 0,1,2") from None


def split_experiment(name):
    """`("conv4_cifar10", "signed")` from `"conv4_cifar10_signed"`;
    `("fcn_mnist", "signed_tuned")` from `"fcn_mnist_signed_tuned"`."""
    for variant in ("signed_tuned", *VARIANTS):
        if name.endswith(f"_{variant}"):
            return name[:-len(variant) - 1], variant
    raise ValueError(f"not an experiment name: {name!r}")


def run_dir(out_dir, experiment, seed):
    """`<out_dir>/<experiment>/seed<seed>`: the folder of one run."""
    return os.path.join(out_dir, experiment, f"seed{seed}")


def compressed_schedule(settings, factor):
    """The flags that run the schedule of `settings` (a flagfile's settings,
    None if it has none) `factor` times shorter on the same learning-rate and
    weight-decay path: fewer epochs, and the decay period or the plateau
    patience of its `--lr_schedule` shortened alike."""
    if factor == 1 or settings is None:
        return []
    flags = [f"--epochs={math.ceil(settings['epochs'] / factor)}"]
    if settings["lr_schedule"] == "exponential":
        flags.append(f"--lr_decay_epochs={settings['lr_decay_epochs'] / factor:g}")
    if settings["lr_schedule"] == "plateau":
        flags.append(f"--plateau_patience={math.ceil(settings['plateau_patience'] / factor)}")
    return flags


# Aggregation.
def mean_std(values):
    """`(mean, sample standard deviation)`; the deviation is None for n < 2."""
    values = list(values)
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def load_results(out_dir, experiment, seeds):
    """`{seed: results dict}` of the finished runs of one experiment (not
    the diverged ones, nor damaged files: `run_dir.is_finished`)."""
    found = {seed: run_folder.finished_results(run_dir(out_dir, experiment, seed))
             for seed in seeds}
    return {seed: results for seed, results in found.items() if results is not None}


def unusable_runs(out_dir, experiments, seeds):
    """`{run folder: why}` of the runs of `experiments` and `seeds` whose
    folder exists but holds no finished run: a diverged, unfinished or
    damaged one, which the table leaves out."""
    unusable = {}
    for experiment in experiments:
        for seed in seeds:
            folder = run_dir(out_dir, experiment, seed)
            if os.path.isdir(folder):
                try:
                    run_folder.read_results(folder)
                except run_folder.RunDirError as error:
                    unusable[folder] = str(error)
    return unusable


def flagfile_settings(flags_dir, experiment):
    """The `TrainConfig` fields, as a dict, that `<flags_dir>/<experiment>.flags`
    gives (its defaults included); None if there is no such flagfile."""
    path = os.path.join(flags_dir, f"{experiment}.flags")
    if not os.path.isfile(path):
        return None
    return dataclasses.asdict(launch.train_config([f"--flagfile={path}"]))


def differing_flags(expected, runs):
    """`--name=value` of every setting (but `epochs` and those that change
    neither the recipe nor the data, `NOT_RECIPE`) in which a run's recorded
    flags differ from the flagfile's, e.g. `--max_examples=2000`."""
    found = set()
    for results in runs:
        for name, value in results.get("flags", {}).items():
            if name in expected and name not in NOT_RECIPE and value != expected[name]:
                found.add(f"--{name}={value}")
    return sorted(found)


def aggregate(out_dir, experiments, seeds, recipes):
    """Per experiment: seeds found, epochs trained and the flagfile's, other
    flags that differ from the flagfile, and mean and standard deviation of
    test accuracy (%), remaining weights (%) and their count. `recipes`:
    `{experiment: flagfile_settings(...)}`."""
    table = {}
    for experiment in experiments:
        runs = load_results(out_dir, experiment, seeds)
        expected = recipes[experiment] or {}
        record = {"seeds": sorted(runs), "epochs": sorted({r["epochs"] for r in runs.values()}),
                  "flagfile_epochs": expected.get("epochs"),
                  "other_flags": differing_flags(expected, runs.values())}
        for key, scale in (("test_accuracy", 100.0), ("remaining_percent", 1.0),
                           ("remaining_weights", 1.0)):
            mean, std = mean_std(scale * r[key] for r in runs.values())
            record[key] = {"mean": mean, "std": std}
        table[experiment] = record
    return table


def _cell(stats, digits=2, suffix=""):
    if stats["mean"] is None:
        return "-"
    text = f"{stats['mean']:.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {stats['std']:.{digits}f}"
    return text + suffix


def _count(stats):
    if stats["mean"] is None:
        return "-"
    text = f"{stats['mean'] / 1000:.1f}K"
    return text if stats["std"] is None else f"{text} ± {stats['std'] / 1000:.1f}K"


def _runs(record):
    if not record["seeds"]:
        return "-"
    epochs = "/".join(map(str, record["epochs"])) or "-"
    full = record.get("flagfile_epochs")
    shortened = full is not None and any(epoch != full for epoch in record["epochs"])
    other = record.get("other_flags") or []
    return (f"{len(record['seeds'])} × {epochs}" + (f" of {full}" if shortened else "")
            + "".join(f"; {flag}" for flag in other))


def format_table(table, extra=()):
    """The markdown table: ours (mean ± std over seeds) next to the paper."""
    lines = [
        "Test accuracy (%) and remaining weights: ours are the mean ± sample standard "
        "deviation over seeds; runs = seeds × epochs trained (`of N`: shorter than the "
        "flagfile's, the paper's, N epochs), then any flags that differ from the flagfile."
        + (f" Extra training flags of this invocation: {' '.join(extra)}." if extra else ""),
        "",
        "| model | data | baseline (paper) | baseline (ours) | runs | signed supermask (paper) "
        "| signed supermask (ours) | remaining (paper) | remaining (ours) | runs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    empty = {"seeds": [], "epochs": [],
             **{k: {"mean": None, "std": None}
                for k in ("test_accuracy", "remaining_percent", "remaining_weights")}}
    for model, paper in PAPER.items():
        rows = [(paper.model, table.get(f"{model}_baseline"), table.get(f"{model}_signed")),
                (f"{paper.model}, tuned recipe", None, table.get(f"{model}_signed_tuned"))]
        for label, base, signed in rows:
            if base is None and signed is None:
                continue
            base, signed = base or empty, signed or empty
            remaining = _cell(signed["remaining_percent"], suffix="%")
            if signed["remaining_weights"]["mean"] is not None:
                remaining += f" ({_count(signed['remaining_weights'])})"
            lines.append(
                f"| {label} | {paper.data} | {paper.baseline_accuracy:.2f} "
                f"| {_cell(base['test_accuracy'])} | {_runs(base)} | {paper.signed_accuracy:.2f} "
                f"| {_cell(signed['test_accuracy'])} | {paper.remaining_percent:.2f}% "
                f"({paper.remaining_count}) | {remaining} | {_runs(signed)} |"
            )
    return "\n".join(lines) + "\n"


# Plots.
def mean_curve(histories, key):
    """Mean and standard deviation of `plotting.curve_data(history)[key]` per
    epoch, over the runs that reached that epoch."""
    series = [plotting.curve_data(history).get(key, []) for history in histories]
    epochs, means, stds = [], [], []
    for index in range(max(map(len, series), default=0)):
        mean, std = mean_std(values[index] for values in series if len(values) > index)
        epochs.append(index + 1)
        means.append(mean)
        stds.append(std or 0.0)
    return {"epochs": epochs, "values": means, "std": stds}


def write_plots(out_dir, table):
    """Per-run plots, per-experiment mask composition, and the two summaries."""
    paths = []
    points, curves = [], []
    for experiment, record in table.items():
        model, variant = split_experiment(experiment)
        folders = [run_dir(out_dir, experiment, seed) for seed in record["seeds"]]
        runs = [plotting.load_run(folder) for folder in folders]
        if not runs:
            continue
        for folder, run in zip(folders, runs):
            paths += plotting.plot_run(folder, run=run)
        label = f"{PAPER[model].model} {variant.replace('_', ' ')}"
        if variant != "baseline":
            layers = plotting.mean_layers([results["layers"] for results, _ in runs])
            paths.append(plotting.plot_mask_composition(
                layers, os.path.join(out_dir, experiment, plotting.COMPOSITION_FILE),
                f"{label}: mean over {len(runs)} seed(s)"))
        points.append({
            "label": label,
            "remaining_percent": record["remaining_percent"]["mean"],
            "remaining_std": record["remaining_percent"]["std"],
            "accuracy": record["test_accuracy"]["mean"],
            "accuracy_std": record["test_accuracy"]["std"],
        })
        paper = PAPER[model]
        if variant != "signed_tuned":  # the paper's point is the signed one's
            signed = variant == "signed"
            points.append({"label": label, "paper": True,
                           "remaining_percent": paper.remaining_percent if signed else 100.0,
                           "accuracy": paper.signed_accuracy if signed
                           else paper.baseline_accuracy})
        curve = mean_curve([history for _, history in runs], "val_accuracy")
        if curve["epochs"]:
            curves.append({"label": label, **curve})
    if points:
        paths.append(plotting.plot_accuracy_vs_remaining(
            points, os.path.join(out_dir, "accuracy_vs_remaining.png"),
            "test accuracy against remaining weights (hollow: paper)"))
    if curves:
        paths.append(plotting.plot_accuracy_curves(
            curves, os.path.join(out_dir, "validation_accuracy.png"),
            "validation accuracy, mean over seeds"))
    return paths
