"""How saturated a network starts: its logits at initialisation, on real images.

    python -m ssm_keras.initial_logits --data_dir=../shared/data
    python -m ssm_keras.initial_logits --archs=conv6 --init_factors=6,3,2 --seeds=0,1

For each architecture, `elus` init factor and seed, the untrained model of
`python -m ssm_keras.train --arch=A --init_factor=F --seed=S` (every other
flag at its default) classifies the first `--examples` training images. It
prints, and writes as JSON to `--out`:

- `logit_std`: the standard deviation of all logits `z`;
- `clipped_fraction`: the fraction of images whose true-class probability
  `softmax(z)_y` is below 1e-7, where the paper's clipped loss
  `-log(clip(p_y, 1e-7, 1 - 1e-7))` gives no gradient (`ssm_keras.losses`).
"""

import json
import os

import keras
import numpy as np
from absl import flags

from ssm_keras import command, data, losses, training
from ssm_keras import config as ssm_config
from ssm_keras.errors import UserError


def define_flags(flag_values=flags.FLAGS):
    """Defines the flags: what to build, on which images, and `--out`."""
    flags.DEFINE_list("archs", ["conv2", "conv4", "conv6", "conv8"], "Architectures.",
                      flag_values=flag_values)
    flags.DEFINE_list("init_factors", ["6", "3"], "Comma-separated elus init factors (> 0).",
                      flag_values=flag_values)
    flags.DEFINE_list("seeds", ["0"], "Comma-separated seeds (>= 0).", flag_values=flag_values)
    flags.DEFINE_integer("examples", 500, "Training images classified (> 0).",
                         flag_values=flag_values)
    flags.DEFINE_string("dataset", "cifar10", "The data set.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "Local copy of the data sets.",
                        flag_values=flag_values)
    flags.DEFINE_string("out", "initial_logits.json", "JSON file to write (never replaced).",
                        flag_values=flag_values)


def checked_settings(flag_values):
    """`(archs, init factors, seeds)` of the parsed flags; `UserError` on the
    first bad setting."""
    try:
        factors = [float(value) for value in flag_values["init_factors"].value]
        seeds = [int(value) for value in flag_values["seeds"].value]
    except ValueError as error:
        raise UserError(f"--init_factors and --seeds take comma-separated numbers ({error})") from None
    if not all(factor > 0 for factor in factors):  # NaN too
        raise UserError(f"--init_factors must be > 0. Received: {factors}")
    archs, dataset = flag_values["archs"].value, flag_values["dataset"].value
    for arch in archs:
        for factor in factors:
            for seed in seeds:  # each a valid run, e.g. --seed in [0, 2**63)
                ssm_config.TrainConfig(arch=arch, dataset=dataset, init_factor=factor,
                                       seed=seed).validate()
    out = flag_values["out"].value
    if not os.path.isdir(os.path.dirname(out) or "."):
        raise UserError(f"--out={out}: no folder {os.path.dirname(out)}")
    if flag_values["examples"].value < 1:
        raise UserError("--examples must be > 0. Received: "
                        f"--examples={flag_values['examples'].value}")
    if os.path.exists(out):
        raise UserError(f"--out={out} exists; it is not overwritten")
    return archs, factors, seeds


def logit_statistics(model, images, labels, batch_size=250):
    """`{"logit_std", "clipped_fraction"}` of `model` (ending in a layer named
    `softmax`) on `images` with integer `labels`."""
    logits_model = keras.Model(model.input, model.get_layer("softmax").input)
    dataset = data.make_eval_dataset(images, labels, batch_size)
    logits = np.concatenate([logits_model(batch, training=False).numpy() for batch, _ in dataset])
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    true_log_probability = log_probabilities[np.arange(len(labels)), labels]
    return {"logit_std": float(logits.std()),
            "clipped_fraction": float(np.mean(true_log_probability < np.log(losses.EPSILON)))}


def run_command(flag_values):
    """Prints and writes the statistics of every architecture, init factor
    and seed; returns the rows."""
    archs, factors, seeds = checked_settings(flag_values)
    dataset = flag_values["dataset"].value
    splits = data.load_splits(dataset, flag_values["data_dir"].value, 0, 0, None)
    images, labels = (array[:flag_values["examples"].value] for array in splits.train)
    rows = []
    for arch in archs:
        for factor in factors:
            for seed in seeds:
                config = ssm_config.TrainConfig(arch=arch, dataset=dataset,
                                                init_factor=factor, seed=seed)
                model = training.build_model(config, splits.spec)
                row = {"arch": arch, "init_factor": factor, "seed": seed,
                       "examples": len(labels), **logit_statistics(model, images, labels)}
                rows.append(row)
                print(f"{arch} init factor {factor:g} seed {seed}: logit std "
                      f"{row['logit_std']:.2f}, p_true < 1e-7 for "
                      f"{100 * row['clipped_fraction']:.1f}% of {len(labels)} images", flush=True)
    with open(flag_values["out"].value, "w", encoding="utf-8") as file:
        json.dump({"dataset": dataset, "rows": rows}, file, indent=2)
    return rows


if __name__ == "__main__":
    command.main(define_flags, run_command)
