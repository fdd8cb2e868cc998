"""Training runs end to end: results, summaries, resuming, refusing, errors."""

import glob
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from tensorboard.backend.event_processing import event_accumulator

from ssm_keras import callbacks as ssm_callbacks
from ssm_keras import config as ssm_config
from ssm_keras import command, data, init_file, layers, run_dir, train, training
from ssm_keras.data import sources

from conftest import REPO, crashed_run, shared_data_dir, tiny_config, tiny_splits


@pytest.mark.slow
def test_run_learns_and_writes_results(tmp_path):
    results = training.run(tiny_config(tmp_path, epochs=4), splits=tiny_splits())
    model_dir = tmp_path / "run"
    saved = json.loads((model_dir / "results.json").read_text())
    assert saved["status"] == "finished" and saved["epochs"] == 4
    assert saved["test_accuracy"] == pytest.approx(results["test_accuracy"])
    assert saved["test_accuracy"] > 0.9  # chance is 1/3
    assert saved["masked_weights"] == 64 * 300 + 300 * 100 + 100 * 3
    assert 0 < saved["remaining_weights"] < saved["masked_weights"]
    layer_sum = sum(record["remaining"] for record in saved["layers"])
    assert layer_sum == saved["remaining_weights"]
    assert saved["flags"]["arch"] == "fcn"
    model = keras.saving.load_model(model_dir / "model.keras")
    images, labels = tiny_splits().test
    accuracy = np.mean(np.argmax(model.predict(images.astype(np.float32), verbose=0), 1) == labels)
    assert accuracy == pytest.approx(saved["test_accuracy"])
    history = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4]
    assert all("mask_flips" in entry and "val_accuracy" in entry for entry in history)
    assert history[0]["mask_flips"] > 0
    assert "test accuracy" in (model_dir / "results.txt").read_text()


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


