"""`ssm_keras.supermask` on users' models: Sequential, functional, nested;
kernels redrawn or kept; what trains; refusals; bake, compact files, `fit`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import ssm_keras
from ssm_keras import data, layers
from ssm_keras.training import statistics
from ssm_keras.transforms import cloning, supermasking

IMAGE_SHAPE = (28, 28, 1)


def _sequential_cnn(name="user_cnn"):
    """A user-style Sequential CNN with biases and batch norm."""
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
        keras.layers.BatchNormalization(momentum=0.9, name="bn1"),
        keras.layers.MaxPooling2D(),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"),
        keras.layers.BatchNormalization(momentum=0.9, name="bn2"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", name="d1"),
        keras.layers.Dense(10, activation="softmax", name="d2"),
    ], name=name)


def _nested_model():
    """A functional model holding a Sequential block and a functional block,
    a Conv1D branch, a `keras.ops` call, biases and batch norm."""
    block = keras.Sequential([
        keras.Input((14, 14, 4)),
        keras.layers.Conv2D(6, 3, padding="same", name="block_conv"),
        keras.layers.BatchNormalization(name="block_bn"),
        keras.layers.Activation("relu"),
    ], name="seq_block")
    head_in = keras.Input((64,))
    head_out = keras.layers.Dense(10, activation="softmax", name="head_dense")(
        keras.layers.Dense(16, activation="tanh", name="head_hidden")(head_in))
    head = keras.Model(head_in, head_out, name="head")
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(x)
    x = block(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    rows = keras.layers.Reshape((28, 28))(inputs)
    r = keras.layers.Conv1D(4, 5, padding="causal", dilation_rate=2, name="rows_conv")(rows)
    r = keras.layers.GlobalAveragePooling1D()(r)
    x = keras.layers.Concatenate()([x, r])
    x = keras.ops.add(x, x)  # an operation, not a layer, in the graph (as in ConvNeXt)
    x = keras.layers.Dense(64, activation="relu", name="mix")(x)
    return keras.Model(inputs, head(x), name="nested")


def _images(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *IMAGE_SHAPE)).astype(np.float32)


def _randomize(model, seed=0):
    """Scores as after training (about half the weights remain) and batch-norm
    parameters and statistics away from their initial values."""
    rng = np.random.default_rng(seed)
    for layer, name in layers.masked_kernels(model):
        scores = layer.scores_variable(name)
        scores.assign(rng.normal(size=scores.shape).astype(np.float32))
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        for variable in layer.weights:
            values = rng.uniform(0.5, 1.5, variable.shape).astype(np.float32)
            variable.assign(values)
    return model


def _paths(variables):
    """`layer/variable` of each variable, sorted."""
    return sorted("/".join(variable.path.split("/")[-2:]) for variable in variables)


def _masked_names(model):
    return {layer.name: type(layer).__name__ for layer in layers.masked_layers(model)}


def test_every_kernel_layer_of_a_nested_model_is_masked():
    masked = ssm_keras.supermask(_nested_model(), seed=0)
    assert _masked_names(masked) == {
        "stem": "MaskedConv2D", "block_conv": "MaskedConv2D", "rows_conv": "MaskedConv1D",
        "mix": "MaskedDense", "head_hidden": "MaskedDense", "head_dense": "MaskedDense"}
    assert isinstance(masked.get_layer("seq_block"), keras.Sequential)
    bn = masked.get_layer("seq_block").get_layer("block_bn")
    assert isinstance(bn, layers.FixedAffineBatchNormalization)
    # Only the scores train, in the paper's regime.
    trainable = {variable.path.split("/")[-1] for variable in masked.trainable_variables}
    assert trainable == {"scores"}
    assert len(masked.trainable_variables) == 6


@pytest.mark.slow
def test_outputs_match_a_plain_model_with_the_effective_kernels():
    """A masked model computes what the original computes with W0 * m(s)."""
    model = _nested_model()
    masked = _randomize(ssm_keras.supermask(model, kernels="keep", seed=3))
    # The original model with W0 * m(s) as kernels and the batch norms'
    # parameters and statistics of the masked one.
    for layer in layers.masked_layers(masked):
        original = _find(model, layer.name)
        original.kernel.assign(original.kernel.numpy() * layer.compute_mask_values().numpy())
    for layer in layers.find_layers(masked, keras.layers.BatchNormalization):
        _find(model, layer.name).set_weights(layer.get_weights())
    images = _images()
    np.testing.assert_allclose(masked(images), model(images), rtol=1e-5, atol=1e-6)


def test_features_of_any_layer_can_be_read_from_the_supermask_and_its_bakes():
    """Each copy holds its own layers without weights, so a feature model
    `keras.Model(copy.input, copy.get_layer(name).output)` is one of the
    copy's graph; its logits give the copy's outputs."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Lambda(lambda t: 2.0 * t, name="double")(keras.layers.Flatten()(x))
    logits = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(logits))
    masked = supermasking.supermask(model, seed=0)
    images = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype(np.float32)
    for copy in (masked, ssm_keras.bake(masked),
                 ssm_keras.with_regime(masked, "mask_then_weights")):
        assert all(copy.get_layer(name) is not model.get_layer(name)
                   for name in ("pool", "double", "softmax"))
        features = keras.Model(copy.input, [copy.get_layer("pool").output,
                                            copy.get_layer("softmax").input])
        pooled, copy_logits = (array.numpy() for array in features(images))
        assert pooled.shape == (len(images), 3, 3, 4) and pooled.max() > 0
        np.testing.assert_allclose(keras.ops.softmax(copy_logits), copy(images), rtol=1e-5,
                                   atol=1e-6)


