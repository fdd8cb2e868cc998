"""Moving averages of the scores (`--ema_momentum`): the model a run ends
with and validates is the average of its trained scores, step by step; a
killed run resumes to the same end; a run started from a checkpoint without
averages starts them at its scores."""

import dataclasses

import keras
import numpy as np
import pytest
from support import crashed_run, scores, tiny_config, tiny_splits

import ssm_keras
from ssm_keras import layers
from ssm_keras.training import averaging, run_dir, statistics, trainer
from ssm_keras.training import config as ssm_config

MOMENTUM = 0.75  # large steps, so that the average is far from the last scores


class RecordScores(keras.callbacks.Callback):
    """The trained scores after every training step."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(scores(self.model))


def moving_average(start, steps, momentum):
    """`a <- m a + (1 - m) v` over `steps` from `start` (None: the first step's `v`)."""
    average = start
    for step in steps:
        average = step if average is None else [
            momentum * mean + (1 - momentum) * value for mean, value in zip(average, step)]
    return average


def _final_scores(results):
    return scores(keras.saving.load_model(f"{results['model_dir']}/model.keras"))


def _checkpoint(folder):
    """`(state, model)` of the checkpoint in `folder`."""
    state, path = run_dir.find_checkpoint(str(folder))
    return state, keras.saving.load_model(path)


def _assert_close(ours, theirs):
    for mine, expected in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """`(results, recorded steps)` of a 3-epoch run with averaged scores,
    the checkpoint of epoch 2 kept."""
    folder = tmp_path_factory.mktemp("averaged")
    recorder = RecordScores()
    results = trainer.run(
        tiny_config(folder, ema_momentum=MOMENTUM, keep_checkpoints="2"),
        splits=tiny_splits(), callbacks=[recorder])
    return results, recorder.steps


def test_a_run_ends_with_and_validates_the_moving_average_of_its_scores(averaged_run):
    results, steps = averaged_run
    assert len(steps) == 9  # 3 epochs of 3 batches
    expected = moving_average(None, steps, MOMENTUM)
    _assert_close(_final_scores(results), expected)
    assert not np.allclose(steps[-1][0], expected[0])  # not the last step's scores

    history = run_dir.read_history(results["model_dir"])
    last = history[-1]
    # The averaged mask is the one the run ends with, and the one validated.
    assert last["averaged_remaining_percent"] == pytest.approx(results["remaining_percent"])
    assert last["val_accuracy"] == pytest.approx(results["validation_accuracy"])
    model = keras.saving.load_model(f"{results['model_dir']}/model.keras")
    images, labels = tiny_splits().validation

    def validation_loss(values):
        for layer, value in zip(layers.masked_layers(model), values):
            layer.scores.assign(value)
        return model.evaluate(images, labels, batch_size=32, verbose=0)[0]

    for epoch, entry in enumerate(history, start=1):
        trained = steps[3 * epoch - 1]
        averaged = validation_loss(moving_average(None, steps[:3 * epoch], MOMENTUM))
        assert entry["val_loss"] == pytest.approx(averaged, rel=1e-5)
        assert entry["val_loss"] != pytest.approx(validation_loss(trained), rel=1e-3)
        # The epoch's own mask statistics are those of the trained scores.
        assert entry["remaining_percent"] == pytest.approx(
            statistics.summarize(model)["remaining_percent"])


def test_averages_leave_the_training_itself_unchanged_bit_for_bit(tmp_path, averaged_run):
    results, steps = averaged_run
    recorder = RecordScores()
    plain = trainer.run(tiny_config(tmp_path), splits=tiny_splits(), callbacks=[recorder])
    for ours, theirs in zip(steps, recorder.steps, strict=True):
        for mine, expected in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(mine, expected)
    for ours, theirs in zip(run_dir.read_history(results["model_dir"]),
                            run_dir.read_history(plain["model_dir"]), strict=True):
        for key in ("loss", "accuracy", "remaining_weights", "mask_flips"):
            assert ours[key] == theirs[key]


@pytest.mark.parametrize("after_epoch", [2, 3])  # 3: killed before its results were written
def test_a_killed_run_with_averages_resumes_to_the_same_end(tmp_path, averaged_run, after_epoch):
    results, _ = averaged_run
    config = tiny_config(tmp_path, ema_momentum=MOMENTUM, keep_checkpoints="2")
    crashed_run(config, tiny_splits(), after_epoch=after_epoch)
    resumed = trainer.run(config, splits=tiny_splits())
    assert resumed["test_accuracy"] == results["test_accuracy"]
    assert resumed["remaining_weights"] == results["remaining_weights"]
    for ours, theirs in zip(_final_scores(resumed), _final_scores(results), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_run_started_from_a_checkpoint_without_averages_starts_them_at_its_scores(tmp_path):
    splits = tiny_splits()
    parent = trainer.run(tiny_config(tmp_path / "parent", keep_checkpoints="2"), splits=splits)
    kept = f"{parent['model_dir']}/checkpoint/epoch-2"
    state, parent_model = _checkpoint(kept)
    assert state["epoch"] == 2
    start = scores(parent_model)
    recorder = RecordScores()
    child = trainer.run(
        tiny_config(tmp_path / "child", start_from=kept, ema_momentum=MOMENTUM),
        splits=splits, callbacks=[recorder])
    assert len(recorder.steps) == 3  # epoch 3 only
    _assert_close(_final_scores(child), moving_average(start, recorder.steps, MOMENTUM))


def test_an_average_started_later_is_the_same_from_the_start_or_from_a_kept_checkpoint(
        tmp_path):
    """`--ema_start=0.5` of 4 epochs: the average of epochs 3 and 4, whether
    the run trains all four or starts after epoch 2 of one without averages."""
    splits = tiny_splits()
    recorder = RecordScores()
    later = dict(epochs=4, ema_momentum=MOMENTUM, ema_start=0.5)
    results = trainer.run(tiny_config(tmp_path / "later", **later), splits=splits,
                          callbacks=[recorder])
    assert len(recorder.steps) == 12
    _assert_close(_final_scores(results),
                  moving_average(recorder.steps[5], recorder.steps[6:], MOMENTUM))
    history = run_dir.read_history(results["model_dir"])
    assert ["averaged_remaining_percent" in entry for entry in history] == [
        False, False, True, True]
    assert history[-1]["averaged_remaining_percent"] == pytest.approx(
        results["remaining_percent"])
    # Before the start the validations are the trained scores'.
    plain = trainer.run(tiny_config(tmp_path / "plain", epochs=4, keep_checkpoints="2"),
                        splits=splits)
    plain_history = run_dir.read_history(plain["model_dir"])
    for ours, theirs, averaged in zip(history, plain_history, (False, False, True, True)):
        assert ours["loss"] == theirs["loss"]
        assert (ours["val_loss"] == theirs["val_loss"]) is not averaged

    started = trainer.run(
        tiny_config(tmp_path / "started", start_from=f"{plain['model_dir']}/checkpoint/epoch-2",
                    **later), splits=splits)
    assert started["test_accuracy"] == results["test_accuracy"]
    for ours, theirs in zip(_final_scores(started), _final_scores(results), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert run_dir.read_history(started["model_dir"])[2:] == history[2:]


@pytest.mark.parametrize("settings, message", [
    *[(dict(ema_momentum=momentum), rf"--ema_momentum is the weight .* in \(0, 1\). "
       rf"Received: --ema_momentum={momentum}") for momentum in (0.0, 1.0, -0.5, 1.5)],
    *[(dict(ema_momentum=0.9, ema_start=start), rf"--ema_start is the fraction .* in \[0, "
       rf"1\). Received: --ema_start={start}") for start in (-0.1, 1.0)],
    (dict(ema_start=0.5), "--ema_momentum is not set. Received: --ema_start=0.5"),
    (dict(ema_momentum=0.9, ema_start=0.9), "--ema_start=0.9 of --epochs=3 starts the moving "
     "average at epoch 4, after the last; it must start by epoch 3: --ema_start at most 2/3."),
])
def test_averaging_settings_out_of_range_are_refused(tmp_path, settings, message):
    with pytest.raises(ssm_config.ConfigError, match=message):
        tiny_config(tmp_path, **settings).validate()


def test_averaged_variables_swaps_the_averages_in_and_back(averaged_run):
    results, _ = averaged_run
    _, model = _checkpoint(f"{results['model_dir']}/checkpoint")
    own = scores(model)
    moving = averaging.averages(model.optimizer)
    assert [average.path for average in moving] == [
        f"{model.optimizer.name}/{variable.path.replace('/', '_')}_average"
        for variable in model.trainable_variables]
    with averaging.averaged_variables(model):
        inside = scores(model)
    _assert_close(inside, _final_scores(results))
    for ours, theirs in zip(scores(model), own, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_mask_monitor_reports_the_averaged_mask_of_a_users_optimizer():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3)])
    masked = ssm_keras.supermask(model, seed=0)
    masked.compile(keras.optimizers.SGD(1.0, use_ema=True, ema_momentum=0.5),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images, labels = rng.normal(size=(64, 8)), rng.integers(0, 3, 64)
    history = masked.fit(images, labels, epochs=2, batch_size=16, verbose=0,
                         callbacks=[ssm_keras.MaskMonitor(None)]).history
    # `fit` leaves the averages in the model: the mask MaskMonitor reported last.
    assert history["averaged_remaining_percent"][-1] == pytest.approx(
        statistics.summarize(masked)["remaining_percent"])
    assert history["averaged_remaining_percent"] != history["remaining_percent"]


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_a_run_stopped_before_the_average_starts_ends_with_its_trained_scores(tmp_path):
    recorder = RecordScores()
    results = trainer.run(tiny_config(tmp_path, epochs=4, ema_momentum=MOMENTUM, ema_start=0.5),
                          splits=tiny_splits(), callbacks=[recorder, StopAfterFirstEpoch()])
    assert len(recorder.steps) == 3
    for ours, theirs in zip(_final_scores(results), recorder.steps[-1], strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_resume_that_would_move_the_average_names_the_epochs_that_fit(tmp_path):
    """A run of 10 epochs averaging from epoch 6, killed after epoch 7, asked
    to go on to 12 (which would start the average at epoch 7)."""
    history = [{"epoch": epoch, **({"averaged_remaining_percent": 5.0} if epoch >= 6 else {})}
               for epoch in range(1, 8)]
    config = tiny_config(tmp_path, epochs=12, resume=True, ema_momentum=0.9, ema_start=0.5)
    with pytest.raises(ssm_config.ConfigError) as info:
        averaging.check_start(config, {"epoch": 7, "history": history})
    assert str(info.value).endswith(
        "--resume keeps --ema_start=0.5; --epochs=9 or 10 goes on with it, and --epochs=13 or "
        "more starts a new one after epoch 7.")
    for epochs in (9, 10, 13):
        averaging.check_start(dataclasses.replace(config, epochs=epochs),
                              {"epoch": 7, "history": history})


def test_a_baseline_whose_average_would_start_in_the_past_is_refused_too(tmp_path):
    """A plain model logs no averaged mask: the checkpoint's `averages_from`
    says where its average started."""
    settings = dict(regime="weights", ema_momentum=MOMENTUM, ema_start=0.5)
    trainer.run(tiny_config(tmp_path, epochs=4, **settings), splits=tiny_splits())
    assert run_dir.read_state(str(tmp_path / "run"))["averages_from"] == 2
    with pytest.raises(ssm_config.ConfigError, match="starts the moving average at epoch 4, but "
                       "the checkpoint after epoch 4 holds one started at epoch 3"):
        trainer.run(tiny_config(tmp_path, epochs=6, resume=True, **settings),
                    splits=tiny_splits())


def test_a_resumed_run_whose_average_would_start_in_the_past_is_refused(tmp_path):
    splits = tiny_splits()
    settings = dict(ema_momentum=MOMENTUM, ema_start=0.5)  # 4 epochs: from epoch 3
    first = RecordScores()
    finished = trainer.run(tiny_config(tmp_path, epochs=4, **settings), splits=splits,
                           callbacks=[first])
    results_file = f"{finished['model_dir']}/results.json"
    before = open(results_file).read()
    with pytest.raises(ssm_config.ConfigError, match=(
            r"--ema_start=0.5 of --epochs=6 starts the moving average at epoch 4, but the "
            r"checkpoint after epoch 4 holds one started at epoch 3, which cannot be moved: "
            r"--resume keeps --ema_start=0.5; --epochs=7 or more starts a new one after epoch "
            r"4.")):
        trainer.run(tiny_config(tmp_path, epochs=6, resume=True, **settings), splits=splits)
    assert open(results_file).read() == before
    # 8 epochs start it after epoch 4: the average restarts from its scores.
    recorder = RecordScores()
    longer = trainer.run(tiny_config(tmp_path, epochs=8, resume=True, **settings),
                         splits=splits, callbacks=[recorder])
    assert longer["epochs"] == 8 and len(recorder.steps) == 12
    _assert_close(_final_scores(longer),
                  moving_average(first.steps[-1], recorder.steps, MOMENTUM))
