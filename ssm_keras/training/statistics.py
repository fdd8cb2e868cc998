"""Mask statistics of a model: remaining weights, per layer and overall.

For a layer with mask `m` over `n` weights: kept `= #(m = +1)`, inverted
`= #(m = -1)`, hidden `= #(m = 0)`, remaining `= kept + inverted`, and the
remaining percentage `100 * remaining / n`. A plain (baseline) model keeps
every weight: its kernels count as all kept.
"""

import math

import keras
import numpy as np

from ssm_keras import layers as ssm_layers


def layer_masks(model):
    """`{layer name: mask as a NumPy array}` for every masked layer."""
    return {
        layer.name: layer.compute_mask_values(training=False).numpy()
        for layer in ssm_layers.masked_layers(model)
    }


def _layer_record(name, shape, counts):
    total = counts["total"]
    return {
        "name": name,
        "shape": list(shape),
        **counts,
        "kept_fraction": counts["kept"] / total,
        "inverted_fraction": counts["inverted"] / total,
        "hidden_fraction": counts["hidden"] / total,
    }


def summarize(model, masks=None):
    """Per-layer and overall mask statistics of a masked or plain model.

    Args:
        model: a Keras model.
        masks: `layer_masks(model)`, if already computed.

    Returns:
        A dict with `layers` (one record per kernel layer: name, shape,
        total, kept, inverted, hidden, remaining and the three fractions),
        `masked_weights`, `remaining_weights`, `remaining_percent`, `kept`,
        `inverted` and `hidden`.
    """
    masks = layer_masks(model) if masks is None else masks
    records = []
    for name, mask in masks.items():
        kept, inverted = int(np.sum(mask > 0)), int(np.sum(mask < 0))
        counts = {"total": mask.size, "kept": kept, "inverted": inverted,
                  "hidden": mask.size - kept - inverted, "remaining": kept + inverted}
        records.append(_layer_record(name, mask.shape, counts))
    if not masks:
        for layer in ssm_layers.find_layers(model, (keras.layers.Dense, keras.layers.Conv2D)):
            size = math.prod(layer.kernel.shape)
            counts = {"total": size, "kept": size, "inverted": 0, "hidden": 0, "remaining": size}
            records.append(_layer_record(layer.name, layer.kernel.shape, counts))
    total = sum(record["total"] for record in records)
    overall = {key: sum(record[key] for record in records)
               for key in ("kept", "inverted", "hidden", "remaining")}
    return {
        "layers": records,
        "masked_weights": total,
        "remaining_weights": overall["remaining"],
        "remaining_percent": 100.0 * overall["remaining"] / total if total else 0.0,
        "kept": overall["kept"],
        "inverted": overall["inverted"],
        "hidden": overall["hidden"],
    }


def mask_flips(previous, current):
    """The number of mask entries that changed value between two `layer_masks`."""
    return int(sum(np.count_nonzero(previous[name] != mask) for name, mask in current.items()))