def test_keep_uses_the_current_kernels_and_redraw_is_seeded_by_name():
    model = _sequential_cnn()
    kept = ssm_keras.supermask(model, kernels="keep", seed=0)
    redrawn = ssm_keras.supermask(model, seed=0)
    again = ssm_keras.supermask(_sequential_cnn(), seed=0)
    for name in ("c1", "dw", "d1", "d2"):
        np.testing.assert_array_equal(kept.get_layer(name).kernel_variable(),
                                      model.get_layer(name).kernel.numpy())
        np.testing.assert_array_equal(redrawn.get_layer(name).kernel_variable(),
                                      again.get_layer(name).kernel_variable())
        # Scores depend on the seed and name only, whatever the kernels.
        np.testing.assert_array_equal(redrawn.get_layer(name).scores.numpy(),
                                      kept.get_layer(name).scores.numpy())
        # Biases keep their values in both.
        np.testing.assert_array_equal(redrawn.get_layer(name).bias.numpy(),
                                      model.get_layer(name).bias.numpy())
    # elus: one constant per layer, c = sqrt(6 / fan_in); a depthwise kernel's
    # fan-in is its window, 3 * 3.
    np.testing.assert_allclose(np.abs(redrawn.get_layer("dw").kernel_variable()), np.sqrt(6 / 9))
    np.testing.assert_allclose(np.abs(redrawn.get_layer("d1").kernel_variable()),
                               np.sqrt(6 / (13 * 13 * 16)))
    other_seed = ssm_keras.supermask(model, seed=1)
    assert not np.array_equal(other_seed.get_layer("d1").scores.numpy(),
                              redrawn.get_layer("d1").scores.numpy())


@pytest.mark.slow
def test_train_bias_and_train_batch_norm_make_exactly_those_variables_trainable():
    model = _sequential_cnn()

    def trainable(**kwargs):
        return _paths(ssm_keras.supermask(model, **kwargs).trainable_variables)

    scores = [f"{name}/scores" for name in ("c1", "d1", "d2", "dw")]
    biases = [f"{name}/bias" for name in ("c1", "d1", "d2", "dw")]
    affine = [f"{name}/{role}" for name in ("bn1", "bn2") for role in ("beta", "gamma")]
    assert trainable() == sorted(scores)
    assert trainable(train_bias=True) == sorted(scores + biases)
    assert trainable(train_batch_norm=True) == sorted(scores + affine)
    assert trainable(train_bias=True, train_batch_norm=True) == sorted(scores + biases + affine)
    # The frozen batch-norm parameters stay frozen when the model is set
    # trainable again (they are created non-trainable), and the statistics
    # still follow the batches.
    masked = ssm_keras.supermask(model)
    masked.trainable = True
    assert _paths(masked.trainable_variables) == sorted(scores)
    before = masked.get_layer("bn1").moving_mean.numpy().copy()
    masked(_images(), training=True)
    assert not np.array_equal(masked.get_layer("bn1").moving_mean.numpy(), before)


