"""The registry's initial weights and scores, pinned: the masked models are
the plain models passed through `supermask`, and must start from the same
`W0`, scores and thresholds as the registry's own masked layers did.

`data/registry_init_digests.json` holds, per case, the SHA-256 of every
kernel-bearing layer's `kernel`, `scores` and `threshold` (sorted by layer
name), computed by the registry before it was built on `supermask`. A
second seed is pinned for the nets up to ResNet-32: the deeper ones derive
their layers' seeds the same way and are pinned at seed 0.
"""

import hashlib
import json
import pathlib

import numpy as np
import pytest

from ssm_keras import layers, models
from ssm_keras.layers import registry

pytestmark = pytest.mark.slow  # builds every architecture, deep ones included

CASES = json.loads((pathlib.Path(__file__).parent / "data" / "registry_init_digests.json").read_text())


def initial_state_digest(model):
    """SHA-256 of the kernels (`W0`), scores and thresholds of a model's
    layers (a plain model's kernels)."""
    digest = hashlib.sha256()
    masked = {layer.name: layer for layer in layers.masked_layers(model)}
    kernels = {scope: kernel for layer in model.layers
               for scope, _, kernel in registry.kernels(layer)}
    for name in sorted(kernels):
        variables = {"kernel": kernels[name]}
        if name in masked:
            variables.update(scores=masked[name].scores, threshold=masked[name].threshold_variable())
        for role, variable in variables.items():
            if variable is not None:
                digest.update(f"{name}/{role}".encode())
                digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def _case_id(case):
    return "-".join(f"{value}" for key, value in case.items()
                    if key not in ("sha256", "input_shape"))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_registry_initial_state_is_unchanged(case):
    kwargs = {key: value for key, value in case.items() if key not in ("arch", "mask", "sha256")}
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    if "mask" in case:
        kwargs["mask_config"] = models.MaskConfig(mask=case["mask"])
    model = models.build_architecture(case["arch"], **kwargs)
    assert initial_state_digest(model) == case["sha256"]
