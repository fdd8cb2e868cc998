"""The run folder: finished runs never overwritten, resuming from a checked
checkpoint, one process at a time, everything checked before anything is
written, failed writes."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from support import crashed_run, strict_json, tiny_config, tiny_splits

from ssm_keras import data, files, layers
from ssm_keras.training import run_dir, trainer


@pytest.mark.slow
def test_one_process_checks_everything_first_and_never_silently_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_OFFLINE", "1")
    splits = tiny_splits()
    model_dir = str(tmp_path / "run")
    # A second process on the folder is refused.
    with run_dir.lock(model_dir):  # as the first process holds it
        with pytest.raises(run_dir.RunDirError, match=f"in use by process {os.getpid()} on "):
            trainer.run(tiny_config(tmp_path, epochs=1), splits=splits)
        assert os.listdir(model_dir) == [".lock"]
    # A new run with bad data writes nothing; the corrected command then runs.
    with pytest.raises(data.DataError, match="Cannot load the mnist data set"):
        trainer.run(tiny_config(tmp_path / "new", epochs=1, data_dir=str(tmp_path / "nothing")))
    assert not (tmp_path / "new").exists()
    first = trainer.run(tiny_config(tmp_path, epochs=1), splits=splits)
    assert first["epochs"] == 1 and first["flags"]["seed"] == 0
    # A finished run is refused, and untouched by an --overwrite with bad data.
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()
              if path.is_file()}
    with pytest.raises(run_dir.RunDirError, match="finished run"):
        trainer.run(tiny_config(tmp_path, epochs=1), splits=splits)
    with pytest.raises(data.DataError, match="Cannot load the mnist data set"):
        trainer.run(tiny_config(tmp_path, epochs=1, overwrite=True,
                                 data_dir=str(tmp_path / "nothing")))
    after = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()
             if path.is_file()}
    assert after == before  # (the lock file is empty again)
    # --resume goes on with the same settings only; --overwrite starts again.
    with pytest.raises(run_dir.RunDirError, match="--learning_rate"):
        trainer.run(tiny_config(tmp_path, epochs=2, learning_rate=0.2, resume=True), splits=splits)
    # A run saved before a setting existed trained with its default, and resumes.
    flags_path = tmp_path / "run" / "flags.json"
    flags_path.write_text(json.dumps({key: value for key, value in
                                      json.loads(flags_path.read_text()).items()
                                      if key != "augment_fraction"}))
    resumed = trainer.run(tiny_config(tmp_path, epochs=2, resume=True), splits=splits)
    assert resumed["epochs"] == 2
    replaced = trainer.run(tiny_config(tmp_path, epochs=1, overwrite=True, seed=3), splits=splits)
    assert replaced["epochs"] == 1 and replaced["flags"]["seed"] == 3
    # A finished run whose checkpoint is gone has nothing to resume from: it
    # is not trained over from the start.
    shutil.rmtree(tmp_path / "run" / "checkpoint")
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()
              if path.is_file()}
    with pytest.raises(run_dir.RunDirError, match=r"the finished run in --model_dir=.* has none "
                                                  r"\(checkpoint/ is gone\); it is not trained"):
        trainer.run(tiny_config(tmp_path, epochs=2, seed=3, resume=True), splits=splits)
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir()
            if path.is_file()} == before


def test_a_run_goes_on_with_another_worker_timeout_but_not_another_learning_rate(tmp_path):
    flags = {"epochs": 3, "learning_rate": 0.1, "worker_timeout": 600.0}
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / run_dir.FLAGS_JSON).write_text(json.dumps(flags))
    assert run_dir.check(str(folder), {**flags, "worker_timeout": 1200.0}) is None
    with pytest.raises(run_dir.RunDirError, match=r"--learning_rate: 0.1 -> 0.2"):
        run_dir.check(str(folder), {**flags, "learning_rate": 0.2})


def test_a_cosine_run_is_not_continued_to_more_epochs(tmp_path):
    """Its learning rate reached 0 at the end of its own --epochs."""
    splits = tiny_splits()
    trainer.run(tiny_config(tmp_path, epochs=1, lr_schedule="cosine"), splits=splits)
    results = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(run_dir.RunDirError, match="--lr_schedule=cosine, which decays the "
                       "learning rate to 0 over its --epochs=1; continued to --epochs=2"):
        trainer.run(tiny_config(tmp_path, epochs=2, lr_schedule="cosine", resume=True),
                    splits=splits)
    assert (tmp_path / "run" / "results.json").read_bytes() == results


@pytest.mark.slow
def test_killed_run_that_trains_batch_norm_resumes_bit_identical(tmp_path):
    """The checkpoint's optimiser decays the scores only, as the run's did:
    Keras saves the weight decay but not the variables it excludes, so a
    resumed run would otherwise decay gamma and beta too."""
    splits = tiny_splits(shape=(8, 8, 3), train_size=64)
    settings = dict(arch="resnet20", dataset="cifar10", weight_decay=0.05, train_batch_norm=True,
                    recalibrate_batch_norm=True, epochs=2, run_eagerly=True)
    trainer.run(tiny_config(tmp_path / "a", **settings), splits=splits)
    config = tiny_config(tmp_path / "b", **settings)
    crashed_run(config, splits, after_epoch=1)
    trainer.run(config, splits=splits)
    models = [keras.saving.load_model(tmp_path / name / "run" / "model.keras") for name in "ab"]
    names = [variable.path for variable in models[0].weights]
    assert any(name.endswith("gamma") for name in names)
    for name, straight, resumed in zip(names, *(model.get_weights() for model in models)):
        np.testing.assert_array_equal(straight, resumed, err_msg=name)


@pytest.mark.slow
def test_killed_bernoulli_run_resumes_with_the_samples_it_would_have_drawn(tmp_path):
    """Each training step draws the Bernoulli masks from the layers' seed
    generators, whose counters the checkpoint keeps (Keras' model file
    does not): resumed, the run draws on where it stopped."""
    splits = tiny_splits()
    trainer.run(tiny_config(tmp_path / "a", mask="bernoulli", epochs=2), splits=splits)
    config = tiny_config(tmp_path / "b", mask="bernoulli", epochs=2)
    crashed_run(config, splits, after_epoch=1)
    state = strict_json(tmp_path / "b" / "run" / "checkpoint" / "state.json")
    model = keras.saving.load_model(tmp_path / "b" / "run" / "checkpoint" / "model-1.keras")
    scopes = {layer.mask_scope for layer in layers.masked_layers(model)}
    assert set(state["mask_samplers"]) == scopes
    assert all(counter > 0 for _, counter in state["mask_samplers"].values())
    trainer.run(config, splits=splits)
    models = [keras.saving.load_model(tmp_path / name / "run" / "model.keras") for name in "ab"]
    for straight, resumed in zip(*(layers.masked_layers(model) for model in models)):
        np.testing.assert_array_equal(straight.scores.numpy(), resumed.scores.numpy())


@pytest.mark.slow
def test_killed_run_resumes_from_its_checked_checkpoint_to_the_same_result(tmp_path, monkeypatch):
    splits = tiny_splits()
    notes = []
    monkeypatch.setattr(trainer.log, "warning", lambda text, *values: notes.append(text % values))
    straight = trainer.run(tiny_config(tmp_path / "a", augment="crop_flip"), splits=splits)
    assert notes == ["--augment=crop_flip mirrors the images left-right, and a mirrored mnist "
                     "image may show no class of it (a mirrored 3 is no digit)"]
    config = tiny_config(tmp_path / "b", augment="crop_flip")  # 3 epochs
    crashed_run(config, splits, after_epoch=2)
    folder = tmp_path / "b" / "run" / "checkpoint"
    assert not (tmp_path / "b" / "run" / "results.json").exists()
    state = strict_json(folder / "state.json")
    assert state["epoch"] == 2 and state["model"] == "model-2.keras"
    assert sorted(path.name for path in folder.iterdir()) == ["model-2.keras", "state.json"]
    good_model, good_state = (folder / "model-2.keras").read_bytes(), (folder / "state.json").read_text()
    flags_path = tmp_path / "b" / "run" / "flags.json"
    good_flags = flags_path.read_text()
    # Damaged or foreign files are refused, not believed: a truncated model
    # file, a model file of another run, a damaged state.json or flags.json.
    damages = [
        (folder / "model-2.keras", good_model[:1000], "is damaged"),
        (folder / "model-2.keras", (tmp_path / "a" / "run" / "model.keras").read_bytes(),
         "is damaged"),
        (folder / "state.json", '{"epoch": 2, "mod', "not readable JSON"),
        *[(folder / "state.json", json.dumps(damaged), message) for damaged, message in [
            ({**state, "epoch": 99}, "says 99 epochs were trained, but its history"),
            ({**state, "epoch": -1}, "integer >= 1, found -1"),
            ({**state, "epoch": True}, "integer >= 1, found True"),
            ({**state, "history": "abc"}, "its history does not list epochs 1 to 2"),
            ({**state, "wall_time_s": "long"}, "wall_time_s must be a number"),
            ({**state, "callbacks": {"wait": 1}}, "callbacks must be a list"),
            ({**state, "mask_samplers": [1]}, "mask_samplers must be an object"),
            ({**state, "mask_samplers": {"dense_1": [0, 1]}},
             "mask sampler state 'dense_1': \\[0, 1\\] does not fit the model"),
            ([state], "expected a JSON object, found list"),
        ]],
        (flags_path, "[1, 2]", "flags.json is damaged"),
        (flags_path, '"flags"', "flags.json is damaged"),
    ]
    for path, content, message in damages:
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        with pytest.raises(run_dir.RunDirError, match=message):
            trainer.run(config, splits=splits)
        (folder / "model-2.keras").write_bytes(good_model)
        (folder / "state.json").write_text(good_state)
        flags_path.write_text(good_flags)
    assert not (tmp_path / "b" / "run" / "results.json").exists()
    # A leftover model file of a kill between the two writes is ignored;
    # the same folder spelled otherwise (trailing slash, relative) resumes
    # and ends exactly where the uninterrupted run did.
    (folder / "model-3.keras").write_bytes(good_model)
    monkeypatch.chdir(tmp_path / "b")
    resumed = trainer.run(tiny_config(tmp_path, model_dir="./run/", augment="crop_flip"),
                           splits=splits)
    assert resumed["epochs"] == 3
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    history = run_dir.read_history(str(tmp_path / "b" / "run"))
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    a = keras.saving.load_model(tmp_path / "a" / "run" / "model.keras")
    b = keras.saving.load_model(tmp_path / "b" / "run" / "model.keras")
    for layer_a, layer_b in zip(layers.masked_layers(a), layers.masked_layers(b)):
        np.testing.assert_allclose(layer_a.scores.numpy(), layer_b.scores.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(layer_a.compute_mask_values().numpy(),
                                      layer_b.compute_mask_values().numpy())


def test_flags_txt_trains_the_run_again_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = {"arch": "fcn", "start_from": "parent/checkpoint/epoch-2", "model_dir": "child",
             "resume": True, "overwrite": True, "signed": True, "init_file": None}
    text = run_dir.reproducing_flagfile(flags)
    assert text.splitlines() == [
        "--arch=fcn", f"--start_from={tmp_path}/parent/checkpoint/epoch-2",
        f"--model_dir={tmp_path}/child", "--signed"]


def test_a_folder_of_files_a_run_would_replace_is_not_a_run_to_start(tmp_path):
    """An export's folder holds a `model.keras` and no run: a run started in
    it would replace that file, so it is refused; other files are left be."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.keras").write_bytes(b"the exported model")
    (export / "export.json").write_text("{}")
    with pytest.raises(run_dir.RunDirError) as info:
        run_dir.check(str(export), {"arch": "fcn"})
    assert str(info.value) == (
        f"--model_dir={export} holds no run, but files a run writes (model.keras), which it "
        "would replace; they are not overwritten. Choose another --model_dir.")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "plan.txt").write_text("x")
    assert run_dir.check(str(notes), {"arch": "fcn"}) is None