def test_a_grouped_convolution_is_masked_and_baked_exactly():
    model = _with_layer(keras.layers.Conv2D(6, 3, groups=3, use_bias=False, name="grouped"),
                        (8, 8, 6))
    masked = _randomize(ssm_keras.supermask(model, kernels="keep", seed=0))
    layer = masked.get_layer("grouped")
    assert tuple(layer.kernel.shape) == (3, 3, 2, 6) and layer.groups == 3
    model.get_layer("grouped").kernel.assign(layer.effective_kernel())
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 6)).astype("float32")
    np.testing.assert_allclose(masked(images), model(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ssm_keras.bake(masked)(images), model(images), rtol=1e-5, atol=1e-6)


def test_layers_selects_by_name_or_predicate():
    model = _sequential_cnn()
    by_name = ssm_keras.supermask(model, layers=["d1", "d2"])
    assert set(_masked_names(by_name)) == {"d1", "d2"}
    assert type(by_name.get_layer("c1")) is keras.layers.Conv2D
    np.testing.assert_array_equal(by_name.get_layer("c1").kernel.numpy(),
                                  model.get_layer("c1").kernel.numpy())
    convs = ssm_keras.supermask(model, layers=lambda layer: "Conv" in type(layer).__name__)
    assert set(_masked_names(convs)) == {"c1", "dw"}


def _attention_model():
    """Dense, attention, layer norm, an attention frozen by its user, batch
    norm and a dense head."""
    inputs = keras.Input((4, 6))
    x = keras.layers.Dense(6, name="first")(inputs)
    x = keras.layers.MultiHeadAttention(2, 3, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    frozen = keras.layers.MultiHeadAttention(2, 3, name="frozen")
    x = frozen(x, x)
    frozen.trainable = False
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


PROJECTIONS = ("query", "key", "value", "attention_output")


def test_a_supermask_trains_only_its_scores_and_frozen_layers_stay_frozen():
    masked = ssm_keras.supermask(_attention_model(), seed=0)
    assert _paths(masked.trainable_variables) == sorted(
        ["first/scores", "out/scores", *(f"{name}/scores" for name in PROJECTIONS)])
    frozen = masked.get_layer("frozen")
    assert isinstance(frozen, layers.MaskedMultiHeadAttention) and not frozen.trainable
    assert not frozen._query_dense.trainable_weights
    again = type(frozen).from_config(frozen.get_config())  # as a saved model loads it
    again(np.zeros((1, 4, 6)), np.zeros((1, 4, 6)))
    assert not again.trainable_weights and not again._query_dense.trainable
    assert not masked.get_layer("norm").trainable
    assert isinstance(masked.get_layer("bn"), layers.FixedAffineBatchNormalization)


def test_layers_left_out_are_frozen_sublayers_included_unless_trainable_layers_names_them():
    model = _attention_model()
    masked = ssm_keras.supermask(model, layers=["out"], trainable_layers=["norm"], seed=0)
    assert _paths(masked.trainable_variables) == ["norm/beta", "norm/gamma", "out/scores"]
    attention = masked.get_layer("attention")
    assert type(attention) is keras.layers.MultiHeadAttention and not attention.trainable
    assert not attention._value_dense.trainable_weights
    x = np.random.default_rng(0).normal(size=(8, 4, 6)).astype("float32")
    before = {v.path: v.numpy().copy() for v in masked.weights}
    masked.compile(keras.optimizers.SGD(0.5), "mse")
    masked.train_on_batch(x, np.ones((8, 2), "float32"))
    moved = {v.path for v in masked.weights if not np.array_equal(v.numpy(), before[v.path])}
    assert {"/".join(path.split("/")[-2:]) for path in moved} == {
        "out/scores", "norm/gamma", "norm/beta", "bn/moving_mean", "bn/moving_variance"}
    # The summary: what is masked, frozen or trainable, weights, remaining.
    rows = {row["layer"]: row for row in supermasking.summary(masked).rows}
    remaining = masked.get_layer("out").mask_counts()["remaining"]
    attention_weights = 4 * (6 * 2 * 3 + 2 * 3) - 2 * 3 + 6
    assert rows == {
        "first": dict(layer="first", **{"class": "Dense"}, status="frozen", weights=42,
                      trainable=0, masked=0, remaining=0),
        "attention": dict(layer="attention", **{"class": "MultiHeadAttention"},
                          status="frozen", weights=attention_weights, trainable=0, masked=0,
                          remaining=0),
        "norm": dict(layer="norm", **{"class": "LayerNormalization"}, status="trainable",
                     weights=12, trainable=12, masked=0, remaining=0),
        "frozen": dict(layer="frozen", **{"class": "MultiHeadAttention"}, status="frozen",
                       weights=attention_weights, trainable=0, masked=0, remaining=0),
        "bn": dict(layer="bn", **{"class": "FixedAffineBatchNormalization"}, status="frozen",
                   weights=24, trainable=0, masked=0, remaining=0),
        "out": dict(layer="out", **{"class": "MaskedDense"}, status="masked", weights=14,
                    trainable=12, masked=12, remaining=remaining),
    }
    table = supermasking.summary(masked).table.splitlines()
    assert table[0].split() == ["layer", "class", "status", "weights", "trainable", "masked",
                                "remaining"]
    assert table[1].split() == ["first", "Dense", "frozen", "42", "0", "0", "-"]
    total = 42 + 2 * attention_weights + 12 + 24 + 14
    assert table[-1].split() == ["total", f"{total:,}", "24", "12", str(remaining),
                                 f"({100 * remaining / 12:.1f}%)"]


def test_channels_first_convolutions_are_masked_exactly():
    model = _with_layer(keras.layers.Conv2D(4, 3, data_format="channels_first", name="cf"),
                        (3, 6, 6))
    masked = _randomize(ssm_keras.supermask(model, kernels="keep", seed=0))
    model.get_layer("cf").kernel.assign(masked.get_layer("cf").effective_kernel())
    images = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype("float32")
    np.testing.assert_array_equal(masked(images), model(images))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, inputs):
        return self.dense(inputs)


def _unregistered(x):
    """An activation Keras cannot find by its name."""
    return 2.0 * x


def _with_layer(layer, input_shape=(8, 8, 3)):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def _duplicate_names():
    inputs = keras.Input((4,))
    first = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="same")], name="a")
    second = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="same")], name="b")
    return keras.Model(inputs, second(first(inputs)))


