"""`ssm_keras.bake` (`transforms.baking`): diverged models refused, baselines
that load with stock Keras."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FCN_SHAPE, random_images, randomized_model

import ssm_keras
from ssm_keras import layers, models
from ssm_keras.errors import ExportError


def _nan_score(model):
    layer = layers.masked_layers(model)[0]
    scores = layer.scores_variable().numpy()
    scores[0, :3] = np.nan
    layer.scores_variable().assign(scores)
    return layer.mask_scope, 3


def _infinite_w0(model):
    layer = layers.masked_layers(model)[1]
    kernel = layer.kernel_variable().numpy()
    kernel[1, 1] = -np.inf
    layer.kernel_variable().assign(kernel)
    return layer.mask_scope, 1


@pytest.mark.parametrize("diverge", [_nan_score, _infinite_w0])
def test_bake_and_save_compact_refuse_a_diverged_model_naming_the_layer_and_count(diverge,
                                                                                  tmp_path):
    model = randomized_model()
    scope, count = diverge(model)
    message = (f"layer '{scope}' has {count} non-finite values (NaN or infinite) in its "
               "kernel's scores or W0: the model diverged; export a checkpoint from before")
    with pytest.raises(ExportError) as baked:
        ssm_keras.bake(model)
    assert str(baked.value) == message
    with pytest.raises(ExportError) as saved:
        ssm_keras.save_compact(model, tmp_path / "model.ssm")
    assert str(saved.value) == message
    assert not os.listdir(tmp_path)


def test_bake_refuses_non_finite_weights_of_an_unmasked_layer():
    model = models.build_architecture("fcn", masked=False, input_shape=FCN_SHAPE)
    kernel = model.get_layer("dense_2").kernel
    kernel.assign(np.where(np.arange(100) < 2, np.nan, kernel.numpy()))  # 2 of 100 units
    with pytest.raises(ExportError, match=r"^layer 'dense_2' has 600 non-finite values "
                                          r"\(NaN or infinite\) in its weights: the model"):
        ssm_keras.bake(model)


# A stock-Keras process: ssm_keras cannot be imported in it.
STOCK_LOAD = """
import sys
class NoSsmKeras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "ssm_keras":
            raise ImportError("ssm_keras is not installed here")
sys.meta_path.insert(0, NoSsmKeras())
import json, keras, numpy as np
model = keras.saving.load_model(sys.argv[1])
print(json.dumps(model.predict(np.load(sys.argv[2]), verbose=0).tolist()))
"""


@pytest.mark.slow
def test_a_baked_baseline_loads_with_stock_keras_alone(tmp_path):
    """A baseline's layers are made with `elus` (or `elu`) kernels,
    `ssm_keras.initializers` classes; the baked model names none of them."""
    baseline = models.build_architecture("fcn", masked=False, input_shape=FCN_SHAPE)
    baked = ssm_keras.bake(baseline)
    elu_baseline = models.build_architecture("fcn", masked=False, input_shape=FCN_SHAPE,
                                             kernel_initializer="elu")
    assert "ssm_keras" in json.dumps(elu_baseline.get_config())
    assert "ssm_keras" not in json.dumps(ssm_keras.bake(elu_baseline).get_config())
    baked.save(tmp_path / "baked.keras")
    images = random_images(FCN_SHAPE).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, "-c", STOCK_LOAD, str(tmp_path / "baked.keras"),
         str(tmp_path / "images.npy")],
        capture_output=True, text=True, cwd=tmp_path, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    np.testing.assert_allclose(json.loads(completed.stdout), baseline(images).numpy(),
                               rtol=1e-6, atol=1e-7)

