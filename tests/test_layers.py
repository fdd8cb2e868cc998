"""Masked layers: every registered type against its stock layer, seeds and
fan-ins, a user's own masked layer, regimes, serialisation, initialisers."""

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssm_keras
from ssm_keras import choices, initializers, layers, masking
from ssm_keras.experiments import arithmetic
from ssm_keras.layers import registry

DATA = pathlib.Path(__file__).parent / "data"
L = keras.layers
RNG = np.random.default_rng(0)
# Stock layers get random biases, so that a dropped or misplaced bias shows.
BIAS = dict(bias_initializer="random_normal")


def _sequence_model():
    """Every registered sequence layer type, on 6 tokens of 12."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = L.Embedding(12, 8, name="embedding")(tokens)
    x = L.MultiHeadAttention(2, 4, name="attention", **BIAS)(x, x)
    x = L.GroupQueryAttention(4, 2, 1, name="grouped", **BIAS)(x, x)
    x = L.EinsumDense("abc,cd->abd", (6, 8), bias_axes="d", name="einsum", **BIAS)(x)
    x = L.SimpleRNN(8, return_sequences=True, name="simple_rnn", **BIAS)(x)
    x = L.GRU(8, return_sequences=True, name="gru", **BIAS)(x)
    x = L.LSTM(8, return_sequences=True, name="lstm", **BIAS)(x)
    x = L.Conv1D(6, 3, padding="causal", name="conv1d", **BIAS)(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="depthwise1d", **BIAS)(x)
    x = L.SeparableConv1D(6, 3, padding="same", name="separable1d", **BIAS)(x)
    x = L.Conv1DTranspose(4, 2, strides=2, name="transpose1d", **BIAS)(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, L.Dense(3, name="dense", **BIAS)(x), name="sequences")


def _image_model():
    """Every registered 2-D and 3-D convolution type, on 6x6x3 images."""
    images = keras.Input((6, 6, 3), name="images")
    x = L.Conv2D(4, 3, padding="same", name="conv2d", **BIAS)(images)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise2d", **BIAS)(x)
    x = L.SeparableConv2D(4, 3, strides=2, padding="same", name="separable2d", **BIAS)(x)
    x = L.Conv2DTranspose(3, 3, strides=2, padding="same", name="transpose2d", **BIAS)(x)
    x = L.Reshape((6, 6, 3, 1))(x)
    x = L.Conv3D(2, 2, padding="same", name="conv3d", **BIAS)(x)
    x = L.Conv3DTranspose(2, 2, strides=(1, 1, 2), name="transpose3d", **BIAS)(x)
    x = L.Flatten()(x)
    return keras.Model(images, L.Dense(3, name="dense", **BIAS)(x), name="images")


MODELS = {"sequences": (_sequence_model, lambda: RNG.integers(0, 12, (4, 6)).astype("int32")),
          "images": (_image_model, lambda: RNG.normal(size=(4, 6, 6, 3)).astype("float32"))}


def test_the_test_models_hold_every_registered_layer_type():
    containers = {type(layer) for name, (make, _) in MODELS.items() for layer in make().layers}
    cells = {L.SimpleRNNCell, L.LSTMCell, L.GRUCell}  # inside SimpleRNN, LSTM, GRU
    built_in = {stock for stock, masked in registry.entries()
                if masked.__module__ == "ssm_keras.layers"}
    assert built_in == (containers | cells) - {
        L.InputLayer, L.GlobalAveragePooling1D, L.Reshape, L.Flatten}


def _numpy_kernels(model):
    """`{(scope, kernel): W0 * m}` of a signed supermask, in NumPy from its
    variables (independent of the layers' mask code)."""
    kernels = {}
    for layer, name in layers.masked_kernels(model):
        scores = layer.scores_variable(name).numpy()
        mask = np.sign(scores) * (np.abs(scores) > layer.threshold_variable(name).numpy())
        kernels[(layer.mask_scope, name)] = layer.kernel_variable(name).numpy() * mask
    return kernels


def _outputs(model, inputs, **kwargs):
    return np.asarray(model(inputs, **kwargs))


@pytest.mark.parametrize("case", sorted(MODELS))
def test_every_layer_type_masks_trains_saves_bakes_and_compacts_exactly(case, tmp_path):
    make, make_inputs = MODELS[case]
    model, inputs = make(), make_inputs()
    masked = ssm_keras.supermask(model, kernels="keep", seed=3)
    stock_layers = {layer.name: layer for layer in model.layers}
    for layer in masked.layers:
        expected = registry.masked_type(type(stock_layers[layer.name]))
        assert type(layer) is (expected or type(stock_layers[layer.name])), layer.name
    # kernels="keep": W0 is the stock kernel, key by key.
    stock_kernels = {(scope, name): kernel.numpy() for layer in model.layers
                     for scope, name, kernel in registry.kernels(layer)}
    masked_kernels = {(scope, name): kernel.numpy() for layer in masked.layers
                      for scope, name, kernel in registry.kernels(layer)}
    assert masked_kernels.keys() == stock_kernels.keys()
    for key, kernel in stock_kernels.items():
        np.testing.assert_array_equal(masked_kernels[key], kernel, err_msg=str(key))

    # Exact: the stock model with W0 * m(s) computes the same, to the last bit.
    kernels = _numpy_kernels(masked)
    for key, kernel in kernels.items():
        assert 0 < np.count_nonzero(kernel) < kernel.size, key  # a real mask
    for layer in model.layers:
        for scope, name, variable in registry.kernels(layer):
            variable.assign(kernels[(scope, name)])
    expected = _outputs(model, inputs)
    np.testing.assert_array_equal(_outputs(masked, inputs), expected)

    # Configs round-trip; a step moves every score and nothing else.
    for layer in masked.layers:
        config = layer.get_config()
        json.dumps(keras.saving.serialize_keras_object(layer))
        assert type(layer).from_config(config).get_config() == config, layer.name
    trainable = masked.trainable_variables
    assert sorted(v.path for v in trainable) == sorted(
        v.path for v in masked.weights if v.path.endswith("scores"))
    assert len(trainable) == len(kernels)
    before = {v.path: v.numpy().copy() for v in masked.weights}
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(masked(inputs, training=True) ** 2)
    # Each gradient scaled to a largest entry of 1: deep in the stack they are tiny.
    gradients = [g / tf.reduce_max(tf.abs(g)) for g in tape.gradient(loss, trainable)]
    keras.optimizers.SGD(1.0).apply(gradients, trainable)
    for variable in masked.weights:
        moved = not np.array_equal(variable.numpy(), before[variable.path])
        assert moved == variable.path.endswith("scores"), variable.path
    outputs = _outputs(masked, inputs)

    # .keras file, baked stock model and compact file: the same outputs.
    masked.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras")
    np.testing.assert_array_equal(_outputs(loaded, inputs), outputs)
    assert [v.path for v in loaded.trainable_variables] == [v.path for v in trainable]
    baked = ssm_keras.bake(masked)
    assert [type(layer) for layer in baked.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(_outputs(baked, inputs), outputs)
    ssm_keras.save_compact(masked, tmp_path / "model.ssm")
    rebuilt = ssm_keras.load_compact(tmp_path / "model.ssm")
    for (layer, name), (twin, twin_name) in zip(layers.masked_kernels(masked),
                                                layers.masked_kernels(rebuilt.masked_model)):
        assert (twin.mask_scope, twin_name) == (layer.mask_scope, name)
        np.testing.assert_array_equal(twin.effective_kernel(name), layer.effective_kernel(name))
    np.testing.assert_array_equal(_outputs(rebuilt.masked_model, inputs), outputs)
    np.testing.assert_array_equal(_outputs(rebuilt.baked_model, inputs), outputs)


@pytest.mark.parametrize("mask", ["binary", "bernoulli", "topk", "signed_topk"])
def test_other_mask_kinds_compute_what_the_stock_layers_compute(mask):
    model = _sequence_model()
    inputs = MODELS["sequences"][1]()
    density = {"density": 0.4} if mask in choices.TOPK_KINDS else {}
    masked = ssm_keras.supermask(model, mask=mask, kernels="keep", seed=3, **density,
                                 score_initializer="glorot_uniform")
    for layer in model.layers:
        for scope, name, variable in registry.kernels(layer):
            leaf = next(leaf for leaf in layers.masked_layers(masked) if leaf.mask_scope == scope)
            mask_values = leaf.compute_mask_values(name).numpy()
            assert 0 < np.count_nonzero(mask_values) < mask_values.size, (scope, name)
            variable.assign(variable.numpy() * mask_values)
    np.testing.assert_array_equal(_outputs(masked, inputs), _outputs(model, inputs))


def test_kernel_uses_count_each_types_multiplications():
    """`arithmetic.forward_flop`: `2 * sum_k size(k) * uses(k)`, the uses by
    each type's `kernel_uses`."""
    model = _sequence_model()
    flop = {layer.name: arithmetic.forward_flop(layer) for layer in model.layers
            if registry.masked_class_of(layer) is not None}
    projections = 3 * 8 * 2 * 4 * 6 + 2 * 4 * 8 * 6  # query, key, value; output: 6 positions
    grouped = (8 * 2 * 4 + 2 * 8 * 1 * 4) * 6 + 2 * 4 * 8 * 6  # query, key and value; output
    assert flop == {
        "embedding": 0,  # a lookup
        "attention": 2 * projections,
        "grouped": 2 * grouped,
        "einsum": 2 * 8 * 8 * 6,
        "simple_rnn": 2 * (8 * 8 + 8 * 8) * 6,  # kernel and recurrent kernel, 6 steps
        "gru": 2 * (8 * 24 + 8 * 24) * 6,
        "lstm": 2 * (8 * 32 + 8 * 32) * 6,
        "conv1d": 2 * 3 * 8 * 6 * 6,
        "depthwise1d": 2 * 3 * 6 * 2 * 6,
        "separable1d": 2 * (3 * 12 * 1 + 12 * 6) * 6,
        "transpose1d": 2 * 2 * 4 * 6 * 6,  # each entry once per input position
        "dense": 2 * 4 * 3,
    }


def test_seeds_are_keyed_by_scope_and_role():
    inputs = RNG.normal(size=(2, 4, 6)).astype("float32")
    first = layers.MaskedMultiHeadAttention(2, 3, mask_seed=0, name="first")
    second = layers.MaskedMultiHeadAttention(2, 3, mask_seed=0, name="second")
    first(inputs, inputs), second(inputs, inputs)
    a, b = layers.named_variables(first), layers.named_variables(second)
    assert first._query_dense.mask_scope == "first/query"
    assert not np.array_equal(a["query/scores"], a["key/scores"])
    assert not np.array_equal(a["query/scores"], b["query/scores"])
    again = layers.MaskedMultiHeadAttention(2, 3, mask_seed=0, name="first")
    again(inputs, inputs)
    for key, variable in layers.named_variables(again).items():
        np.testing.assert_array_equal(variable, a[key], err_msg=key)
    lstm = layers.MaskedLSTM(4, mask_seed=0, name="lstm")
    lstm(inputs)
    assert lstm.cell.mask_scope == "lstm/lstm_cell"
    assert lstm.cell.threshold.numpy() != lstm.cell.recurrent_threshold.numpy()


def test_kernels_are_drawn_with_their_fan_in():
    # elus: |W0| = sqrt(6 / fan_in).
    einsum = layers.MaskedEinsumDense("abc,cde->abde", (None, 2, 3), mask_seed=0)
    einsum(RNG.normal(size=(1, 2, 8)))
    np.testing.assert_allclose(np.abs(einsum.kernel_variable()), np.sqrt(6 / 8), rtol=1e-6)
    transpose = layers.MaskedConv2DTranspose(4, 3, mask_seed=0)
    transpose(RNG.normal(size=(1, 5, 5, 2)))
    np.testing.assert_allclose(np.abs(transpose.kernel_variable()), np.sqrt(6 / (9 * 2)),
                               rtol=1e-6)
    separable = layers.MaskedSeparableConv2D(4, 3, depth_multiplier=2, mask_seed=0)
    separable(RNG.normal(size=(1, 5, 5, 3)))
    np.testing.assert_allclose(np.abs(separable.kernel_variable("depthwise_kernel")),
                               np.sqrt(6 / 9), rtol=1e-6)
    np.testing.assert_allclose(np.abs(separable.kernel_variable("pointwise_kernel")),
                               np.sqrt(6 / 6), rtol=1e-6)


def test_the_first_masked_layers_files_load_with_the_same_values():
    """`data/first_masked_layers.json`: a model of `MaskedConv2D` (with a
    seeded random bias), `MaskedDepthwiseConv2D` (signed top-k),
    `MaskedConv1D` (causal, binary) and `MaskedDense` as the package's first
    masked layers serialised it, with their seeded initial weights, changed
    scores and outputs: the classes built on the stock layers read the
    config, draw the same initial values bit for bit, and compute the same."""
    saved = json.loads((DATA / "first_masked_layers.json").read_text())
    model = keras.saving.deserialize_keras_object(saved["model"])
    assert [f"{layer.name}/{v.name}" for layer in model.layers
            for v in layer.weights] == saved["weight_names"]
    for name, value, initial in zip(saved["weight_names"], model.get_weights(),
                                    saved["initial_weights"]):
        np.testing.assert_array_equal(value, np.asarray(initial, np.float32), err_msg=name)
    model.set_weights([np.asarray(weights, np.float32) for weights in saved["weights"]])
    outputs = model.predict(np.asarray(saved["images"], np.float32), verbose=0)
    np.testing.assert_array_equal(outputs, np.asarray(saved["outputs"], np.float32))


def test_a_model_saved_before_supermask_loads_with_the_same_outputs():
    """`data/pre_supermask_model.json`: a masked conv (bias, `same` padding),
    batch norm and masked dense model as the layers before `supermask`
    serialised it (no `train_bias`, no `dilation_rate`; the conv's defaults
    were `padding="same"`, `use_bias=False`), with its weights and outputs."""
    saved = json.loads((DATA / "pre_supermask_model.json").read_text())
    model = keras.saving.deserialize_keras_object(saved["model"])
    model.set_weights([np.asarray(weights, np.float32) for weights in saved["weights"]])
    outputs = model.predict(np.asarray(saved["images"], np.float32), verbose=0)
    np.testing.assert_allclose(outputs, np.asarray(saved["outputs"]), rtol=1e-6, atol=1e-7)
    assert model.get_layer("conv").padding == "same"
    assert model.get_layer("conv").train_bias is False


# A user's own layer, made maskable from outside the package (as in
# docs/your-own-model.md).
@keras.saving.register_keras_serializable(package="ssm_keras_tests")
class ScaledDense(keras.layers.Layer):
    """`y = scale * x @ kernel + bias`."""

    def __init__(self, units, scale=2.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="ones")

    def call(self, inputs):
        return self.scale * keras.ops.matmul(inputs, self.kernel) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package="ssm_keras_tests")
@ssm_keras.register
class MaskedScaledDense(ssm_keras.MaskedLayer, ScaledDense):
    masked_kernels = {"kernel": "kernel_initializer"}


def test_a_users_own_layer_registered_from_outside_masks_trains_bakes_and_compacts(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, L.Dense(2, name="head")(ScaledDense(4, name="scaled")(inputs)))
    masked = ssm_keras.supermask(model, seed=0)
    layer = masked.get_layer("scaled")
    assert type(layer) is MaskedScaledDense and registry.stock_type(MaskedScaledDense) is ScaledDense
    np.testing.assert_allclose(np.abs(layer.kernel_variable()), np.sqrt(6 / 5), rtol=1e-6)
    x = RNG.normal(size=(3, 5)).astype("float32")
    scores = layer.scores.numpy()
    w = layer.kernel_variable().numpy() * np.sign(scores) * (np.abs(scores) > layer.threshold)
    head = masked.get_layer("head").effective_kernel().numpy()
    np.testing.assert_allclose(masked(x), (2.0 * x @ w + 1.0) @ head, rtol=1e-5, atol=1e-6)
    masked.compile(keras.optimizers.SGD(0.5), "mse")
    before = {v.path: v.numpy().copy() for v in masked.weights}
    masked.train_on_batch(x, RNG.normal(size=(3, 2)).astype("float32"))
    for variable in masked.weights:
        moved = not np.array_equal(variable.numpy(), before[variable.path])
        assert moved == variable.path.endswith("scores"), variable.path
    outputs = _outputs(masked, x)
    baked = ssm_keras.bake(masked)
    assert type(baked.get_layer("scaled")) is ScaledDense
    np.testing.assert_array_equal(_outputs(baked, x), outputs)
    ssm_keras.save_compact(masked, tmp_path / "model.ssm")
    rebuilt = ssm_keras.load_compact(tmp_path / "model.ssm")
    np.testing.assert_array_equal(rebuilt.masked_model.get_layer("scaled").effective_kernel(),
                                  layer.effective_kernel())
    np.testing.assert_array_equal(_outputs(rebuilt.baked_model, x), outputs)


def test_register_refuses_what_is_not_a_masked_layer_and_a_second_counterpart():
    with pytest.raises(TypeError, match="subclass of ssm_keras.MaskedLayer"):
        ssm_keras.register(ScaledDense)
    with pytest.raises(ValueError, match="ScaledDense is registered already, with "
                                         "MaskedScaledDense"):
        ssm_keras.register(type("Other", (ssm_keras.MaskedLayer, ScaledDense),
                                {"masked_kernels": {"kernel": "kernel_initializer"}}))
    with pytest.raises(ValueError, match="Unmasked names no masked_kernels"):
        ssm_keras.register(type("Unmasked", (ssm_keras.MaskedLayer, keras.layers.Dense), {}))
    with pytest.raises(TypeError, match="NoLayer subclasses no Keras layer type"):
        ssm_keras.register(type("NoLayer", (ssm_keras.MaskedLayer,),
                                {"masked_kernels": {"kernel": "kernel_initializer"}}))
    with pytest.raises(TypeError, match="Unrelated computes as ScaledDense, so it masks "
                                        "ScaledDense or a subclass of it, not Conv1D"):
        ssm_keras.register(type("Unrelated", (ssm_keras.MaskedLayer, ScaledDense),
                                {"masked_kernels": {"kernel": "kernel_initializer"}}),
                           stock=keras.layers.Conv1D)
    with pytest.raises(TypeError, match="would mask 0"):
        ssm_keras.register(type("ZeroStock", (ssm_keras.MaskedLayer, ScaledDense),
                                {"masked_kernels": {"kernel": "kernel_initializer"}}), stock=0)
    with pytest.raises(TypeError, match="StringStock would mask 'Dense'"):
        ssm_keras.register(type("StringStock", (ssm_keras.MaskedLayer, ScaledDense),
                                {"masked_kernels": {"kernel": "kernel_initializer"}}),
                           stock="Dense")


# One layer in detail: variables, gradients, regimes.
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
    w0, s, tau = layer.kernel_variable().numpy(), layer.scores.numpy(), layer.threshold.numpy()
    mask = np.sign(s) * (np.abs(s) > tau)
    np.testing.assert_allclose(layer(x).numpy(), x @ (w0 * mask) + 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.kernel.numpy(), w0 * mask)  # `kernel` is W0 * m(s)
    assert isinstance(layer, keras.layers.Dense)


def test_conv_output_equals_dense_conv_of_effective_kernel():
    layer = layers.MaskedConv2D(4, 3, strides=2, padding="same", mask="signed_topk",
                                density=0.3, seed=2, activation="relu")
    x = np.random.default_rng(1).normal(size=(2, 7, 7, 3)).astype(np.float32)
    out = layer(x).numpy()
    kernel = layer.effective_kernel().numpy()
    assert np.count_nonzero(kernel) == masking.topk_count(3 * 3 * 3 * 4, 0.3)
    expected = tf.nn.relu(tf.nn.conv2d(x, kernel, 2, "SAME") + layer.bias).numpy()
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
    np.testing.assert_allclose(grads["scores"].numpy(), d_kernel * layer.kernel_variable().numpy(),
                               rtol=1e-5)


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


def test_mask_counts_add_up_over_all_kernels():
    layer = layers.MaskedLSTMCell(3, mask_seed=0)
    layer.build((None, 2))
    counts = layer.mask_counts()
    masks = [layer.compute_mask_values(name).numpy() for name in layer.masked_kernels]
    assert counts["kept"] == sum(np.sum(mask == 1) for mask in masks)
    assert counts["inverted"] == sum(np.sum(mask == -1) for mask in masks)
    assert counts["kept"] + counts["inverted"] + counts["hidden"] == 2 * 12 + 3 * 12


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
    np.testing.assert_array_equal(first.kernel_variable().numpy(),
                                  second.kernel_variable().numpy())
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
    ({"kernel_regularizer": "l2"}, "kernel regularizer (kernel_regularizer='l2')"),
    ({"lora_rank": 2}, "it uses LoRA (lora_rank=2)"),
    ({"dtype": "int8_from_float32"}, "it is quantized"),
    ({"density": 0.3}, "density only shapes topk and signed_topk masks; mask='signed' ignores it"),
    ({"mask": "topk", "tau_fraction": 0.9}, "tau_fraction only shapes signed and binary masks"),
    ({"bernoulli_eval": "sample"}, "bernoulli_eval only applies to bernoulli masks"),
    ({"score_initializer": keras.initializers.Constant(0.0)},
     "score_initializer=Constant(value=0.0) hides every weight"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layers.MaskedDense(3, **kwargs)


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
    assert np.abs(values).max() <= np.float32(bound)  # the float32 bound the draw uses
    np.testing.assert_allclose(values.var(), 1.5 / 400, rtol=0.02)


def test_keras_builtin_initializers_by_name_and_seeding():
    init = initializers.with_seed(initializers.get("he_normal"), 5)
    np.testing.assert_array_equal(init((4, 4)).numpy(), init((4, 4)).numpy())
    again = initializers.with_seed(initializers.get("he_normal"), 5)
    np.testing.assert_array_equal(init((4, 4)).numpy(), again((4, 4)).numpy())
    assert initializers.derive_seed(0, "a", "kernel") != initializers.derive_seed(0, "b", "kernel")
    fan_in = initializers.FanInKernel("elus", 6)
    np.testing.assert_allclose(np.abs(fan_in((2, 3, 4))), np.sqrt(6 / 6), rtol=1e-6)
    with pytest.raises(ValueError, match="fan_in must divide"):
        fan_in((5, 5))


@pytest.mark.parametrize("kwargs, message", [
    ({"density": "0.5"}, "density must be a finite number in (0, 1]. Received: density='0.5'"),
    ({"density": None}, "density must be a finite number in (0, 1]. Received: density=None"),
    ({"tau_fraction": None},
     "tau_fraction must be a finite number in [0, 1). Received: tau_fraction=None"),
    ({"mask_seed": "1"}, "mask_seed must be an integer. Received: mask_seed='1'"),
    ({"seed": 2.0}, "mask_seed must be an integer. Received: mask_seed=2.0"),
])
def test_numeric_arguments_of_the_wrong_type_are_one_type_error(kwargs, message):
    with pytest.raises(TypeError) as info:
        layers.MaskedDense(3, **kwargs)
    assert str(info.value) == message


def test_a_numpy_integer_seed_is_an_int_seed():
    layer = layers.MaskedDense(3, seed=np.int64(7), name="dense")
    twin = layers.MaskedDense(3, seed=7, name="dense")  # seeded by (seed, name)
    inputs = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(layer(inputs).numpy(), twin(inputs).numpy())
    assert layer.get_config()["mask_seed"] == 7 and type(layer.mask_seed) is int


def test_seeded_bernoulli_layers_sample_masks_of_their_own():
    """One mask_seed for every layer (as `supermask` gives): layers of the
    same shape draw other samples, and the same layer again the same."""
    def sampled(name):
        layer = layers.MaskedDense(64, mask="bernoulli", mask_seed=0, name=name)
        layer.build((None, 32))
        return keras.ops.convert_to_numpy(layer.compute_mask_values(training=True))

    first, again, other = sampled("dense_a"), sampled("dense_a"), sampled("dense_b")
    np.testing.assert_array_equal(first, again)
    assert np.mean(first != other) > 0.4  # independent halves: about 0.5


def test_a_bernoulli_seed_must_fit_its_seed_generator():
    with pytest.raises(ValueError, match=r"a bernoulli mask's mask_seed must be in \[-2\*\*63, "
                                         r"2\*\*63\). Received: mask_seed=9223372036854775808"):
        layers.MaskedDense(3, mask="bernoulli", seed=2**63)
    inputs = np.ones((2, 4), np.float32)
    for seed in (-2**63, 2**63 - 1):  # the ends sample
        layer = layers.MaskedDense(3, mask="bernoulli", seed=seed, name="dense")
        assert layer(inputs, training=True).shape == (2, 3)
    assert layers.MaskedDense(3, seed=2**70).mask_seed == 2**70  # stateless keys take any int
