"""Mask statistics of a model: remaining weights, per masked kernel and overall.

For a kernel with mask `m` over `n` weights: kept `= #(m = +1)`, inverted
`= #(m = -1)`, hidden `= #(m = 0)`, remaining `= kept + inverted`, and the
remaining percentage `100 * remaining / n`. A plain (baseline) model keeps
every weight: the kernels its registered layers would mask count as all
kept. Records are named by `kernel_key`: the layer's name for its `kernel`
(`dense_1`, `attention/query`), `<layer>/<kernel>` for the others
(`lstm/lstm_cell/recurrent_kernel`).
"""

import math

import keras
import numpy as np

from ssm_keras import layers as ssm_layers
from ssm_keras.layers import base, registry


def layer_masks(model):
    """`{kernel key: mask as a NumPy array}` for every masked kernel."""
    return {
        layer.kernel_key(name): layer.compute_mask_values(name, training=False).numpy()
        for layer, name in ssm_layers.masked_kernels(model)
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
        A dict with `layers` (one record per masked kernel: name, shape,
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
        for layer in ssm_layers.find_layers(model, keras.layers.Layer):
            for scope, name, kernel in registry.kernels(layer):
                size = math.prod(kernel.shape)
                counts = {"total": size, "kept": size, "inverted": 0, "hidden": 0,
                          "remaining": size}
                records.append(_layer_record(base.kernel_key(scope, name), kernel.shape, counts))
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
