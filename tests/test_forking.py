"""Kept checkpoints and runs started from them (`--keep_checkpoints`,
`--start_from`): the same end as one uninterrupted run, settings that act
after the checkpoint, resuming, and refusals that write nothing."""

import dataclasses
import os
import shutil

import keras
import numpy as np
import pytest
from support import crashed_run, scores, strict_json, tiny_config, tiny_splits

from ssm_keras import plotting
from ssm_keras.training import callbacks as ssm_callbacks
from ssm_keras.training import config as ssm_config
from ssm_keras.training import records, run_dir, sparsity, trainer

# A steered run (its controller's state must carry over) with augmentation.
SETTINGS = dict(augment="crop_flip", target_remaining=30.0)


def _scores(folder):
    return scores(keras.saving.load_model(folder / "run" / "model.keras"))


def _same_end(results, expected, folder, expected_folder):
    assert results["test_accuracy"] == expected["test_accuracy"]
    assert results["remaining_weights"] == expected["remaining_weights"]
    for ours, theirs in zip(_scores(folder), _scores(expected_folder)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """`(folder, results)` of a finished 3-epoch steered run with the
    checkpoints of epochs 1 and 2 kept; its run is `folder / "run"`."""
    folder = tmp_path_factory.mktemp("parent")
    results = trainer.run(tiny_config(folder, keep_checkpoints="1,2", **SETTINGS),
                          splits=tiny_splits())
    return folder, results


@pytest.mark.slow
def test_a_run_started_from_a_kept_checkpoint_ends_where_the_parent_or_its_variant_ends(
        tmp_path, parent):
    splits = tiny_splits()
    parent_folder, parent = parent
    checkpoints = parent_folder / "run" / "checkpoint"
    for epoch in (1, 2):
        kept = checkpoints / f"epoch-{epoch}"
        assert sorted(path.name for path in kept.iterdir()) == [f"model-{epoch}.keras",
                                                                "state.json"]
        state = strict_json(kept / "state.json")
        assert state["epoch"] == epoch and len(state["history"]) == epoch
        assert state["callbacks"][0]["start_percent"] > SETTINGS["target_remaining"]
    assert strict_json(checkpoints / "state.json")["epoch"] == 3
    assert run_dir.find_checkpoint(str(parent_folder / "run"))[0]["epoch"] == 3

    # The parent's own settings from epoch 2 on: its exact end and history.
    start = str(checkpoints / "epoch-2")
    same = trainer.run(tiny_config(tmp_path / "same", start_from=start, **SETTINGS),
                       splits=splits)
    _same_end(same, parent, tmp_path / "same", parent_folder)
    assert same["started_from"] == {"checkpoint": os.path.realpath(start), "epoch": 2}
    assert records.summary_line(same).endswith(
        f" s (epochs 1-2 from {os.path.realpath(start)})")
    assert (tmp_path / "same" / "run" / "results.txt").read_text().startswith(
        records.summary_line(same))
    assert [entry["epoch"] for entry in run_dir.read_history(same["model_dir"])] == [1, 2, 3]
    assert run_dir.read_history(same["model_dir"]) == run_dir.read_history(parent["model_dir"])

    # A setting that acts after epoch 2 only (the third epoch not augmented):
    # the end of a run with it from the start, not the parent's.
    variant = dict(SETTINGS, augment_fraction=0.5)  # augments epochs 0 and 1 of 3
    scratch = trainer.run(tiny_config(tmp_path / "scratch", **variant), splits=splits)
    started = trainer.run(tiny_config(tmp_path / "started", start_from=start, **variant),
                          splits=splits)
    _same_end(started, scratch, tmp_path / "started", tmp_path / "scratch")
    assert run_dir.read_history(started["model_dir"])[2]["loss"] != run_dir.read_history(
        parent["model_dir"])[2]["loss"]


@pytest.mark.slow
def test_a_started_run_with_another_target_aims_its_first_epoch_at_its_own_path(
        tmp_path, parent):
    parent_folder, parent = parent
    start = str(parent_folder / "run" / "checkpoint" / "epoch-2")
    lower = dict(SETTINGS, target_remaining=10.0)
    started = trainer.run(tiny_config(tmp_path / "lower", start_from=start, **lower),
                          splits=tiny_splits())
    ours = run_dir.read_history(started["model_dir"])[2]
    theirs = run_dir.read_history(parent["model_dir"])[2]
    start_percent = strict_json(parent_folder / "run" / "checkpoint" / "epoch-2" /
                                "state.json")["callbacks"][0]["start_percent"]
    assert ours["target_remaining_percent"] == pytest.approx(sparsity.target_path(
        start_percent, 10.0, 3, 3))
    assert ours["target_remaining_percent"] < theirs["target_remaining_percent"]
    assert ours["score_weight_decay"] > theirs["score_weight_decay"]
    assert ours["remaining_percent"] < theirs["remaining_percent"]


@pytest.mark.slow
def test_a_started_run_that_is_killed_resumes_from_its_own_checkpoint(tmp_path, parent):
    splits = tiny_splits()
    parent_folder, parent = parent
    start = str(parent_folder / "run" / "checkpoint" / "epoch-1")
    config = tiny_config(tmp_path / "child", start_from=start, **SETTINGS)
    crashed_run(config, splits, after_epoch=2)
    state = strict_json(tmp_path / "child" / "run" / "checkpoint" / "state.json")
    assert state["epoch"] == 2
    assert state["started_from"] == {"checkpoint": os.path.realpath(start), "epoch": 1}
    assert plotting.load_unfinished_run(config.model_dir)[3] == 1  # its curves mark epoch 1
    # Resumed with a checkpoint to keep added (a flag that may change), but
    # not one of an epoch it trained without keeping it.
    with pytest.raises(ssm_config.ConfigError, match="names epoch 1, and this run goes on "
                                                     "after epoch 2 without a kept checkpoint"):
        trainer.run(dataclasses.replace(config, keep_checkpoints="1,3"), splits=splits)
    resumed = trainer.run(dataclasses.replace(config, keep_checkpoints="3"), splits=splits)
    _same_end(resumed, parent, tmp_path / "child", parent_folder)
    assert resumed["started_from"]["epoch"] == 1
    assert records.summary_line(resumed).endswith(f" s (epoch 1 from {os.path.realpath(start)})")
    kept = strict_json(tmp_path / "child" / "run" / "checkpoint" / "epoch-3" / "state.json")
    assert kept["epoch"] == 3 and kept["started_from"] == state["started_from"]


@pytest.mark.slow
def test_a_started_run_that_diverges_records_where_it_started(tmp_path, parent):
    start = str(parent[0] / "run" / "checkpoint" / "epoch-2")
    config = tiny_config(tmp_path / "child", start_from=start, learning_rate=1e38, **SETTINGS)
    with pytest.raises(ssm_callbacks.Diverged, match="after epoch 3"):
        trainer.run(config, splits=tiny_splits())
    results = strict_json(tmp_path / "child" / "run" / "results.json")
    assert results["status"] == "diverged"
    assert results["started_from"] == {"checkpoint": os.path.realpath(start), "epoch": 2}
    _, history, status, started_after = plotting.load_unfinished_run(config.model_dir)
    assert status == "diverged" and started_after == 2  # its curves mark epoch 2
    assert [entry["epoch"] for entry in history] == [1, 2]


@pytest.mark.slow
def test_checkpoints_a_run_cannot_start_from_are_refused_and_nothing_is_written(
        tmp_path, parent):
    splits = tiny_splits()
    kept = str(parent[0] / "run" / "checkpoint" / "epoch-1")
    shutil.copytree(kept, tmp_path / "damaged")
    with open(tmp_path / "damaged" / "model-1.keras", "ab") as file:
        file.write(b"!")
    refusals = [
        (dict(start_from=str(tmp_path / "nothing")), run_dir.RunDirError,
         "holds no checkpoint: name a run folder"),
        (dict(start_from=str(tmp_path / "damaged")), run_dir.RunDirError,
         r"damaged/model-1.keras is damaged: .* \(SHA-256 differs\). Start from another "
         "checkpoint, or from the start."),
        (dict(start_from=kept, epochs=1), ssm_config.ConfigError,
         "the checkpoint after epoch 1, and --epochs=1 leaves no epoch to train"),
        (dict(start_from=kept, width=2), ssm_config.ConfigError,
         r"the checkpoint's model variable dense_1/scores has the shape \(64, 300\), and this "
         r"run's dense_1/scores \(64, 600\); start from a checkpoint of the same --arch"),
        (dict(start_from=kept, optimizer="adam"), ssm_config.ConfigError,
         "the checkpoint's optimiser has 4 variables and this run's has 7"),
        (dict(start_from=kept, keep_checkpoints="1,2"), ssm_config.ConfigError,
         "--keep_checkpoints=1,2 names epoch 1, and this run goes on after epoch 1 without a "
         "kept checkpoint of it, which can no longer be made: name epochs after 1."),
    ]
    for overrides, error, message in refusals:
        with pytest.raises(error, match=message):
            trainer.run(tiny_config(tmp_path / "child", **overrides), splits=splits)
        assert not (tmp_path / "child").exists()


@pytest.mark.slow
def test_a_run_killed_while_keeping_a_checkpoint_keeps_it_when_resumed(tmp_path, monkeypatch):
    splits = tiny_splits()
    config = tiny_config(tmp_path, epochs=3, keep_checkpoints="2")
    copy = shutil.copy2

    def killed_at_epoch_2(source, target):
        if "epoch-2" in target:
            raise KeyboardInterrupt  # as Ctrl-C during the copy
        return copy(source, target)

    monkeypatch.setattr(run_dir.shutil, "copy2", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(config, splits=splits)
    monkeypatch.setattr(run_dir.shutil, "copy2", copy)
    kept = tmp_path / "run" / "checkpoint" / "epoch-2"
    assert strict_json(tmp_path / "run" / "checkpoint" / "state.json")["epoch"] == 2
    assert not kept.exists()
    assert trainer.run(config, splits=splits)["epochs"] == 3
    assert strict_json(kept / "state.json")["epoch"] == 2
    assert not (tmp_path / "run" / "checkpoint" / ".epoch-2.tmp").exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(keep_checkpoints="0"), r"lists epoch numbers from 1 to --epochs=3, separated by "
                                 r"commas. Received: '0' in --keep_checkpoints=0"),
    (dict(keep_checkpoints="1,4"), "Received: '4' in --keep_checkpoints=1,4"),
    (dict(keep_checkpoints="2.5"), "Received: '2.5'"),
    (dict(keep_checkpoints=[1, 2]), r"a text of epoch numbers separated by commas, such as "
                                    r"'50,75'. Received: \[1, 2\]"),
    (dict(start_from="{run}/checkpoint"), "lies in the run folder --model_dir=.* the run would "
                                          "replace the checkpoint it starts from"),
    # Without --model_dir, the run folder is the default one.
    (dict(model_dir=None, start_from="runs/fcn-signed-mnist-seed0/checkpoint/epoch-2"),
     "--start_from=runs/fcn-signed-mnist-seed0/checkpoint/epoch-2 lies in the run folder "
     "--model_dir=runs/fcn-signed-mnist-seed0: the run would replace the checkpoint"),
    (dict(overwrite=True, init_file="{run}/init.npz"),
     "--init_file=.*init.npz lies in the run folder --model_dir=.*, and --overwrite deletes "
     "everything in it: move the file out of the folder"),
    (dict(overwrite=True, model_dir=None, save_init_file="runs/fcn-signed-mnist-seed0/a/i.npz"),
     "--save_init_file=runs/fcn-signed-mnist-seed0/a/i.npz lies in the run folder"),
    (dict(start_from="elsewhere", save_init_file="init.npz"),
     "--save_init_file names the initial weights and scores, and a --start_from run takes them "
     "from its checkpoint: leave one out. Received: --save_init_file=init.npz"),
])
def test_checkpoint_settings_that_cannot_work_are_refused(tmp_path, overrides, message):
    overrides = {key: value.format(run=tmp_path / "run") if isinstance(value, str) else value
                 for key, value in overrides.items()}
    config = tiny_config(tmp_path, **overrides)
    with pytest.raises(ssm_config.ConfigError, match=message):
        config.validate()  # as trainer.run checks a run's settings
        config.check_inputs_outside_run_folder()


