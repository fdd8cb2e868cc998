"""The compact file format: exact round trips, mask codings, sizes, damaged files."""

import contextlib
import hashlib
import json
import os
import re
import resource
import signal
import struct
import zlib

import keras
import numpy as np
import pytest
from support import (
    CONV_SHAPE,
    FCN_SHAPE,
    assert_one_error_line,
    effective_kernels,
    export_cli,
    random_images,
    randomize_scores,
    randomized_model,
)

import ssm_keras
from ssm_keras import files, layers, models
from ssm_keras.errors import ExportError
from ssm_keras.exporting import compact
from ssm_keras.transforms import baking


# The compact format.
def _perturbed_kernels(model):
    """Fine-tuned kernels, as after the `mask_then_weights` regime."""
    rng = np.random.default_rng(5)
    for layer in layers.masked_layers(model):
        kernel = layer.kernel_variable()
        kernel.assign(kernel.numpy() * rng.uniform(0.5, 1.5, kernel.shape).astype(np.float32))
    return model


def _large_thresholds(model):
    """Thresholds above 1, where stand-in scores of +-1 would hide everything."""
    for layer in layers.masked_layers(model):
        layer.threshold.assign(5.0)
    return randomize_scores(model)


ROUND_TRIPS = {
    "elus_signed": (lambda: randomized_model(), "signed_constant"),
    "elus_binary_large_thresholds": (
        lambda: _large_thresholds(
            models.build_architecture("fcn", input_shape=FCN_SHAPE,
                                      mask_config=models.MaskConfig(mask="binary"))
        ),
        "signed_constant",
    ),
    "glorot_binary": (
        lambda: randomized_model(kernel_initializer="glorot_uniform",
                       mask_config=models.MaskConfig(mask="binary")),
        "seeded",
    ),
    "elu_signed_topk": (
        lambda: randomized_model(kernel_initializer="elu",
                       mask_config=models.MaskConfig(mask="signed_topk", density=0.1)),
        "seeded",
    ),
    "unseeded_elu": (lambda: randomized_model(kernel_initializer="elu", seed=None), "values"),
    "mask_then_weights": (
        lambda: _perturbed_kernels(
            randomized_model(mask_config=models.MaskConfig(regime="mask_then_weights"))
        ),
        "values",
    ),
    "resnet20_elus": (lambda: randomized_model("resnet20", CONV_SHAPE), "signed_constant"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_compact_round_trip_is_exact(case, tmp_path):
    make_model, codec = ROUND_TRIPS[case]
    model = make_model()
    path = tmp_path / "model.ssm"
    size = compact.save_compact(model, path, metadata={"case": case})
    assert size == path.stat().st_size
    header, _ = compact.read_compact(path)
    assert {record["codec"] for record in header["masked_kernels"]} == {codec}
    loaded = compact.load_compact(path)
    assert loaded.metadata == {"case": case}
    rebuilt = effective_kernels(loaded.masked_model)
    for name, kernel in effective_kernels(model).items():
        assert np.array_equal(rebuilt[name], kernel), name
        np.testing.assert_array_equal(loaded.baked_model.get_layer(name).kernel.numpy(), kernel)
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        twin = loaded.masked_model.get_layer(layer.name)
        np.testing.assert_array_equal(twin.moving_mean.numpy(), layer.moving_mean.numpy())
        np.testing.assert_array_equal(twin.moving_variance.numpy(), layer.moving_variance.numpy())
    images = random_images(model.input_shape[1:]).astype(np.float32)
    expected = model(images).numpy()
    np.testing.assert_allclose(loaded.masked_model(images).numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.baked_model(images).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_compact_round_trip_of_unmasked_layers_of_any_type(tmp_path):
    """`layers=` leaves a separable and a transposed convolution, an LSTM and
    a GRU unmasked: the file stores their variables raw (the size check used
    to refuse them: their kernels' last axis is not their units)."""
    images = keras.Input((4, 4, 3))
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="separable")(images)
    x = keras.layers.Conv2DTranspose(3, 2, strides=2, name="transpose")(x)
    x = keras.layers.Reshape((64, 3))(x)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(x)
    x = keras.layers.GRU(4, name="gru")(x)
    model = keras.Model(images, keras.layers.Dense(2, name="out")(x))
    masked = randomize_scores(models.supermask(model, layers=["out"], seed=0))
    compact.save_compact(masked, tmp_path / "model.ssm")
    loaded = compact.load_compact(tmp_path / "model.ssm").masked_model
    for name in ("separable", "transpose", "lstm", "gru"):
        for variable, twin in zip(masked.get_layer(name).weights, loaded.get_layer(name).weights):
            np.testing.assert_array_equal(twin.numpy(), variable.numpy(), err_msg=variable.path)
    np.testing.assert_array_equal(loaded.get_layer("out").effective_kernel(),
                                  masked.get_layer("out").effective_kernel())
    inputs = random_images((4, 4, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(inputs).numpy(), masked(inputs).numpy())


def _same_names_in_nested_models():
    """A supermask of a model whose nested model holds unmasked layers named
    as the outer model's ("norm", "head"), with other values in each."""
    def block(name):
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name=f"masked_{name}"),
                                 keras.layers.BatchNormalization(name="norm"),
                                 keras.layers.Dense(8, name="head")], name=name)

    inputs = keras.Input((8,))
    x = block("inner")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(keras.layers.Dense(8, name="masked")(x))
    model = keras.Model(inputs, keras.layers.Dense(8, name="head")(x))
    masked = models.supermask(model, layers=["masked", "masked_inner"], seed=0)
    values = np.random.default_rng(0)
    for layer in masked.get_layer("inner").layers[1:] + [masked.get_layer("norm"),
                                                         masked.get_layer("head")]:
        for variable in layer.weights:
            variable.assign(values.uniform(0.5, 2.0, variable.shape).astype(np.float32))
    return masked


