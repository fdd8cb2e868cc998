"""Writes the compact files that `ssm_keras.pretrained` ships, from finished runs.

    ssm-make-pretrained --recipe_flagfile=flags/fcn_mnist_signed.flags \\
        --runs=runs/fcn_mnist_signed_seed0,runs/fcn_mnist_signed_seed1

Each run becomes `ssm_keras/pretrained/entries/<arch>_<dataset>_<mask>_seed<S>.ssm`
(`--out_dir` for another folder), a compact file whose metadata holds what the
run recorded (data set, architecture, test accuracy, remaining weights,
epochs, seed), the recipe (the flagfile and every training setting) and the
command that trained it: `python -m ssm_keras.train --flagfile=<flagfile>
--data_dir=DATA --seed=S` plus each setting in which the run differs from
the flagfile (`--recipe_flagfile`; absl keeps `--flagfile` for flags read
from a file). An existing file is replaced only with `--overwrite`, in one
rename once the new file is whole (`compact.save_compact`): a full disk
leaves it as it was, with one error line. Every run is checked (finished,
its own file, which may be written), loaded and, if need be, measured
before the first file is written.

Shipped models compute in float32 (`cloning.in_float32`). For a run trained
under a mixed-precision policy the recorded `test_accuracy` is measured
again on the float32 model (`--data_dir` is then required) and the run's
own figure is kept as `test_accuracy_as_trained`.
"""

import dataclasses
import functools
import logging
import os

from ssm_keras import data, files
from ssm_keras.experiments import evaluation, launch
from ssm_keras.exporting import compact, exporter
from ssm_keras.pretrained import catalog
from ssm_keras.pretrained.config import MakeError
from ssm_keras.training import run_dir
from ssm_keras.transforms import cloning

log = logging.getLogger(__name__)

# Settings that say where a run was and what it kept, not how it was trained.
PLACES = ("model_dir", "data_dir", "resume", "overwrite", "verbose", "init_file",
          "save_init_file", "keep_checkpoints")


def recipe_settings(flagfile):
    """Every `TrainConfig` setting, as a dict, that `flagfile` gives (the
    defaults where it is silent)."""
    return dataclasses.asdict(launch.train_config([f"--flagfile={flagfile}"]))


def training_command(flagfile, flags, given):
    """The command that trains a run of `flags`: the flagfile, the seed, and
    every setting that differs from `given`, the flagfile's
    (`recipe_settings`)."""
    extra = [f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
             for name, value in sorted(flags.items())
             if name not in PLACES and name != "seed" and value != given.get(name)]
    return " ".join(["python -m ssm_keras.train", f"--flagfile={flagfile}", "--data_dir=DATA",
                     f"--seed={flags['seed']}", *extra])


def metadata(results, flagfile, given):
    """What the compact file records of a finished run of the recipe
    `flagfile`, whose settings are `given` (`recipe_settings`)."""
    flags = results["flags"]
    return {
        **{key: results[key] for key in ("dataset", "arch", "input_shape", "num_classes",
                                         "regime", "mask", "test_accuracy", "remaining_weights",
                                         "masked_weights", "remaining_percent", "epochs")},
        "seed": flags["seed"],
        "recipe": {"flagfile": flagfile,
                   "settings": {name: value for name, value in flags.items()
                                if name not in PLACES}},
        "command": training_command(flagfile, flags, given),
    }


def trained_policy(results):
    """The dtype policy a run trained under."""
    return results["flags"].get("mixed_precision", "float32")


def float32_accuracy(model, results, test_sets):
    """`{"test_accuracy": ...}` of the float32 `model` of a run trained under
    a mixed-precision policy, with the run's figure as
    `test_accuracy_as_trained`; `{}` for a float32 run. `test_sets(name)`
    gives a data set's test split."""
    if trained_policy(results) == "float32":
        return {}
    images, labels = test_sets(results["dataset"])
    correct, total = evaluation.test_accuracy(model, images, labels)
    return {"test_accuracy": correct / total,
            "test_accuracy_as_trained": results["test_accuracy"]}


def entry_name(results):
    """`<arch>_<dataset>_<mask>_seed<S>`: the name of a run's entry."""
    return f"{results['arch']}_{results['dataset']}_{results['mask']}_seed{results['flags']['seed']}"


def planned_files(runs, out_dir, overwrite, data_dir):
    """`{run: (results, compact file path)}`; `UserError` for a run that is
    not finished, one whose file another run of `runs` would write too or
    that exists without `overwrite`, one trained on a part of its data set
    (`--max_examples`), or one trained under a mixed-precision policy
    without `data_dir`."""
    planned = {}
    for run in runs:
        results = run_dir.read_results(run)
        path = os.path.join(out_dir, entry_name(results) + catalog.SUFFIX)
        twin = next((other for other, (_, other_path) in planned.items() if other_path == path),
                    None)
        if twin is not None:
            raise MakeError(f"--runs: {twin} and {run} would both be written to {path}; "
                            "give runs of different seeds")
        if os.path.exists(path) and not overwrite:
            raise MakeError(f"{path} exists; pass --overwrite to replace it")
        subset = results["flags"].get("max_examples")
        if subset:
            raise MakeError(f"{run} was trained with --max_examples={subset}, so its test "
                            "accuracy is of a part of the test split; an entry records the "
                            "whole test split's")
        if trained_policy(results) != "float32" and data_dir is None:
            raise MakeError(f"{run} was trained with --mixed_precision={trained_policy(results)}"
                            "; pass --data_dir to measure the test accuracy of its float32 model")
        planned[run] = (results, path)
    return planned


def make(settings):
    """Writes the compact file of every run of `settings` (`config.MakeSettings`),
    once all are checked (`planned_files`), loaded and measured; logs a line
    per file and returns their paths."""
    settings.validate()
    files.make_folder("out_dir", settings.out_dir)
    planned = planned_files(settings.run_dirs(), settings.out_dir, settings.overwrite,
                            settings.data_dir)
    given = recipe_settings(settings.recipe_flagfile)
    test_sets = functools.cache(  # one reading per data set
        lambda name: data.load_splits(name, settings.data_dir, validation_size=0).test)
    prepared = []
    for run, (results, path) in planned.items():
        model = cloning.in_float32(exporter.load_model(run))
        recorded = {**metadata(results, settings.recipe_flagfile, given),
                    **float32_accuracy(model, results, test_sets)}
        prepared.append((results, path, model, recorded))
    paths = []
    for results, path, model, recorded in prepared:
        size = compact.save_compact(model, path, recorded)
        log.info("%s: %s bytes, test accuracy %.2f%%, %s weights remain", path, f"{size:,}",
                 100 * recorded["test_accuracy"], f"{results['remaining_weights']:,}")
        paths.append(path)
    return paths
