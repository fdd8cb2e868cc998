"""The example scripts of `examples/` as a user runs them."""

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
from support import write_mnist

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    """The module of `examples/<name>.py`."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_your_own_model_refuses_missing_data_with_one_error_line(tmp_path, capsys,
                                                                monkeypatch):
    example = load_example("your_own_model")
    out = tmp_path / "own"
    monkeypatch.setenv("SSM_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["your_own_model.py", f"--data_dir={tmp_path / 'none'}",
                                      f"--out={out}"])
    with pytest.raises(SystemExit) as stop:
        example.main()
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert errors[0].startswith("your_own_model.py: error: Cannot load the mnist data set.")
    assert f"{tmp_path / 'none'}: does not exist" in errors[0]
    assert not out.exists()


def row_band_mnist(folder, train_size=64, test_size=32):
    """A tiny MNIST in `folder/mnist` whose class is the brightest of 10
    bands of two rows: learnable from the rows as a sequence."""
    rng = np.random.default_rng(0)
    splits = []
    for size in (train_size, test_size):
        labels = rng.integers(0, 10, size).astype(np.uint8)
        images = rng.integers(0, 60, (size, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[2 * label + 4: 2 * label + 6] = 250
        splits.append((images, labels))
    write_mnist(folder / "mnist", *splits)


@pytest.mark.parametrize("model", [
    "transformer", pytest.param("lstm", marks=pytest.mark.slow)])
def test_sequence_models_write_the_curves_of_both_runs(tmp_path, monkeypatch, model):
    monkeypatch.setenv("SSM_OFFLINE", "1")
    row_band_mnist(tmp_path / "data")
    out = tmp_path / "out"
    load_example("sequence_models").main([
        f"--data_dir={tmp_path / 'data'}", f"--model={model}", f"--out={out}", "--epochs=1",
        "--batch_size=32", "--dpi=40"])
    report = json.loads((out / f"{model}.json").read_text())
    assert report["model"] == model
    assert (report["train_examples"], report["test_examples"]) == (64, 32)
    weights, supermask = report["runs"]["weights"], report["runs"]["signed_supermask"]
    for run in (weights, supermask):
        assert len(run["test_accuracy"]) == len(run["train_accuracy"]) == 1
        assert 0 <= run["test_accuracy"][0] <= 1 and run["seconds"][0] > 0
    assert weights["remaining_percent"] == [100.0] and weights["masked_weights"] == 0
    masked = {"transformer": 28 * 64 + 28 * 64 + 2 * (4 * 64 * 64 + 2 * 64 * 128) + 64 * 10,
              "lstm": 4 * 128 * (28 + 128) + 128 * 10}[model]
    assert supermask["masked_weights"] == supermask["trainable_weights"] == masked
    assert 0 < supermask["remaining_weights"] < masked
    assert supermask["remaining_percent"][0] == pytest.approx(
        100 * supermask["remaining_weights"] / masked)
    statuses = {row["layer"]: row["status"] for row in supermask["layers"]}
    assert statuses["classifier"] == "masked"
    if model == "transformer":
        assert statuses["add_positions"] == "masked" and statuses["norm"] == "frozen"
    assert set(supermask["layers"][0]) == {
        "layer", "class", "status", "weights", "trainable", "masked", "remaining"}
    assert (out / f"{model}.png").read_bytes().startswith(b"\x89PNG")


def test_sequence_models_refuse_to_overwrite_a_report(tmp_path, capsys):
    (tmp_path / "lstm.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:
        load_example("sequence_models").main([
            f"--data_dir={tmp_path}", "--model=lstm", f"--out={tmp_path}"])
    assert stop.value.code == 2
    assert f"{tmp_path / 'lstm'}.json exists" in capsys.readouterr().err
    assert (tmp_path / "lstm.json").read_text() == "{}"
