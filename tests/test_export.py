"""Export: baking, the SavedModel, the compact format, and bad inputs."""

import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from absl import flags

from ssm_keras import baking, command, compact, export, layers, models

from conftest import REPO

FCN_SHAPE = (8, 8, 1)
CONV_SHAPE = (8, 8, 3)


# Helpers.
def _randomize(model, seed=0, density=None):
    """Scores and batch-norm statistics as after some training.

    Threshold masks get scores `N(0, (1.5 tau)^2)` (about half the weights
    remain) or, with `density`, exactly `round(density * n)` random entries
    of `+-3 tau` per layer and zeros elsewhere.
    """
    rng = np.random.default_rng(seed)
    for layer in layers.masked_layers(model):
        shape = tuple(layer.scores.shape)
        scale = 1.5 * float(layer.threshold.numpy()) if hasattr(layer, "threshold") else 1.0
        if density is None:
            scores = rng.normal(scale=scale, size=shape)
        else:
            scores = np.zeros(math.prod(shape))
            kept = rng.choice(scores.size, round(density * scores.size), replace=False)
            scores[kept] = 2.0 * scale * rng.choice([-1.0, 1.0], kept.size)
        layer.scores.assign(scores.reshape(shape).astype(np.float32))
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        channels = layer.moving_mean.shape
        layer.moving_mean.assign(rng.normal(size=channels).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    return model


def _model(arch="fcn", input_shape=FCN_SHAPE, density=None, **kwargs):
    model = models.build_model(arch, input_shape=input_shape, **kwargs)
    return _randomize(model, density=density)


def _images(input_shape, count=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *input_shape)).astype(np.uint8)


def _write_run(run_dir, model):
    run_dir.mkdir(parents=True)
    model.save(run_dir / "model.keras")
    results = {
        "status": "finished",
        "dataset": "mnist",
        "input_shape": list(model.input_shape[1:]),
        "num_classes": 10,
        "arch": model.name,
        "flags": {"seed": 0},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


def _cli(*argv):
    """Runs the command in this process: its exit status."""
    flag_values = flags.FlagValues()
    export.define_flags(flag_values)
    flag_values(["export", *argv])
    return command.run(lambda: export.run_command(flag_values))


def _one_error_line(captured, fragment):
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert fragment in lines[0]
    assert captured.out == ""


def _effective_kernels(model):
    return {layer.name: layer.effective_kernel().numpy() for layer in layers.masked_layers(model)}


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory):
    """A finished FCN run directory and its model."""
    model = _model(seed=0)
    return _write_run(tmp_path_factory.mktemp("runs") / "fcn", model), model


# Baking.
def test_standardization_model_equals_the_layer_bit_for_bit():
    images = _images(FCN_SHAPE, count=4).astype(np.float32)
    images[1] = 7.0  # constant image: std 0
    images[2] = 0.0
    images[2, 3, 4, 0] = 1.0  # std below 1 / sqrt(n), so the floor applies
    expected = layers.PerImageStandardization()(images).numpy()
    actual = baking.standardization_model(FCN_SHAPE)(images).numpy()
    np.testing.assert_array_equal(actual, expected)
    assert np.all(expected[1] == 0) and expected[2, 3, 4, 0] == pytest.approx(8 * 63 / 64)


@pytest.mark.parametrize("arch, input_shape", [
    ("fcn", FCN_SHAPE), ("conv2", CONV_SHAPE), ("resnet20", CONV_SHAPE),
])
def test_bake_gives_stock_layers_with_effective_kernels(arch, input_shape):
    model = _model(arch, input_shape)
    baked = baking.bake(model)
    classes = {type(layer) for layer in baked.layers}
    assert all(cls.__module__.startswith("keras.") for cls in classes), classes
    for name, kernel in _effective_kernels(model).items():
        assert 0 < np.count_nonzero(kernel) < kernel.size
        np.testing.assert_array_equal(baked.get_layer(name).kernel.numpy(), kernel)
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        np.testing.assert_array_equal(
            baked.get_layer(layer.name).moving_variance.numpy(), layer.moving_variance.numpy()
        )
    images = _images(input_shape).astype(np.float32)
    np.testing.assert_allclose(baked(images).numpy(), model(images).numpy(), rtol=1e-6, atol=1e-7)


