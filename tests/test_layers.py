"""Masked layers: weights, gradients, regimes, serialisation, initialisers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssm_keras import choices, initializers, layers, masking


def _dense(**kwargs):
    layer = layers.MaskedDense(6, seed=1, name="masked", **{"use_bias": False, **kwargs})
    layer.build((None, 5))
    return layer


def _gradients(layer, inputs):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(inputs, training=True) ** 2)
    return dict(zip([v.name for v in layer.trainable_variables],
                    tape.gradient(loss, layer.trainable_variables)))


@pytest.mark.parametrize("kind, trainable, non_trainable", [
    ("signed", 1, 2), ("binary", 1, 2), ("bernoulli", 1, 1), ("topk", 1, 1),
])
@pytest.mark.slow
def test_weight_counts(kind, trainable, non_trainable):
    layer = _dense(mask=kind)
    assert len(layer.trainable_weights) == trainable
    assert len(layer.non_trainable_weights) == non_trainable
    assert layer.trainable_weights[0] is layer.scores
    assert layer.scores.dtype == "float32"
    with_bias = _dense(mask=kind, use_bias=True)
    assert len(with_bias.non_trainable_weights) == non_trainable + 1


def test_dense_output_equals_numpy():
    layer = _dense(mask="signed", use_bias=True, bias_initializer="ones")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    w0, s, tau = layer.kernel.numpy(), layer.scores.numpy(), layer.threshold.numpy()
    mask = np.sign(s) * (np.abs(s) > tau)
    np.testing.assert_allclose(layer(x).numpy(), x @ (w0 * mask) + 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.effective_kernel().numpy(), w0 * mask)


def test_conv_output_equals_dense_conv_of_effective_kernel():
    layer = layers.MaskedConv2D(4, 3, strides=2, padding="same", mask="signed_topk",
                                density=0.3, seed=2, activation="relu")
    x = np.random.default_rng(1).normal(size=(2, 7, 7, 3)).astype(np.float32)
    out = layer(x).numpy()
    kernel = layer.effective_kernel().numpy()
    assert np.count_nonzero(kernel) == masking.topk_count(3 * 3 * 3 * 4, 0.3)
    expected = tf.nn.relu(tf.nn.conv2d(x, kernel, 2, "SAME")).numpy()
    assert out.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_threshold_is_fraction_of_initial_max_score():
    layer = _dense(tau_fraction=0.4)
    np.testing.assert_allclose(
        layer.threshold.numpy(), 0.4 * np.abs(layer.scores.numpy()).max(), rtol=1e-6
    )


def test_only_scores_get_gradients_in_mask_regime():
    layer = _dense()
    grads = _gradients(layer, np.ones((3, 5), np.float32))
    assert list(grads) == ["scores"]
    # Straight-through: dL/ds = dL/dW * W0.
    x = np.ones((3, 5), np.float32)
    with tf.GradientTape() as tape:
        kernel = layer.effective_kernel()
        tape.watch(kernel)
        loss = tf.reduce_sum(tf.matmul(x, kernel) ** 2)
    d_kernel = tape.gradient(loss, kernel).numpy()
    np.testing.assert_allclose(grads["scores"].numpy(), d_kernel * layer.kernel.numpy(), rtol=1e-5)


def test_only_kernel_gets_gradients_in_mask_then_weights_regime():
    layer = _dense(regime="mask_then_weights")
    mask = layer.compute_mask_values().numpy()
    assert [v.name for v in layer.trainable_weights] == ["kernel"]
    grads = _gradients(layer, np.ones((3, 5), np.float32))
    assert list(grads) == ["kernel"]
    # The mask is frozen into the product: hidden weights get no gradient.
    assert np.all(grads["kernel"].numpy()[mask == 0] == 0)
    assert np.all(grads["kernel"].numpy()[mask != 0] != 0)


@pytest.mark.parametrize("regime, trained", [("mask", "scores"), ("mask_then_weights", "kernel")])
def test_trainable_toggle_never_unfreezes_frozen_variables(regime, trained):
    layer = _dense(regime=regime)
    layer.trainable = False
    assert layer.trainable_weights == []
    layer.trainable = True
    assert [v.name for v in layer.trainable_weights] == [trained]
    assert len(layer.non_trainable_weights) == 2


def test_mask_counts_add_up():
    layer = _dense(mask="signed")
    counts = layer.mask_counts()
    mask = layer.compute_mask_values().numpy()
    assert counts["kept"] == np.sum(mask == 1) and counts["inverted"] == np.sum(mask == -1)
    assert counts["kept"] + counts["inverted"] + counts["hidden"] == 30


def test_bernoulli_layer_samples_in_training_only_by_default():
    layer = _dense(mask="bernoulli", score_initializer="zeros")
    x = np.ones((1, 5), np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), layer(x).numpy())
    np.testing.assert_array_equal(layer.effective_kernel().numpy(), 0)  # sigmoid(0) = 0.5 is not > 0.5
    samples = [layer.effective_kernel(training=True).numpy() for _ in range(2)]
    assert not np.array_equal(samples[0], samples[1])
    sampling = _dense(mask="bernoulli", bernoulli_eval="sample")
    assert not np.array_equal(sampling(x).numpy(), sampling(x).numpy())


def test_same_seed_and_name_give_identical_weights():
    first, second = _dense(), _dense()
    np.testing.assert_array_equal(first.kernel.numpy(), second.kernel.numpy())
    np.testing.assert_array_equal(first.scores.numpy(), second.scores.numpy())
    other = layers.MaskedDense(6, seed=1, name="other")
    other.build((None, 5))
    assert not np.array_equal(first.scores.numpy(), other.scores.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("kind", choices.MASK_KINDS)
def test_keras_round_trip(tmp_path, kind):
    inputs = keras.Input((6, 6, 2))
    x = layers.MaskedConv2D(3, 3, padding="same", mask=kind, seed=0, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = layers.MaskedDense(4, mask=kind, seed=0, kernel_initializer="elu",
                                 name="dense", activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("dense").scores.assign(
        np.random.default_rng(0).normal(size=(108, 4)).astype(np.float32))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(3, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    for name in ("conv", "dense"):
        np.testing.assert_array_equal(
            loaded.get_layer(name).compute_mask_values().numpy(),
            model.get_layer(name).compute_mask_values().numpy())
        assert loaded.get_layer(name).get_config() == model.get_layer(name).get_config()


@pytest.mark.parametrize("kwargs, message", [
    ({"mask": "ternary"}, "mask='ternary'"),
    ({"density": 0.0}, "density=0.0"),
    ({"density": 1.5}, "density=1.5"),
    ({"tau_fraction": -0.1}, "tau_fraction=-0.1"),
    ({"kernel_initializer": "gaussian_blur"}, "gaussian_blur"),
    ({"regime": "weights_only"}, "regime='weights_only'"),
])
@pytest.mark.slow
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as info:
        layers.MaskedDense(3, **kwargs)
    assert "Expected" in str(info.value) or "must be" in str(info.value)


def test_signed_constant_initializer_values():
    init = initializers.get("elus", factor=6.0)
    values = init((3, 3, 4, 8)).numpy()
    c = np.sqrt(6.0 / 36)
    np.testing.assert_allclose(np.unique(np.abs(values)), [c], rtol=1e-6)
    assert 0.3 < np.mean(values > 0) < 0.7
    kaiming = initializers.get("signed_kaiming_constant")((50, 10)).numpy()
    np.testing.assert_allclose(np.unique(np.abs(kaiming)), [np.sqrt(2.0) / np.sqrt(50)], rtol=1e-6)


def test_elu_initializer_variance():
    values = initializers.get("elu")((400, 300)).numpy()
    bound = np.sqrt(4.5 / 400)
    assert np.abs(values).max() <= bound
    np.testing.assert_allclose(values.var(), 1.5 / 400, rtol=0.02)


def test_keras_builtin_initializers_by_name_and_seeding():
    init = initializers.with_seed(initializers.get("he_normal"), 5)
    np.testing.assert_array_equal(init((4, 4)).numpy(), init((4, 4)).numpy())
    again = initializers.with_seed(initializers.get("he_normal"), 5)
    np.testing.assert_array_equal(init((4, 4)).numpy(), again((4, 4)).numpy())
    assert initializers.derive_seed(0, "a", "kernel") != initializers.derive_seed(0, "b", "kernel")


def test_a_model_saved_before_supermask_loads_with_the_same_outputs():
    """`data/pre_supermask_model.json`: a masked conv (bias, `same` padding),
    batch norm and masked dense model as the layers before `supermask`
    serialised it (no `train_bias`, no `dilation_rate`; the conv's defaults
    were `padding="same"`, `use_bias=False`), with its weights and outputs."""
    import json
    import pathlib

    saved = json.loads((pathlib.Path(__file__).parent / "data" / "pre_supermask_model.json")
                       .read_text())
    model = keras.saving.deserialize_keras_object(saved["model"])
    model.set_weights([np.asarray(weights, np.float32) for weights in saved["weights"]])
    outputs = model.predict(np.asarray(saved["images"], np.float32), verbose=0)
    np.testing.assert_allclose(outputs, np.asarray(saved["outputs"]), rtol=1e-6, atol=1e-7)
    assert model.get_layer("conv").padding == "same"
    assert model.get_layer("conv").train_bias is False
