"""The supermask-as-initialisation study (docs/study.md), end to end.

    ssm-study --data_dir=../shared/data
    # Wide ResNet-28-1 on MNIST, 3 epochs per run:
    python -m ssm_keras.cli.study --data_dir=../shared/data \\
        --out_dir=runs/study_mnist --dataset=mnist --width=1 --epochs=3

Trains the runs of `ssm_keras.experiments.init_study` (weights only; a binary mask, and
with `--bernoulli` a Bernoulli one; the binary mask then its weights) from
the same initial weights, `--seed` (default 0). Training flags (any flag of
`ssm_keras.train`, such as `--dataset=mnist`) apply to every run and
override the recipes; the earlier recipe (SGD for the masks and the
fine-tuning) is `--optimizer=sgd --lr_schedule=constant
--bernoulli_learning_rate=0.01`. Finished runs are skipped; a failed run
stops the training and ends the command with one `error:` line (exit 1)
after the summary of the others. It writes, into `--out_dir`:

- `validation_accuracy.png`: the validation-accuracy curves, with (3) drawn
  after (2) (epochs `E2 + 1, ...`), since it continues from it;
- `layer_utilisation.png`: per masked layer of each trained mask (2 and
  2b; 3 keeps the mask of 2), the percentage of its weights kept, against
  the layer's number of weights;
- `study.md` and `study.json`: per run the test accuracy, the best
  validation accuracy, the remaining weights and the epochs, and per layer
  of each mask its weights and the percentage kept.
"""

import os

from absl import flags

from ssm_keras import files, plotting
from ssm_keras.cli import shell, training_flags
from ssm_keras.errors import UserError
from ssm_keras.experiments import init_study, launch
from ssm_keras.training import run_dir


class RunFailed(UserError):
    """A run of the study failed."""


def define_flags(flag_values=flags.FLAGS):
    """Defines the `StudyConfig` flags and every flag of `ssm_keras.train`
    (passed on to each run); `--help` lists the former."""
    shell.define_flags(init_study.StudyConfig, flag_values)
    training_flags.define(flag_values)
    flags.adopt_module_key_flags(init_study, flag_values)


def study_commands(settings, seed, data_dir, extra):
    """`{run: (model_dir, training shell)}` of the selected runs, in order."""
    return {run: (init_study.run_folder(settings.out_dir, run),
                  init_study.training_command(settings, seed, data_dir, extra, run))
            for run in init_study.selected_runs(settings)}


def train_runs(commands, runner=launch.subprocess_runner):
    """Runs the missing runs of `commands` (`study_commands`) in order, once
    the settings of all are checked (`launch.check_runs`); stops when one
    fails.

    Returns `{run: "finished" | "trained" | "failed"}`.
    """
    launch.check_runs(dict(commands.values()))
    statuses = {}
    for run, (model_dir, command_line) in commands.items():
        statuses[run] = launch.train_if_missing(command_line, model_dir, runner)
        if statuses[run] == "failed":
            break
    return statuses


def run_command(flag_values, runner=launch.subprocess_runner):
    """Trains the missing runs, then writes the plots and the summary;
    returns the summary's rows. Raises `RunFailed` when a run failed."""
    settings = shell.from_flags(init_study.StudyConfig, flag_values)
    seed, data_dir = flag_values["seed"].value, flag_values["data_dir"].value
    launch.check_out_dir(settings.out_dir)
    extra = training_flags.given(flag_values, own=("seed", "data_dir"))
    commands = study_commands(settings, seed, data_dir, extra)
    statuses = train_runs(commands, runner)
    runs = {}
    for run, (model_dir, _) in commands.items():
        results = run_dir.finished_results(model_dir)
        if results is not None:
            runs[run] = plotting.load_run(model_dir, results)
    _, first_command = next(iter(commands.values()))
    title = init_study.study_title(launch.run_config(first_command))
    curves = init_study.study_curves({run: history for run, (_, history) in runs.items()})
    utilisation = init_study.utilisation_series(runs)
    rows = init_study.summary_rows(runs)
    text = init_study.format_summary(title, rows, extra)
    print(text)
    with launch.writing_into(settings.out_dir):
        os.makedirs(settings.out_dir, exist_ok=True)
        if curves:
            plotting.plot_accuracy_curves(
                curves, os.path.join(settings.out_dir, "validation_accuracy.png"),
                f"supermask as initialisation, {title}: validation accuracy")
        if utilisation:
            plotting.plot_layer_utilisation(
                utilisation, os.path.join(settings.out_dir, "layer_utilisation.png"),
                f"supermask as initialisation, {title}: weights kept per layer")
        files.write_text_atomically(os.path.join(settings.out_dir, "study.md"), text)
        files.write_json_atomically(
            os.path.join(settings.out_dir, "study.json"),
            {"seed": seed, "extra_flags": extra, "title": title, "statuses": statuses,
             "runs": rows, "layer_utilisation": utilisation})
    if "failed" in statuses.values():
        failed = next(run for run, status in statuses.items() if status == "failed")
        raise RunFailed(f"run {failed} failed; see its output above")
    return rows


def cli():
    """The `ssm-study` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