def test_bake_refuses_a_sampling_bernoulli_mask():
    config = models.MaskConfig(mask="bernoulli", bernoulli_eval="sample")
    model = models.build_model("fcn", input_shape=FCN_SHAPE, mask_config=config)
    with pytest.raises(baking.ExportError, match="bernoulli_eval='expected'"):
        baking.bake(model)


# Serving, checked in a fresh process that never imports ssm_keras.
FRESH_PROCESS_CHECK = textwrap.dedent("""
    import contextlib, io, json, sys
    import keras, numpy as np, tensorflow as tf
    from tensorflow.python.tools import saved_model_cli
    out_dir, images_path = sys.argv[1:]
    images = np.load(images_path)
    saved_model = tf.saved_model.load(out_dir + "/saved_model")
    served = saved_model.serve(tf.constant(images))
    loaded = keras.saving.load_model(out_dir + "/model.keras")
    sys.argv = ["saved_model_cli", "show", "--dir", out_dir + "/saved_model", "--all"]
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        try:
            saved_model_cli.main()
        except SystemExit:
            pass
    print(json.dumps({
        "serve": served["probabilities"].numpy().tolist(),
        "keras": loaded.predict(images.astype("float32"), verbose=0).tolist(),
        "listing": listing.getvalue(),
        "imported_ssm_keras": any(name.startswith("ssm_keras") for name in sys.modules),
    }))
""")


