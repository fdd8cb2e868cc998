"""Writes the compact files that `ssm_keras.pretrained` ships, from finished runs.

    python scripts/make_pretrained.py --flagfile=flags/fcn_mnist_signed.flags \\
        --runs=runs/fcn_mnist_signed_seed0,runs/fcn_mnist_signed_seed1

Each run becomes `ssm_keras/pretrained_models/<arch>_<dataset>_<mask>_seed<S>.ssm`
(`--out_dir` for another folder), a compact file whose metadata holds what the
run recorded (data set, architecture, test accuracy, remaining weights,
epochs, seed), the recipe (the flagfile and every training setting) and the
command that trained it: `python -m ssm_keras.train --flagfile=<flagfile>
--data_dir=DATA --seed=S` plus each setting in which the run differs from
the flagfile. An existing file is replaced only with `--overwrite`.
"""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ssm_keras import compact, export, pretrained  # noqa: E402
from ssm_keras.config import TrainConfig  # noqa: E402
from ssm_keras.run_dir import RunDirError  # noqa: E402

# Settings that say where a run was, not how it was trained.
PLACES = ("model_dir", "data_dir", "resume", "overwrite", "verbose", "init_file",
          "save_init_file")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="comma-separated finished run directories")
    parser.add_argument("--flagfile", required=True, help="the flagfile the runs were trained with")
    parser.add_argument("--out_dir", default=pretrained.FOLDER)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    args.runs = [path.strip() for path in args.runs.split(",") if path.strip()]
    if not os.path.isfile(args.flagfile):
        parser.error(f"--flagfile={args.flagfile}: no such file")
    return args


def flagfile_settings(path):
    """`{name: text}` of the `--name=value` lines of a flagfile."""
    settings = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line.startswith("--"):
                name, _, value = line[2:].partition("=")
                settings[name] = value
    return settings


def _same(text, value):
    """Whether a flag's text (`""` for a bare `--name`) gives `value`."""
    if isinstance(value, bool):
        return (text or "true").lower() == str(value).lower()
    try:
        return float(text) == float(value)
    except (TypeError, ValueError):
        return text == str(value)


def training_command(flagfile, flags):
    """The command that trains a run of `flags`: the flagfile, the seed, and
    every setting that differs from the flagfile's (or, where the flagfile
    is silent, from `TrainConfig`'s default)."""
    given = flagfile_settings(flagfile)
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    extra = []
    for name, value in sorted(flags.items()):
        if name in PLACES or name == "seed":
            continue
        same = _same(given[name], value) if name in given else value == defaults.get(name)
        if not same:
            extra.append(f"--{name}={str(value).lower() if isinstance(value, bool) else value}")
    return " ".join(["python -m ssm_keras.train", f"--flagfile={flagfile}", "--data_dir=DATA",
                     f"--seed={flags['seed']}", *extra])


def metadata(results, flagfile):
    """What the compact file records of a finished run."""
    flags = results["flags"]
    return {
        **{key: results[key] for key in ("dataset", "arch", "input_shape", "num_classes",
                                         "regime", "mask", "test_accuracy", "remaining_weights",
                                         "masked_weights", "remaining_percent", "epochs")},
        "seed": flags["seed"],
        "recipe": {"flagfile": flagfile,
                   "settings": {name: value for name, value in flags.items()
                                if name not in PLACES}},
        "command": training_command(flagfile, flags),
    }


def entry_name(results):
    return f"{results['arch']}_{results['dataset']}_{results['mask']}_seed{results['flags']['seed']}"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out_dir, exist_ok=True)
    for run in args.runs:
        try:
            model, results = export.load_run(run)
        except RunDirError as error:
            sys.exit(f"error: {error}")
        path = os.path.join(args.out_dir, entry_name(results) + pretrained.SUFFIX)
        if os.path.exists(path) and not args.overwrite:
            sys.exit(f"error: {path} exists; pass --overwrite to replace it")
        size = compact.save_compact(model, path, metadata(results, args.flagfile))
        print(f"{path}: {size:,} bytes, test accuracy {100 * results['test_accuracy']:.2f}%, "
              f"{results['remaining_weights']:,} weights remain")


if __name__ == "__main__":
    main()
