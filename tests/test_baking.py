"""`ssm_keras.bake` (`transforms.baking`): diverged models refused, baselines
that load with stock Keras, weightless layers (a Python `Lambda`) carried
over as they are; `cloning.in_float32` of such a model."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from support import FCN_SHAPE, random_images, randomized_model

import ssm_keras
from ssm_keras import layers, models
from ssm_keras.errors import ExportError
from ssm_keras.transforms import cloning


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


def _lambda_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0 - 1.0, name="affine")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def test_a_python_lambda_layer_is_carried_through_supermask_with_regime_and_bake():
    masked = ssm_keras.supermask(_lambda_model(), seed=0)
    inputs = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    expected = masked(inputs).numpy()
    hidden = masked.get_layer("hidden").effective_kernel().numpy()
    out = masked.get_layer("out").effective_kernel().numpy()
    # (2 relu(x @ W_hidden) - 1) @ W_out: the Lambda computed by hand (biases are 0).
    np.testing.assert_allclose(
        expected, (2.0 * np.maximum(inputs @ hidden, 0.0) - 1.0) @ out, rtol=1e-5, atol=1e-6)
    tuned = ssm_keras.with_regime(masked, "mask_then_weights")
    for copy in (tuned, ssm_keras.bake(masked), ssm_keras.bake(masked, prune_dead_units=True)):
        lambda_layer = copy.get_layer("affine")  # its own layer, around the same function
        assert lambda_layer is not masked.get_layer("affine")
        assert lambda_layer.function is masked.get_layer("affine").function
        np.testing.assert_allclose(copy(inputs).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_in_float32_of_a_mixed_precision_model_with_a_python_lambda():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _lambda_model()
    keras.mixed_precision.set_global_policy("float32")
    float32 = cloning.in_float32(model)
    assert {layer.dtype_policy.name for layer in float32.layers} == {"float32"}
    inputs = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    hidden, hidden_bias, out, out_bias = model.get_weights()
    expected = (2.0 * np.maximum(inputs @ hidden + hidden_bias, 0.0) - 1.0) @ out + out_bias
    np.testing.assert_allclose(float32(inputs).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model(inputs).numpy(), expected, rtol=1e-5, atol=1e-6)  # bfloat16


def test_an_adapted_normalization_keeps_its_statistics_through_every_copy(tmp_path):
    """An adapted `Normalization` computes with a mean and variance derived
    from its variables; each copy (supermask, with_regime, bake, dead units,
    in_float32, the compact file) must compute with the copied ones."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (64, 20)).astype(np.float32)
    normalization = keras.layers.Normalization(name="normalize")
    normalization.adapt(images)
    model = keras.Sequential([keras.Input((20,)), normalization,
                              keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dense(3, name="out")])
    # Every pretrained weight kept: the supermask computes what the model computes.
    same = ssm_keras.supermask(model, kernels="keep", score_initializer="ones")
    np.testing.assert_allclose(same(images).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-5)
    masked = ssm_keras.supermask(model, seed=0)
    expected = masked(images).numpy()
    # Standardised inputs: the unnormalised raw pixels would give outputs in the tens.
    assert np.abs(expected).max() < 10 < np.abs(model.layers[1](images).numpy()).max()
    copies = {
        "with_regime": ssm_keras.with_regime(masked, "mask_then_weights"),
        "bake": ssm_keras.bake(masked),
        "bake, dead units removed": ssm_keras.bake(masked, prune_dead_units=True,
                                                   check_inputs=images),
    }
    path = str(tmp_path / "model.ssm")
    ssm_keras.save_compact(masked, path)
    copies["load_compact"] = ssm_keras.load_compact(path).masked_model
    copies["bake"].save(str(tmp_path / "baked.keras"))
    copies["baked.keras"] = keras.saving.load_model(str(tmp_path / "baked.keras"))
    for name, copy in copies.items():
        np.testing.assert_allclose(copy(images).numpy(), expected, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    mixed = keras.Sequential([keras.Input((20,)), normalization,
                              keras.layers.Dense(3, dtype="mixed_bfloat16")])
    mean = cloning.in_float32(mixed).get_layer("normalize").mean
    np.testing.assert_allclose(np.ravel(mean), images.mean(axis=0), rtol=1e-5)


@keras.saving.register_keras_serializable(package="test_baking")
class NormalizedDense(keras.layers.Layer):
    """A layer of one's own that holds an adapted `Normalization`."""

    def build(self, input_shape):
        self.normalize = keras.layers.Normalization(name="inner_normalize")
        self.normalize.build(input_shape)
        self.dense = keras.layers.Dense(16, activation="relu", name="inner_dense")
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.dense(self.normalize(inputs))


def test_a_normalization_inside_a_layer_keeps_its_statistics_through_supermask_and_bake(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (32, 20)).astype(np.float32)
    block = NormalizedDense(name="block")
    block.build((None, 20))
    block.normalize.adapt(images)
    model = keras.Sequential([keras.Input((20,)), block, keras.layers.Dense(3, name="out")])
    same = ssm_keras.supermask(model, kernels="keep", score_initializer="ones")
    assert isinstance(same.get_layer("block"), layers.MaskedComposite)
    np.testing.assert_allclose(same(images).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-5)
    baked = ssm_keras.bake(ssm_keras.supermask(model, seed=0))
    baked.save(str(tmp_path / "baked.keras"))
    reloaded = keras.saving.load_model(str(tmp_path / "baked.keras"))
    np.testing.assert_allclose(reloaded(images).numpy(), baked(images).numpy(), rtol=1e-5,
                               atol=1e-5)
