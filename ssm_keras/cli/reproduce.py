"""Reproduces the paper's table: runs the experiments, aggregates, plots.

    ssm-reproduce --data_dir=../shared/data
    python -m ssm_keras.cli.reproduce --experiments=fcn_mnist_signed,fcn_mnist_baseline \\
        --seeds=0,1,2 --out_dir=runs/reproduce --epochs=5
    ssm-reproduce --experiments=conv4_cifar10_signed --compress=5
    ssm-reproduce --aggregate_only     # table and plots of what is finished

Each missing run is one subprocess

    python -m ssm_keras.train --flagfile=<flags_dir>/<experiment>.flags --seed=S \\
        --model_dir=<out_dir>/<experiment>/seed<S> [--data_dir=...] [training flags]

where the training flags (any flag of `ssm_keras.train` given here, e.g.
`--epochs=5` for a shorter schedule) come after the flagfile and override
it; `--flags_dir` defaults to the shipped recipes. A run whose
`results.json` says it finished is skipped; an interrupted one resumes, and
one that diverged is refused by `ssm_keras.train` (a failed run).
`--compress=K` runs each flagfile's schedule K times shorter on the same
learning-rate path (`reproduction.compressed_schedule`).

Then, from every finished run's `results.json`, it writes
`<out_dir>/table.md` and `table.json` (mean and standard deviation over
seeds next to the paper's numbers) and the plots of `reproduction.write_plots`.
A failed run ends the command with one `error:` line (exit 1) after the
table of the others.
"""

import os

from absl import flags

from ssm_keras import files
from ssm_keras.cli import shell, training_flags
from ssm_keras.experiments import launch, reproduction


def define_flags(flag_values=flags.FLAGS):
    """Defines the `ReproduceConfig` flags and every flag of `ssm_keras.train`
    (passed on to each run); `--help` lists the former."""
    shell.define_flags(reproduction.ReproduceConfig, flag_values)
    training_flags.define(flag_values)
    flags.adopt_module_key_flags(reproduction, flag_values)


def given_training_flags(settings, flag_values):
    """The training flags given (but `--data_dir`), checked against `settings`."""
    extra = training_flags.given(flag_values, own=("data_dir",))
    scheduled = [flag for flag in extra if flag[2:].split("=", 1)[0] in reproduction.COMPRESSED]
    if settings.compress > 1 and scheduled:
        raise reproduction.ReproduceError(
            f"--compress sets {', '.join(f'--{name}' for name in reproduction.COMPRESSED)} "
            f"itself; drop {' '.join(scheduled)}")
    if extra and settings.aggregate_only:
        raise reproduction.ReproduceError(
            f"--aggregate_only trains nothing; drop {' '.join(extra)}")
    return extra


def train_missing(settings, recipes, seeds, data_dir, extra, runner=launch.subprocess_runner):
    """Trains every missing run of the experiments of `recipes` (`{experiment:
    reproduction.flagfile_settings(...)}`), once the settings of all are
    checked (`launch.check_runs`); returns `{model_dir: status}`."""
    runs = {}
    for experiment, recipe in recipes.items():
        flagfile = os.path.join(settings.flags_dir, f"{experiment}.flags")
        schedule = reproduction.compressed_schedule(recipe, settings.compress)
        for seed in seeds:
            model_dir = reproduction.run_dir(settings.out_dir, experiment, seed)
            runs[model_dir] = launch.train_command(flagfile, model_dir, seed, data_dir,
                                                   [*schedule, *extra])
    launch.check_runs(runs)
    return {model_dir: launch.train_if_missing(command_line, model_dir, runner)
            for model_dir, command_line in runs.items()}


def run_command(flag_values, runner=launch.subprocess_runner):
    """Trains what is missing, then writes the table and the plots; returns
    the table. Raises `ReproduceError` when a run failed (the table holds
    the others)."""
    settings = shell.from_flags(reproduction.ReproduceConfig, flag_values)
    experiments, seeds = settings.experiment_names(), settings.seed_numbers()
    if settings.compress < 1:
        raise reproduction.ReproduceError(
            f"--compress={settings.compress}: give a positive integer (1: no compression)")
    launch.check_out_dir(settings.out_dir)
    if settings.aggregate_only and not os.path.isdir(settings.out_dir):
        raise reproduction.ReproduceError(
            f"--aggregate_only: --out_dir={settings.out_dir} does not exist; name the folder "
            "that holds the runs")
    extra = given_training_flags(settings, flag_values)
    recipes = {experiment: reproduction.flagfile_settings(settings.flags_dir, experiment)
               for experiment in experiments}
    statuses = {} if settings.aggregate_only else train_missing(
        settings, recipes, seeds, flag_values["data_dir"].value, extra, runner)
    table = reproduction.aggregate(settings.out_dir, experiments, seeds, recipes)
    text = reproduction.format_table(table, extra)
    print(text)
    with launch.writing_into(settings.out_dir):
        os.makedirs(settings.out_dir, exist_ok=True)
        files.write_text_atomically(os.path.join(settings.out_dir, "table.md"), text)
        files.write_json_atomically(os.path.join(settings.out_dir, "table.json"), {
            "extra_flags": extra, "seeds": seeds, "runs": statuses, "experiments": table})
        reproduction.write_plots(settings.out_dir, table)
    failed = [path for path, status in statuses.items() if status == "failed"]
    if failed:
        raise reproduction.ReproduceError(f"the runs in {', '.join(failed)} failed; see their "
                                          "output above")
    unusable = reproduction.unusable_runs(settings.out_dir, experiments, seeds)
    if unusable:
        raise reproduction.ReproduceError(
            "the table leaves out runs that did not finish: "
            + "; ".join(f"{folder} ({why})" for folder, why in unusable.items()))
    return table


def cli():
    """The `ssm-reproduce` console script."""
    shell.main(define_flags, run_command,
               on_interrupt="interrupted; the same command skips the finished runs and resumes "
               "the others")


if __name__ == "__main__":
    cli()
