"""The supermask-as-initialisation study (DESIGN section 5), end to end.

    python scripts/supermask_init_study.py --data_dir=../shared/data
    # a CPU-sized version (Wide ResNet-28-1, 2 epochs per regime, 2,000 examples):
    python scripts/supermask_init_study.py --runs_dir=runs/study_small \\
        --width=1 --epochs=2 --max_examples=2000 --validation_size=500

Three regimes from the same initial weights (the same `--seed`, default 0,
and the flagfiles' `--weight_init`), each one run of `ssm_keras.train`:

1. `weights`: `flags/wrn28_cifar10_weights.flags`, the weights train;
2. `mask`: `flags/wrn28_cifar10_mask.flags`, only a binary mask trains;
3. `mask_then_weights`: `flags/wrn28_cifar10_mask_then_weights.flags` with
   `--mask_from=<runs_dir>/mask`: the mask of (2) is frozen and its
   surviving weights train at learning rate 1e-5. DESIGN section 5 says "the
   best mask of (2)": this is the mask (2) ends with (its `model.keras`);
   no best-validation checkpoint is kept.

Extra flags (any flag of `ssm_keras.train`) apply to all three and override
the flagfiles. Finished runs are skipped. Then it writes, into `--runs_dir`:

- `validation_accuracy.png`: the three validation-accuracy curves, with (3)
  drawn after (2) (epochs `E2 + 1, ...`), since it continues from it;
- `study.md` and `study.json`: per regime the test accuracy, the best
  validation accuracy, the remaining weights and the epochs.
"""

import argparse
import json
import os
import pathlib
import sys

from ssm_keras import launch, plots, run_dir

REPO = pathlib.Path(__file__).resolve().parents[1]

REGIMES = ("weights", "mask", "mask_then_weights")
LABELS = {
    "weights": "1. weights only",
    "mask": "2. mask only",
    "mask_then_weights": "3. mask then weights (lr 1e-5)",
}


def parse_args(argv):
    """`(args, extra)`: this script's flags, and the flags passed to training."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--seed", type=int, default=0, help="the shared initial weights")
    parser.add_argument("--runs_dir", default="runs/supermask_init")
    parser.add_argument("--data_dir", default=None, help="passed to ssm_keras.train")
    parser.add_argument("--flags_dir", default=str(REPO / "flags"))
    args, extra = parser.parse_known_args(argv)
    launch.check_training_flags(parser, extra)
    return args, extra


def regime_dir(runs_dir, regime):
    return os.path.join(runs_dir, regime)


def regime_command(args, extra, regime):
    """The training command of one regime; (3) takes its mask from (2)."""
    flagfile = os.path.join(args.flags_dir, f"wrn28_cifar10_{regime}.flags")
    more = list(extra)
    if regime == "mask_then_weights":
        more.append(f"--mask_from={regime_dir(args.runs_dir, 'mask')}")
    return launch.train_command(flagfile, regime_dir(args.runs_dir, regime), args.seed,
                                   args.data_dir, more)


def train_regimes(args, extra, runner=launch.subprocess_runner):
    """Runs the missing regimes in order; stops when one fails.

    Returns `{regime: "finished" | "trained" | "failed"}`.
    """
    statuses = {}
    for regime in REGIMES:
        statuses[regime] = launch.train_if_missing(
            regime_command(args, extra, regime), regime_dir(args.runs_dir, regime), runner)
        if statuses[regime] == "failed":
            break
    return statuses


def study_curves(histories):
    """Validation-accuracy curves; regime 3 starts after regime 2's last epoch.

    Args:
        histories: `{regime: history records}` of the finished regimes.
    """
    curves = []
    for regime in REGIMES:
        history = histories.get(regime)
        if not history:
            continue
        offset = len(histories.get("mask", [])) if regime == "mask_then_weights" else 0
        data = plots.curve_data(history)
        if "val_accuracy" in data:
            curves.append({"label": LABELS[regime],
                           "epochs": [epoch + offset for epoch in data["epoch"]],
                           "values": data["val_accuracy"]})
    return curves


def summary_rows(runs):
    """One row per finished regime: accuracies (%), remaining weights, epochs."""
    rows = []
    for regime in REGIMES:
        if regime not in runs:
            continue
        results, _ = runs[regime]
        best = results.get("best_validation_accuracy")
        rows.append({
            "regime": regime,
            "test_accuracy": 100 * results["test_accuracy"],
            "best_validation_accuracy": None if best is None else 100 * best,
            "remaining_percent": results["remaining_percent"],
            "epochs": results["epochs"],
        })
    return rows


def format_summary(rows, extra):
    lines = [
        "Supermask as initialisation: Wide ResNet-28 on CIFAR-10, three regimes from the "
        "same initial weights. "
        + (f"Flags: the flagfiles with {' '.join(extra)}." if extra else "Flags: the flagfiles'."),
        "",
        "| regime | test accuracy | best validation accuracy | remaining weights | epochs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        best = row["best_validation_accuracy"]
        lines.append(
            f"| {LABELS[row['regime']]} | {row['test_accuracy']:.2f}% "
            f"| {'-' if best is None else f'{best:.2f}%'} "
            f"| {row['remaining_percent']:.2f}% | {row['epochs']} |")
    return "\n".join(lines) + "\n"


def main(argv=None, runner=launch.subprocess_runner):
    """Trains the missing regimes, then writes the plot and the summary.

    Returns 0, or 1 when a regime failed.
    """
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    statuses = train_regimes(args, extra, runner)
    runs = {regime: plots.load_run(regime_dir(args.runs_dir, regime)) for regime in REGIMES
            if run_dir.is_finished(regime_dir(args.runs_dir, regime))}
    curves = study_curves({regime: history for regime, (_, history) in runs.items()})
    if curves:
        plots.plot_accuracy_curves(
            curves, os.path.join(args.runs_dir, "validation_accuracy.png"),
            "supermask as initialisation: validation accuracy")
    rows = summary_rows(runs)
    text = format_summary(rows, extra)
    os.makedirs(args.runs_dir, exist_ok=True)
    with open(os.path.join(args.runs_dir, "study.md"), "w", encoding="utf-8") as file:
        file.write(text)
    with open(os.path.join(args.runs_dir, "study.json"), "w", encoding="utf-8") as file:
        json.dump({"seed": args.seed, "extra_flags": extra, "runs": statuses, "regimes": rows},
                  file, indent=2)
    print(text)
    if "failed" in statuses.values():
        failed = next(regime for regime, status in statuses.items() if status == "failed")
        print(f"error: regime {failed} failed; see its output above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