def test_unmasked_layers_of_the_same_name_in_nested_models_keep_their_own_values(tmp_path):
    masked = _same_names_in_nested_models()
    path = tmp_path / "model.ssm"
    compact.save_compact(masked, path)
    loaded = compact.load_compact(path)
    for name in ("norm", "head"):
        for variable, twin in zip(masked.get_layer("inner").get_layer(name).weights,
                                  loaded.masked_model.get_layer("inner").get_layer(name).weights):
            np.testing.assert_array_equal(twin.numpy(), variable.numpy(), err_msg=variable.path)
        for variable, twin in zip(masked.get_layer(name).weights,
                                  loaded.masked_model.get_layer(name).weights):
            np.testing.assert_array_equal(twin.numpy(), variable.numpy(), err_msg=variable.path)
    inputs = random_images((8,)).astype(np.float32)
    np.testing.assert_array_equal(loaded.masked_model(inputs).numpy(), masked(inputs).numpy())
    # A file that does not tell such layers apart (written before it could)
    # is refused rather than restored into the wrong layer.
    def without_positions(header):
        for record in header["variables"]:
            record.pop("leaf", None)

    path.write_bytes(_recompact(path.read_bytes(), without_positions))
    with pytest.raises(compact.CompactFileError, match="the model has 2 layers named 'norm' "):
        compact.load_compact(path)


@pytest.mark.parametrize("position", [99, -1, 0])  # past the end, before it, another layer
def test_a_record_whose_position_holds_no_such_layer_is_refused(tmp_path, position):
    path = tmp_path / "model.ssm"
    compact.save_compact(_same_names_in_nested_models(), path)
    damaged = []

    def move_first_positioned(header):
        record = next(record for record in header["variables"] if "leaf" in record)
        record["leaf"] = position
        damaged.append(f"{record['layer']}/{record['name']}")

    path.write_bytes(_recompact(path.read_bytes(), move_first_positioned))
    with pytest.raises(compact.CompactFileError, match=f"the model has no variable {damaged[0]}"):
        compact.load_compact(path)


def test_a_frozen_layer_with_sublayers_stays_frozen_after_loading(tmp_path):
    """Keras makes an attention layer's sublayers in its build, trainable
    whatever its config says; the loaded copy trains what the saved one did."""
    tokens = keras.Input((4, 8))
    attended = keras.layers.MultiHeadAttention(2, 4, name="attention")(tokens, tokens)
    model = keras.Model(tokens, keras.layers.Dense(2, name="out")(attended))
    masked = models.supermask(model, layers=["out"], seed=0)
    compact.save_compact(masked, tmp_path / "model.ssm")
    loaded = compact.load_compact(tmp_path / "model.ssm").masked_model
    assert [v.path for v in loaded.trainable_variables] == [
        v.path for v in masked.trainable_variables] == ["out/scores"]