def test_exported_model_serves_without_ssm_keras(fcn_run, tmp_path):
    run_dir, model = fcn_run
    out_dir = tmp_path / "export"
    summary = export.export_run(str(run_dir), str(out_dir))
    images = _images(FCN_SHAPE)
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images.astype(np.float32), verbose=0)
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CHECK, str(out_dir), str(tmp_path / "images.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    assert not checks["imported_ssm_keras"]
    np.testing.assert_allclose(checks["serve"], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(checks["keras"], expected, rtol=1e-5, atol=1e-7)
    listing = checks["listing"]
    serve_listing = listing.split("signature_def['serve']")[1].split("signature_def[")[0]
    assert "dtype: DT_UINT8" in serve_listing and "shape: (-1, 8, 8, 1)" in serve_listing
    assert "outputs['probabilities']" in serve_listing
    assert "signature_def['serving_default']" in listing
    written = json.loads((out_dir / "export.json").read_text())
    assert written == summary
    compact_bytes = (out_dir / "model.ssm").stat().st_size
    assert written["bytes"]["model.ssm"] == compact_bytes
    assert written["bytes"]["model.keras"] == (out_dir / "model.keras").stat().st_size
    assert written["masked_weights"] == 64 * 300 + 300 * 100 + 100 * 10
    assert written["compact_ratio"]["float32_kernels"] == round(4 * 50200 / compact_bytes, 2)
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.keras", "model.ssm", "saved_model"]
    header, _ = compact.read_compact(out_dir / "model.ssm")
    assert header["metadata"] == {
        "dataset": "mnist", "arch": "fcn", "input_shape": [8, 8, 1], "num_classes": 10
    }


# The compact format.
def _perturbed_kernels(model):
    """Fine-tuned kernels, as after the `mask_then_weights` regime."""
    rng = np.random.default_rng(5)
    for layer in layers.masked_layers(model):
        kernel = layer.kernel.numpy()
        layer.kernel.assign(kernel * rng.uniform(0.5, 1.5, kernel.shape).astype(np.float32))
    return model


def _large_thresholds(model):
    """Thresholds above 1, where stand-in scores of +-1 would hide everything."""
    for layer in layers.masked_layers(model):
        layer.threshold.assign(5.0)
    return _randomize(model)


ROUND_TRIPS = {
    "elus_signed": (lambda: _model(), "signed_constant"),
    "elus_binary_large_thresholds": (
        lambda: _large_thresholds(
            models.build_model("fcn", input_shape=FCN_SHAPE,
                               mask_config=models.MaskConfig(mask="binary"))
        ),
        "signed_constant",
    ),
    "glorot_binary": (
        lambda: _model(kernel_initializer="glorot_uniform",
                       mask_config=models.MaskConfig(mask="binary")),
        "seeded",
    ),
    "elu_signed_topk": (
        lambda: _model(kernel_initializer="elu",
                       mask_config=models.MaskConfig(mask="signed_topk", density=0.1)),
        "seeded",
    ),
    "unseeded_elu": (lambda: _model(kernel_initializer="elu", seed=None), "values"),
    "mask_then_weights": (
        lambda: _perturbed_kernels(
            _model(mask_config=models.MaskConfig(regime="mask_then_weights"))
        ),
        "values",
    ),
    "resnet20_elus": (lambda: _model("resnet20", CONV_SHAPE), "signed_constant"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_compact_round_trip_is_exact(case, tmp_path):
    make_model, codec = ROUND_TRIPS[case]
    model = make_model()
    path = tmp_path / "model.ssm"
    size = compact.save_compact(model, path, metadata={"case": case})
    assert size == path.stat().st_size
    header, _ = compact.read_compact(path)
    assert {record["codec"] for record in header["masked_layers"]} == {codec}
    loaded = compact.load_compact(path)
    assert loaded.metadata == {"case": case}
    rebuilt = _effective_kernels(loaded.masked_model)
    for name, kernel in _effective_kernels(model).items():
        assert np.array_equal(rebuilt[name], kernel), name
        np.testing.assert_array_equal(loaded.baked_model.get_layer(name).kernel.numpy(), kernel)
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        twin = loaded.masked_model.get_layer(layer.name)
        np.testing.assert_array_equal(twin.moving_mean.numpy(), layer.moving_mean.numpy())
        np.testing.assert_array_equal(twin.moving_variance.numpy(), layer.moving_variance.numpy())
    images = _images(model.input_shape[1:]).astype(np.float32)
    expected = model(images).numpy()
    np.testing.assert_allclose(loaded.masked_model(images).numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.baked_model(images).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_compact_fcn_with_4_percent_remaining_is_over_100x_smaller(tmp_path):
    model = _model(input_shape=(28, 28, 1), density=0.04)
    assert models.masked_weight_count(model) == 266_200
    remaining = sum(layer.mask_counts()["remaining"] for layer in layers.masked_layers(model))
    assert remaining == round(0.04 * 784 * 300) + round(0.04 * 300 * 100) + round(0.04 * 100 * 10)
    size = compact.save_compact(model, tmp_path / "model.ssm")
    assert 266_200 * 4 / size >= 100


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
        lambda data: data[:8] + struct.pack("<H", 2) + data[10:],
        "format version 2; this ssm_keras reads version 1 only",
    ),
    "trailing_bytes": (lambda data: data + b"\0", "is truncated or damaged"),
}


@pytest.fixture(scope="module")
def compact_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("compact") / "model.ssm"
    compact.save_compact(_model(), path)
    return path.read_bytes()


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_compact_file_is_refused(damage, compact_bytes, tmp_path, capsys):
    damage_bytes, message = DAMAGES[damage]
    path = tmp_path / "model.ssm"
    path.write_bytes(damage_bytes(compact_bytes))
    with pytest.raises(compact.CompactFileError, match=re.escape(message)):
        compact.load_compact(path)
    out_dir = tmp_path / "out"
    assert _cli(f"--compact_file={path}", f"--out={out_dir}") == 1
    _one_error_line(capsys.readouterr(), message)
    assert not out_dir.exists() or not os.listdir(out_dir)


def test_missing_compact_file_is_refused(tmp_path):
    with pytest.raises(baking.ExportError, match="cannot read compact file"):
        compact.load_compact(tmp_path / "nothing.ssm")


def test_compact_file_exports_for_serving(compact_bytes, tmp_path, capsys):
    path = tmp_path / "model.ssm"
    path.write_bytes(compact_bytes)
    out_dir = tmp_path / "out"
    assert _cli(f"--compact_file={path}", f"--out={out_dir}", "--formats=keras,compact") == 0
    assert "model.ssm is" in capsys.readouterr().out
    assert (out_dir / "model.ssm").read_bytes() == compact_bytes
    baked = keras.saving.load_model(out_dir / "model.keras")
    images = _images(FCN_SHAPE).astype(np.float32)
    expected = compact.load_compact(path).masked_model(images).numpy()
    np.testing.assert_allclose(baked(images).numpy(), expected, rtol=1e-6, atol=1e-7)


RUN_DAMAGES = {
    "missing_dir": (lambda run: shutil.rmtree(run), "does not exist"),
    "no_results": (lambda run: (run / "results.json").unlink(), "has no results.json"),
    "broken_results": (
        lambda run: (run / "results.json").write_text("{"), "is not readable JSON"
    ),
    "unfinished": (
        lambda run: (run / "results.json").write_text('{"status": "running"}'),
        "has status 'running', not 'finished'",
    ),
    "no_model": (lambda run: (run / "model.keras").unlink(), "has no model.keras"),
}


@pytest.mark.parametrize("damage", sorted(RUN_DAMAGES))
def test_unfinished_run_is_refused(damage, fcn_run, tmp_path, capsys):
    damage_run, message = RUN_DAMAGES[damage]
    run_dir = tmp_path / "run"
    shutil.copytree(fcn_run[0], run_dir)
    damage_run(run_dir)
    out_dir = tmp_path / "out"
    assert _cli(f"--model_dir={run_dir}", f"--out={out_dir}") == 1
    _one_error_line(capsys.readouterr(), message)
    with pytest.raises(baking.ExportError, match=re.escape(message)):
        export.export_run(str(run_dir), str(out_dir))


def test_unknown_format_is_refused(fcn_run, tmp_path, capsys):
    assert _cli(f"--model_dir={fcn_run[0]}", f"--out={tmp_path}", "--formats=keras,onnx") == 1
    _one_error_line(capsys.readouterr(), "unknown format(s) ['onnx']")


def test_existing_export_is_kept_unless_overwrite(fcn_run, tmp_path, capsys):
    run_dir, _ = fcn_run
    out_dir = tmp_path / "out"
    assert _cli(f"--model_dir={run_dir}", f"--out={out_dir}", "--formats=compact") == 0
    report = capsys.readouterr().out
    assert "model.ssm:" in report and "smaller than float32_kernels" in report
    before = {name: (out_dir / name).read_bytes() for name in ("model.ssm", "export.json")}
    assert _cli(f"--model_dir={run_dir}", f"--out={out_dir}", "--formats=keras") == 1
    _one_error_line(capsys.readouterr(), "already holds an export (model.ssm, export.json)")
    assert {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)} == before
    assert _cli(f"--model_dir={run_dir}", f"--out={out_dir}", "--formats=keras",
                "--overwrite") == 0
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.keras"]
    assert json.loads((out_dir / "export.json").read_text())["formats"] == ["keras"]


def test_command_line_exits_with_one_error_line(fcn_run, tmp_path):
    """The real command, in a subprocess: status 1 and no traceback."""
    run_dir = tmp_path / "run"
    shutil.copytree(fcn_run[0], run_dir)
    (run_dir / "results.json").write_text('{"status": "running"}')
    result = subprocess.run(
        [sys.executable, "-m", "ssm_keras.export", f"--model_dir={run_dir}",
         f"--out={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert "has status 'running', not 'finished'" in errors[0]
    assert not (tmp_path / "out").exists()


def _recompact(data, change):
    """Compact file bytes with `change(header)` applied and a valid checksum."""
    prefix = struct.Struct("<8sHIQ")
    magic, version, header_size, payload_size = prefix.unpack_from(data)
    header = compact.decompress_header(data[prefix.size:prefix.size + header_size])
    change(header)
    header_bytes = compact.compress_header(header)
    payload = data[prefix.size + header_size:prefix.size + header_size + payload_size]
    body = prefix.pack(magic, version, len(header_bytes), payload_size) + header_bytes + payload
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("change", [
    lambda header: header.update(variables=5),
    lambda header: header["masked_layers"][0].update(layer=[1]),
    lambda header: header["masked_layers"][0].update(shape="wide"),
    lambda header: header.update(metadata=[]),
    lambda header: header.clear() or header.update(format="ssm_keras.compact"),
])
def test_compact_header_of_wrong_types_is_refused(change, compact_bytes, tmp_path, capsys):
    path = tmp_path / "model.ssm"
    path.write_bytes(_recompact(compact_bytes, change))
    assert _cli(f"--compact_file={path}", f"--out={tmp_path / 'out'}") == 1
    _one_error_line(capsys.readouterr(), f"compact file {path}")


def test_export_never_replaces_its_source(fcn_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(fcn_run[0], run_dir)
    before = (run_dir / "model.keras").read_bytes()
    for out in (run_dir, tmp_path):
        assert _cli(f"--model_dir={run_dir}", f"--out={out}", "--overwrite") == 1
        _one_error_line(capsys.readouterr(), "is or contains the source")
    assert (run_dir / "model.keras").read_bytes() == before
    assert _cli(f"--model_dir={run_dir}", f"--out={run_dir / 'export'}") == 0  # inside is fine
    capsys.readouterr()
    export_dir = run_dir / "export"
    assert _cli(f"--compact_file={export_dir / 'model.ssm'}", f"--out={export_dir}",
                "--overwrite", "--formats=keras") == 1
    _one_error_line(capsys.readouterr(), "is or contains the source")


def test_unwritable_out_and_full_disk_are_one_error_line(fcn_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "out"):
        assert _cli(f"--model_dir={fcn_run[0]}", f"--out={out}") == 1
        _one_error_line(capsys.readouterr(), str(tmp_path / "file"))
    out_dir = tmp_path / "out"
    assert _cli(f"--model_dir={fcn_run[0]}", f"--out={out_dir}", "--formats=compact") == 0
    capsys.readouterr()
    before = {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)}

    def full_disk(model, path, metadata=None):
        with open(path, "wb") as file:
            file.write(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(compact, "save_compact", full_disk)
    assert _cli(f"--model_dir={fcn_run[0]}", f"--out={out_dir}", "--overwrite") == 1
    _one_error_line(capsys.readouterr(), "No space left on device")
    assert {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)} == before


def test_killed_export_keeps_every_output_and_is_finished_later(fcn_run, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    export.export_run(str(fcn_run[0]), str(out_dir), ("keras", "compact"))
    old = {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)}
    moves = []
    original = export._move_in

    def killed_after_one_move(new, old_path):
        if moves:
            raise KeyboardInterrupt  # as a kill would stop the process
        moves.append(old_path)
        original(new, old_path)

    monkeypatch.setattr(export, "_move_in", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(str(fcn_run[0]), str(out_dir), ("compact",), overwrite=True)
    monkeypatch.undo()
    names = os.listdir(out_dir)
    assert {"model.keras", "model.ssm", "export.json"} <= set(names)  # none missing
    assert [name for name in names if name.startswith(".export-")]
    export.recover(str(out_dir))  # what the next export into out_dir does first
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.ssm"]
    assert json.loads((out_dir / "export.json").read_text())["formats"] == ["compact"]
    assert (out_dir / "model.ssm").read_bytes() == old["model.ssm"]  # the same model
    # A staging folder killed before it was complete is deleted, nothing else.
    (out_dir / ".export-killed").mkdir()
    (out_dir / ".export-killed" / "model.ssm").write_bytes(b"half")
    export.recover(str(out_dir))
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.ssm"]
    assert (out_dir / "model.ssm").read_bytes() == old["model.ssm"]


def test_folder_outputs_are_exchanged_in_one_step(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "b").write_text("old")
    export._move_in(str(tmp_path / "new"), str(tmp_path / "old"))
    assert sorted(os.listdir(tmp_path)) == ["old"]
    assert os.listdir(tmp_path / "old") == ["a"]
