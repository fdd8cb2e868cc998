"""The supermask-as-initialisation study (docs/study.md), end to end.

    python scripts/supermask_init_study.py --data_dir=../shared/data
    # Wide ResNet-28-1 on MNIST, 3 epochs per run:
    python scripts/supermask_init_study.py --data_dir=../shared/data \\
        --runs_dir=runs/study_mnist --dataset=mnist --width=1 --epochs=3

Three regimes from the same initial weights (the same `--seed`, default 0,
and the flagfiles' `--weight_init`), each one run of `ssm_keras.train`:

1. `weights`: `flags/wrn28_cifar10_weights.flags`, the weights train;
2. `mask`: `flags/wrn28_cifar10_mask.flags`, only a binary mask trains
   (`m = [s > 0]`, that is `sigmoid(s) > 0.5`), with Adam at 0.01 reduced
   on plateaus (the blog's recipe); with `--bernoulli` (the default) also
   `mask_bernoulli`: the same run with a Bernoulli mask (`m ~
   Bernoulli(sigmoid(s))` in training, `[sigmoid(s) > 0.5]` at inference)
   from the same scores (`--score_init` of the binary mask; no threshold,
   so `--tau_fraction` is left at its default), trained as Zhou et al. did:
   SGD at a very large constant learning rate (`--bernoulli_learning_rate`);
3. `mask_then_weights`: `flags/wrn28_cifar10_mask_then_weights.flags` with
   `--mask_from=<runs_dir>/mask`: the binary mask of (2) is frozen and its
   surviving weights train with Adam at learning rate 1e-5. The study's
   description takes "the best mask of (2)": this is the mask (2) ends with
   (its `model.keras`); no best-validation checkpoint is kept.

Extra flags (any flag of `ssm_keras.train`, such as `--dataset=mnist`) apply
to every run and override the flagfiles; the earlier recipe (SGD for the
masks and the fine-tuning) is `--optimizer=sgd --lr_schedule=constant
--bernoulli_learning_rate=0.01`. Finished runs are skipped. Then it writes,
into `--runs_dir`:

- `validation_accuracy.png`: the validation-accuracy curves, with (3) drawn
  after (2) (epochs `E2 + 1, ...`), since it continues from it;
- `layer_utilisation.png`: per masked layer of each trained mask (2 and
  2b; 3 keeps the mask of 2), the percentage of its weights kept, against
  the layer's number of weights;
- `study.md` and `study.json`: per run the test accuracy, the best
  validation accuracy, the remaining weights and the epochs, and per layer
  of each mask its weights and the percentage kept.
"""

import argparse
import os
import pathlib
import sys

from ssm_keras import launch, plots, run_dir
from ssm_keras.config import TrainConfig
from ssm_keras.layers import DEFAULT_SCORE_INITIALIZERS

REPO = pathlib.Path(__file__).resolve().parents[1]