def _subclassed():
    model = _Subclassed()
    model(np.zeros((1, 4)))
    return model


@pytest.mark.parametrize("make, kwargs, fragment", [
    (_subclassed, {}, "is a subclassed keras.Model (_Subclassed)"),
    (lambda: _with_layer(keras.layers.Dense(4, kernel_regularizer="l2", name="reg")), {},
     "layer 'reg': it has a kernel regularizer"),
    (lambda: _with_layer(keras.layers.Dense(4, kernel_constraint="non_neg", name="con")), {},
     "layer 'con': it has a kernel constraint"),
    (lambda: _with_layer(keras.layers.LSTM(4, recurrent_regularizer="l2", name="rec"),
                         (5, 3)), {}, "layer 'rec': it has a recurrent regularizer"),
    (lambda: _with_layer(keras.layers.Dense(4, lora_rank=2, name="lora")), {},
     "layer 'lora': it uses LoRA (lora_rank=2)"),
    (lambda: _with_layer(keras.layers.TimeDistributed(keras.layers.Dense(4), name="td")), {},
     "layer 'td': its type TimeDistributed has no masked counterpart"),
    (lambda: _with_layer(keras.layers.LayerNormalization(name="ln")), {"layers": ["ln"]},
     "layer 'ln': its type LayerNormalization has no masked counterpart"),
    (_duplicate_names, {}, "layer 'same': two masked layers share the name"),
    (lambda: ssm_keras.supermask(_sequential_cnn(), seed=0), {},
     "it is masked already (MaskedConv2D); with_regime changes a supermask's regime"),
    (lambda: _with_layer(keras.layers.Dense(4, activation=_unregistered, name="act"), (4,)), {},
     "cannot copy layer 'act' (Dense) from its config: Could not locate function "
     "'_unregistered'"),
    (_sequential_cnn, {"layers": ["d9"]}, "layers the model does not have: ['d9']"),
    (_sequential_cnn, {"kernels": "pretrained"}, "kernels='pretrained'"),
    (_sequential_cnn, {"mask": "ternary"}, "mask='ternary'"),
    (_sequential_cnn, {"trainable_layers": ["d1"]}, "trainable_layers names masked layers ['d1']"),
    (_sequential_cnn, {"trainable_layers": ["d9"]}, "trainable_layers names layers the model"),
])
def test_what_cannot_be_masked_exactly_is_refused_in_one_line(make, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        ssm_keras.supermask(make(), **kwargs)
    message = str(info.value)
    assert fragment in message and "\n" not in message


@pytest.mark.slow
def test_bake_of_a_nested_supermask_loads_and_agrees_without_ssm_keras(tmp_path):
    masked = _randomize(ssm_keras.supermask(_nested_model(), train_batch_norm=True, seed=2))
    baked = ssm_keras.bake(masked)
    assert not layers.masked_layers(baked)
    assert not layers.find_layers(baked, layers.FixedAffineBatchNormalization)
    path = tmp_path / "baked.keras"
    baked.save(path)
    images = _images(6)
    np.save(tmp_path / "images.npy", images)
    expected = masked.predict(images, verbose=0)
    script = (
        "import sys, numpy as np, keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
        "assert not any(name.startswith('ssm_keras') for name in sys.modules)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "images.npy"),
         str(tmp_path / "out.npy")],
        check=True, cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("make", [_sequential_cnn, _nested_model])
def test_compact_round_trip_is_bit_exact(tmp_path, make):
    masked = _randomize(ssm_keras.supermask(make(), kernels="keep", seed=1))
    path = tmp_path / "model.ssm"
    ssm_keras.save_compact(masked, path, metadata={"what": "user model"})
    loaded = ssm_keras.load_compact(path)
    assert type(loaded.masked_model) is type(masked)
    for layer in layers.masked_layers(masked):
        np.testing.assert_array_equal(
            _find(loaded.masked_model, layer.name).effective_kernel().numpy(),
            layer.effective_kernel().numpy())
    images = _images(4)
    np.testing.assert_array_equal(loaded.masked_model.predict(images, verbose=0),
                                  masked.predict(images, verbose=0))
    np.testing.assert_array_equal(loaded.baked_model.predict(images, verbose=0),
                                  ssm_keras.bake(masked).predict(images, verbose=0))
    assert loaded.metadata == {"what": "user model"}


def _find(model, name):
    return next(layer for layer in cloning.leaf_layers(model) if layer.name == name)


@pytest.mark.slow
def test_saved_supermask_reloads_with_the_same_outputs(tmp_path):
    masked = _randomize(ssm_keras.supermask(_nested_model(), train_bias=True, seed=4))
    masked.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras")
    images = _images(4)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  masked.predict(images, verbose=0))
    assert _paths(loaded.trainable_variables) == _paths(masked.trainable_variables)


