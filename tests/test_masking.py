"""Mask functions: forward values, straight-through gradients, top-k counts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssm_keras import choices, masking

SCORES = np.array([[-0.9, -0.3, 0.0], [0.2, 0.5, 1.0]], np.float32)


def _value_and_grad(fn, scores, upstream):
    s = tf.Variable(scores)
    with tf.GradientTape() as tape:
        mask = fn(s)
        loss = tf.reduce_sum(mask * upstream)
    return mask.numpy(), tape.gradient(loss, s).numpy()


UPSTREAM = np.array([[1.0, -2.0, 3.0], [0.5, -1.5, 4.0]], np.float32)


def test_signed_mask_keeps_hides_inverts():
    mask, grad = _value_and_grad(lambda s: masking.signed_mask(s, 0.25), SCORES, UPSTREAM)
    np.testing.assert_array_equal(mask, [[-1, -1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(grad, UPSTREAM)


def test_signed_mask_threshold_is_strict():
    mask = masking.signed_mask(np.array([0.5, -0.5, 0.50001]), 0.5).numpy()
    np.testing.assert_array_equal(mask, [0, 0, 1])


def test_binary_mask_and_zero_threshold_equals_sigmoid_rule():
    mask, grad = _value_and_grad(lambda s: masking.binary_mask(s, 0.25), SCORES, UPSTREAM)
    np.testing.assert_array_equal(mask, [[0, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(grad, UPSTREAM)
    random_scores = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    np.testing.assert_array_equal(
        masking.binary_mask(random_scores, 0.0).numpy(),
        (1 / (1 + np.exp(-random_scores)) > 0.5).astype(np.float32),
    )


def test_bernoulli_mask_samples_with_sigmoid_probability_and_scaled_gradient():
    scores = np.full((200, 200), 1.0, np.float32)
    mask, grad = _value_and_grad(
        lambda s: masking.bernoulli_mask(s, seed=3), scores, np.ones_like(scores)
    )
    assert set(np.unique(mask)) == {0.0, 1.0}
    probability = 1 / (1 + np.exp(-1.0))
    assert abs(mask.mean() - probability) < 0.01
    np.testing.assert_allclose(grad, probability * (1 - probability), rtol=1e-6)
    # Extreme scores are (almost) deterministic.
    extreme = masking.bernoulli_mask(np.array([-30.0, 30.0]), seed=1).numpy()
    np.testing.assert_array_equal(extreme, [0, 1])


def test_bernoulli_mask_is_reproducible_with_int_seed():
    scores = np.zeros(500, np.float32)
    first = masking.bernoulli_mask(scores, seed=7).numpy()
    np.testing.assert_array_equal(first, masking.bernoulli_mask(scores, seed=7).numpy())
    assert not np.array_equal(first, masking.bernoulli_mask(scores, seed=8).numpy())


def test_topk_mask_keeps_largest_magnitudes():
    mask, grad = _value_and_grad(lambda s: masking.topk_mask(s, 0.5), SCORES, UPSTREAM)
    np.testing.assert_array_equal(mask, [[1, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(grad, UPSTREAM)
    signed, signed_grad = _value_and_grad(
        lambda s: masking.signed_topk_mask(s, 0.5), SCORES, UPSTREAM
    )
    np.testing.assert_array_equal(signed, [[-1, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(signed_grad, UPSTREAM)


@pytest.mark.parametrize(
    "size, density, expected",
    [(10, 0.3, 3), (10, 0.31, 4), (7, 1.0, 7), (1000, 0.001, 1), (5, 1e-9, 1), (266200, 0.04, 10648)],
)
@pytest.mark.slow
def test_topk_count_is_ceiling(size, density, expected):
    assert masking.topk_count(size, density) == expected


@pytest.mark.parametrize("kind", choices.TOPK_KINDS)
def test_topk_exact_count_with_ties(kind):
    scores = np.array([1.0, -1.0, 1.0, 1.0, -1.0, 0.5, 0.5, 1.0], np.float32)
    mask = getattr(masking, f"{kind}_mask")(scores, 0.5).numpy()
    assert np.count_nonzero(mask) == 4
    assert np.all(np.abs(scores[mask != 0]) == 1.0)
    all_tied = getattr(masking, f"{kind}_mask")(np.full((6, 5), -2.0, np.float32), 0.3)
    assert np.count_nonzero(all_tied.numpy()) == 9


@pytest.mark.slow
@pytest.mark.parametrize("kind", choices.MASK_KINDS)
def test_float16_scores_under_mixed_precision(kind):
    keras.mixed_precision.set_global_policy("mixed_float16")
    scores16 = tf.constant(SCORES, tf.float16)
    mask = masking.compute_mask(kind, scores16, threshold=0.25, density=0.5, seed=0)
    assert mask.dtype == tf.float32
    reference = masking.compute_mask(
        kind, SCORES, threshold=0.25, density=0.5, seed=0
    ).numpy()
    np.testing.assert_array_equal(mask.numpy(), reference)
    with tf.GradientTape() as tape:
        tape.watch(scores16)
        loss = tf.reduce_sum(masking.compute_mask(kind, scores16, threshold=0.25, density=0.5, seed=0))
    grad = tape.gradient(loss, scores16)
    assert grad.dtype == tf.float16
    assert np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


def test_mask_counts():
    counts = masking.mask_counts(np.array([[1, 0, -1], [0, 0, 1]], np.float32))
    assert counts == {"total": 6, "kept": 2, "inverted": 1, "hidden": 3, "remaining": 3}


def test_unknown_mask_kind_names_value():
    with pytest.raises(ValueError, match=r"^Unknown mask kind\. .*Received: mask='ternary'$"):
        masking.compute_mask("ternary", SCORES)


@pytest.mark.slow
@pytest.mark.parametrize("kind", choices.THRESHOLD_KINDS)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
def test_fused_masked_kernel_equals_kernel_times_mask(kind, dtype):
    rng = np.random.default_rng(1)
    kernel = tf.Variable(rng.normal(size=(5, 7)).astype(np.float32))
    scores = tf.Variable(rng.normal(size=(5, 7)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(5, 7)), dtype)

    def value_and_grads(masked_kernel):
        with tf.GradientTape() as tape:
            value = masked_kernel(tf.cast(kernel, dtype), scores)
            loss = tf.reduce_sum(value * upstream)
        return [value.numpy()] + [g.numpy() for g in tape.gradient(loss, [kernel, scores])]

    fused = value_and_grads(lambda w, s: masking.threshold_masked_kernel(kind, w, s, 0.3))
    reference = value_and_grads(
        lambda w, s: w * tf.cast(masking.compute_mask(kind, s, threshold=0.3), dtype)
    )
    assert fused[0].dtype == dtype.as_numpy_dtype
    for got, expected in zip(fused, reference):
        np.testing.assert_array_equal(got, expected)
    # Straight-through: dL/ds = dL/dW * W0 everywhere, hidden weights included.
    np.testing.assert_allclose(
        fused[2], (upstream.numpy() * tf.cast(kernel, dtype).numpy()).astype(np.float32), rtol=1e-6
    )


@pytest.mark.parametrize("kind", choices.THRESHOLD_KINDS)
@pytest.mark.slow
def test_fused_masked_kernel_with_frozen_kernel_computes_only_the_score_gradient(kind):
    rng = np.random.default_rng(2)
    kernel = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32), trainable=False)
    scores = tf.Variable(rng.normal(size=(6, 4)).astype(np.float32))
    upstream = rng.normal(size=(6, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        value = masking.threshold_masked_kernel(kind, kernel, scores, 0.3, frozen_kernel=True)
        loss = tf.reduce_sum(value * upstream)
    kernel_grad, score_grad = tape.gradient(loss, [kernel, scores])
    mask = masking.compute_mask(kind, scores, threshold=0.3).numpy()
    np.testing.assert_array_equal(value.numpy(), kernel.numpy() * mask)
    np.testing.assert_array_equal(score_grad.numpy(), upstream * kernel.numpy())
    assert kernel_grad is None


def test_fused_masked_kernel_refuses_ranking_masks():
    with pytest.raises(ValueError, match="'topk'"):
        masking.threshold_masked_kernel("topk", SCORES, SCORES, 0.0)


NAN_SCORES = np.array([[np.nan, -0.9, 0.3], [0.6, np.nan, -0.1]], np.float32)


@pytest.mark.parametrize("kind, density, expected", [
    ("signed", None, [[0, -1, 1], [1, 0, 0]]),
    ("binary", None, [[0, 0, 1], [1, 0, 0]]),
    ("topk", 0.5, [[0, 1, 1], [1, 0, 0]]),
    ("signed_topk", 0.5, [[0, -1, 1], [1, 0, 0]]),
    # k = 5 of 6, but only 4 scores are not NaN: those 4 are kept.
    ("signed_topk", 5 / 6, [[0, -1, 1], [1, 0, -1]]),
])
def test_a_nan_score_hides_its_weight_in_every_mask_and_in_the_fused_kernel(kind, density,
                                                                             expected):
    mask = masking.compute_mask(kind, NAN_SCORES, threshold=0.25, density=density).numpy()
    np.testing.assert_array_equal(mask, expected)
    if kind in choices.THRESHOLD_KINDS:
        kernel = np.full(NAN_SCORES.shape, 0.5, np.float32)
        fused = masking.threshold_masked_kernel(kind, kernel, NAN_SCORES, 0.25).numpy()
        np.testing.assert_array_equal(fused, kernel * mask)
    np.testing.assert_array_equal(masking.expected_bernoulli_mask(NAN_SCORES).numpy(),
                                  [[0, 0, 1], [1, 0, 0]])
