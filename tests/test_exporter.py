"""Export: baking, the SavedModel, exporting runs and compact files, and bad inputs."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from support import (
    CONV_SHAPE,
    FCN_SHAPE,
    REPO,
    assert_one_error_line,
    effective_kernels,
    export_cli,
    random_images,
    randomized_model,
)

import ssm_keras
from ssm_keras import layers, models
from ssm_keras.cli import export
from ssm_keras.exporting import compact, exporter, formats, staging, tflite
from ssm_keras.training.run_dir import RunDirError
from ssm_keras.transforms import baking


# Helpers.
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


@pytest.fixture(scope="module")
def fcn_run(tmp_path_factory):
    """A finished FCN run directory and its model."""
    model = randomized_model(seed=0)
    return _write_run(tmp_path_factory.mktemp("runs") / "fcn", model), model


# Baking.
def test_standardization_model_equals_the_layer_bit_for_bit():
    images = random_images(FCN_SHAPE, count=4).astype(np.float32)
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
@pytest.mark.slow
def test_bake_gives_stock_layers_witheffective_kernels(arch, input_shape):
    model = randomized_model(arch, input_shape)
    baked = baking.bake(model)
    classes = {type(layer) for layer in baked.layers}
    assert all(cls.__module__.startswith("keras.") for cls in classes), classes
    for name, kernel in effective_kernels(model).items():
        assert 0 < np.count_nonzero(kernel) < kernel.size
        np.testing.assert_array_equal(baked.get_layer(name).kernel.numpy(), kernel)
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        np.testing.assert_array_equal(
            baked.get_layer(layer.name).moving_variance.numpy(), layer.moving_variance.numpy()
        )
    images = random_images(input_shape).astype(np.float32)
    np.testing.assert_allclose(baked(images).numpy(), model(images).numpy(), rtol=1e-6, atol=1e-7)


def test_bake_refuses_a_sampling_bernoulli_mask():
    config = models.MaskConfig(mask="bernoulli", bernoulli_eval="sample")
    model = models.build_architecture("fcn", input_shape=FCN_SHAPE, mask_config=config)
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


@pytest.mark.slow
def test_exported_model_serves_without_ssm_keras(fcn_run, tmp_path):
    run_dir, model = fcn_run
    out_dir = tmp_path / "export"
    summary = exporter.export_run(str(run_dir), str(out_dir))
    images = random_images(FCN_SHAPE)
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


@pytest.fixture(scope="module")
def compact_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("compact") / "model.ssm"
    compact.save_compact(randomized_model(), path)
    return path.read_bytes()


@pytest.mark.slow
def test_compact_file_exports_for_serving(compact_bytes, tmp_path, capsys):
    path = tmp_path / "model.ssm"
    path.write_bytes(compact_bytes)
    out_dir = tmp_path / "out"
    assert export_cli(f"--compact_file={path}", f"--out_dir={out_dir}", "--formats=keras,compact") == 0
    report = capsys.readouterr().out
    assert "model.ssm is" in report
    masked_weights = 64 * 300 + 300 * 100 + 100 * 10
    assert f"float32 kernels: {4 * masked_weights:,} bytes (" in report
    assert (out_dir / "model.ssm").read_bytes() == compact_bytes
    baked = keras.saving.load_model(out_dir / "model.keras")
    images = random_images(FCN_SHAPE).astype(np.float32)
    expected = compact.load_compact(path).masked_model(images).numpy()
    np.testing.assert_allclose(baked(images).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_a_baseline_export_reports_no_masked_kernels(tmp_path, capsys):
    path = tmp_path / "baseline.ssm"
    compact.save_compact(models.build_architecture("fcn", masked=False, input_shape=FCN_SHAPE),
                         path)
    assert export_cli(f"--compact_file={path}", f"--out_dir={tmp_path / 'out'}",
                      "--formats=compact") == 0
    report = capsys.readouterr().out
    assert f"model.ssm: {os.path.getsize(path):,} bytes" in report
    assert "kernels" not in report


RUN_DAMAGES = {
    "missing_dir": (lambda run: shutil.rmtree(run), "does not exist", RunDirError),
    "no_results": (lambda run: (run / "results.json").unlink(), "has no results.json",
                   RunDirError),
    "broken_results": (
        lambda run: (run / "results.json").write_text("{"), "is not readable JSON", RunDirError,
    ),
    "unfinished": (
        lambda run: (run / "results.json").write_text('{"status": "running"}'),
        "has status 'running', not 'finished'", RunDirError,
    ),
    "no_model": (lambda run: (run / "model.keras").unlink(), "has no model.keras",
                 baking.ExportError),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(RUN_DAMAGES))
def test_unfinished_run_is_refused(damage, fcn_run, tmp_path, capsys):
    damage_run, message, error = RUN_DAMAGES[damage]
    folder = tmp_path / "run"
    shutil.copytree(fcn_run[0], folder)
    damage_run(folder)
    out_dir = tmp_path / "out"
    assert export_cli(f"--model_dir={folder}", f"--out_dir={out_dir}") == 1
    assert_one_error_line(capsys.readouterr(), message)
    with pytest.raises(error, match=re.escape(message)):
        exporter.export_run(str(folder), str(out_dir))


def test_export_into_another_run_folder_is_refused_even_with_overwrite(fcn_run, tmp_path,
                                                                      capsys):
    """A finished run's model.keras would be replaced by the export's, and an
    unfinished run's (killed, or still training) would replace it."""
    finished, unfinished = tmp_path / "finished_run", tmp_path / "unfinished_run"
    _write(finished / "results.json", '{"status": "finished"}')
    _write(finished / "model.keras", "its trained model")
    _write(unfinished / "flags.json", '{"epochs": 3}')
    _write(unfinished / "checkpoint" / "state.json", '{"epoch": 1}')
    for other, held in ((finished, "results.json"), (unfinished, "flags.json")):
        before = sorted(str(path.relative_to(other)) for path in other.rglob("*"))
        assert export_cli(f"--model_dir={fcn_run[0]}", f"--out_dir={other}", "--overwrite") == 1
        assert_one_error_line(capsys.readouterr(), f"--out_dir={other} is a training run's "
                              f"folder (it holds {held}), where the run keeps its model.keras")
        assert sorted(str(path.relative_to(other)) for path in other.rglob("*")) == before
    assert (finished / "model.keras").read_text() == "its trained model"


