"""Hyperparameter search: real searches on tiny MNIST, resuming, flags, distributed tuning."""

import csv
import dataclasses
import glob
import json
import os
import socket
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from support import REPO, parsed_flags, shared_data_dir
from tensorboard.backend.event_processing import event_accumulator

from ssm_keras import data
from ssm_keras.cli import shell, train, tune
from ssm_keras.training import config as ssm_config
from ssm_keras.training import run_dir, trainer
from ssm_keras.tuning import searching
from ssm_keras.tuning.config import SearchConfig

TINY = dict(arch="fcn", dataset="mnist", max_examples=256, validation_size=256, batch_size=64,
            epochs=2, verbose=0)


@pytest.fixture(scope="module")
def mnist_splits(mnist_dir):
    return data.load_splits("mnist", str(mnist_dir.parent), TINY["validation_size"], 0,
                            TINY["max_examples"])


def tiny_config(**overrides):
    return ssm_config.TrainConfig(**{**TINY, "data_dir": str(shared_data_dir()), **overrides})


def _blank_mnist_splits():
    """MNIST-shaped splits of 64 black images: for searches that never train."""
    arrays = (np.zeros((64, 28, 28, 1), np.uint8), np.zeros(64, np.int64))
    return data.Splits(data.DATASETS["mnist"], arrays, arrays, arrays, source="unused")


class _Trials(keras.callbacks.Callback):
    """Records the first epoch of each trial trained in this process; with
    `crash_at=(trial, epoch)`, stops the process after that epoch of the
    `trial`-th of them (counted from 1), as a kill would."""

    def __init__(self, crash_at=None):
        super().__init__()
        self.calls = []
        self.crash_at = crash_at

    def on_train_begin(self, logs=None):
        self.calls.append(None)

    def on_epoch_begin(self, epoch, logs=None):
        if self.calls[-1] is None:
            self.calls[-1] = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.crash_at == (len(self.calls), epoch + 1):
            raise KeyboardInterrupt


def _retrain(flagfile, model_dir):
    """Trains from a flagfile the way `python -m ssm_keras.train --flagfile=` does."""
    flag_values = parsed_flags(train, f"--flagfile={flagfile}", f"--model_dir={model_dir}",
                                "--verbose=0")
    return trainer.run(shell.from_flags(ssm_config.TrainConfig, flag_values))


def _tags(pattern):
    tags = set()
    for path in glob.glob(pattern):
        accumulator = event_accumulator.EventAccumulator(path)
        accumulator.Reload()
        tags.update(accumulator.Tags()["tensors"])
    return tags


@pytest.mark.parametrize("text, expected", [
    ("1e-3:0.3", searching.Range(1e-3, 0.3, "log")),
    ("0.05:0.05", searching.Range(0.05, 0.05, "log")),
])
@pytest.mark.slow
def test_parse_range_and_fixed_values(text, expected):
    bounds = searching.parse_range("learning_rate", text)
    assert bounds == expected
    hp = keras_tuner.HyperParameters()
    value = bounds.declare(hp, "learning_rate")
    fixed = isinstance(hp.space[0], keras_tuner.engine.hyperparameters.Fixed)
    assert fixed == (expected.low == expected.high)
    assert expected.low <= value <= expected.high


def test_search_space_follows_the_mask_and_regime():
    search = SearchConfig(out_dir="unused")
    assert list(searching.search_space(search, tiny_config())) == [
        "learning_rate", "weight_decay", "tau_fraction", "init_factor"]
    assert list(searching.search_space(search, tiny_config(mask="topk", weight_init="elu"))) == [
        "learning_rate", "weight_decay", "density"]
    assert list(searching.search_space(search, tiny_config(regime="weights"))) == [
        "learning_rate", "weight_decay"]  # elu weights by default: no factor to search
    assert list(searching.search_space(search, tiny_config(regime="weights",
                                                           weight_init="elus"))) == [
        "learning_rate", "weight_decay", "init_factor"]


def test_choices_come_first_and_mask_shape_fields_follow_the_mask():
    search = SearchConfig(out_dir="unused", mask_choices="signed,signed_topk",
                          optimizer_choices="sgd,adam")
    space = searching.search_space(search, tiny_config(tau_fraction=0.3))
    assert list(space) == ["mask", "optimizer", "learning_rate", "weight_decay",
                           "tau_fraction", "density", "init_factor"]
    assert space["mask"] == searching.Choice(("signed", "signed_topk"))
    assert searching.conditions(space) == {"tau_fraction": ["signed"], "density": ["signed_topk"]}
    # Only threshold masks: no density; a fixed choice is declared as Fixed.
    search = SearchConfig(out_dir="unused", mask_choices="binary",
                          lr_schedule_choices="cosine")
    assert list(searching.search_space(search, tiny_config())) == [
        "mask", "lr_schedule", "learning_rate", "weight_decay", "tau_fraction", "init_factor"]
    hp = keras_tuner.HyperParameters()
    assert searching.Choice(("cosine",)).declare(hp, "lr_schedule") == "cosine"
    assert isinstance(hp.space[0], keras_tuner.engine.hyperparameters.Fixed)


