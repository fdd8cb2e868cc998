"""The `ssm-plots` command: the figures of a run, finished or not.

    ssm-plots --model_dir=RUN_DIR [--out_dir=DIR]

writes, from the run's `results.json` and `history.jsonl` (see
`ssm_keras.training.run_dir`), into `--out_dir` (default: the run directory), with
`ssm_keras.plotting`:

- `mask_composition.png`: per masked layer, the percentages of weights kept
  (`m = +1`), inverted (`m = -1`) and hidden (`m = 0`), which add up to 100;
  a second panel zooms in on the remaining weights (kept + inverted), which
  are a few percent of a trained signed supermask.
- `training_curves.png`: per epoch, training and validation accuracy and
  loss, the remaining weights in percent (with `--target_remaining`, beside
  the target path; on a log axis when they are above 0 and span a
  decade), and the mask flips (entries whose value changed since the
  previous epoch); with the paper's test accuracy and remaining weights
  (dotted) where the paper reports the run's network and regime
  (`ssm_keras.paper`).

Of a run that has not finished (still training, killed, or diverged) it
writes `training_curves.png` of the epochs so far and `mask_composition.png`
of its last checkpoint (of the averaged scores once `--ema_momentum`'s
average has started), their titles saying so; a checkpoint that cannot be
read leaves the curves written and the command failing.
"""

from absl import flags

from ssm_keras import plotting
from ssm_keras.cli import shell


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `PlotSettings` field in `flag_values`."""
    shell.define_flags(plotting.PlotSettings, flag_values)
    flags.adopt_module_key_flags(plotting, flag_values)


def run_command(flag_values):
    """Plots the run the parsed flags name and prints the files written."""
    for path in plotting.plot(shell.from_flags(plotting.PlotSettings, flag_values)):
        print(path)


def cli():
    """The `ssm-plots` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
