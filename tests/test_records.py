"""What a finished run writes: the summary line, results.txt's table per layer,
and model.keras written whole or not at all."""

import json
import os

import keras
import pytest

from ssm_keras.training import records, run_dir


def finished_results(epochs=2):
    return {"arch": "fcn", "mask": "signed", "regime": "mask", "dataset": "mnist",
            "test_accuracy": 0.975, "remaining_weights": 10_000, "masked_weights": 266_200,
            "remaining_percent": 3.76, "epochs": epochs, "wall_time_s": 3.2,
            "layers": [{"name": "dense", "total": 235_200, "kept_fraction": 0.0201,
                        "inverted_fraction": 0.0153, "hidden_fraction": 0.9646},
                       {"name": "dense_1", "total": 31_000, "kept_fraction": 0.125,
                        "inverted_fraction": 0.25, "hidden_fraction": 0.625}]}


def tiny_model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


@pytest.mark.parametrize("epochs, ending", [(1, "1 epoch in 3 s"), (2, "2 epochs in 3 s")])
def test_summary_line_counts_epochs_in_words(epochs, ending):
    assert records.summary_line(finished_results(epochs)) == (
        "fcn signed supermask on mnist: test accuracy 97.50%, remaining weights "
        f"10,000 / 266,200 (3.76%), {ending}")


def test_write_records_the_model_the_results_and_a_row_per_layer(tmp_path):
    model, results = tiny_model(), finished_results()
    records.write(str(tmp_path), model, results)
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "results.json", "results.txt"]
    assert json.loads((tmp_path / "results.json").read_text()) == results
    lines = (tmp_path / "results.txt").read_text().splitlines()
    assert lines[0] == records.summary_line(results) and lines[1] == ""
    assert lines[3].split() == ["dense", "235,200", "2.01%", "1.53%", "96.46%"]
    assert lines[4].split() == ["dense_1", "31,000", "12.50%", "25.00%", "62.50%"]
    saved = keras.saving.load_model(tmp_path / "model.keras")
    assert [weights.tolist() for weights in saved.get_weights()] == [
        weights.tolist() for weights in model.get_weights()]


def test_a_model_that_cannot_be_written_leaves_the_run_folder_as_it_was(tmp_path, monkeypatch):
    (tmp_path / "model.keras").write_bytes(b"the model of an earlier run")

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"partial")
        raise OSError(28, "No space left on device")

    model = tiny_model()
    monkeypatch.setattr(model, "save", full_disk)
    with pytest.raises(run_dir.RunDirError) as info:
        records.write(str(tmp_path), model, finished_results())
    assert str(info.value) == (
        f"cannot write {tmp_path / 'model.keras'}: No space left on device")
    assert os.listdir(tmp_path) == ["model.keras"]
    assert (tmp_path / "model.keras").read_bytes() == b"the model of an earlier run"