def test_a_float64_masked_kernel_is_refused_not_rounded(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="float64",
                                                                    name="wide")])
    masked = models.supermask(model, seed=0)
    with pytest.raises(ExportError, match="layer 'wide' holds its kernel in float64"):
        compact.save_compact(masked, tmp_path / "model.ssm")
    assert os.listdir(tmp_path) == []


def test_compact_fcn_with_4_percent_remaining_is_over_100x_smaller(tmp_path):
    model = randomized_model(input_shape=(28, 28, 1), density=0.04)
    assert models.masked_weight_count(model) == 266_200
    remaining = sum(layer.mask_counts()["remaining"] for layer in layers.masked_layers(model))
    assert remaining == round(0.04 * 784 * 300) + round(0.04 * 300 * 100) + round(0.04 * 100 * 10)
    size = compact.save_compact(model, tmp_path / "model.ssm")
    assert 266_200 * 4 / size >= 100


@pytest.mark.slow
@pytest.mark.parametrize("coding", compact.MASK_CODINGS)
@pytest.mark.parametrize("density", [0.0, 1e-4, 0.04, 0.5, 1.0])
@pytest.mark.parametrize("signs", [True, False])
def test_mask_code_round_trip(coding, density, signs):
    rng = np.random.default_rng(2)
    shape = (37, 11, 3)
    mask = (rng.random(shape) < density) * rng.choice([-1.0, 1.0], shape)
    mask[-1, -1, -1] = 0.0 if density < 1 else -1.0
    record, data = compact.encode_mask(mask, signs=signs, coding=coding)
    assert record["coding"] == coding and record["count"] == np.count_nonzero(mask)
    decoded = compact.decode_mask(record, data, shape)
    np.testing.assert_array_equal(decoded, mask if signs else np.abs(mask))


def _structured_mask(structure, rng):
    """A 4%-dense (784, 300) mask: random, or 30% dense in a few units
    (columns) or inputs (rows) only."""
    shape = (784, 300)
    signs = rng.choice([-1.0, 1.0], shape)
    if structure == "random":
        return (rng.random(shape) < 0.04) * signs
    alive = np.zeros(shape, bool)
    if structure == "few_units":
        alive[:, rng.choice(300, 40, replace=False)] = True
    else:
        alive[rng.choice(784, 100, replace=False)] = True
    return alive * (rng.random(shape) < 0.3) * signs


@pytest.mark.parametrize("structure, coding", [
    ("random", "rice"), ("few_units", "lzma_units_first"), ("few_inputs", "lzma"),
])
def test_mask_coding_kept_is_the_smallest(structure, coding):
    mask = _structured_mask(structure, np.random.default_rng(4))
    sizes = {
        name: len(compact.encode_mask(mask, signs=True, coding=name)[1])
        for name in compact.MASK_CODINGS
    }
    record, data = compact.encode_mask(mask, signs=True)
    assert record["coding"] == coding == min(sizes, key=sizes.get)
    assert len(data) == sizes[coding]
    np.testing.assert_array_equal(compact.decode_mask(record, data, mask.shape), mask)


def test_rice_code_is_within_one_percent_of_the_entropy():
    """A random ternary mask, 4% non-zero: `H = -sum p log2 p` bits per entry."""
    rng = np.random.default_rng(3)
    mask = (rng.random(266_200) < 0.04) * rng.choice([-1.0, 1.0], 266_200)
    probabilities = np.array([np.mean(mask == value) for value in (-1, 0, 1)])
    entropy_bytes = -mask.size * np.sum(probabilities * np.log2(probabilities)) / 8
    _, data = compact.encode_mask(mask, signs=True, coding="rice")
    assert entropy_bytes <= len(data) <= 1.01 * entropy_bytes


def test_header_dictionary_is_frozen():
    """Version-1 files need exactly this dictionary to be read."""
    digest = hashlib.sha256(compact.HEADER_DICTIONARY).hexdigest()
    assert digest == "cb8b393875a495f1b8a900fbb4e3f1d650495196b1e2479fbe914ae49433a034"


# Bad input.
def _flip(offset):
    def damage(data):
        data = bytearray(data)
        data[offset] ^= 0x40
        return bytes(data)
    return damage


