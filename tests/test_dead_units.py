"""Dead-unit pruning of baked models: equal outputs, fewer weights, an honest report."""

import json

import keras
import numpy as np
import pytest
from support import export_cli

from ssm_keras import pretrained
from ssm_keras.errors import ExportError
from ssm_keras.exporting import exporter
from ssm_keras.transforms import baking, dead_units


def _units(model, name):
    return model.get_layer(name).get_weights()[0].shape[-1]


def _assert_same_outputs(model, pruned, inputs):
    np.testing.assert_allclose(pruned(inputs).numpy(), model(inputs).numpy(),
                               rtol=dead_units.RTOL, atol=dead_units.ATOL)


def _assert_report_matches(report, model, pruned):
    by_layer = {entry["layer"]: entry for entry in report}
    for layer in model.layers:
        if layer.get_weights():
            entry = by_layer[layer.name]
            assert entry["weights_before"] == layer.count_params()
            assert entry["weights_after"] == pruned.get_layer(layer.name).count_params()
    assert sum(entry["weights_after"] for entry in report) == pruned.count_params()


@pytest.mark.slow
def test_trained_fcn_loses_dead_units_and_keeps_its_outputs(trained_fcn):
    run, _, images, labels = trained_fcn
    masked, _ = exporter.load_run(str(run))
    baked = baking.bake(masked)
    pruned, report = dead_units.prune_dead_units(baked)
    inputs = images[:2000].astype(np.float32)
    _assert_same_outputs(baked, pruned, inputs)
    expected = np.argmax(baked.predict(inputs, verbose=0), axis=1)
    np.testing.assert_array_equal(np.argmax(pruned.predict(inputs, verbose=0), axis=1), expected)
    _assert_report_matches(report, baked, pruned)
    assert pruned.count_params() < baked.count_params() / 2
    assert baking.bake(masked, prune_dead_units=True).count_params() == pruned.count_params()
    for name in ("dense_1", "dense_2"):
        kernel = baked.get_layer(name).kernel.numpy()
        outgoing = baked.get_layer("dense_2" if name == "dense_1" else "dense_3").kernel.numpy()
        alive = np.any(kernel, axis=0) & np.any(outgoing, axis=1)  # ELU(0) = 0, no biases
        assert _units(pruned, name) == max(1, int(alive.sum())) < kernel.shape[1]
    assert _units(pruned, "dense_3") == 10  # the outputs stay
    units, _ = dead_units.total_removed(report)
    assert units == 400 - _units(pruned, "dense_1") - _units(pruned, "dense_2")


@pytest.mark.slow
def test_conv_channels_die_through_pooling_and_flatten_in_the_shipped_conv2():
    # conv_2 -> max-pool -> Flatten -> dense_1, without biases: a channel with no
    # incoming weights emits ReLU(0) = 0, one with no weights out of it reaches nothing.
    _, baked, _ = pretrained.load("conv2_cifar10_signed_seed0")
    pruned, report = dead_units.prune_dead_units(baked)
    conv = baked.get_layer("conv_2").kernel.numpy()
    dense = baked.get_layer("dense_1").kernel.numpy()
    channels = conv.shape[-1]
    incoming = np.any(conv.reshape(-1, channels), axis=0)
    outgoing = np.any(dense.reshape(-1, channels, dense.shape[-1]), axis=(0, 2))
    alive = int(np.sum(incoming & outgoing))
    assert alive < channels
    assert _units(pruned, "conv_2") == alive
    positions = dense.shape[0] // channels
    assert pruned.get_layer("dense_1").kernel.shape[0] == positions * alive
    _assert_report_matches(report, baked, pruned)