def test_with_regime_of_a_nested_supermask_freezes_the_mask_and_trains_kernels():
    masked = _randomize(ssm_keras.supermask(_nested_model(), seed=0))
    tuned = ssm_keras.with_regime(masked, "mask_then_weights")
    assert {v.path.split("/")[-1] for v in tuned.trainable_variables} == {"kernel"}
    for layer in layers.masked_layers(masked):
        np.testing.assert_array_equal(_find(tuned, layer.name).compute_mask_values().numpy(),
                                      layer.compute_mask_values().numpy())
    with pytest.raises(ValueError, match="regime='weights'"):
        ssm_keras.with_regime(masked, "weights")


def test_decay_scores_only_decays_scores_at_the_papers_rate():
    masked = ssm_keras.supermask(_sequential_cnn(), train_bias=True, seed=0)
    optimizer = ssm_keras.decay_scores_only(keras.optimizers.SGD(0.05), masked, 5e-4)
    assert optimizer.weight_decay == pytest.approx(5e-4 / 0.05)
    before = {v.path: v.numpy().copy() for v in masked.trainable_variables}
    zero_gradients = [keras.ops.zeros_like(v) for v in masked.trainable_variables]
    optimizer.apply_gradients(zip(zero_gradients, masked.trainable_variables))
    for variable in masked.trainable_variables:
        # With zero gradients only the decay moves a variable: s -= 5e-4 * s.
        expected = before[variable.path] * (1 - 5e-4 if variable.path.endswith("scores") else 1)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="not been used"):
        ssm_keras.decay_scores_only(optimizer, masked, 5e-4)


