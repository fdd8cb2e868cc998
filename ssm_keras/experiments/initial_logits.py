"""How saturated a network starts: its logits at initialisation, on real images.

    ssm-initial-logits --data_dir=../shared/data
    ssm-initial-logits --archs=conv6 --init_factors=6,3,2 --seeds=0,1

For each architecture, `elus` init factor and seed, the untrained model of
`python -m ssm_keras.train --arch=A --init_factor=F --seed=S` (every other
flag at its default) classifies the first `--examples` training images
(the settings: `config.InitialLogitsSettings`). It prints, and writes as
JSON to `--out`:

- `logit_std`: the standard deviation of all logits `z`;
- `clipped_fraction`: the fraction of images whose true-class probability
  `softmax(z)_y` is below 1e-7, where the paper's clipped loss
  `-log(clip(p_y, 1e-7, 1 - 1e-7))` gives no gradient (`ssm_keras.training.losses`).
"""

import logging

import keras
import numpy as np

from ssm_keras import data, files
from ssm_keras.training import config as ssm_config
from ssm_keras.training import losses, trainer

log = logging.getLogger(__name__)


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


def run(settings):
    """Measures every architecture, init factor and seed of `settings`
    (logging a line each), writes them to `settings.out`; returns the rows."""
    settings.validate()
    archs, factors, seeds = settings.grid()
    splits = data.load_splits(settings.dataset, settings.data_dir, 0, 0, None)
    images, labels = (array[:settings.examples] for array in splits.train)
    rows = []
    for arch in archs:
        for factor in factors:
            for seed in seeds:
                config = ssm_config.TrainConfig(arch=arch, dataset=settings.dataset,
                                                init_factor=factor, seed=seed)
                model = trainer.build_model(config, splits.spec)
                row = {"arch": arch, "init_factor": factor, "seed": seed,
                       "examples": len(labels), **logit_statistics(model, images, labels)}
                rows.append(row)
                log.info("%s init factor %g seed %d: logit std %.2f, p_true < 1e-7 for %.1f%% "
                         "of %d images", arch, factor, seed, row["logit_std"],
                         100 * row["clipped_fraction"], len(labels))
    files.make_parent_folder(settings.out)
    files.write_json_atomically(settings.out, {"dataset": settings.dataset, "rows": rows})
    return rows