def _set_weights(model, rng):
    for layer in model.layers:
        weights = [rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[-1] = np.abs(weights[-1]) + 0.5  # moving variance
        if weights:
            layer.set_weights(weights)


def _zero(model, name, axis, index):
    """Zeroes the kernel of layer `name` at `index` along `axis`."""
    kernel = model.get_layer(name).kernel
    mask = np.ones(kernel.shape, np.float32)
    np.moveaxis(mask, axis, 0)[index] = 0
    kernel.assign(kernel.numpy() * mask)


def test_dense_net_with_biases_and_batch_norm():
    """Units with zero incoming weights emit `BN(act(bias))`: folded into the
    next dense bias when it has one, kept where it has none."""
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Dense(7, activation="elu", name="b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.Dense(5, use_bias=False, name="c")(x)
    x = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, x)
    _set_weights(model, np.random.default_rng(0))
    _zero(model, "a", -1, [0, 1])  # a's units 0, 1: no inputs
    _zero(model, "b", 0, 2)  # a's unit 2: no outputs
    _zero(model, "b", -1, 3)  # b's unit 3: no inputs
    _zero(model, "c", -1, 4)  # c's unit 4: no inputs
    pruned, report = dead_units.prune_dead_units(model)
    _assert_same_outputs(model, pruned, np.random.default_rng(2).normal(size=(16, 6)) * 3)
    # a: 0, 1 folded into b's bias, 2 removed; b: 3 kept (c has no bias);
    # c: 4 has no inputs and no bias, so it emits 0: removed.
    assert [_units(pruned, name) for name in ("a", "b", "c", "out")] == [5, 7, 4, 3]
    by_layer = {entry["layer"]: entry for entry in report}
    assert by_layer["a"]["folded_into_next_bias"] == 2
    assert by_layer["bn_a"]["weights_removed"] == 3 * 4  # gamma, beta, mean, variance
    assert by_layer["b"]["weights_removed"] == 3 * 7
    _assert_report_matches(report, model, pruned)


def test_conv_net_with_flatten_and_a_residual_branch():
    """Channels map to `H * W` flattened inputs; a conv that pads keeps a
    constant channel; an `Add` branch keeps its channels."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(4, 1, name="c3")(x)
    skip = x
    x = keras.layers.Conv2D(4, 1, name="c4")(x)
    x = keras.layers.Add()([x, skip])
    x = keras.layers.Conv2D(3, 1, name="c5")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, x)
    _set_weights(model, np.random.default_rng(0))
    model.get_layer("c1").bias.assign([1.0, 0.5, -0.5, 0.2])
    _zero(model, "c1", -1, 0)  # emits relu(1) everywhere, into c2, which pads: kept
    _zero(model, "c2", -1, 1)  # constant BN output through max-pool into a 1x1 conv: folded
    _zero(model, "c4", -1, 2)  # feeds the Add: kept
    _zero(model, "out", 0, np.arange(3 * 3) * 3 + 1)  # c5's channel 1 after Flatten: unused
    pruned, report = dead_units.prune_dead_units(model)
    _assert_same_outputs(model, pruned, np.random.default_rng(2).uniform(0, 255, (4, 6, 6, 2)))
    assert [_units(pruned, name) for name in ("c1", "c2", "c3", "c4", "c5", "out")] == [
        4, 4, 4, 4, 2, 2]
    by_layer = {entry["layer"]: entry for entry in report}
    assert by_layer["c2"]["folded_into_next_bias"] == 1
    assert by_layer["out"]["weights_removed"] == 9 * 2
    _assert_report_matches(report, model, pruned)


def test_1d_and_3d_convolutions_lose_dead_channels():
    """Their registry entries name `filters` as their units, as a 2-D
    convolution's: a channel with no incoming weights is folded into the
    bias of a consumer that pads nothing; one with no outgoing weights goes."""
    inputs = keras.Input((8, 2))
    x = keras.layers.Conv1D(4, 3, padding="causal", activation="relu", name="a")(inputs)
    x = keras.layers.MaxPooling1D(name="pool")(x)
    x = keras.layers.Conv1D(3, 2, name="b")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    sequences = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    _set_weights(sequences, np.random.default_rng(0))
    _zero(sequences, "a", -1, 0)  # relu(bias) everywhere, into a valid conv: folded
    _zero(sequences, "out", 0, 2)  # b's channel 2 is not used
    pruned, report = dead_units.prune_dead_units(sequences)
    _assert_same_outputs(sequences, pruned, np.random.default_rng(1).normal(size=(4, 8, 2)))
    assert [_units(pruned, name) for name in ("a", "b")] == [3, 2]
    assert {entry["layer"]: entry for entry in report}["a"]["folded_into_next_bias"] == 1
    inputs = keras.Input((3, 3, 3, 1))
    x = keras.layers.Conv3D(3, 2, padding="same", name="c")(inputs)
    x = keras.layers.Conv3D(2, 1, name="d")(x)
    volumes = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    _set_weights(volumes, np.random.default_rng(0))
    _zero(volumes, "d", -2, 1)  # c's channel 1 reaches nothing
    _zero(volumes, "out", 0, np.arange(27) * 2)  # d's channel 0 after Flatten: unused
    pruned, report = dead_units.prune_dead_units(volumes)
    _assert_same_outputs(volumes, pruned, np.random.default_rng(1).normal(size=(4, 3, 3, 3, 1)))
    assert [_units(pruned, name) for name in ("c", "d")] == [2, 1]
    _assert_report_matches(report, volumes, pruned)


def test_a_layer_called_twice_keeps_its_units_and_those_it_takes():
    """`shared` runs on two inputs: its unit unused by one head still feeds the
    other, and the input of `p` it ignores in one call it reads in the other
    (`a`). Only the chain that is called once, `solo`, loses a unit."""
    a, b = keras.Input((6,)), keras.Input((6,))
    shared = keras.layers.Dense(8, activation="relu", name="shared")
    head_a = keras.layers.Dense(3, name="head_a")(shared(keras.layers.Dense(6, name="p")(b)))
    head_b = keras.layers.Dense(3, name="head_b")(shared(a))
    solo = keras.layers.Dense(3, name="solo_out")(
        keras.layers.Dense(5, activation="relu", name="solo")(a))
    model = keras.Model([a, b], keras.layers.Add()([head_a, head_b, solo]))
    _set_weights(model, np.random.default_rng(0))
    _zero(model, "shared", 0, 5)  # p's unit 5 does not reach shared
    _zero(model, "head_a", 0, [6, 7])  # shared's units 6, 7 do not reach head_a
    _zero(model, "solo_out", 0, 0)
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(2)]
    pruned, _ = dead_units.prune_dead_units(model, check_inputs=inputs)
    assert [_units(pruned, name) for name in ("p", "shared", "solo")] == [6, 8, 4]
    _assert_same_outputs(model, pruned, inputs)
    baked = baking.bake(model, prune_dead_units=True, check_inputs=inputs)  # two inputs
    assert baked.count_params() == pruned.count_params()


def test_sequential_model_and_a_model_without_dead_units():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="h"),
                              keras.layers.Dense(2, name="o")])
    _set_weights(model, np.random.default_rng(0))
    pruned, report = dead_units.prune_dead_units(model)
    assert [entry["weights_removed"] for entry in report] == [0, 0]
    hidden = model.get_layer("h")
    hidden.kernel.assign(hidden.kernel.numpy() * (np.arange(6) != 5))
    hidden.bias.assign(hidden.bias.numpy() * (np.arange(6) != 5))  # unit 5 emits 0
    pruned, report = dead_units.prune_dead_units(model)
    assert isinstance(pruned, keras.Sequential) and _units(pruned, "h") == 5
    _assert_same_outputs(model, pruned, np.random.default_rng(1).normal(size=(8, 4)))
    assert dead_units.format_report(report)[-1] == "dead units removed: 1 units, 7 of 44 weights"


@keras.saving.register_keras_serializable(package="ssm_keras_tests")
def centred(x):
    """An activation that mixes a layer's units: `x - mean(x)` over them."""
    return x - keras.ops.mean(x, axis=-1, keepdims=True)


def test_a_changed_output_is_refused():
    """Pruning takes a custom activation for one that acts on each unit; this
    one does not, so unit 0, which has no inputs, is folded as a constant
    although it is not: the check refuses the changed outputs."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, centred, name="h"),
                              keras.layers.Dense(2, name="o")])
    _set_weights(model, np.random.default_rng(0))
    hidden = model.get_layer("h")
    hidden.kernel.assign(hidden.kernel.numpy() * (np.arange(3) != 0))
    with pytest.raises(dead_units.PruningError, match="changed its outputs by up to"):
        dead_units.prune_dead_units(model)


def test_an_activation_across_the_units_keeps_them():
    """sparsemax mixes a layer's units: a unit without inputs is not a
    constant there, so it stays."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, "sparsemax", name="h"),
                              keras.layers.Dense(2, name="o")])
    _set_weights(model, np.random.default_rng(0))
    hidden = model.get_layer("h")
    hidden.kernel.assign(hidden.kernel.numpy() * (np.arange(6) != 0))
    pruned, _ = dead_units.prune_dead_units(model)
    assert _units(pruned, "h") == 6
    _assert_same_outputs(model, pruned, np.random.default_rng(1).normal(size=(8, 4)))