@pytest.mark.slow
def test_a_home_folder_in_a_flag_is_expanded_as_a_shell_would(fcn_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert export_cli(f"--model_dir={fcn_run[0]}", "--out_dir=~/exported",
                      "--formats=compact") == 0
    assert (tmp_path / "home" / "exported" / "model.ssm").is_file()
    assert not (tmp_path / "~").exists()


def test_a_diverged_run_is_refused_naming_the_layer(tmp_path, capsys):
    model = randomized_model(seed=0)
    scores = model.get_layer("dense_3").scores.numpy()
    scores[:, 0] = np.nan
    model.get_layer("dense_3").scores.assign(scores)
    run = _write_run(tmp_path / "diverged", model)
    out_dir = tmp_path / "out"
    assert export_cli(f"--model_dir={run}", f"--out_dir={out_dir}") == 1
    assert_one_error_line(capsys.readouterr(), "layer 'dense_3' has 100 non-finite values (NaN "
                          "or infinite) in its kernel's scores or W0: the model diverged; export "
                          "a checkpoint from before")
    assert not out_dir.exists() or not os.listdir(out_dir)


def test_unknown_format_is_refused(fcn_run, tmp_path, capsys):
    assert export_cli(f"--model_dir={fcn_run[0]}", f"--out_dir={tmp_path}", "--formats=keras,pdf") == 1
    assert_one_error_line(capsys.readouterr(), "unknown format(s) ['pdf']")


@pytest.mark.slow
def test_existing_export_is_kept_unless_overwrite(fcn_run, tmp_path, capsys):
    run_dir, _ = fcn_run
    out_dir = tmp_path / "out"
    _write(out_dir / ".export-killed" / "model.ssm", "half")  # left by a killed export
    _write(out_dir / ".export-killed" / staging.STAGING, "")
    assert export_cli(f"--model_dir={run_dir}", f"--out_dir={out_dir}", "--formats=compact") == 0
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.ssm"]
    report = capsys.readouterr().out
    assert "model.ssm:" in report and "smaller than float32_kernels" in report
    before = {name: (out_dir / name).read_bytes() for name in ("model.ssm", "export.json")}
    assert export_cli(f"--model_dir={run_dir}", f"--out_dir={out_dir}", "--formats=keras") == 1
    assert_one_error_line(capsys.readouterr(), "already holds an export (model.ssm, export.json)")
    # A mistyped source is named first, whatever the destination holds.
    for source, named in ((f"--model_dir={run_dir}x", f"model_dir {run_dir}x does not exist"),
                          (f"--compact_file={tmp_path / 'x.ssm'}", "x.ssm")):
        assert export_cli(source, f"--out_dir={out_dir}", "--formats=keras") == 1
        assert_one_error_line(capsys.readouterr(), named)
    assert {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)} == before
    assert export_cli(f"--model_dir={run_dir}", f"--out_dir={out_dir}", "--formats=keras",
                "--overwrite") == 0
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.keras"]
    assert json.loads((out_dir / "export.json").read_text())["formats"] == ["keras"]


