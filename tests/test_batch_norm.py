"""Batch-norm statistics of a Bernoulli-masked model are re-estimated under
the mask it evaluates with, and that is what its evaluation uses."""

import keras
import numpy as np
import pytest

from ssm_keras import data, layers
from ssm_keras.training import batch_norm


def _bernoulli_bn_model():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = layers.MaskedDense(64, mask="bernoulli", kernel_initializer="he_normal", seed=0,
                           name="hidden")(x)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization(name="norm")(x))
    outputs = layers.MaskedDense(10, mask="bernoulli", kernel_initializer="he_normal", seed=1,
                                 name="out")(x)
    return keras.Model(inputs, outputs)


def _by_hand(model, images, batch_size):
    """The mean over batches of each batch's mean and (biased) variance of
    the batch-norm layer's inputs under the expected masks."""
    inputs = keras.Model(model.inputs, model.get_layer("norm").input)
    features = inputs.predict(images, batch_size=batch_size, verbose=0).astype(np.float64)
    batches = [features[start:start + batch_size]
               for start in range(0, len(features), batch_size)]
    return (np.mean([batch.mean(0) for batch in batches], 0),
            np.mean([batch.var(0) for batch in batches], 0))


@pytest.mark.slow
def test_evaluation_uses_the_statistics_of_the_evaluated_mask(mnist_dir):
    splits = data.load_splits("mnist", str(mnist_dir.parent), 500, 0, 2000)
    model = _bernoulli_bn_model()
    assert batch_norm.needs_recalibration(model)
    model.compile(keras.optimizers.SGD(10.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(data.make_eval_dataset(*splits.train, 64), epochs=3, verbose=0, shuffle=False)
    norm = model.get_layer("norm")
    trained = norm.moving_mean.numpy().copy(), norm.moving_variance.numpy().copy()
    images = splits.train[0]  # 1,500 images: fewer than 50 batches, so all, in order
    batch_norm.recalibrate(model, images, 64)
    mean, variance = _by_hand(model, images, 64)
    # The statistics training left (of sampled masks) are far from those of
    # the expected masks, so that the checks below tell them apart.
    assert np.max(np.abs(trained[0] - mean)) > 0.1 and np.max(np.abs(trained[1] - variance)) > 0.1
    np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-4)
    assert norm.momentum == 0.99  # put back
    # The evaluation computes with them: the batch norm of the expected
    # masks' features by the statistics by hand, then the output layer.
    test_images = splits.test[0][:256]
    features = keras.Model(model.inputs, norm.input).predict(test_images, verbose=0)
    normalized = (features - mean) / np.sqrt(variance + norm.epsilon) * norm.gamma.numpy() \
        + norm.beta.numpy()
    by_hand = model.get_layer("out")(np.maximum(normalized, 0).astype(np.float32),
                                     training=False)
    np.testing.assert_allclose(model.predict(test_images, verbose=0), by_hand,
                               rtol=1e-3, atol=1e-3)


def test_which_models_are_recalibrated_for_each_setting():
    signed = keras.Sequential([keras.Input((4,)), layers.MaskedDense(3, mask="signed"),
                               keras.layers.BatchNormalization()])
    sampling = keras.Sequential([
        keras.Input((4,)), layers.MaskedDense(3, mask="bernoulli", bernoulli_eval="sample"),
        keras.layers.BatchNormalization()])
    expected = _bernoulli_bn_model()
    without = keras.Sequential([keras.Input((4,)), layers.MaskedDense(3, mask="bernoulli")])
    assert [batch_norm.recalibrates(model, None) for model in (
        signed, sampling, expected, without)] == [False, False, True, False]
    assert [batch_norm.recalibrates(model, True) for model in (
        signed, sampling, expected, without)] == [True, True, True, False]
    assert not batch_norm.recalibrates(expected, False)


@pytest.mark.slow
def test_validation_in_fit_sees_the_recalibrated_statistics():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 28, 28, 1)).astype(np.uint8)
    labels = rng.integers(0, 10, 256).astype(np.int64)
    model = _bernoulli_bn_model()
    model.compile(keras.optimizers.SGD(1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data.make_eval_dataset(images, labels, 64), epochs=1, verbose=0,
                        shuffle=False,
                        validation_data=data.make_eval_dataset(images, labels, 64),
                        callbacks=[batch_norm.RecalibrateBatchNorm(images, 64)])
    mean, _ = _by_hand(model, images, 64)
    np.testing.assert_allclose(model.get_layer("norm").moving_mean.numpy(), mean,
                               rtol=1e-4, atol=1e-4)
    assert history.history["val_loss"][0] == pytest.approx(
        model.evaluate(data.make_eval_dataset(images, labels, 64), verbose=0), rel=1e-5)