def test_only_a_resumed_run_counts_the_kept_checkpoints_in_its_folder(tmp_path):
    """A --start_from run with --overwrite replaces the folder's old run and
    its kept checkpoints; a resumed run keeps them, and copies its own
    epoch's."""
    (tmp_path / "checkpoint" / "epoch-1").mkdir(parents=True)
    config = tiny_config(tmp_path, keep_checkpoints="1,2,3")
    with pytest.raises(ssm_config.ConfigError, match="names epoch 1"):
        trainer.check_kept_epochs(config, str(tmp_path), {"epoch": 2}, resumed=False)
    assert trainer.check_kept_epochs(config, str(tmp_path), {"epoch": 2}, resumed=True) == [2]


def test_init_files_in_the_run_folder_are_refused_with_overwrite_only(tmp_path):
    """Without --overwrite nothing deletes them: the run writes or reads them there.
    Nor is it a check of the settings alone, which ssm-tune validates too
    (its --overwrite replaces a search project)."""
    for name in ("init_file", "save_init_file"):
        tiny_config(tmp_path, **{name: str(tmp_path / "run" / "init.npz")}
                    ).check_inputs_outside_run_folder()
    tiny_config(tmp_path, overwrite=True, init_file=str(tmp_path / "run" / "init.npz")).validate()