@pytest.mark.slow
def test_a_user_cnn_learns_real_mnist_under_plain_fit(mnist_dir, tmp_path):
    """supermask + compile + fit + MaskMonitor, as a user would, on 4,000 real
    MNIST images: the mask learns (test accuracy far above chance) and the
    monitor logs per-layer statistics."""
    keras.utils.set_random_seed(0)
    splits = data.load_splits("mnist", data_dir=str(mnist_dir), validation_size=0,
                              max_examples=4000)
    (train_x, train_y), (test_x, test_y) = splits.train, splits.test
    masked = ssm_keras.supermask(_sequential_cnn(), seed=0, init_factor=3.0)
    masked.compile(
        optimizer=ssm_keras.decay_scores_only(keras.optimizers.Adam(0.003), masked, 1e-4),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    monitor = ssm_keras.MaskMonitor(str(tmp_path / "logs"))
    history = masked.fit(train_x.astype("float32"), train_y, epochs=3, batch_size=64,
                         callbacks=[monitor], verbose=0)
    _, accuracy = masked.evaluate(test_x.astype("float32"), test_y, verbose=0)
    assert accuracy > 0.85, accuracy
    summary = statistics.summarize(masked)
    assert history.history["remaining_percent"][-1] == pytest.approx(summary["remaining_percent"])
    assert history.history["mask_flips"][0] > 0
    assert os.listdir(tmp_path / "logs" / "masks")
    json.dumps(summary)


@pytest.mark.slow
def test_train_batch_norm_flag_trains_gamma_and_beta_without_decaying_them():
    from ssm_keras.training import config as ssm_config
    from ssm_keras.training import trainer

    settings = ssm_config.TrainConfig(arch="resnet20", dataset="cifar10", train_batch_norm=True,
                                      weight_decay=5e-4, learning_rate=0.1)
    settings.validate()
    model = trainer.build_model(settings, data.DATASETS["cifar10"])
    trainer.compile_model(model, settings, steps_per_epoch=10)
    names = {variable.path.split("/")[-1] for variable in model.trainable_variables}
    assert names == {"scores", "gamma", "beta"}
    before = {variable.path: variable.numpy().copy() for variable in model.trainable_variables}
    model.optimizer.apply_gradients(
        [(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    for variable in model.trainable_variables:
        decayed = variable.path.endswith("scores")
        assert np.array_equal(variable.numpy(), before[variable.path]) != decayed, variable.path
    with pytest.raises(ssm_config.ConfigError, match="--regime=weights"):
        ssm_config.TrainConfig(regime="weights", train_batch_norm=True).validate()


def test_the_public_api_is_importable_from_the_package():
    from ssm_keras.exporting import compact
    from ssm_keras.training import callbacks, score_decay, sparsity
    from ssm_keras.transforms import baking, supermasking

    modules = (baking, callbacks, compact, layers, score_decay, sparsity, supermasking)
    for name in ssm_keras.__all__:
        owners = [module for module in modules if getattr(module, name, None) is not None]
        assert owners and getattr(ssm_keras, name) is getattr(owners[0], name), name
    with pytest.raises(AttributeError, match="no attribute 'supermask_all'"):
        ssm_keras.supermask_all  # noqa: B018


@keras.saving.register_keras_serializable(package="ssm_keras_tests")
class _UnnamedScale(keras.layers.Layer):
    """A user layer whose weight has no name (as keras.applications'
    ConvNeXt LayerScale): Keras names it `variable_<n>`, a new n per build."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


@pytest.mark.slow
def test_compact_round_trip_of_a_layer_with_an_unnamed_weight(tmp_path):
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="out")(_UnnamedScale(name="scale")(inputs))
    masked = ssm_keras.supermask(keras.Model(inputs, outputs), seed=0)
    masked.get_layer("scale").scale.assign(np.arange(1, 7, dtype="float32"))
    ssm_keras.save_compact(masked, tmp_path / "model.ssm")
    loaded = ssm_keras.load_compact(tmp_path / "model.ssm").masked_model
    np.testing.assert_array_equal(loaded.get_layer("scale").scale.numpy(), np.arange(1, 7))


def _dense_model():
    """Dense 4 -> 3 -> 2, built."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"),
                             keras.layers.Dense(2, name="out")], name="dense_model")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"init_factor": 2.0, "kernels": "keep"}, ValueError,
     "init_factor is the factor of the elus initialiser that draws W0 with kernels='redraw'; "
     "kernels='keep' keeps the layers' kernels. Received: init_factor=2.0"),
    ({"kernels": "keep", "kernel_initializer": "he_normal"}, ValueError,
     "kernel_initializer draws W0 with kernels='redraw'; kernels='keep' keeps the layers' "
     "kernels. Received: kernel_initializer='he_normal'"),
    ({"init_factor": 2.0, "kernel_initializer": "glorot_uniform"}, ValueError,
     "init_factor is the factor of the elus initialiser; kernel_initializer='glorot_uniform' "
     "draws W0 without it. Received: init_factor=2.0"),
    ({"density": 0.1}, ValueError, "density only shapes topk and signed_topk masks; "
     "mask='signed' ignores it. Received: density=0.1"),
    ({"mask": "topk", "tau_fraction": 0.4}, ValueError, "tau_fraction only shapes signed and "
     "binary masks; mask='topk' ignores it. Received: tau_fraction=0.4"),
    ({"mask": "bernoulli", "density": 0.5}, ValueError, "density only shapes topk and "
     "signed_topk masks; mask='bernoulli' ignores it. Received: density=0.5"),
    ({"layers": []}, ValueError,
     "supermask would mask no layer of 'dense_model': layers= selects none. Received: layers=[]"),
    ({"layers": 3}, ValueError, "layers must be None, a collection of layer names or a "
     "predicate layer -> bool. Received: layers=3"),
    ({"density": "0.5"}, TypeError,
     "density must be a finite number in (0, 1]. Received: density='0.5'"),
    ({"tau_fraction": "0.4"}, TypeError,
     "tau_fraction must be a finite number in [0, 1). Received: tau_fraction='0.4'"),
    ({"tau_fraction": float("nan")}, ValueError,
     "tau_fraction must be a finite number in [0, 1). Received: tau_fraction=nan"),
    ({"init_factor": "3"}, TypeError,
     "init_factor must be a finite number in (0, inf). Received: init_factor='3'"),
    ({"init_factor": float("inf")}, ValueError,
     "init_factor must be a finite number in (0, inf). Received: init_factor=inf"),
    ({"init_factor": 1e300}, ValueError,
     "init_factor=1e+300 gives |W0| = sqrt(init_factor / fan_in) = sqrt(1e+300 / 4) = 5e+149, "
     "which is not a normal float32 (between 1.18e-38 and 3.4e+38); the signed-supermask "
     "paper uses 2 to 6"),
    ({"init_factor": 1e-300}, ValueError,
     "init_factor=1e-300 gives |W0| = sqrt(init_factor / fan_in) = sqrt(1e-300 / 4) = 5e-151, "
     "which is not"),
    ({"seed": 1.5}, TypeError, "seed must be an integer. Received: seed=1.5"),
    ({"train_bias": "no"}, TypeError, "train_bias must be True or False. Received: "
     "train_bias='no'"),
    ({"train_batch_norm": "False"}, TypeError, "train_batch_norm must be True or False. "
     "Received: train_batch_norm='False'"),
    ({"score_initializer": "bogus"}, ValueError, "Unknown initializer"),
    ({"score_initializer": keras.initializers.Constant(0.0)}, ValueError,
     "score_initializer=Constant(value=0.0) hides every weight of a signed mask"),
    ({"bernoulli_eval": "sample"}, ValueError, "bernoulli_eval only applies to bernoulli masks; "
     "mask='signed' ignores it. Received: bernoulli_eval='sample'"),
])
def test_arguments_supermask_would_ignore_or_trip_over_are_refused_naming_them(kwargs, error,
                                                                              message):
    with pytest.raises(error) as info:
        ssm_keras.supermask(_dense_model(), **kwargs)
    assert str(info.value).startswith(message), str(info.value)