def test_recurrent_and_attention_layers_are_left_whole_and_the_rest_pruned():
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embedding")(tokens)
    x = keras.layers.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = keras.layers.LSTM(6, name="lstm")(x)
    x = keras.layers.Dense(7, activation="relu", name="hidden")(x)
    model = keras.Model(tokens, keras.layers.Dense(3, name="out")(x))
    _set_weights(model, np.random.default_rng(0))
    hidden = model.get_layer("hidden")
    hidden.kernel.assign(hidden.kernel.numpy() * (np.arange(7) >= 2))
    hidden.bias.assign(hidden.bias.numpy() * (np.arange(7) >= 2))  # units 0, 1 emit 0
    with pytest.raises(ExportError, match="takes int32 inputs .*; pass check_inputs"):
        dead_units.prune_dead_units(model)
    with pytest.raises(ExportError, match=r"check_inputs do not fit model .* \(Input .* "
                       r"incompatible .*\); pass what the model takes"):
        dead_units.prune_dead_units(model, check_inputs=np.zeros((2, 9), np.int32))
    inputs = np.random.default_rng(1).integers(0, 20, (8, 5)).astype(np.int32)
    pruned, _ = dead_units.prune_dead_units(model, check_inputs=inputs)
    assert _units(pruned, "hidden") == 5
    assert pruned.get_layer("lstm").units == 6
    _assert_same_outputs(model, pruned, inputs)


@pytest.mark.slow
def test_export_removes_dead_units_unless_told_not_to(trained_fcn, tmp_path, capsys):
    run = trained_fcn[0]
    units = {}
    for prune in ("--prune_dead_units", "--noprune_dead_units"):
        out_dir = tmp_path / prune
        assert export_cli(f"--model_dir={run}", f"--out_dir={out_dir}", "--formats=keras", prune) == 0
        printed = capsys.readouterr().out
        summary = json.loads((out_dir / "export.json").read_text())
        baked = keras.saving.load_model(out_dir / "model.keras")
        units[prune] = [_units(baked, name) for name in ("dense_1", "dense_2", "dense_3")]
        assert ("dead units removed:" in printed) == ("dead_units" in summary)
    assert units["--noprune_dead_units"] == [300, 100, 10]
    assert units["--prune_dead_units"][0] < 300 and units["--prune_dead_units"][2] == 10
    assert summary.get("dead_units") is None