def test_kept_epochs_are_parsed_from_the_list():
    config = ssm_config.TrainConfig(epochs=100, keep_checkpoints=" 75,25, ,50,75")
    assert config.kept_checkpoint_epochs() == {25, 50, 75}
    assert ssm_config.TrainConfig().kept_checkpoint_epochs() == set()


@pytest.mark.slow
def test_a_started_run_goes_on_at_the_parents_step_with_its_own_schedule_and_precision(tmp_path):
    """A plateau run's checkpoint (its rate in a variable) continued with an
    exponential schedule in bfloat16: the same variables, so it starts; and
    with a constant and a plateau schedule."""
    splits = tiny_splits()  # 96 training images in batches of 32: 3 steps an epoch
    trainer.run(tiny_config(tmp_path / "parent", epochs=2, lr_schedule="plateau",
                            keep_checkpoints="1"), splits=splits)
    start = str(tmp_path / "parent" / "run" / "checkpoint" / "epoch-1")
    child = trainer.run(tiny_config(tmp_path / "child", epochs=3, start_from=start,
                                    mixed_precision="mixed_bfloat16"), splits=splits)
    history = run_dir.read_history(child["model_dir"])
    # Exponential: 0.1 * 0.9 ** (step / (10 epochs * 3 steps)), at steps 6 and 9.
    assert [entry["learning_rate"] for entry in history[1:]] == pytest.approx(
        [0.1 * 0.9 ** (6 / 30), 0.1 * 0.9 ** (9 / 30)])
    model = keras.saving.load_model(tmp_path / "child" / "run" / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 9
    # A constant rate is the run's own --learning_rate; a rate reduced on
    # plateaus goes on as the parent's reductions left it (its epoch 2's).
    parents_rate = run_dir.read_history(str(tmp_path / "parent" / "run"))[1]["learning_rate"]
    for schedule, rate in (("constant", 0.01), ("plateau", parents_rate)):
        child = trainer.run(tiny_config(tmp_path / schedule, epochs=3, start_from=start,
                                        lr_schedule=schedule, learning_rate=0.01), splits=splits)
        assert run_dir.read_history(child["model_dir"])[1]["learning_rate"] == pytest.approx(rate)


def test_saved_callback_states_go_to_the_callbacks_with_their_attributes():
    plateau = {"wait": 2, "best": 0.5, "cooldown_counter": 0}
    steering = {"start_percent": 60.0, "weight_decay": 1e-4, "regrowth": 1.1,
                "expected_percent": 20.0}
    controller = sparsity.SparsityController(10.0, 100, 2.5e-4, 0.05)
    reducer = keras.callbacks.ReduceLROnPlateau()
    assert ssm_callbacks.matched_states([plateau, steering], [controller]) == [steering]
    assert ssm_callbacks.matched_states([steering], [reducer, controller]) == [{}, steering]
    assert ssm_callbacks.matched_states([], [controller]) == [{}]