def test_a_model_supermask_cannot_use_is_refused_in_one_line():
    with pytest.raises(ValueError) as unbuilt:
        ssm_keras.supermask(keras.Sequential([keras.layers.Dense(3)], name="unbuilt"))
    assert str(unbuilt.value) == (
        "supermask needs a built model, and 'unbuilt' is not built: give the Sequential a "
        "keras.Input, or call model.build(input_shape) first.")
    with pytest.raises(ValueError) as plain:
        ssm_keras.with_regime(_dense_model(), "mask_then_weights")
    assert str(plain.value) == ("with_regime needs a masked model (see ssm_keras.supermask), "
                                "and 'dense_model' has no masked layers.")
    with pytest.raises(TypeError, match=r"density must be a finite number in \(0, 1\]. "
                                        "Received: density='all'"):
        ssm_keras.MaskConfig(mask="topk", density="all")
    with pytest.raises(ValueError, match="Unknown initializer.*bogus"):
        ssm_keras.MaskConfig(score_initializer="bogus")
    with pytest.raises(TypeError, match="train_bias must be True or False. Received: "
                                        "train_bias='False'"):
        layers.MaskedDense(3, train_bias="False")
    with pytest.raises(ValueError, match="score_initializer='zeros' hides every weight of a "
                                         "signed mask"):
        ssm_keras.supermask(_dense_model(), score_initializer="zeros")
    ssm_keras.supermask(_dense_model(), mask="topk", score_initializer="zeros")  # ties: top k
    with pytest.raises(TypeError, match="prune_dead_units must be True or False. Received: "
                                        "prune_dead_units='no'"):
        ssm_keras.bake(ssm_keras.supermask(_dense_model()), prune_dead_units="no")
    for function in (ssm_keras.bake, ssm_keras.supermask,
                     lambda model: ssm_keras.with_regime(model, "mask")):
        with pytest.raises(ValueError, match="takes a keras.Model. Received: NoneType"):
            function(None)
    for function in (ssm_keras.bake, lambda model: ssm_keras.save_compact(model, "x.ssm")):
        with pytest.raises(ValueError, match="is a subclassed keras.Model"):
            function(_subclassed())
    with pytest.raises(TypeError, match="path must be a path .* Received: path=None"):
        ssm_keras.load_compact(None)
    with pytest.raises(ValueError, match="path must be a path .* Received: path=''"):
        ssm_keras.save_compact(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), "")
    with pytest.raises(TypeError, match="log_dir must be a path .* Received: log_dir=5"):
        ssm_keras.MaskMonitor(5)
    with pytest.raises(ValueError, match="averages_from must be an integer >= 0. Received: "
                                         "averages_from=-1"):
        ssm_keras.MaskMonitor(None, averages_from=-1)
    with pytest.raises(TypeError, match="histograms must be .* Received: histograms='no'"):
        ssm_keras.MaskMonitor(None, histograms="no")
    with pytest.raises(TypeError, match="decay_scores_only needs the keras.Model whose scores "
                                        "it decays. Received: model=None"):
        ssm_keras.decay_scores_only("sgd", None, 5e-4)
    with pytest.raises(TypeError, match="decay_scores_only needs a Keras optimiser, its name or "
                                        "its config. Received: optimizer=None"):
        ssm_keras.decay_scores_only(None, ssm_keras.supermask(_dense_model()), 5e-4)


