"""The arithmetic of a training step against what the machine can do: the
ceiling and the mask's own cost that `ssm_keras.experiments.throughput` reports.

The arithmetic ceiling is `peak GFLOP/s / training GFLOP per image`. The
layers counted are those of a type the layer registry pairs with a masked
type (`ssm_keras.layers.registry`), stock or masked; a layer's forward pass
costs `F = 2 * sum_k size(k) * uses(k)` FLOP over the kernels `k` it masks
(or would mask), where `uses(k)`, the times each entry of `k` is multiplied
per image, is its masked type's `kernel_uses`: the output positions for
dense and convolution layers (both kernels of a separable convolution), the
input positions for transposed convolutions, the time steps for recurrent
layers, the positions each projection sees for attention (whose
weight-free `softmax(Q K^T) V` is not counted), none for an embedding
lookup. Training costs `3 F` per layer (forward, input gradient, kernel
gradient) except `2 F` for the first one, whose input gradient is never
computed. The peak is measured: the best of `2 n^3 / t`
over repeated `n x n` matmuls in a precision's compute dtype (float32,
bfloat16 or float16), on the device the models train on: a large matmul is
the densest arithmetic TensorFlow runs, so its rate stands in for the
processor's peak under its present load.

The mask's own arithmetic is the fused forward `W = W0 * m(s)` and the score
gradient `dL/ds = dL/dW * W0` of every masked layer, run alone in a loop: the
two element-wise passes over each kernel that a masked step makes on top of
a plain one.
"""

import math
import time

import keras
import tensorflow as tf

from ssm_keras import choices, masking
from ssm_keras import layers as ssm_layers
from ssm_keras.layers import registry


def matmul_gflops(size=2048, dtype="float32", repeats=5):
    """GFLOP/s of a `size`^3 matmul in `dtype`, best of `repeats`: `2 n^3 / t`."""
    a = tf.cast(tf.random.stateless_normal((size, size), seed=(0, 0)), dtype)
    product = tf.function(lambda x: tf.matmul(x, x))
    product(a).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _shape(tensors):
    """The shape of a layer's (first) input or output tensor."""
    return tuple(keras.tree.flatten(tensors)[0].shape)


def forward_flop(layer):
    """`F = 2 * sum_k size(k) * uses(k)`, the forward FLOP per image of a
    layer of a registered type (see the module docstring)."""
    cls = registry.masked_class_of(layer)
    input_shape, output_shape = _shape(layer.input), _shape(layer.output)
    if None in (*input_shape[1:], *output_shape[1:]):
        raise ValueError(
            f"cannot count the FLOP per example of layer {layer.name!r}: its input or output "
            f"shape has an unknown dimension ({input_shape} -> {output_shape})")
    flop = 0
    for _, leaf, leaf_class in registry.kernel_leaves(layer):
        variables = {variable.name: variable for variable in leaf.weights}
        for name in leaf_class.masked_kernels:
            if leaf is layer:
                uses = cls.kernel_uses(layer, name, input_shape, output_shape)
            else:
                uses = cls.sublayer_uses(layer, leaf, leaf_class, name, input_shape)
            flop += 2 * math.prod(variables[name].shape) * uses
    return flop


def training_gflop_per_image(model):
    """Training GFLOP per image of the layers of registered types:
    `sum(3 F) - F_first`, where `F` is a layer's forward FLOP
    (`forward_flop`) and the first layer computes no input gradient.
    """
    counted = [layer for layer in ssm_layers.find_layers(model, keras.layers.Layer)
               if registry.masked_class_of(layer) is not None]
    forward = [forward_flop(layer) for layer in counted]
    return (3 * sum(forward) - forward[0]) / 1e9


def compute_dtype(precision):
    """The dtype layers compute in under the policy `precision`."""
    return keras.DTypePolicy(precision).compute_dtype


def measured_peaks(precisions, matmul_size):
    """`{compute dtype: GFLOP/s}` of the `matmul_size`^3 matmul in the compute
    dtype of each precision of `precisions`."""
    dtypes = sorted({compute_dtype(precision) for precision in precisions})
    return {dtype: matmul_gflops(matmul_size, dtype) for dtype in dtypes}


def peak_for(precision, peaks, peak_gflops, matmul_size):
    """The peak GFLOP/s of `precision`'s ceiling and where it came from:
    `peak_gflops` if given, else its compute dtype's entry of `peaks`
    (`measured_peaks`)."""
    if peak_gflops is not None:
        return peak_gflops, "--peak_gflops"
    dtype = compute_dtype(precision)
    return peaks[dtype], f"measured: {dtype} {matmul_size}^3 matmul"


def _mask_loop(kernels, dtype, iterations, with_mask):
    """A `tf.function` running `iterations` times, for every masked kernel
    (`(layer, kernel name)` of `kernels`), the forward `W = W0 * m(s)` and
    backward `dL/ds = dL/dW * W0` of the fused threshold mask
    (`with_mask`), or only what the loop itself costs: shifting
    the scores by the iteration (so that nothing is hoisted out of the loop)
    and summing `W0` and `dL/dW` (the reductions that consume the results)."""
    tensors = [(tf.cast(layer.kernel_variable(name).value, dtype),
                tf.convert_to_tensor(layer.scores_variable(name).value),
                layer.threshold_variable(name).value,
                tf.ones(layer.kernel_variable(name).shape, dtype), layer.mask_kind)
               for layer, name in kernels]

    def iteration(shift):
        total = tf.constant(0.0)
        for kernel, scores, threshold, upstream, kind in tensors:
            scores = scores + shift
            if not with_mask:
                total += tf.reduce_sum(tf.cast(kernel, tf.float32) + scores)
                total += tf.reduce_sum(tf.cast(upstream, tf.float32))
                continue
            with tf.GradientTape() as tape:
                tape.watch(scores)
                masked = masking.threshold_masked_kernel(kind, kernel, scores, threshold,
                                                         frozen_kernel=True)
            score_gradient = tape.gradient(masked, scores, output_gradients=upstream)
            total += tf.reduce_sum(tf.cast(masked, tf.float32) + score_gradient)
        return total

    @tf.function
    def loop():
        total = tf.constant(0.0)
        for step in tf.range(iterations):
            total += iteration(tf.cast(step, tf.float32) * 1e-12)
        return total

    return loop


def mask_seconds_per_step(model, precision, iterations=200, repeats=3):
    """Seconds per training step of the mask's own arithmetic in `model`: the
    fused forward and the score gradient of every masked layer (the two
    element-wise passes over its kernel that a plain step does not make),
    timed in a loop of `iterations` and less the loop's own cost; best of
    `repeats`. None for masks without a fused threshold kernel."""
    kernels = ssm_layers.masked_kernels(model)
    if not all(layer.mask_kind in choices.THRESHOLD_KINDS for layer, _ in kernels):
        return None
    dtype = compute_dtype(precision)
    seconds = {}
    for with_mask in (True, False):
        loop = _mask_loop(kernels, dtype, iterations, with_mask)
        loop().numpy()  # traces
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            loop().numpy()
            best = min(best, time.perf_counter() - start)
        seconds[with_mask] = best / iterations
    return max(0.0, seconds[True] - seconds[False])