@pytest.mark.slow
def test_tflite_file_that_disagrees_is_refused_and_nothing_changes(fcn_run, tmp_path, capsys,
                                                                   monkeypatch):
    run_dir, _ = fcn_run
    out_dir = tmp_path / "out"
    assert export_cli(f"--model_dir={run_dir}", f"--out_dir={out_dir}", "--formats=compact") == 0
    capsys.readouterr()
    before = {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)}
    original = formats.FORMATS["tflite_dynamic"]

    def off_by_a_class(path, threads):  # as a broken conversion would be
        predict = original.load(path, threads)
        return lambda images: np.roll(predict(images), 1, axis=1)

    monkeypatch.setitem(formats.FORMATS, "tflite_dynamic",
                        dataclasses.replace(original, load=off_by_a_class))
    assert export_cli(f"--model_dir={run_dir}", f"--out_dir={out_dir}", "--overwrite",
                      "--formats=keras,tflite,tflite_dynamic") == 1
    assert_one_error_line(capsys.readouterr(), "the tflite_dynamic file disagrees with the "
                                               "baked model")
    assert {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)} == before
    monkeypatch.undo()
    summary = exporter.export_run(str(run_dir), str(out_dir), ("tflite", "tflite_sparse"),
                                overwrite=True)
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.tflite", "model_sparse.tflite"]
    for kind in ("tflite", "tflite_sparse"):
        assert summary["max_difference"][kind] <= tflite.TOLERANCE[kind] == 1e-5


