"""The callbacks of a run: mask statistics and TensorBoard summaries, the
divergence check, and the caller's own callbacks after them."""

import glob
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import strict_json, tiny_config, tiny_splits
from tensorboard.backend.event_processing import event_accumulator

import ssm_keras
from ssm_keras import layers
from ssm_keras.cli import shell
from ssm_keras.training import callbacks as ssm_callbacks
from ssm_keras.training import run_dir, trainer


def _tags(pattern):
    tags = {}
    for path in glob.glob(pattern):
        accumulator = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        accumulator.Reload()
        for kind, names in accumulator.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
        tags.setdefault("_values", {}).update(
            {name: [event.tensor_proto for event in accumulator.Tensors(name)]
             for name in accumulator.Tags().get("tensors", [])})
    return tags


class _RecordAndStop(keras.callbacks.Callback):
    """Records each epoch's logs and the model; ends training after `epochs` epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


@pytest.mark.slow
def test_summaries_and_the_callers_callbacks(tmp_path):
    caller = _RecordAndStop(epochs=2)
    results = trainer.run(tiny_config(tmp_path, epochs=3), splits=tiny_splits(),
                           callbacks=[caller])
    # The caller's callback saw each epoch's logs with the mask statistics,
    # as history.jsonl records them, and stopped the run after 2 of 3 epochs:
    # a finished run of the epochs it trained.
    history = run_dir.read_history(str(tmp_path / "run"))
    assert results["epochs"] == 2 and [entry["epoch"] for entry in history] == [1, 2]
    assert results["status"] == strict_json(tmp_path / "run" / "results.json")["status"] == "finished"
    for logs, entry in zip(caller.logs, history, strict=True):
        for key in ("loss", "val_accuracy", "mask_flips", "remaining_percent"):
            assert logs[key] == pytest.approx(entry[key], rel=1e-6), key
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras")
    for trained, loaded in zip(layers.masked_layers(caller.model), layers.masked_layers(saved)):
        np.testing.assert_array_equal(trained.scores.numpy(), loaded.scores.numpy())
    # TensorBoard: mask statistics per layer and overall, the learning rate,
    # the curves and the flags.
    logs = tmp_path / "run" / "logs"
    masks = _tags(str(logs / "masks" / "events.*"))
    for tag in ("overall/remaining_percent", "overall/mask_flips", "learning_rate",
                "overall/kept_fraction", "overall/inverted_fraction", "overall/hidden_fraction",
                "dense_1/kept_fraction", "dense_3/hidden_fraction", "dense_2/remaining_percent",
                "dense_1/scores"):
        assert tag in masks["tensors"], tag
    remaining = [tf.make_ndarray(t) for t in masks["_values"]["overall/remaining_percent"]]
    assert len(remaining) == 2 and all(0 < float(v) < 100 for v in remaining)
    rate = [float(tf.make_ndarray(t)) for t in masks["_values"]["learning_rate"]]
    assert rate[0] == pytest.approx(0.1 * 0.9 ** (1 / 10), rel=1e-4)  # 1 of 10 decay epochs
    assert "epoch_loss" in _tags(str(logs / "train" / "events.*"))["tensors"]
    assert "epoch_accuracy" in _tags(str(logs / "validation" / "events.*"))["tensors"]
    text = _tags(str(logs / "flags" / "events.*"))["_values"]["flags"][0]
    assert b"--arch=fcn" in tf.make_ndarray(text).item()


@pytest.mark.slow
def test_diverging_run_stops_with_status_diverged(tmp_path, capsys):
    splits = tiny_splits()
    with pytest.raises(ssm_callbacks.Diverged, match="the loss is (nan|inf) after epoch 1"):
        trainer.run(tiny_config(tmp_path, regime="weights", learning_rate=1e6), splits=splits)
    results = strict_json(tmp_path / "run" / "results.json")
    assert results["status"] == "diverged" and results["epoch"] == 1
    assert not (tmp_path / "run" / "model.keras").exists()
    assert run_dir.read_state(str(tmp_path / "run")) is None  # no checkpoint of a diverged state
    with pytest.raises(run_dir.RunDirError, match="diverged"):
        trainer.run(tiny_config(tmp_path, regime="weights", learning_rate=1e6), splits=splits)
    # The command ends with one error line and status 1.
    code = shell.run(lambda: trainer.run(  # as the train command does
        tiny_config(tmp_path / "b", regime="weights", learning_rate=1e6), splits=splits))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged: the loss is "), err
    assert len(err.splitlines()) == 1
    assert strict_json(tmp_path / "b" / "run" / "results.json")["status"] == "diverged"


class _PoisonScores(keras.callbacks.Callback):
    """Sets a masked layer's scores to NaN as epoch `epoch` (from 1) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            scores = layers.masked_layers(self.model)[0].scores
            scores.assign(np.full(scores.shape, np.nan, np.float32))


@pytest.mark.slow
def test_a_finished_run_that_diverges_when_resumed_keeps_its_records(tmp_path):
    splits = tiny_splits()
    trainer.run(tiny_config(tmp_path, epochs=2), splits=splits)
    folder = tmp_path / "run"
    kept = {name: (folder / name).read_bytes()
            for name in ("results.json", "results.txt", "history.jsonl", "model.keras")}
    with pytest.raises(ssm_callbacks.Diverged, match=r"scores holds non-finite values after "
                       r"epoch 3\. .* The finished run's results.json, history.jsonl and "
                       r"model.keras are kept; its checkpoint holds epoch 2\."):
        trainer.run(tiny_config(tmp_path, epochs=4, resume=True), splits=splits,
                    callbacks=[_PoisonScores(3)])
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert run_dir.read_state(str(folder))["epoch"] == 2


@pytest.mark.slow
def test_non_finite_weights_stop_training():
    # NaN scores hide every weight: the loss stays finite, the weights do not.
    model = trainer.build_model(tiny_config(pathlib.Path("unused")), tiny_splits().spec)
    stop = ssm_callbacks.StopOnNonFinite()
    stop.set_model(model)
    stop.on_epoch_end(0, {"loss": 1.1})
    scores = layers.masked_layers(model)[1].scores
    scores.assign(np.full(scores.shape, np.nan, np.float32))
    with pytest.raises(ssm_callbacks.Diverged, match="scores holds non-finite values after epoch 3"):
        stop.on_epoch_end(2, {"loss": 1.1})


@pytest.mark.parametrize("where", ["a file", "a file/below"])
def test_a_monitor_whose_log_folder_cannot_be_written_says_so_in_one_error(tmp_path, where):
    (tmp_path / "a file").write_text("mine")
    inputs = keras.Input((4,))
    masked = ssm_keras.supermask(keras.Model(inputs, keras.layers.Dense(2)(inputs)), seed=0)
    masked.compile("sgd", "mse")
    log_dir = str(tmp_path / where)
    with pytest.raises(ValueError, match=f"MaskMonitor cannot write its logs to "
                                         f"log_dir='{log_dir}' .*; name a folder it can write"):
        masked.fit(np.ones((2, 4)), np.zeros((2, 2)), verbose=0,
                   callbacks=[ssm_callbacks.MaskMonitor(log_dir)])
    assert (tmp_path / "a file").read_text() == "mine"
