"""Model zoo: masked weight counts, one training step of every architecture."""

import keras
import numpy as np
import pytest

from ssm_keras import layers, models

PAPER_COUNTS = {
    ("fcn", (28, 28, 1)): 266_200,
    ("conv2", (32, 32, 3)): 4_300_992,
    ("conv4", (32, 32, 3)): 2_425_024,
    ("conv6", (32, 32, 3)): 2_261_184,
    ("conv8", (32, 32, 3)): 5_275_840,
}


@pytest.mark.slow
@pytest.mark.parametrize("arch, input_shape", list(PAPER_COUNTS))
def test_masked_weight_counts_match_the_paper(arch, input_shape):
    model = models.build_architecture(arch, input_shape=input_shape)
    assert models.masked_weight_count(model) == PAPER_COUNTS[(arch, input_shape)]
    plain = models.build_architecture(arch, input_shape=input_shape, masked=False)
    assert plain.count_params() == PAPER_COUNTS[(arch, input_shape)]


def _resnet_count(depth, width, channels=3, classes=10):
    """Conv and dense weights of the CIFAR ResNet, counted independently."""
    blocks = (depth - 2) // 6
    widths = [16 * width, 32 * width, 64 * width]
    total = 9 * channels * widths[0]
    previous = widths[0]
    for stage_width in widths:
        total += 9 * previous * stage_width + 9 * stage_width * stage_width
        if previous != stage_width:
            total += previous * stage_width
        total += (blocks - 1) * 2 * 9 * stage_width * stage_width
        previous = stage_width
    return total + widths[-1] * classes


def _wrn_count(k, classes=10):
    total, previous = 9 * 3 * 16, 16
    for group_width in (16 * k, 32 * k, 64 * k):
        total += 9 * previous * group_width + 9 * group_width * group_width
        if previous != group_width:
            total += previous * group_width
        total += 3 * 2 * 9 * group_width * group_width
        previous = group_width
    return total + previous * classes


@pytest.mark.slow
@pytest.mark.parametrize("depth, width", [(20, 1), (20, 2), (56, 1), (110, 1), (32, 3)])
def test_resnet_masked_weight_counts(depth, width):
    model = models.build_architecture(f"resnet{depth}", width=width, num_classes=10)
    assert models.masked_weight_count(model) == _resnet_count(depth, width)
    assert len(model.layers) > depth  # conv, bn, activation and add layers


@pytest.mark.slow
def test_wrn28_masked_weight_count_and_plain_bn():
    model = models.build_architecture("wrn28", width=2, num_classes=100)
    assert models.masked_weight_count(model) == _wrn_count(2, classes=100)
    norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    # Affine parameters at their identity values, frozen: none is learned.
    assert norms and all(isinstance(n, layers.FixedAffineBatchNormalization) for n in norms)
    assert all(len(n.trainable_weights) == 0 for n in norms)
    assert all(np.all(n.gamma.numpy() == 1) and np.all(n.beta.numpy() == 0) for n in norms)
    plain = models.build_architecture("wrn28", width=2, num_classes=100, masked=False)
    plain_norms = [l for l in plain.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(n.center and n.scale for n in plain_norms)


@pytest.mark.slow
def test_masked_and_plain_models_share_initial_kernels():
    masked = models.build_architecture("conv2", input_shape=(8, 8, 3), seed=4,
                                       kernel_initializer="elu")
    plain = models.build_architecture("conv2", input_shape=(8, 8, 3), seed=4,
                                      kernel_initializer="elu", masked=False)
    for layer in layers.masked_layers(masked):
        np.testing.assert_array_equal(layer.kernel_variable().numpy(),
                                      plain.get_layer(layer.name).kernel.numpy())
    other_seed = models.build_architecture("conv2", input_shape=(8, 8, 3), seed=5)
    assert not np.array_equal(other_seed.get_layer("conv_1").kernel_variable().numpy(),
                              masked.get_layer("conv_1").kernel_variable().numpy())


@pytest.mark.slow
def test_batch_norm_uses_batch_statistics_in_training_and_moving_averages_at_inference():
    model = models.build_architecture("resnet20", input_shape=(8, 8, 3), seed=0)
    bn = model.get_layer("bn_stem")
    x = np.random.default_rng(0).uniform(0, 255, size=(16, 8, 8, 3)).astype(np.float32)
    probe = keras.Model(model.input, bn.output)
    trained = probe(x, training=True).numpy()
    np.testing.assert_allclose(trained.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(trained.std(axis=(0, 1, 2)), 1, atol=1e-2)
    inferred = probe(x, training=False).numpy()  # initial moving stats: mean 0, var 1
    assert not np.allclose(inferred, trained, atol=1e-2)


# The other architectures train a step in tests/test_recipes.py.
ALL_ARCHS = ["fcn", "resnet32", "resnet44"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_one_training_step_changes_only_scores(arch):
    shape = (28, 28, 1) if arch == "fcn" else (16, 16, 3)
    model = models.build_architecture(arch, input_shape=shape, num_classes=5, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(4, *shape)).astype(np.float32)
    y = rng.integers(0, 5, size=(4,))
    masked = layers.masked_layers(model)
    before = [(l.kernel_variable().numpy(), l.scores.numpy()) for l in masked]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert model.predict(x, verbose=0).shape == (4, 5)
    for layer, (kernel, scores) in zip(masked, before):
        np.testing.assert_array_equal(layer.kernel_variable().numpy(), kernel)
    assert any(not np.array_equal(l.scores.numpy(), s) for l, (_, s) in zip(masked, before))


def test_with_regime_freezes_mask_and_trains_kernel():
    model = models.build_architecture("fcn", input_shape=(6, 6, 1), num_classes=3, seed=0)
    tuned = models.with_regime(model, "mask_then_weights")
    masked = layers.masked_layers(tuned)
    for layer in masked:
        np.testing.assert_array_equal(layer.effective_kernel().numpy(),
                                      model.get_layer(layer.name).effective_kernel().numpy())
    assert {v.name for v in tuned.trainable_weights} == {"kernel"}
    masks = [l.compute_mask_values().numpy() for l in masked]
    tuned.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    tuned.train_on_batch(rng.uniform(0, 255, (8, 6, 6, 1)), rng.integers(0, 3, 8))
    for layer, mask in zip(masked, masks):
        np.testing.assert_array_equal(layer.compute_mask_values().numpy(), mask)
        assert not np.array_equal(layer.kernel_variable().numpy(),
                                  model.get_layer(layer.name).kernel_variable().numpy())


@pytest.mark.parametrize("call, message", [
    (lambda: models.build_architecture("conv9"), "arch='conv9'"),
    (lambda: models.build_architecture("conv8", input_shape=(8, 8, 3)), "at least 16x16"),
    (lambda: models.build_architecture("fcn", num_classes=1), "num_classes=1"),
    (lambda: models.build_architecture("resnet20", width=0), "width=0"),
])
@pytest.mark.slow
def test_bad_model_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