DAMAGES = {
    "truncated": (lambda data: data[: len(data) // 2], "is truncated or damaged"),
    "cut_in_prefix": (lambda data: data[:12], "is truncated (12 bytes)"),
    "flipped_payload_byte": (_flip(-100), "checksum mismatch"),
    "flipped_header_byte": (_flip(40), "checksum mismatch"),
    "flipped_magic": (_flip(1), "not an ssm_keras compact file"),
    "unknown_version": (
        lambda data: data[:8] + struct.pack("<H", 3) + data[10:],
        "format version 3; this ssm_keras reads versions 1, 2",
    ),
    "trailing_bytes": (lambda data: data + b"\0", "is truncated or damaged"),
}


@pytest.fixture(scope="module")
def compact_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("compact") / "model.ssm"
    compact.save_compact(randomized_model(), path)
    return path.read_bytes()


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_compact_file_is_refused(damage, compact_bytes, tmp_path, capsys):
    damage_bytes, message = DAMAGES[damage]
    path = tmp_path / "model.ssm"
    path.write_bytes(damage_bytes(compact_bytes))
    with pytest.raises(compact.CompactFileError, match=re.escape(message)):
        compact.load_compact(path)
    out_dir = tmp_path / "out"
    assert export_cli(f"--compact_file={path}", f"--out_dir={out_dir}") == 1
    assert_one_error_line(capsys.readouterr(), message)
    assert not out_dir.exists() or not os.listdir(out_dir)


def test_missing_compact_file_is_refused(tmp_path):
    with pytest.raises(baking.ExportError, match="cannot read compact file"):
        compact.load_compact(tmp_path / "nothing.ssm")


def test_a_model_with_python_code_names_keras_unsafe_deserialization(tmp_path):
    inputs = keras.Input((3,))
    hidden = keras.layers.Lambda(lambda x: 2.0 * x, name="double")(inputs)
    masked = ssm_keras.supermask(keras.Model(inputs, keras.layers.Dense(2)(hidden)))
    ssm_keras.save_compact(masked, tmp_path / "lambda.ssm")
    with pytest.raises(compact.CompactFileError) as error:
        ssm_keras.load_compact(tmp_path / "lambda.ssm")
    assert str(error.value) == (
        f"compact file {tmp_path / 'lambda.ssm'}: its model holds Python code (a Lambda layer), "
        "which Keras rebuilds only after keras.config.enable_unsafe_deserialization(); call "
        "that before load_compact if you trust the file")


def test_output_shapes_that_size_no_weight_round_trip(tmp_path):
    """A Lambda's output shape and an EinsumDense's sequence length (16,
    above every dimension of its 4 x 4 kernel) size no weight."""
    keras.config.enable_unsafe_deserialization()  # for the Lambda (each test clears it)
    inputs = keras.Input((16, 4))
    hidden = keras.layers.Lambda(lambda x: 2.0 * x, output_shape=(16, 4), name="double")(inputs)
    hidden = keras.layers.EinsumDense("abc,cd->abd", output_shape=(16, 4), name="mix")(hidden)
    masked = ssm_keras.supermask(keras.Model(inputs, keras.layers.Dense(2)(hidden)), seed=0)
    ssm_keras.save_compact(masked, tmp_path / "shapes.ssm")
    images = np.random.default_rng(0).normal(size=(3, 16, 4)).astype(np.float32)
    loaded = ssm_keras.load_compact(tmp_path / "shapes.ssm").masked_model
    np.testing.assert_array_equal(loaded(images), masked(images))


def test_masked_layers_of_one_name_in_two_nested_models_are_refused(tmp_path):
    def block(name):
        return keras.Sequential([keras.Input((8,)), layers.MaskedDense(8, name="d", mask_seed=0)],
                                name=name)

    inputs = keras.Input((8,))
    model = keras.Model(inputs, block("second")(block("first")(inputs)))
    with pytest.raises(ValueError, match="save_compact cannot store two masked layers named 'd' "
                                         r"\(in different nested models\)"):
        ssm_keras.save_compact(model, tmp_path / "twice.ssm")
    assert not (tmp_path / "twice.ssm").exists()


def test_an_einsum_kernel_axis_larger_than_recorded_is_refused():
    config = {"name": "mix", "equation": "abc,cd->abd", "output_shape": [16, 10**9]}
    header = {"masked_kernels": [{"layer": "mix", "kernel": "kernel", "shape": [4, 4]}],
              "variables": [], "model": {"layers": [{"config": config}]}}
    with pytest.raises(compact.CompactFileError, match=r"layer 'mix' has output_shape=\[16, "
                       r"1000000000\], but the file records variables of shapes \[\[4, 4\]\]"):
        compact._check_sizes(header)
    config["output_shape"] = [10**9, 4]  # a sequence length sizes no weight
    compact._check_sizes(header)
    attention = {"name": "mix", "num_heads": 2, "key_dim": 4, "output_shape": [10**9]}
    header["model"]["layers"] = [{"config": attention}]  # every entry sizes its projection
    with pytest.raises(compact.CompactFileError, match=r"has output_shape=\[1000000000\]"):
        compact._check_sizes(header)


def _recompact(data, change, change_payload=None):
    """Compact file bytes with `change(header)` applied (NaN and infinities
    written as Python's JSON writes them), the payload replaced by
    `change_payload(header, payload)`, and a valid checksum."""
    prefix = struct.Struct("<8sHIQ")
    magic, version, header_size, payload_size = prefix.unpack_from(data)
    header = compact.decompress_header(data[prefix.size:prefix.size + header_size])
    change(header)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=compact.HEADER_DICTIONARY)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes = compressor.compress(text) + compressor.flush()
    payload = data[prefix.size + header_size:prefix.size + header_size + payload_size]
    if change_payload is not None:
        payload = change_payload(header, payload)
    body = prefix.pack(magic, version, len(header_bytes), payload_size) + header_bytes + payload
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("change", [
    lambda header: header.update(variables=5),
    lambda header: header["masked_kernels"][0].update(layer=[1]),
    lambda header: header["masked_kernels"][0].update(shape="wide"),
    lambda header: header["masked_kernels"][0].update(kernel="recurrent_kernel"),
    lambda header: header.update(metadata=[]),
    lambda header: header.clear() or header.update(format="ssm_keras.compact"),
])
def test_compact_header_of_wrong_types_is_refused(change, compact_bytes, tmp_path, capsys):
    path = tmp_path / "model.ssm"
    path.write_bytes(_recompact(compact_bytes, change))
    assert export_cli(f"--compact_file={path}", f"--out_dir={tmp_path / 'out'}") == 1
    assert_one_error_line(capsys.readouterr(), f"compact file {path}")


def _widen_first_masked_layer(units, shape=None):
    """A header change: the first masked layer gets `units` (and its record `shape`)."""
    def change(header):
        record = header["masked_kernels"][0]
        for layer in header["model"]["layers"]:
            if layer["config"]["name"] == record["layer"]:
                layer["config"]["units"] = units
        record["shape"] = shape or record["shape"]
    return change


@pytest.mark.parametrize("change, message", [
    (_widen_first_masked_layer(10**9),
     "has units=1000000000, but the file records variables of shapes [[64, 300], []]"),
    (_widen_first_masked_layer(10**6, [10**6, 10**6]), "more than this machine's"),
])
def test_compact_header_asking_for_a_huge_model_is_refused_before_allocating(
        change, message, compact_bytes, tmp_path, capsys):
    path = tmp_path / "model.ssm"
    path.write_bytes(_recompact(compact_bytes, change))
    assert export_cli(f"--compact_file={path}", f"--out_dir={tmp_path / 'out'}") == 1
    assert_one_error_line(capsys.readouterr(), message)


# Non-finite values: never written, refused as damage when read.
def test_non_finite_metadata_is_stored_as_null_in_standard_json(tmp_path):
    path = tmp_path / "model.ssm"
    metadata = {"accuracy": float("nan"), "best": [0.5, float("inf")], "epochs": 3}
    ssm_keras.save_compact(randomized_model(), path, metadata=metadata)
    header, _ = compact.read_compact(path)
    assert header["metadata"] == {"accuracy": None, "best": [0.5, None], "epochs": 3}
    assert ssm_keras.load_compact(path).metadata == header["metadata"]


def test_numpy_metadata_is_stored_as_numbers_and_what_json_cannot_write_is_refused(tmp_path):
    path = tmp_path / "model.ssm"
    model = randomized_model()
    metadata = {"accuracy": np.float32(0.5), "epochs": np.int64(3), "curve": np.array([1.0])}
    ssm_keras.save_compact(model, path, metadata=metadata)
    assert ssm_keras.load_compact(path).metadata == {"accuracy": 0.5, "epochs": 3,
                                                     "curve": [1.0]}
    before = path.read_bytes()
    for metadata, message in ((["accuracy", 0.9], "metadata must be a dict"),
                              ({"when": object}, "metadata must hold only what JSON can write")):
        with pytest.raises(TypeError, match=message):
            ssm_keras.save_compact(model, path, metadata=metadata)
    with pytest.raises(TypeError, match="path must be a path .* Received: path=7"):
        ssm_keras.save_compact(model, 7)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def _first_record(header, key, name):
    return next(record for record in header[key] if record.get("name", name) == name)


def _scale(value):
    return lambda header: _first_record(header, "masked_kernels", None).update(scale=value)


@pytest.mark.parametrize("change, message", [
    (lambda header: header["metadata"].update(accuracy=float("nan")),
     "has an unreadable header (the header holds NaN, which standard JSON does not)"),
    (_scale(float("nan")), "the header holds NaN"),
    (_scale(float("inf")), "the header holds Infinity"),
    (_scale(float("-inf")), "the header holds -Infinity"),
    (_scale(0.0), "layer 'dense_1' has scale 0.0; a signed-constant scale is a finite float32 > 0"),
    (_scale(-0.25), "layer 'dense_1' has scale -0.25; a signed-constant scale"),
    (_scale(1e39), "layer 'dense_1' has scale 1e+39; a signed-constant scale"),  # inf in float32
])
def test_a_header_with_non_finite_or_non_positive_values_is_a_damaged_file(change, message,
                                                                           compact_bytes,
                                                                           tmp_path):
    path = tmp_path / "model.ssm"
    path.write_bytes(_recompact(compact_bytes, change))
    with pytest.raises(compact.CompactFileError, match=re.escape(f"compact file {path}")) as info:
        ssm_keras.load_compact(path)
    assert message in str(info.value)


def _stored_value_set_to(value, key, name=None):
    """A payload change: the first float32 of the first record `name` of
    `header[key]` (its values blob for a masked kernel) becomes `value`."""
    def change_payload(header, payload):
        record = _first_record(header, key, name)
        offset = (record["values"] if key == "masked_kernels" else record)["offset"]
        return payload[:offset] + struct.pack("<f", value) + payload[offset + 4:]
    return change_payload


def test_non_finite_stored_values_are_a_damaged_file(compact_bytes, tmp_path):
    path = tmp_path / "model.ssm"
    nan_threshold = _stored_value_set_to(float("nan"), "variables", "threshold")
    path.write_bytes(_recompact(compact_bytes, lambda header: None, nan_threshold))
    with pytest.raises(compact.CompactFileError, match=re.escape(
            "variable dense_1/threshold stores 1 non-finite values (NaN or infinite)")):
        ssm_keras.load_compact(path)
    values_model = randomized_model(kernel_initializer="elu", seed=None)  # the `values` codec
    ssm_keras.save_compact(values_model, path)
    infinite_value = _stored_value_set_to(float("-inf"), "masked_kernels")
    path.write_bytes(_recompact(path.read_bytes(), lambda header: None, infinite_value))
    with pytest.raises(compact.CompactFileError, match=re.escape(
            "layer 'dense_1' stores 1 non-finite values (NaN or infinite)")):
        ssm_keras.load_compact(path)


# Writing.
@contextlib.contextmanager
def file_size_limit(size):
    """Within it, a write that would make a file larger than `size` bytes
    fails with EFBIG, as on a full disk (SIGXFSZ ignored, as Python does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_failed_save_compact_leaves_the_old_file_whole(tmp_path):
    model = randomized_model()
    path = tmp_path / "model.ssm"
    old = b"the previous model\n" * 20
    path.write_bytes(old)
    with file_size_limit(1000), pytest.raises(files.FileWriteError) as info:
        ssm_keras.save_compact(model, path)
    assert str(info.value) == f"cannot write {path}: File too large"
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["model.ssm"]
    size = ssm_keras.save_compact(model, path)  # room again: replaced
    assert path.stat().st_size == size > 1000


def test_the_new_file_is_on_the_disk_before_it_replaces_the_old(tmp_path, monkeypatch):
    """`fsync` of the temporary file comes before the rename, so a machine
    that stops at once leaves the old file or the new one, whole."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda descriptor: (
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}"))),
        real_fsync(descriptor))[1])
    monkeypatch.setattr(os, "replace", lambda source, target: (
        events.append(("replace", str(source))), real_replace(source, target))[1])
    path = tmp_path / "model.ssm"
    ssm_keras.save_compact(randomized_model(), path)
    temporary = str(tmp_path / f".model.ssm.tmp-{os.getpid()}")
    assert events == [("fsync", temporary), ("replace", temporary)]