@pytest.mark.slow
def test_tensorboard_logs(tmp_path):
    training.run(tiny_config(tmp_path, epochs=2), splits=tiny_splits())
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
def test_killed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    splits = tiny_splits()
    straight = training.run(tiny_config(tmp_path / "a", augment="crop_flip"), splits=splits)
    config = tiny_config(tmp_path / "b", augment="crop_flip")
    crashed_run(monkeypatch, config, splits)
    assert not (tmp_path / "b" / "run" / "results.json").exists()
    resumed = training.run(config, splits=splits)
    history = [json.loads(line) for line in
               (tmp_path / "b" / "run" / "history.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    a = keras.saving.load_model(tmp_path / "a" / "run" / "model.keras")
    b = keras.saving.load_model(tmp_path / "b" / "run" / "model.keras")
    for layer_a, layer_b in zip(layers.masked_layers(a), layers.masked_layers(b)):
        np.testing.assert_allclose(layer_a.scores.numpy(), layer_b.scores.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(layer_a.compute_mask_values().numpy(),
                                      layer_b.compute_mask_values().numpy())


@pytest.mark.slow
def test_finished_run_is_never_silently_overwritten(tmp_path):
    splits = tiny_splits()
    first = training.run(tiny_config(tmp_path, epochs=1), splits=splits)
    results_path = tmp_path / "run" / "results.json"
    before = results_path.read_text()
    with pytest.raises(run_dir.RunDirError, match="finished run"):
        training.run(tiny_config(tmp_path, epochs=1), splits=splits)
    assert results_path.read_text() == before
    with pytest.raises(run_dir.RunDirError, match="--learning_rate"):
        training.run(tiny_config(tmp_path, epochs=2, learning_rate=0.2, resume=True), splits=splits)
    resumed = training.run(tiny_config(tmp_path, epochs=2, resume=True), splits=splits)
    assert resumed["epochs"] == 2
    replaced = training.run(tiny_config(tmp_path, epochs=1, overwrite=True, seed=3), splits=splits)
    assert replaced["epochs"] == 1 and replaced["flags"]["seed"] == 3
    assert first["flags"]["seed"] == 0


@pytest.mark.slow
def test_baseline_and_mask_then_weights_regimes(tmp_path):
    splits = tiny_splits()
    mask_run = training.run(tiny_config(tmp_path / "mask", epochs=2), splits=splits)
    baseline = training.run(tiny_config(tmp_path / "weights", regime="weights", epochs=2),
                            splits=splits)
    assert baseline["remaining_percent"] == 100.0 and baseline["mask"] is None
    tuned = training.run(tiny_config(tmp_path / "tuned", regime="mask_then_weights", epochs=1,
                                     learning_rate=1e-3,
                                     mask_from=str(tmp_path / "mask" / "run")), splits=splits)
    assert tuned["remaining_weights"] == mask_run["remaining_weights"]
    trained = keras.saving.load_model(tmp_path / "mask" / "run" / "model.keras")
    finetuned = keras.saving.load_model(tmp_path / "tuned" / "run" / "model.keras")
    for before, after in zip(layers.masked_layers(trained), layers.masked_layers(finetuned)):
        np.testing.assert_array_equal(before.compute_mask_values().numpy(),
                                      after.compute_mask_values().numpy())
        assert not np.array_equal(before.kernel.numpy(), after.kernel.numpy())


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2
    splits = tiny_splits()
    single = training.run(tiny_config(tmp_path / "one", epochs=1), splits=splits)
    mirrored = training.run(tiny_config(tmp_path / "two", epochs=1, strategy="mirrored"),
                            splits=splits)
    one = keras.saving.load_model(tmp_path / "one" / "run" / "model.keras")
    two = keras.saving.load_model(tmp_path / "two" / "run" / "model.keras")
    for a, b in zip(layers.masked_layers(one), layers.masked_layers(two)):
        np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), rtol=1e-4, atol=1e-6)
    assert mirrored["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=0.07)


@pytest.fixture(scope="module")
def cli_flags():
    if "arch" not in flags.FLAGS:
        train.define_flags()
    yield flags.FLAGS


def _run_cli(cli_flags, capsys, args):
    cli_flags.unparse_flags()
    cli_flags(["ssm_keras.train", *args])
    code = command.run(lambda: train.run_command(cli_flags), ["ssm_keras.train"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--arch=conv9"], "Unknown --arch='conv9'. Allowed: fcn, conv2, conv4"),
    (["--dataset=imagenet"], "Unknown --dataset='imagenet'"),
    (["--learning_rate=0"], "--learning_rate must be > 0"),
    (["--learning_rate=-0.1"], "--learning_rate must be > 0"),
    (["--batch_size=0"], "--batch_size must be > 0"),
    (["--epochs=-1"], "--epochs must be > 0"),
    (["--density=1.5"], "--density must be in (0, 1]"),
    (["--mask=bernoulli", "--signed"], "--signed needs a mask kind with a signed form"),
    (["--regime=mask_then_weights"], "--mask_from"),
    (["--init_file=/nonexistent/init.npz", "--arch=fcn", "--dataset=mnist"], "does not exist"),
])
@pytest.mark.slow
def test_cli_bad_input_one_clear_line(cli_flags, capsys, tmp_path, args, message):
    code, err = _run_cli(cli_flags, capsys, [*args, f"--model_dir={tmp_path}/run",
                                             f"--data_dir={shared_data_dir()}"])
    assert code == 1
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_cli_unreachable_data_and_bad_init_files(cli_flags, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_why_offline", lambda: "no network in this test")
    code, err = _run_cli(cli_flags, capsys, ["--arch=fcn", "--dataset=mnist",
                                             f"--data_dir={tmp_path}/empty",
                                             f"--model_dir={tmp_path}/run1"])
    assert code == 1 and "Cannot load the mnist data set" in err and str(tmp_path / "empty") in err
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    splits = tiny_splits()
    with pytest.raises(init_file.InitFileError, match="not a readable ssm_keras init file"):
        training.run(tiny_config(tmp_path / "c", init_file=str(corrupt)), splits=splits)
    init = tmp_path / "conv.npz"
    training.run(tiny_config(tmp_path / "d", epochs=1, save_init_file=str(init)), splits=splits)
    with pytest.raises(init_file.InitFileError, match="written for arch='fcn', not arch='conv2'"):
        training.run(tiny_config(tmp_path / "e", arch="conv2", init_file=str(init)),
                     splits=tiny_splits(shape=(8, 8, 3)))


@pytest.mark.slow
def test_images_too_small_for_the_architecture(tmp_path):
    with pytest.raises(ssm_config.ConfigError, match="needs images of at least 16x16"):
        training.run(tiny_config(tmp_path, arch="conv8"), splits=tiny_splits(shape=(8, 8, 3)))


@pytest.mark.slow
def test_init_file_reproduces_the_start(tmp_path):
    splits = tiny_splits()
    init = tmp_path / "init.npz"
    a = training.run(tiny_config(tmp_path / "a", epochs=1, seed=1, save_init_file=str(init)),
                     splits=splits)
    training.run(tiny_config(tmp_path / "b", epochs=1, seed=2, init_file=str(init)),
                 splits=splits)
    assert a["remaining_weights"] != 0
    model_a = keras.saving.load_model(tmp_path / "a" / "run" / "model.keras")
    model_b = keras.saving.load_model(tmp_path / "b" / "run" / "model.keras")
    for la, lb in zip(layers.masked_layers(model_a), layers.masked_layers(model_b)):
        np.testing.assert_array_equal(la.kernel.numpy(), lb.kernel.numpy())
    with pytest.raises(init_file.InitFileError, match="already exists"):
        training.run(tiny_config(tmp_path / "c", epochs=1, save_init_file=str(init)), splits=splits)


@pytest.mark.parametrize("jit_compile, expected", [
    (None, bool(tf.config.list_physical_devices("GPU"))),  # Keras decides: XLA on GPUs only
    (True, True),
    (False, False),
])
@pytest.mark.slow
def test_jit_compile_setting_reaches_keras(jit_compile, expected):
    config = ssm_config.TrainConfig(arch="fcn", dataset="mnist", jit_compile=jit_compile)
    model = training.build_model(config, data.DATASETS["mnist"])
    training.compile_model(model, config, steps_per_epoch=10)
    assert model.jit_compile is expected


class _EpochBatches(keras.callbacks.Callback):
    """Counts each epoch's optimiser steps."""

    def on_train_begin(self, logs=None):
        self.steps = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.steps.append(int(self.model.optimizer.iterations.numpy()) - self.start)


@pytest.mark.slow
def test_steps_per_execution_trains_exactly_each_epochs_batches(tmp_path, monkeypatch):
    # 300 examples in batches of 32: 10 batches per epoch, 4 per execution.
    splits = tiny_splits(train_size=300)
    counter = _EpochBatches()
    original = training._callbacks
    monkeypatch.setattr(training, "_callbacks", lambda *args, **kwargs: (
        lambda made: ([*made[0], counter], made[1]))(original(*args, **kwargs)))
    runs = {}
    for steps in (4, 1):
        runs[steps] = training.run(tiny_config(tmp_path / str(steps), steps_per_execution=steps,
                                               augment="crop_flip"), splits=splits)
        assert counter.steps == [10, 10, 10]
        model = keras.saving.load_model(tmp_path / str(steps) / "run" / "model.keras")
        assert int(model.optimizer.iterations.numpy()) == 30
    history = [json.loads(line) for line in
               (tmp_path / "4" / "run" / "history.jsonl").read_text().splitlines()]
    assert all(entry["loss"] > 0 and entry["accuracy"] > 0 and entry["mask_flips"] > 0
               for entry in history)
    # The same batches in the same order as one step per execution.
    one = keras.saving.load_model(tmp_path / "1" / "run" / "model.keras")
    four = keras.saving.load_model(tmp_path / "4" / "run" / "model.keras")
    for a, b in zip(layers.masked_layers(one), layers.masked_layers(four)):
        np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), rtol=1e-5, atol=1e-6)
    assert runs[4]["test_accuracy"] == runs[1]["test_accuracy"]


def _strict_json(path):
    """The JSON in `path`, refusing NaN and Infinity as strict parsers do."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("overrides, message", [
    (dict(learning_rate=float("inf")), "--learning_rate must be a finite number"),
    (dict(momentum=float("nan")), "--momentum must be a finite number"),
    (dict(weight_decay=float("inf")), "--weight_decay must be a finite number"),
    (dict(init_factor=float("inf")), "--init_factor must be a finite number"),
    (dict(mask="topk", tau_fraction=0.3), "--tau_fraction only shapes signed and binary"),
    (dict(mask="signed", density=0.2), "--density only shapes topk and signed_topk"),
    (dict(seed=-1), r"--seed must be in \[0, 2\*\*63\)"),
])
@pytest.mark.slow
def test_settings_that_cannot_work_are_refused(tmp_path, overrides, message):
    with pytest.raises(ssm_config.ConfigError, match=message):
        training.run(tiny_config(tmp_path, **overrides), splits=tiny_splits())
    assert not (tmp_path / "run").exists()
    tiny_config(tmp_path, mask="topk", density=0.2).validate()  # used flags pass


@pytest.mark.slow
def test_diverging_run_stops_with_status_diverged(tmp_path, capsys):
    splits = tiny_splits()
    with pytest.raises(ssm_callbacks.Diverged, match="the loss is (nan|inf) after epoch 1"):
        training.run(tiny_config(tmp_path, regime="weights", learning_rate=1e6), splits=splits)
    results = _strict_json(tmp_path / "run" / "results.json")
    assert results["status"] == "diverged" and results["epoch"] == 1
    assert not (tmp_path / "run" / "model.keras").exists()
    assert run_dir.read_state(str(tmp_path / "run")) is None  # no checkpoint of a diverged state
    with pytest.raises(run_dir.RunDirError, match="diverged"):
        training.run(tiny_config(tmp_path, regime="weights", learning_rate=1e6), splits=splits)
    # The command ends with one error line and status 1.
    code = command.run(lambda: training.run(  # as the train command does
        tiny_config(tmp_path / "b", regime="weights", learning_rate=1e6), splits=splits))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged: the loss is "), err
    assert len(err.splitlines()) == 1
    assert _strict_json(tmp_path / "b" / "run" / "results.json")["status"] == "diverged"


@pytest.mark.slow
def test_non_finite_weights_stop_training():
    # NaN scores hide every weight: the loss stays finite, the weights do not.
    model = training.build_model(tiny_config(pathlib.Path("unused")), tiny_splits().spec)
    stop = ssm_callbacks.StopOnNonFinite()
    stop.set_model(model)
    stop.on_epoch_end(0, {"loss": 1.1})
    scores = layers.masked_layers(model)[1].scores
    scores.assign(np.full(scores.shape, np.nan, np.float32))
    with pytest.raises(ssm_callbacks.Diverged, match="scores holds non-finite values after epoch 3"):
        stop.on_epoch_end(2, {"loss": 1.1})


@pytest.mark.slow
def test_bad_init_files_are_refused(tmp_path):
    splits = tiny_splits()
    init = tmp_path / "init.npz"
    training.run(tiny_config(tmp_path / "a", epochs=1, save_init_file=str(init)), splits=splits)
    arrays = dict(np.load(init))
    broken = {
        "nan.npz": ({key: value if key == "__meta__" else np.full_like(value, np.nan)
                     for key, value in arrays.items()}, "holds NaN or infinite values"),
        "list.npz": ({**arrays, "__meta__": np.array("[1, 2]")}, "malformed metadata"),
        "noarch.npz": ({**arrays, "__meta__": np.array('{"format": "ssm_keras.init"}')},
                       "malformed metadata"),
    }
    for name, (content, message) in broken.items():
        np.savez(tmp_path / name, **content)
        with pytest.raises(init_file.InitFileError, match=message):
            training.run(tiny_config(tmp_path / f"run-{name}", init_file=str(tmp_path / name)),
                         splits=splits)
        assert not (tmp_path / f"run-{name}").exists()


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "x.json"
    run_dir.write_json_atomically(str(path), {"a": float("nan"), "b": [1.0, float("-inf")]})
    assert _strict_json(path) == {"a": None, "b": [1.0, None]}


@pytest.mark.slow
def test_fresh_process_loads_models_after_import_and_the_command_fails_cleanly(tmp_path):
    """One new process (they are slow to start): `import ssm_keras` alone makes
    a saved model loadable; then `python -m ssm_keras.train` with a bad flag
    ends with exit status 1 and one error line, no traceback."""
    model = training.build_model(tiny_config(tmp_path), tiny_splits().spec)
    model.save(tmp_path / "model.keras")
    images = tiny_splits().test[0][:4].astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images, verbose=0)
    script = "\n".join([
        "import runpy, sys",
        "import keras, numpy, ssm_keras",
        "print(ssm_keras.__file__, flush=True)",
        "model = keras.saving.load_model('model.keras')",
        "numpy.save('loaded.npy', model.predict(numpy.load('images.npy'), verbose=0))",
        "sys.argv = ['ssm_keras.train', '--arch=resnet21', '--model_dir=run']",
        "runpy.run_module('ssm_keras.train', run_name='__main__', alter_sys=True)",
    ])
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               cwd=tmp_path, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.stdout.startswith(str(REPO / "ssm_keras")), completed.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "loaded.npy"), expected, rtol=1e-6)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith("error: Unknown --arch='resnet21'")
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_overwrite_and_new_runs_check_everything_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_why_offline", lambda: "no network in this test")
    splits = tiny_splits()
    training.run(tiny_config(tmp_path, epochs=1), splits=splits)
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()
              if path.is_file()}
    bad_data = dict(data_dir=str(tmp_path / "nothing"), overwrite=True)
    with pytest.raises(data.DataError, match="Cannot load the mnist data set"):
        training.run(tiny_config(tmp_path, epochs=1, **bad_data))
    after = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()
             if path.is_file()}
    assert after == before  # the finished run is untouched (the lock file is empty again)
    # A new run with bad data writes nothing; the corrected command then runs.
    fresh = tiny_config(tmp_path / "new", epochs=1, data_dir=str(tmp_path / "nothing"))
    with pytest.raises(data.DataError):
        training.run(fresh)
    assert not (tmp_path / "new").exists()
    corrected = training.run(tiny_config(tmp_path / "new", epochs=1), splits=splits)
    assert corrected["epochs"] == 1


@pytest.mark.slow
def test_a_second_process_on_the_run_folder_is_refused(tmp_path):
    splits = tiny_splits()
    model_dir = str(tmp_path / "run")
    with run_dir.lock(model_dir):  # as the first process holds it
        with pytest.raises(run_dir.RunDirError, match=f"in use by process {os.getpid()} on "):
            training.run(tiny_config(tmp_path, epochs=1), splits=splits)
        assert os.listdir(model_dir) == [".lock"]
    assert training.run(tiny_config(tmp_path, epochs=1), splits=splits)["epochs"] == 1


@pytest.mark.slow
def test_checkpoint_is_one_checked_unit_and_the_folder_any_spelling(tmp_path, monkeypatch):
    splits = tiny_splits()
    straight = training.run(tiny_config(tmp_path / "a"), splits=splits)
    config = tiny_config(tmp_path / "b")
    crashed_run(monkeypatch, config, splits)
    folder = tmp_path / "b" / "run" / "checkpoint"
    state = _strict_json(folder / "state.json")
    assert state["epoch"] == 2 and state["model"] == "model-2.keras"
    assert sorted(path.name for path in folder.iterdir()) == ["model-2.keras", "state.json"]
    good = (folder / "model-2.keras").read_bytes()
    # A truncated model file, a model file of another epoch, a damaged state.json.
    for damage, message in [
        (lambda: (folder / "model-2.keras").write_bytes(good[:1000]), "is damaged"),
        (lambda: (folder / "model-2.keras").write_bytes(
            (tmp_path / "a" / "run" / "model.keras").read_bytes()), "is damaged"),
        (lambda: (folder / "state.json").write_text('{"epoch": 2, "mod'), "not readable JSON"),
    ]:
        saved_state = (folder / "state.json").read_bytes()
        damage()
        with pytest.raises(run_dir.RunDirError, match=message):
            training.run(config, splits=splits)
        (folder / "model-2.keras").write_bytes(good)
        (folder / "state.json").write_bytes(saved_state)
    assert not (tmp_path / "b" / "run" / "results.json").exists()
    # A leftover model file of a kill between the two writes is ignored;
    # the same folder spelled otherwise (trailing slash, relative) resumes.
    (folder / "model-3.keras").write_bytes(good)
    monkeypatch.chdir(tmp_path / "b")
    resumed = training.run(tiny_config(tmp_path, model_dir="./run/"), splits=splits)
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert resumed["epochs"] == 3


@pytest.mark.slow
def test_unusable_run_folders_and_failed_writes_are_one_clear_error(tmp_path, monkeypatch):
    splits = tiny_splits()
    (tmp_path / "file").write_text("x")
    for model_dir in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(run_dir.RunDirError, match=str(model_dir)):
            training.run(tiny_config(tmp_path, model_dir=str(model_dir)), splits=splits)
    # A full disk while writing the checkpoint: an error, no partial file.
    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(run_dir.RunDirError, match="cannot write the checkpoint .*model-1.keras: "
                                                  "No space left on device"):
        training.run(tiny_config(tmp_path, epochs=1), splits=splits)
    assert not [path for path in (tmp_path / "run").rglob("*") if "tmp" in path.name]
    monkeypatch.undo()
    # --overwrite replaces a run, never a folder of other files.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(run_dir.RunDirError, match="holds files but no run"):
        training.run(tiny_config(tmp_path, model_dir=str(tmp_path / "mine"), overwrite=True),
                     splits=splits)
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
    # A damaged --mask_from model.
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(run_dir.RunDirError, match="--mask_from=.*bad.keras: cannot load"):
        training.run(tiny_config(tmp_path / "m", regime="mask_then_weights",
                                 mask_from=str(tmp_path / "bad.keras")), splits=splits)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, message", [
    (["--no_such_flag=1"], "error: Unknown command line flag 'no_such_flag'"),
    (["--flagfile=/nonexistent/run.flags"], "error: Unable to open flagfile: [Errno 2] No such file or directory: '/nonexistent/run.flags'"),
    (["--epochs=many"], "error: flag --epochs=many: invalid literal for int()"),
    (["extra"], "error: unexpected arguments: extra"),
])
@pytest.mark.slow
def test_bad_command_lines_are_one_error_line(capsys, args, message):
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    try:
        code = command.run(lambda: None, command.parse_flags(["ssm_keras.train", *args],
                                                             flag_values))
    except SystemExit as exit_info:  # a bad flag stops the parser
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(message), err
