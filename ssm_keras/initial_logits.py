"""How saturated a network starts: its logits at initialisation, on real images.

    python scripts/initial_logits.py --data_dir=../shared/data
    python scripts/initial_logits.py --archs=conv6 --init_factors=6,3,2 --seeds=0,1

For each architecture, `elus` init factor and seed, the untrained model of
`python -m ssm_keras.train --arch=A --init_factor=F --seed=S` (every other
flag at its default) classifies the first `--examples` training images. It
prints, and writes as JSON to `--out`:

- `logit_std`: the standard deviation of all logits `z`;
- `clipped_fraction`: the fraction of images whose true-class probability
  `softmax(z)_y` is below 1e-7, where the paper's clipped loss
  `-log(clip(p_y, 1e-7, 1 - 1e-7))` gives no gradient (`ssm_keras.losses`).
"""

import argparse
import json
import os
import sys

import keras
import numpy as np

from ssm_keras import config as ssm_config
from ssm_keras import data, losses, training


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--archs", default="conv2,conv4,conv6,conv8")
    parser.add_argument("--init_factors", default="6,3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default="initial_logits.json")
    args = parser.parse_args(argv)
    try:
        args.init_factors = [float(value) for value in args.init_factors.split(",")]
        args.seeds = [int(value) for value in args.seeds.split(",")]
    except ValueError as error:
        parser.error(f"--init_factors and --seeds take comma-separated numbers ({error})")
    args.archs = args.archs.split(",")
    for arch in args.archs:
        try:
            ssm_config.TrainConfig(arch=arch, dataset=args.dataset).validate()
        except ssm_config.ConfigError as error:
            parser.error(str(error))
    if not all(factor > 0 for factor in args.init_factors):  # NaN too
        parser.error(f"--init_factors must be > 0. Received: {args.init_factors}")
    if not os.path.isdir(os.path.dirname(args.out) or "."):
        parser.error(f"--out={args.out}: no folder {os.path.dirname(args.out)}")
    if args.examples < 1:
        parser.error(f"--examples must be > 0. Received: --examples={args.examples}")
    if os.path.exists(args.out):
        parser.error(f"--out={args.out} exists; it is not overwritten")
    return args


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


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        splits = data.load_splits(args.dataset, args.data_dir, 0, 0, None)
    except data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    images, labels = (array[:args.examples] for array in splits.train)
    rows = []
    for arch in args.archs:
        for factor in args.init_factors:
            for seed in args.seeds:
                config = ssm_config.TrainConfig(arch=arch, dataset=args.dataset,
                                                init_factor=factor, seed=seed)
                model = training.build_model(config, splits.spec)
                row = {"arch": arch, "init_factor": factor, "seed": seed,
                       "examples": len(labels), **logit_statistics(model, images, labels)}
                rows.append(row)
                print(f"{arch} init factor {factor:g} seed {seed}: logit std "
                      f"{row['logit_std']:.2f}, p_true < 1e-7 for "
                      f"{100 * row['clipped_fraction']:.1f}% of {len(labels)} images", flush=True)
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump({"dataset": args.dataset, "rows": rows}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