@pytest.mark.slow
def test_unusable_run_folders_and_failed_writes_are_one_clear_error(tmp_path, monkeypatch):
    splits = tiny_splits()
    (tmp_path / "file").write_text("x")
    for model_dir in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(run_dir.RunDirError, match=str(model_dir)):
            trainer.run(tiny_config(tmp_path, model_dir=str(model_dir)), splits=splits)
    # A full disk while writing the checkpoint: an error, no partial file.
    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(run_dir.RunDirError, match="cannot write the checkpoint .*model-1.keras: "
                                                  "No space left on device"):
        trainer.run(tiny_config(tmp_path, epochs=1), splits=splits)
    assert not [path for path in (tmp_path / "run").rglob("*") if "tmp" in path.name]
    monkeypatch.undo()
    # --overwrite replaces a run, never a folder of other files.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(run_dir.RunDirError, match="holds files but no run"):
        trainer.run(tiny_config(tmp_path, model_dir=str(tmp_path / "mine"), overwrite=True),
                     splits=splits)
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
    # A damaged --mask_from model.
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(run_dir.RunDirError, match="--mask_from=.*bad.keras: cannot load"):
        trainer.run(tiny_config(tmp_path / "m", regime="mask_then_weights",
                                 mask_from=str(tmp_path / "bad.keras")), splits=splits)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("field, value, expected", [
    ("test_accuracy", "0.39", "not a number in [0, 1]"),
    ("test_accuracy", 39.0, "not a number in [0, 1]"),
    ("arch", ["fcn"], "not a string"),
    ("input_shape", "28x28", "not a list of positive integers"),
    ("num_classes", True, "not an integer >= 2"),
])
def test_results_with_values_no_reader_can_use_are_refused_naming_the_field(
        tmp_path, field, value, expected):
    results = {"status": "finished", "arch": "fcn", "dataset": "mnist", "regime": "mask",
               "mask": "signed", "test_accuracy": 0.97, "input_shape": [28, 28, 1],
               "num_classes": 10, "epochs": 3}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert run_dir.read_results(str(tmp_path))["test_accuracy"] == 0.97
    (tmp_path / "results.json").write_text(json.dumps({**results, field: value}))
    with pytest.raises(run_dir.RunDirError, match=re.escape(f"damaged: {field} is {value!r}, "
                                                            f"{expected}")):
        run_dir.read_results(str(tmp_path))


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "x.json"
    files.write_json_atomically(str(path), {"a": float("nan"), "b": [1.0, float("-inf")]})
    assert strict_json(path) == {"a": None, "b": [1.0, None]}