def test_trials_of_a_mask_choice_get_only_their_mask_shape_field():
    config = tiny_config(tau_fraction=0.3, signed=True)
    search = SearchConfig(out_dir="unused", mask_choices="signed,signed_topk,bernoulli")
    space = searching.search_space(search, config)
    hypermodel = searching.SupermaskHyperModel(config, space, _blank_mnist_splits(),
                                            tf.distribute.get_strategy(), 0.1)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=30, seed=3)
    oracle.update_space(hp)
    defaults = ssm_config.TrainConfig()
    seen = set()
    for index in range(30):
        values = oracle.populate_space(f"t{index}")["values"]
        trial = hypermodel.config_for(values)
        trial.validate()
        seen.add(values["mask"])
        assert trial.mask_kind == values["mask"]  # --signed no longer twins it
        assert ("tau_fraction" in values) == (values["mask"] == "signed")
        assert ("density" in values) == (values["mask"] == "signed_topk")
        assert trial.tau_fraction == values.get("tau_fraction", defaults.tau_fraction)
        assert trial.density == values.get("density", defaults.density)
    assert seen == {"signed", "signed_topk", "bernoulli"}


@pytest.mark.slow
def test_interrupted_search_continues_and_best_trial_retrains_to_its_objective(
        tmp_path, mnist_splits):
    search = SearchConfig(out_dir=str(tmp_path), project_name="p", max_trials=2,
                          objective="sparse", sparsity_weight=0.5)
    config = tiny_config()
    project = tmp_path / "p"
    # Killed after the first of the two epochs of the second trial.
    trials = _Trials(crash_at=(2, 1))
    with pytest.raises(KeyboardInterrupt):
        searching.run(search, config, mnist_splits, callbacks=[trials])
    assert trials.calls == [0, 0]
    assert json.loads((project / "trial_1" / "checkpoint" / "state.json").read_text())["epoch"] == 1
    # The same command: the second trial goes on from its first epoch.
    trials = _Trials()
    rows = searching.run(search, config, mnist_splits, callbacks=[trials])
    assert trials.calls == [1]
    assert [row["status"] for row in rows] == ["COMPLETED"] * 2
    # More trials: only the new one runs.
    trials = _Trials()
    rows = searching.run(dataclasses.replace(search, max_trials=3), config, mnist_splits,
                      callbacks=[trials])
    assert trials.calls == [0]
    assert sorted(row["trial_id"] for row in rows) == ["0", "1", "2"]
    for row in rows:
        assert row["status"] == "COMPLETED" and row["epochs"] == 2
        assert row["objective"] == row["val_sparse_objective"] == pytest.approx(
            row["val_accuracy"] - 0.5 * row["remaining_percent"] / 100, abs=1e-12)
        assert 0 < row["remaining_weights"] < 266_200
    assert rows[0]["objective"] == max(row["objective"] for row in rows)
    with open(project / "trials.csv", encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert [line["trial_id"] for line in table] == [row["trial_id"] for row in rows]
    assert float(table[0]["learning_rate"]) == rows[0]["learning_rate"]
    assert int(table[0]["remaining_weights"]) == rows[0]["remaining_weights"]

    # The best flagfile trains the best trial from scratch to its recorded objective.
    best = rows[0]
    retrained = _retrain(project / "best.flags", tmp_path / "retrained")
    assert retrained["flags"]["learning_rate"] == best["learning_rate"]
    assert retrained["flags"]["tau_fraction"] == best["tau_fraction"]
    assert retrained["flags"]["init_factor"] == best["init_factor"]
    assert retrained["epochs"] == 2
    assert retrained["validation_accuracy"] == best["val_accuracy"]
    assert retrained["remaining_weights"] == best["remaining_weights"]
    objective = (retrained["validation_accuracy"]
                 - 0.5 * retrained["remaining_weights"] / retrained["masked_weights"])
    assert objective == pytest.approx(best["objective"], abs=1e-12)

    # TensorBoard: per trial, training and validation curves, the objective, mask statistics.
    for trial_id in ("0", "1", "2"):
        logs = project / "tensorboard" / trial_id / "execution0"
        assert {"epoch_accuracy", "epoch_sparse_objective"} <= _tags(f"{logs}/validation/events.*")
        assert "overall/remaining_percent" in _tags(f"{logs}/masks/events.*")
        assert "_hparams_/session_start_info" in _tags(f"{logs}/events.*")

    assert (project / "trials.png").stat().st_size > 10_000

    # Other settings in the same folder are refused, not mixed in.
    with pytest.raises(searching.TuneError, match="--epochs: 2 -> 3"):
        searching.run(search, tiny_config(epochs=3), mnist_splits)


@pytest.mark.slow
def test_search_over_mask_kinds_writes_each_trials_own_flags(tmp_path, mnist_splits, capsys,
                                                            command_output):
    search = SearchConfig(out_dir=str(tmp_path), project_name="p", max_trials=4,
                          mask_choices="signed,signed_topk", density_range="0.05:0.05")
    rows = searching.run(search, tiny_config(epochs=1), mnist_splits)
    # One process: one line per finished trial, without a worker's name.
    finished = [line.split()[1] for line in capsys.readouterr().out.splitlines()
                if line.startswith("trial ")]
    assert sorted(finished) == ["0", "1", "2", "3"]
    assert {row["mask"] for row in rows} == {"signed", "signed_topk"}
    for row in rows:
        flagfile = (tmp_path / "p" / f"trial_{row['trial_id']}" / "flags.txt").read_text()
        assert f"--mask={row['mask']}\n" in flagfile
        if row["mask"] == "signed_topk":
            assert row["tau_fraction"] is None and row["density"] == 0.05
            # A top-k mask keeps its density of the weights in every layer.
            assert row["remaining_percent"] == pytest.approx(5.0, abs=0.1)
            assert "--density=0.05\n" in flagfile
        else:
            assert row["density"] is None and 0.2 <= row["tau_fraction"] <= 0.6
            assert f"--tau_fraction={row['tau_fraction']}\n" in flagfile
    assert f"--mask={rows[0]['mask']}\n" in (tmp_path / "p" / "best.flags").read_text()


@pytest.mark.slow
def test_hyperband_continued_trial_equals_training_from_scratch(tmp_path, mnist_splits):
    search = SearchConfig(out_dir=str(tmp_path), project_name="p", tuner="hyperband",
                          hyperband_factor=2)
    # max_epochs 2, factor 2: trials 0 and 1 train 1 epoch, trial 2 continues the
    # better one to 2 epochs; stop before the next bracket.
    trials = _Trials(crash_at=(4, 1))
    with pytest.raises(KeyboardInterrupt):
        searching.run(search, tiny_config(), mnist_splits, callbacks=[trials])
    assert trials.calls[:3] == [0, 0, 1]
    trials = {trial.trial_id: trial for trial in map(
        keras_tuner.engine.trial.Trial.load, glob.glob(f"{tmp_path}/p/trial_*/trial.json"))}
    first, second, continued = sorted(trials)[:3]
    values = trials[continued].hyperparameters.values
    assert values["tuner/initial_epoch"] == 1 and values["tuner/epochs"] == 2
    parent = trials[values["tuner/trial_id"]]
    assert parent.score == max(trials[first].score, trials[second].score)
    assert values["learning_rate"] == parent.hyperparameters.values["learning_rate"]
    scratch = _retrain(tmp_path / "p" / f"trial_{continued}" / "flags.txt", tmp_path / "scratch")
    assert scratch["epochs"] == 2
    recorded = trials[continued].metrics
    assert scratch["validation_accuracy"] == recorded.get_last_value("val_accuracy")
    assert scratch["remaining_weights"] == recorded.get_last_value("remaining_weights")


def test_a_continued_hyperband_trial_gets_a_built_model_not_its_parents_weights(tmp_path):
    """The trial goes on from its parent's training state, optimiser included,
    or, with a cosine learning rate, trains afresh (`SupermaskHyperModel.fit`):
    the parent's weights Keras Tuner's Hyperband would load (the parent has
    none saved here) are never used."""
    config = tiny_config(lr_schedule="cosine")
    search = SearchConfig(out_dir=str(tmp_path), project_name="p", tuner="hyperband")
    hypermodel = searching.SupermaskHyperModel(config, searching.search_space(search, config),
                                            _blank_mnist_splits(),
                                            tf.distribute.get_strategy(), 0.1)
    tuner = searching.make_tuner(search, config, hypermodel)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update({"tuner/trial_id": "0000", "tuner/epochs": 2, "tuner/initial_epoch": 1})
    continued = tuner._build_hypermodel(hp)
    fresh = hypermodel.build(hp)
    for variable, value in zip(fresh.weights, continued.get_weights(), strict=True):
        np.testing.assert_array_equal(value, variable.numpy(), err_msg=variable.path)


def test_a_hyperband_trial_continues_its_parent_only_where_that_ends_as_from_scratch(
        tmp_path):
    """Each of these settings' schedules is a fraction of --epochs, which the
    parent trained fewer of."""
    parent, trial = tmp_path / "parent", tmp_path / "trial"
    (parent / "checkpoint").mkdir(parents=True)
    (parent / "checkpoint" / "state.json").write_text('{"epoch": 1}')
    trial.mkdir()
    assert searching._checkpoint_to_continue(tiny_config(), str(trial), str(parent)) == str(
        parent / "checkpoint")
    for overrides in (dict(lr_schedule="cosine"), dict(target_remaining=5.0),
                      dict(augment="crop_flip", augment_fraction=0.5),
                      dict(ema_momentum=0.9, ema_start=0.5)):
        config = tiny_config(**overrides)
        config.validate()
        assert searching._checkpoint_to_continue(config, str(trial), str(parent)) is None


@pytest.mark.parametrize("args, message", [
    (["--tuner=grid"], "Unknown --tuner='grid'. Allowed: random, bayesian, hyperband."),
    (["--learning_rate_range="], "--learning_rate_range must be LOW:HIGH, two numbers"),
    (["--weight_decay_range=1e-3"], "--weight_decay_range must be LOW:HIGH"),
    (["--init_factor_range=2:x"], "--init_factor_range must be LOW:HIGH"),
    (["--learning_rate_range=0.3:1e-3"], "--learning_rate_range is inverted: LOW must be <= HIGH."
                                         " Received: --learning_rate_range=0.3:1e-3"),
    (["--weight_decay_range=0:1e-3"], "--weight_decay_range is searched on a log scale"),
    (["--tau_fraction_range=0.5:1.0"], "--tau_fraction_range=0.5:1.0: --tau_fraction must be in"),
    (["--objective=test_accuracy"], "Unknown --objective='test_accuracy'"),
    (["--validation_size=0"], "never the test split: --validation_size must be > 0"),
    (["--keep_checkpoints=1"], "--keep_checkpoints is a setting of one run of "
                               "ssm_keras.train; the trials of a search start afresh. Received: "
                               "--keep_checkpoints=1"),
    (["--start_from=run"], "--start_from is a setting of one run"),
    (["--ema_momentum=0.999"], "--ema_momentum: Keras Tuner keeps each trial's best epoch as "
                               "the trained scores"),
    (["--out_dir="], "--out_dir is required"),
    (["--optimizer_choices=sgd,rmsprop"],
     "--optimizer_choices=sgd,rmsprop: Unknown --optimizer='rmsprop'. Allowed: sgd, adam."),
    (["--mask_choices=signed,,topk"], "--mask_choices must be distinct values separated by"),
    (["--lr_schedule_choices=cosine,cosine"], "--lr_schedule_choices must be distinct values"),
    (["--mask_choices=signed,topk", "--regime=weights"],
     "--mask_choices searches the mask kind of --regime=mask. Received: --regime=weights"),
])
def test_cli_bad_search_one_clear_line(cli, tmp_path, args, message):
    code, err = cli(tune, "--arch=fcn", "--dataset=mnist", f"--out_dir={tmp_path}", *args)
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not os.listdir(tmp_path)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_chief_and_two_workers(tmp_path, mnist_dir):
    flags = ["--arch=fcn", "--dataset=mnist", f"--data_dir={mnist_dir.parent}",
             "--max_examples=256", "--validation_size=256", "--batch_size=64", "--epochs=2",
             "--verbose=0", "--max_trials=4", f"--out_dir={tmp_path}", "--project_name=p"]
    commands = {"chief": [sys.executable, str(REPO / "tests" / "quick_chief.py"), *flags],
                "tuner0": [sys.executable, "-m", "ssm_keras.tune", *flags],
                "tuner1": [sys.executable, "-m", "ssm_keras.tune", *flags]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERASTUNER_ORACLE_IP": "127.0.0.1",
           "KERASTUNER_ORACLE_PORT": str(_free_port())}
    processes = {
        tuner_id: subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": tuner_id},
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        for tuner_id, command in commands.items()
    }
    try:
        outputs = {tuner_id: process.communicate(timeout=300)[0]
                   for tuner_id, process in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
    for tuner_id, process in processes.items():
        assert process.returncode == 0, outputs[tuner_id]
    ran = {tuner_id: {line.split()[2] for line in outputs[tuner_id].splitlines()
                      if line.startswith(f"{tuner_id}: trial ")}
           for tuner_id in ("tuner0", "tuner1")}
    assert ran["tuner0"] and ran["tuner1"], outputs
    assert ran["tuner0"] | ran["tuner1"] == {"0", "1", "2", "3"}
    assert not ran["tuner0"] & ran["tuner1"]
    with open(tmp_path / "p" / "trials.csv", encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert sorted(line["trial_id"] for line in table) == ["0", "1", "2", "3"]
    assert all(line["status"] == "COMPLETED" for line in table)
    assert "Best trial" in outputs["chief"]
    assert (tmp_path / "p" / "best.flags").read_text().count("--learning_rate=") == 1


@pytest.mark.slow
def test_the_same_command_gives_the_same_search(tmp_path):
    config = tiny_config(seed=0)
    search = SearchConfig(out_dir=str(tmp_path), max_trials=3)
    space = searching.search_space(search, config)
    splits = _blank_mnist_splits()
    trials = []
    for project in ("a", "b"):
        hypermodel = searching.SupermaskHyperModel(config, space, splits,
                                                tf.distribute.get_strategy(), 0.1)
        tuner = searching.make_tuner(dataclasses.replace(search, project_name=project), config,
                                  hypermodel)
        assert tuner.oracle.seed == 1  # Keras Tuner draws a random seed for 0
        hp = keras_tuner.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        tuner.oracle.update_space(hp)
        trials.append([tuner.oracle.create_trial(f"t{index}").hyperparameters.values
                       for index in range(3)])
    assert trials[0] == trials[1]
    assert len({values["learning_rate"] for values in trials[0]}) == 3


@pytest.mark.parametrize("directory", ["file", "file/below"])
def test_directory_that_is_a_file_is_one_clear_line(cli, tmp_path, directory):
    (tmp_path / "file").write_text("x")
    code, err = cli(tune, "--arch=fcn", "--dataset=mnist", f"--out_dir={tmp_path / directory}")
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"error: --out_dir: the search folder {tmp_path / directory}")
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.slow
def test_a_second_search_or_a_damaged_trial_stops_the_search(tmp_path, mnist_splits):
    # A diverged trial fails alone (the next test); a user error in a trial,
    # here a damaged checkpoint it would go on from, stops the search.
    damaged = SearchConfig(out_dir=str(tmp_path), project_name="q", max_trials=2)
    state = tmp_path / "q" / "trial_0" / "checkpoint" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"epoch": 1}')
    trials = _Trials()
    with pytest.raises(searching.TuneError, match=f"{state} is not a checkpoint state"):
        searching.run(damaged, tiny_config(), mnist_splits, callbacks=[trials])
    assert not (tmp_path / "q" / "trial_1").exists()
    # One search at a time in a folder.
    search = SearchConfig(out_dir=str(tmp_path), project_name="p", max_trials=1)
    with run_dir.lock(str(tmp_path / "p")):  # as a first search holds it
        with pytest.raises(searching.TuneError, match=f"the search folder {tmp_path / 'p'} is in use "
                                                   f"by process {os.getpid()} on .*choose another "
                                                   "--project_name or --out_dir"):
            searching.run(search, tiny_config(), mnist_splits, callbacks=[trials])
        assert os.listdir(tmp_path / "p") == [".lock"]
    assert trials.calls == []  # no trial trained
    assert len(searching.run(search, tiny_config(), mnist_splits, callbacks=[trials])) == 1
    assert trials.calls == [0]


@pytest.mark.slow
def test_a_search_whose_trials_all_diverge_prints_no_tracebacks(tmp_path, mnist_splits, capsys,
                                                               command_output):
    search = SearchConfig(out_dir=str(tmp_path), project_name="p", max_trials=2,
                          learning_rate_range="1e6:1e7")
    code = shell.run(lambda: searching.run(search, tiny_config(regime="weights", epochs=1),
                                          mnist_splits))
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.out + captured.err
    assert captured.err.startswith("error: No trial of the search in ") and len(
        captured.err.splitlines()) == 1
    assert [line for line in captured.out.splitlines() if " FAILED: " in line] == [
        f"Trial {i} FAILED: ssm_keras.training.callbacks.Diverged: training diverged: the loss is nan "
        "after epoch 1. Try a smaller --learning_rate or --init_factor, or check --init_file."
        for i in (0, 1)]

