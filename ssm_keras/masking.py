"""Mask functions with straight-through gradients.

Every function maps a score tensor `s` to a mask `m(s)` and is differentiated
with the straight-through estimator (STE): the step function's true gradient is
zero almost everywhere, so the backward pass treats `m` as the identity,
`dL/ds = dL/dm` (for `bernoulli`: `dL/ds = dL/dm * sigmoid'(s)`).

All masks are computed and returned in float32 whatever the dtype of the
scores (a float16 score tensor under `mixed_float16` gets a float32 mask and a
float16 gradient).

| kind          | forward `m(s)`                                      |
| ------------- | --------------------------------------------------- |
| `signed`      | `sign(s) * [|s| > tau]`, in {-1, 0, +1}             |
| `binary`      | `[s > tau]`, in {0, 1}                              |
| `bernoulli`   | a sample of `Bernoulli(sigmoid(s))`                 |
| `topk`        | 1 for the `ceil(density * n)` largest `|s|`, else 0 |
| `signed_topk` | `sign(s)` for those same entries, else 0            |

A NaN score hides its weight, `m(NaN) = 0`, for every kind: as the fused
training kernel (`threshold_masked_kernel`, `where(|s| > tau, ...)`) does,
so that a masked layer, `bake` and the compact file agree (`bake` and
`save_compact` refuse non-finite scores anyway). Top-k masks rank the other
entries, and keep fewer than `k` only when fewer than `k` scores are not
NaN.
"""

import functools
import math

import keras
import tensorflow as tf

from ssm_keras.choices import MASK_KINDS, THRESHOLD_KINDS


@tf.custom_gradient
def _straight_through(scores, mask):
    """Returns `mask`; the gradient goes to `scores` unchanged."""

    def grad(upstream):
        return upstream, None

    return tf.identity(mask), grad


@tf.custom_gradient
def _scaled_straight_through(scores, mask, scale):
    """Returns `mask`; the gradient goes to `scores` times `scale`."""

    def grad(upstream):
        return upstream * scale, None, None

    return tf.identity(mask), grad


def _as_float32(scores):
    return tf.cast(tf.convert_to_tensor(scores), tf.float32)


def signed_mask(scores, threshold):
    """`m = sign(s) * [|s| > tau]`: keep (+1), hide (0) or invert (-1);
    `m(NaN) = 0`.

    Args:
        scores: score tensor `s`, any shape and float dtype.
        threshold: scalar `tau >= 0`.
    """
    s = _as_float32(scores)
    tau = tf.cast(threshold, tf.float32)
    mask = tf.where(tf.abs(s) > tau, tf.sign(s), tf.zeros_like(s))
    return _straight_through(s, tf.stop_gradient(mask))


def binary_mask(scores, threshold):
    """`m = [s > tau]`: keep (1) or hide (0). `tau = 0` is `sigmoid(s) > 0.5`."""
    s = _as_float32(scores)
    tau = tf.cast(threshold, tf.float32)
    mask = tf.cast(s > tau, tf.float32)
    return _straight_through(s, tf.stop_gradient(mask))


def bernoulli_mask(scores, seed=None):
    """`m ~ Bernoulli(sigmoid(s))` with `dL/ds = dL/dm * sigmoid'(s)`.

    Args:
        scores: score tensor `s`.
        seed: anything `keras.random.uniform` takes: an int, a
            `keras.random.SeedGenerator` (for a new sample at every call) or
            None.
    """
    s = _as_float32(scores)
    probability = tf.sigmoid(s)
    uniform = keras.random.uniform(tf.shape(s), dtype="float32", seed=seed)
    mask = tf.cast(uniform < probability, tf.float32)
    slope = probability * (1.0 - probability)
    return _scaled_straight_through(
        s, tf.stop_gradient(mask), tf.stop_gradient(slope)
    )


def expected_bernoulli_mask(scores):
    """`m = [sigmoid(s) > 0.5] = [s > 0]`: the Bernoulli mask's mean, rounded."""
    return binary_mask(scores, 0.0)


def topk_count(size, density):
    """`k = ceil(density * n)`, at least 1, robust to float rounding.

    `density * n` is rounded to 6 decimals first, so that `0.3 * 10` (which is
    3.0000000000000004 in floating point) keeps 3 entries, not 4.
    """
    return max(1, math.ceil(round(density * size, 6)))


def _topk_indicator(s, density):
    """1.0 for the `ceil(density * n)` largest `|s|`, ties broken by index;
    0.0 for a NaN score (ranked below every other, then hidden)."""
    finite_or_inf = tf.logical_not(tf.math.is_nan(s))
    flat = tf.reshape(tf.where(finite_or_inf, tf.abs(s), -tf.ones_like(s)), [-1])
    size = flat.shape[0]
    if size is None:
        raise ValueError(
            "Top-k masks need a score tensor of known size. "
            f"Received: shape={s.shape}"
        )
    k = topk_count(size, density)
    _, indices = tf.math.top_k(flat, k=k, sorted=False)
    indicator = tf.scatter_nd(
        indices[:, None], tf.ones([k], tf.float32), [size]
    )
    return tf.reshape(indicator, tf.shape(s)) * tf.cast(finite_or_inf, tf.float32)