@pytest.mark.slow
def test_command_line_exits_with_one_error_line(fcn_run, tmp_path):
    """The real command, in a subprocess: status 1 and no traceback."""
    run_dir = tmp_path / "run"
    shutil.copytree(fcn_run[0], run_dir)
    (run_dir / "results.json").write_text('{"status": "running"}')
    result = subprocess.run(
        [sys.executable, "-m", "ssm_keras.export", f"--model_dir={run_dir}",
         f"--out_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [result.stderr.strip().splitlines()[-1]]
    assert "has status 'running', not 'finished'" in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_never_replaces_its_source(fcn_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(fcn_run[0], run_dir)
    before = (run_dir / "model.keras").read_bytes()
    for out in (run_dir, tmp_path):
        assert export_cli(f"--model_dir={run_dir}", f"--out_dir={out}", "--overwrite") == 1
        assert_one_error_line(capsys.readouterr(), "is or contains the source")
    assert (run_dir / "model.keras").read_bytes() == before
    assert export_cli(f"--model_dir={run_dir}", f"--out_dir={run_dir / 'export'}") == 0  # inside is fine
    capsys.readouterr()
    export_dir = run_dir / "export"
    assert export_cli(f"--compact_file={export_dir / 'model.ssm'}", f"--out_dir={export_dir}",
                "--overwrite", "--formats=keras") == 1
    assert_one_error_line(capsys.readouterr(), "is or contains the source")


@pytest.mark.slow
def test_unwritable_out_and_full_disk_are_one_error_line(fcn_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "out"):
        assert export_cli(f"--model_dir={fcn_run[0]}", f"--out_dir={out}") == 1
        assert_one_error_line(capsys.readouterr(), str(tmp_path / "file"))
    out_dir = tmp_path / "out"
    assert export_cli(f"--model_dir={fcn_run[0]}", f"--out_dir={out_dir}", "--formats=compact") == 0
    capsys.readouterr()
    before = {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)}

    def full_disk(model, path, metadata=None):
        with open(path, "wb") as file:
            file.write(b"partial")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(compact, "save_compact", full_disk)
    assert export_cli(f"--model_dir={fcn_run[0]}", f"--out_dir={out_dir}", "--overwrite") == 1
    assert_one_error_line(capsys.readouterr(), "No space left on device")
    assert {name: (out_dir / name).read_bytes() for name in os.listdir(out_dir)} == before
    # A failed export into folders it made leaves none of them.
    new = tmp_path / "exports" / "compact"
    assert export_cli(f"--model_dir={fcn_run[0]}", f"--out_dir={new}", "--formats=compact") == 1
    assert_one_error_line(capsys.readouterr(), "No space left on device")
    assert not (tmp_path / "exports").exists()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_recover_finishes_a_half_swapped_export_and_deletes_an_unfinished_one(tmp_path):
    """The folder a kill leaves while an export of saved_model and compact
    replaces one of keras and compact: the old saved_model was renamed aside
    and the new one not yet moved in (renames without `renameat2`)."""
    out_dir = tmp_path / "out"
    for name in ("model.keras", "model.ssm", "export.json"):
        _write(out_dir / name, f"old {name}")
    ready = out_dir / ".export-ready"
    _write(ready / "saved_model.old" / "saved_model.pb", "old saved_model")
    _write(ready / "saved_model" / "saved_model.pb", "new saved_model")
    for name in ("model.ssm", "export.json"):
        _write(ready / name, f"new {name}")
    _write(ready / staging.READY, json.dumps(["saved_model", "model.ssm", "export.json"]))
    _write(out_dir / ".export-unfinished" / "model.keras", "half")  # killed before READY
    _write(out_dir / ".export-unfinished" / staging.STAGING, "")
    (out_dir / ".export-empty").mkdir()  # killed as it was made
    _write(out_dir / ".export-mine" / "notes.txt", "a user's own folder")
    exporter.recover(str(out_dir))
    assert sorted(os.listdir(out_dir)) == [".export-mine", "export.json", "model.ssm",
                                           "saved_model"]
    assert (out_dir / ".export-mine" / "notes.txt").read_text() == "a user's own folder"
    shutil.rmtree(out_dir / ".export-mine")
    assert os.listdir(out_dir / "saved_model") == ["saved_model.pb"]
    assert (out_dir / "saved_model" / "saved_model.pb").read_text() == "new saved_model"
    for name in ("model.ssm", "export.json"):
        assert (out_dir / name).read_text() == f"new {name}"
    exporter.recover(str(out_dir))  # nothing left to do
    assert sorted(os.listdir(out_dir)) == ["export.json", "model.ssm", "saved_model"]


def test_a_staging_folder_that_cannot_be_finished_is_one_error_line(tmp_path, monkeypatch):
    _write(tmp_path / ".export-broken" / staging.READY, "not json")
    with pytest.raises(baking.ExportError, match="left by an earlier export .* remove it by hand"):
        exporter.recover(str(tmp_path))

    (tmp_path / ".export-broken" / staging.READY).unlink()
    (tmp_path / ".export-locked").mkdir()
    (tmp_path / "unreadable").mkdir()
    listdir = os.listdir

    def unreadable(path):  # as folders without read permission (root lists them all)
        if str(path).endswith((".export-locked", "unreadable")):
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)

    monkeypatch.setattr(staging.os, "listdir", unreadable)
    for folder in (tmp_path, tmp_path / "unreadable"):
        where = tmp_path / ".export-locked" if folder == tmp_path else folder
        with pytest.raises(baking.ExportError, match=f"^cannot look into {where}: Permission "
                                                     "denied$"):
            exporter.recover(str(folder))


def test_folder_outputs_are_exchanged_in_one_step(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "b").write_text("old")
    staging.move_in(str(tmp_path / "new"), str(tmp_path / "old"))
    assert sorted(os.listdir(tmp_path)) == ["old"]
    assert os.listdir(tmp_path / "old") == ["a"]


def test_the_report_says_larger_when_the_compact_file_is():
    """A baseline's compact file stores float32 weights: larger than an int8 TFLite file."""
    summary = {"bytes": {"model.ssm": 1_065_308, "model_dynamic.tflite": 278_688},
               "masked_weights": 0, "compact_ratio": {"model_dynamic.tflite": 0.26,
                                                      "saved_model": 2.03}}
    lines = export._report(summary).splitlines()
    assert "model.ssm is 3.85x larger than model_dynamic.tflite" in lines
    assert "model.ssm is 2.03x smaller than saved_model" in lines


def test_a_compact_file_of_a_two_output_model_is_refused_in_one_line(tmp_path, capsys):
    images = keras.Input((28, 28, 1))
    features = keras.layers.Flatten()(images)
    model = keras.Model(images, [keras.layers.Dense(10, name="digit")(features),
                                 keras.layers.Dense(2, name="parity")(features)])
    path = tmp_path / "two_outputs.ssm"
    ssm_keras.save_compact(ssm_keras.supermask(model, seed=0), str(path))
    out_dir = tmp_path / "out"
    assert export_cli(f"--compact_file={path}", f"--out_dir={out_dir}") == 1
    assert_one_error_line(capsys.readouterr(), "the export writes models of one input of raw "
                          "pixels of a known shape and one output; model '")
    assert not out_dir.exists() or not os.listdir(out_dir)