def test_layers_as_a_generator_and_seed_as_a_numpy_integer():
    model = _dense_model()
    masked = ssm_keras.supermask(model, layers=(name for name in ["out"]), seed=np.int64(3))
    assert _masked_names(masked) == {"out": "MaskedDense"}
    same = ssm_keras.supermask(model, layers=["out"], seed=3)
    for variable, twin in zip(masked.weights, same.weights):
        np.testing.assert_array_equal(variable.numpy(), twin.numpy())
    config = masked.get_layer("out").get_config()
    assert type(config["mask_seed"]) is int and json.dumps(config)
    # tau_fraction and density left out (None) are the layers' defaults.
    assert ssm_keras.MaskConfig() == ssm_keras.MaskConfig(tau_fraction=None, density=None)
    assert (config["tau_fraction"], config["density"]) == (0.4, 0.5)


@keras.saving.register_keras_serializable(package="test_supermasking")
class _Shift(keras.layers.Layer):
    """A custom layer whose get_config leaves out Keras' base config (its
    name) and whose weight has no name of its own."""

    def __init__(self, step, **kwargs):
        super().__init__(**kwargs)
        self.step = step

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + self.offset + self.step

    def get_config(self):
        return {"step": self.step}


@keras.saving.register_keras_serializable(package="test_supermasking")
class _Step(keras.layers.Layer):
    """`_Shift` without a weight."""

    def __init__(self, step, **kwargs):
        super().__init__(**kwargs)
        self.step = step

    def call(self, inputs):
        return inputs + self.step

    def get_config(self):
        return {"step": self.step}


def test_a_layer_whose_config_leaves_out_its_name_keeps_it_and_its_weights(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="dense"),
                              _Shift(0.5, name="shift")])
    model.get_layer("shift").offset.assign(np.arange(4, dtype="float32"))
    masked = _randomize(ssm_keras.supermask(model, seed=0))
    inputs = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    outputs = masked(inputs).numpy()
    for copy in (ssm_keras.bake(masked), ssm_keras.with_regime(masked, "mask_then_weights")):
        assert [layer.name for layer in copy.layers] == ["dense", "shift"]
        np.testing.assert_array_equal(copy.get_layer("shift").offset.numpy(), [0, 1, 2, 3])
        np.testing.assert_allclose(copy(inputs).numpy(), outputs, rtol=1e-6)
    with pytest.raises(ValueError, match="save_compact cannot store layer 'shift' \\(_Shift\\): "
                                         "its get_config\\(\\) leaves out its name"):
        ssm_keras.save_compact(masked, tmp_path / "model.ssm")
    assert not (tmp_path / "model.ssm").exists()
    # Without weights, it is stored by its config alone.
    weightless = ssm_keras.supermask(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(4, name="dense"), _Step(0.5, name="step")]), seed=0)
    ssm_keras.save_compact(weightless, tmp_path / "weightless.ssm")
    loaded = ssm_keras.load_compact(tmp_path / "weightless.ssm").masked_model
    np.testing.assert_array_equal(loaded(inputs).numpy(), weightless(inputs).numpy())