def topk_mask(scores, density):
    """`m = 1` for the `ceil(density * n)` largest `|s|` of the tensor, else 0.

    Exactly `ceil(density * n)` entries are kept, also when scores tie.
    """
    s = _as_float32(scores)
    return _straight_through(s, tf.stop_gradient(_topk_indicator(s, density)))


def signed_topk_mask(scores, density):
    """`m = sign(s)` for the `ceil(density * n)` largest `|s|`, else 0."""
    s = _as_float32(scores)
    mask = tf.where(_topk_indicator(s, density) > 0, tf.sign(s), tf.zeros_like(s))
    return _straight_through(s, tf.stop_gradient(mask))


@functools.cache
def _fused_threshold_kernel(signed, dtype):
    """The XLA-compiled forward of `threshold_masked_kernel` for one mask kind
    and kernel dtype: `where(|s| > tau, sign(s) * W0, 0)` (signed) or
    `where(s > tau, W0, 0)` (binary), one pass over the kernel.

    Traced once, for any shape (XLA compiles each shape it meets).
    """

    def forward(kernel, scores, threshold):
        if signed:
            kept = tf.abs(scores) > threshold
            values = tf.cast(tf.sign(scores), dtype) * kernel
        else:
            kept = scores > threshold
            values = kernel
        return tf.where(kept, values, tf.zeros_like(kernel))

    signature = [tf.TensorSpec(None, dtype), tf.TensorSpec(None, tf.float32),
                 tf.TensorSpec([], tf.float32)]
    return tf.function(forward, jit_compile=True, input_signature=signature)


def threshold_masked_kernel(kind, kernel, scores, threshold, frozen_kernel=False):
    """`W = W0 * m(s)` of a threshold mask (`signed` or `binary`), fused.

    The forward value is exactly `kernel * compute_mask(kind, scores,
    threshold=threshold)` (`m` is in {-1, 0, 1}, so `W` is `+-W0` or 0),
    computed in one XLA-compiled pass instead of the six element-wise passes
    of mask and product, which dominate the extra cost of a masked training
    step for small models such as the FCN.

    Gradients, straight-through as those of the mask functions:
    `dL/ds = dL/dW * W0` (in float32) and `dL/dW0 = dL/dW * m`, the latter
    by the same fused pass (`W0 * m` with `dL/dW` in place of `W0`). Stop the
    gradient of `scores` to freeze the mask.

    Args:
        kind: `signed` or `binary`.
        kernel: the frozen (or, with a frozen mask, trainable) kernel `W0`.
        scores: float32 scores `s` of the kernel's shape.
        threshold: scalar `tau`.
        frozen_kernel: True when nothing trains `W0` (the `mask` regime): then
            `dL/dW0` is never computed, which saves a pass over the kernel in
            every backward step.
    """
    if kind not in THRESHOLD_KINDS:
        raise ValueError(
            f"Fused kernels exist for threshold masks {THRESHOLD_KINDS}. Received: "
            f"mask={kind!r}"
        )
    kernel, scores, threshold = (
        tf.convert_to_tensor(kernel), _as_float32(scores), _as_float32(threshold)
    )
    fused = _fused_threshold_kernel(kind == "signed", kernel.dtype)

    def score_gradient(upstream):
        return tf.cast(upstream * kernel, tf.float32)

    if frozen_kernel:
        @tf.custom_gradient
        def masked_frozen_kernel(scores):
            return fused(kernel, scores, threshold), score_gradient

        return masked_frozen_kernel(scores)

    @tf.custom_gradient
    def masked_kernel(kernel, scores):
        def grad(upstream):
            return fused(upstream, scores, threshold), score_gradient(upstream)

        return fused(kernel, scores, threshold), grad

    return masked_kernel(kernel, scores)


def compute_mask(kind, scores, *, threshold=None, density=None, seed=None):
    """Dispatches to the mask function named `kind` (one of `MASK_KINDS`)."""
    if kind == "signed":
        return signed_mask(scores, threshold)
    if kind == "binary":
        return binary_mask(scores, threshold)
    if kind == "bernoulli":
        return bernoulli_mask(scores, seed)
    if kind == "topk":
        return topk_mask(scores, density)
    if kind == "signed_topk":
        return signed_topk_mask(scores, density)
    raise ValueError(
        f"Unknown mask kind. Expected one of {MASK_KINDS}. Received: "
        f"mask={kind!r}"
    )


def mask_counts(mask):
    """Counts of kept (+1), inverted (-1) and hidden (0) mask entries.

    Returns:
        A dict of Python ints: `total`, `kept`, `inverted`, `hidden` and
        `remaining = kept + inverted`.
    """
    mask = tf.convert_to_tensor(mask)
    kept = int(tf.reduce_sum(tf.cast(mask > 0, tf.int64)))
    inverted = int(tf.reduce_sum(tf.cast(mask < 0, tf.int64)))
    total = int(tf.size(mask, out_type=tf.int64))
    return {
        "total": total,
        "kept": kept,
        "inverted": inverted,
        "hidden": total - kept - inverted,
        "remaining": kept + inverted,
    }