# Each run of the study, in training order: `{run: (regime, extra flags)}`.
# The Bernoulli mask starts from the binary mask's scores; it has no
# threshold, so the flagfile's `--tau_fraction` goes back to its default.
# It trains with SGD at `--bernoulli_learning_rate` (added by `regime_command`).
RUNS = {
    "weights": ("weights", ()),
    "mask": ("mask", ()),
    "mask_bernoulli": ("mask", ("--mask=bernoulli",
                                f"--score_init={DEFAULT_SCORE_INITIALIZERS['binary']}",
                                f"--tau_fraction={TrainConfig.tau_fraction}",
                                "--optimizer=sgd", "--lr_schedule=constant")),
    "mask_then_weights": ("mask_then_weights", ()),
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


def parse_args(argv):
    """`(args, extra)`: this script's flags, and the flags passed to training."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--seed", type=int, default=0, help="the shared initial weights")
    parser.add_argument("--runs_dir", default="runs/supermask_init")
    parser.add_argument("--data_dir", default=None, help="passed to ssm_keras.train")
    parser.add_argument("--flags_dir", default=str(REPO / "flags"))
    parser.add_argument("--bernoulli", action="store_true", default=True,
                        help="also train regime 2 with a Bernoulli mask, mask_bernoulli "
                             "(the default)")
    parser.add_argument("--nobernoulli", dest="bernoulli", action="store_false",
                        help="train regime 2 with the binary mask only")
    parser.add_argument("--bernoulli_learning_rate", type=float,
                        default=BERNOULLI_LEARNING_RATE,
                        help="the SGD learning rate of mask_bernoulli (default: %(default)s)")
    args, extra = parser.parse_known_args(argv)
    launch.check_training_flags(parser, extra)
    launch.check_runs_dir(parser, args.runs_dir)
    return args, extra


def selected_runs(args):
    """The runs of the study, in training order (`mask_bernoulli` with `--bernoulli`)."""
    return [run for run in RUNS if args.bernoulli or run != "mask_bernoulli"]


def regime_dir(runs_dir, run):
    return os.path.join(runs_dir, run)


def regime_command(args, extra, run):
    """The training command of one run; (3) takes its mask from (2), the binary one."""
    regime, run_flags = RUNS[run]
    flagfile = os.path.join(args.flags_dir, f"wrn28_cifar10_{regime}.flags")
    if run == "mask_bernoulli":
        run_flags = (*run_flags, f"--learning_rate={args.bernoulli_learning_rate}")
    more = [*run_flags, *extra]
    schedules = [flag.split("=", 1)[1] for flag in more if flag.startswith("--lr_schedule=")]
    if schedules and schedules[-1] != "plateau":
        # The mask flagfile's plateau settings would be refused as ignored.
        more += [f"--plateau_patience={TrainConfig.plateau_patience}",
                 f"--plateau_factor={TrainConfig.plateau_factor}"]
    if regime == "mask_then_weights":
        more.append(f"--mask_from={regime_dir(args.runs_dir, 'mask')}")
    return launch.train_command(flagfile, regime_dir(args.runs_dir, run), args.seed,
                                args.data_dir, more)


def train_regimes(args, extra, runner=launch.subprocess_runner):
    """Runs the missing runs in order; stops when one fails.

    Returns `{run: "finished" | "trained" | "failed"}`.
    """
    statuses = {}
    for run in selected_runs(args):
        statuses[run] = launch.train_if_missing(
            regime_command(args, extra, run), regime_dir(args.runs_dir, run), runner)
        if statuses[run] == "failed":
            break
    return statuses


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
        data = plots.curve_data(history)
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
            data = plots.composition_data(runs[run][0]["layers"])
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


def study_title(runs):
    """`Wide ResNet-28-<width> on <dataset>`, from the first finished run's flags."""
    flags = next(iter(runs.values()))[0].get("flags", {}) if runs else {}
    return (f"Wide ResNet-28-{flags.get('width', '?')} on {flags.get('dataset', '?')}")


def format_summary(title, rows, extra):
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


def main(argv=None, runner=launch.subprocess_runner):
    """Trains the missing regimes, then writes the plot and the summary.

    Returns 0, or 1 when a regime failed.
    """
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    statuses = train_regimes(args, extra, runner)
    runs = {run: plots.load_run(regime_dir(args.runs_dir, run)) for run in selected_runs(args)
            if run_dir.is_finished(regime_dir(args.runs_dir, run))}
    title = study_title(runs)
    curves = study_curves({run: history for run, (_, history) in runs.items()})
    if curves:
        plots.plot_accuracy_curves(
            curves, os.path.join(args.runs_dir, "validation_accuracy.png"),
            f"supermask as initialisation, {title}: validation accuracy")
    utilisation = utilisation_series(runs)
    if utilisation:
        plots.plot_layer_utilisation(
            utilisation, os.path.join(args.runs_dir, "layer_utilisation.png"),
            f"supermask as initialisation, {title}: weights kept per layer")
    rows = summary_rows(runs)
    text = format_summary(title, rows, extra)
    os.makedirs(args.runs_dir, exist_ok=True)
    with open(os.path.join(args.runs_dir, "study.md"), "w", encoding="utf-8") as file:
        file.write(text)
    run_dir.write_json_atomically(
        os.path.join(args.runs_dir, "study.json"),
        {"seed": args.seed, "extra_flags": extra, "title": title, "statuses": statuses,
         "runs": rows, "layer_utilisation": utilisation})
    print(text)
    if "failed" in statuses.values():
        failed = next(run for run, status in statuses.items() if status == "failed")
        print(f"error: run {failed} failed; see its output above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
