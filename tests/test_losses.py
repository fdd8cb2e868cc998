"""The training losses against NumPy: values, gradients, saturation, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssm_keras.training import losses

# Rows: an ordinary sample, one saturated against its label (p_y ~ e^-30,
# clipped at 1e-7), one saturated for its label (p_y > 1 - 1e-7).
LOGITS = np.array([[1.0, 2.0, 0.5], [30.0, 0.0, 0.0], [0.0, 0.0, 40.0]], np.float32)
LABELS = np.array([0, 1, 2])


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def numpy_clipped(logits, labels, epsilon=1e-7):
    """Per-sample loss and its gradient with respect to the logits (the
    bounds in float32, as TensorFlow has them: 1 - 1e-7 is 1 - 2^-23)."""
    probabilities = softmax(logits.astype(np.float64))
    true_probability = probabilities[np.arange(len(labels)), labels]
    low, high = np.float32(epsilon), np.float32(1 - epsilon)
    loss = -np.log(np.clip(true_probability, low, high))
    inside = (true_probability > low) & (true_probability < high)
    gradient = probabilities - np.eye(logits.shape[1])[labels]  # d(-log p_y)/dz
    return loss, gradient * inside[:, None]


def loss_and_logit_gradient(loss, logits, labels, dtype=tf.float32):
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        probabilities = keras.activations.softmax(tf.cast(logits, dtype))
        value = loss(labels, probabilities)
    return value.numpy(), tape.gradient(value, logits).numpy()


def test_clipped_loss_values_and_gradients_match_numpy():
    loss = losses.ClippedSparseCrossentropy(reduction=None)
    value, gradient = loss_and_logit_gradient(loss, LOGITS, LABELS)
    expected_value, expected_gradient = numpy_clipped(LOGITS, LABELS)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-6)
    assert value[1] == pytest.approx(-np.log(1e-7), rel=1e-6)  # capped at 16.12
    np.testing.assert_array_equal(gradient[1:], 0.0)  # clipped samples learn nothing
    assert np.abs(gradient[0]).sum() > 0.1


def test_exact_loss_is_unbounded_where_clipped_loss_saturates():
    exact, gradient = loss_and_logit_gradient(
        losses.get("crossentropy"), LOGITS[1:2], LABELS[1:2])
    assert exact == pytest.approx(30.0 + np.log(1 + np.exp(-30.0)), rel=1e-4)
    np.testing.assert_allclose(gradient, [[1.0, -1.0, 0.0]], atol=1e-5)


def test_clipped_loss_mean_over_a_batch():
    value, _ = loss_and_logit_gradient(losses.get("clipped_crossentropy"), LOGITS, LABELS)
    assert value == pytest.approx(numpy_clipped(LOGITS, LABELS)[0].mean(), rel=1e-5)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_clipped_loss_in_low_precision_is_computed_in_float32(dtype):
    """Probabilities in bfloat16/float16 (1e-7 is below float16's range) are
    clipped in float32: the bound and the zero gradients survive."""
    loss = losses.ClippedSparseCrossentropy(reduction=None)
    value, gradient = loss_and_logit_gradient(loss, LOGITS, LABELS, dtype)
    assert value.dtype == np.float32
    low = tf.cast(tf.nn.softmax(tf.cast(LOGITS, dtype)), tf.float32).numpy()
    true_probability = low[np.arange(3), LABELS]
    np.testing.assert_allclose(value, -np.log(np.clip(
        true_probability, np.float32(1e-7), np.float32(1 - 1e-7))), rtol=1e-5)
    assert value[1] == pytest.approx(-np.log(1e-7), rel=1e-6)
    np.testing.assert_array_equal(gradient[1:], 0.0)


def test_loss_registry_and_serialisation():
    with pytest.raises(ValueError, match="Received: loss='mse'"):
        losses.get("mse")
    with pytest.raises(ValueError, match="epsilon=0.7"):
        losses.ClippedSparseCrossentropy(epsilon=0.7)
    restored = keras.losses.deserialize(keras.losses.serialize(
        losses.ClippedSparseCrossentropy(epsilon=1e-5)))
    assert isinstance(restored, losses.ClippedSparseCrossentropy)
    assert restored.epsilon == 1e-5
