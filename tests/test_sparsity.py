"""`--target_remaining`: the steered weight decay ends a threshold mask at
the remaining percentage asked for, logs its path, and resumes exactly."""

import glob
import json
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import crashed_run, randomize_scores, tiny_config, tiny_splits
from tensorboard.backend.event_processing import event_accumulator

import ssm_keras
from ssm_keras import data, layers
from ssm_keras.training import config as ssm_config
from ssm_keras.training import score_decay, sparsity, trainer

# A steered run ends within 5% (relative) of its target. Measured on 3,000
# real MNIST training images (FCN, target 5%): the runs of 8 and 16 epochs
# ended at 4.87% and 4.99% (AMD Zen 3); without the regrowth correction, at 5.2-5.8%.
RELATIVE_TOLERANCE = 0.05


def test_target_path_runs_geometrically_from_the_start_to_the_target():
    assert sparsity.target_path(60.0, 6.0, 0, 8) == pytest.approx(60.0)
    assert sparsity.target_path(60.0, 6.0, 3, 8) == pytest.approx(60.0 * 0.1 ** 0.5)
    assert sparsity.target_path(60.0, 6.0, 6, 8) == pytest.approx(6.0)  # 0.75 of the run
    assert sparsity.target_path(60.0, 6.0, 8, 8) == pytest.approx(6.0)
    assert sparsity.target_path(60.0, 6.0, 2, 8, reach_fraction=0.5) == pytest.approx(
        60.0 * 0.1 ** 0.5)
    assert sparsity.target_path(60.0, 6.0, 4, 8, reach_fraction=0.5) == pytest.approx(6.0)
    assert sparsity.target_path(60.0, 6.0, 8, 8, reach_fraction=1.0) == pytest.approx(6.0)
    assert sparsity.target_path(60.0, 6.0, 7, 8, reach_fraction=1.0) > 6.0


def test_weight_decay_for_leaves_the_wanted_share_when_only_decay_acts():
    ratios = np.random.default_rng(0).uniform(0.0, 2.5, 100_000)
    steps, rate, initial = 50, 0.02, 0.05
    decay = sparsity.weight_decay_for(ratios, 12.0, steps, rate, initial)
    shrunk = ratios * (1.0 - rate * decay / initial) ** steps
    assert 100.0 * np.mean(shrunk > 1.0) == pytest.approx(12.0, abs=0.01)
    assert sparsity.weight_decay_for(ratios, 70.0, steps, rate, initial) == 0.0  # 60% remain
    # An aim above 100%: a path's 60% over a regrowth of 0.4, after an
    # epoch that pruned more than aimed.
    assert sparsity.weight_decay_for(ratios, 60.0 / 0.4, steps, rate, initial) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by the learning rate of 0
        assert sparsity.weight_decay_for(ratios, 12.0, steps, 0.0, initial) == 0.0


def test_regrowth_is_the_ratio_of_remaining_to_expected_within_its_clip():
    assert sparsity.regrowth(3.6, 3.0) == pytest.approx(1.2)
    assert sparsity.regrowth(2.7, 3.0) == pytest.approx(0.9)
    assert sparsity.regrowth(50.0, 1.0) == sparsity.MAX_REGROWTH
    assert sparsity.regrowth(0.1, 10.0) == 1.0 / sparsity.MAX_REGROWTH
    assert sparsity.regrowth(0.0, 0.0) == 1.0 and sparsity.regrowth(1.0, 0.0) == 4.0


def test_an_epoch_without_decay_counts_no_regrowth_where_nothing_moved():
    """At a learning rate of 0 (where a cosine schedule ends) the scores stay
    put: the controller sets no decay and expects the mask it has, so the
    regrowth it measures after the next epoch is 1, not `remaining / aim`."""
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    masked = ssm_keras.supermask(keras.Model(inputs, keras.layers.Dense(3)(hidden)),
                                 "signed", seed=0)
    randomize_scores(masked)
    optimizer = score_decay.decay_scores_only(keras.optimizers.SGD(0.05), masked, 1e-3)
    optimizer.learning_rate = 0.0
    masked.compile(optimizer, "mse")
    controller = sparsity.SparsityController(
        target_percent=5.0, epochs=4, weight_decay=1e-3, initial_learning_rate=0.05)
    images = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no division by the rate of 0
        history = masked.fit(images, np.zeros((32, 3), "float32"), epochs=3, batch_size=8,
                             callbacks=[controller], verbose=0).history
    assert history["score_weight_decay"][1:] == [0.0, 0.0]
    assert history["mask_regrowth"] == [1.0, 1.0, 1.0]
    assert controller.expected_percent == pytest.approx(
        100.0 * np.mean(sparsity.threshold_ratios(masked) > 1.0))


def _mnist_config(tmp_path, mnist_dir, epochs):
    return ssm_config.TrainConfig(
        arch="fcn", dataset="mnist", data_dir=str(mnist_dir.parent), max_examples=3000,
        validation_size=500, epochs=epochs, batch_size=64, learning_rate=0.05, init_factor=6,
        weight_decay=2.5e-4, target_remaining=5.0, lr_decay_epochs=epochs / 10,
        steps_per_execution=8, model_dir=str(tmp_path / f"run{epochs}"), verbose=0)


def _scalars(pattern, tag):
    values = []
    for path in glob.glob(pattern):
        accumulator = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("tensors", []):
            values += [float(tf.make_ndarray(event.tensor_proto))
                       for event in accumulator.Tensors(tag)]
    return values


class _TrainFunctions(keras.callbacks.Callback):
    """The training step each epoch ran."""

    def __init__(self):
        super().__init__()
        self.functions = []

    def on_epoch_end(self, epoch, logs=None):
        self.functions.append(self.model.train_function)


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [8, 16])
def test_runs_of_two_lengths_end_at_the_target_on_real_mnist(tmp_path, mnist_dir, epochs):
    trained = _TrainFunctions()
    results = trainer.run(_mnist_config(tmp_path, mnist_dir, epochs), callbacks=[trained])
    # The decay changed every epoch in the training step Keras made once.
    assert len(set(map(id, trained.functions))) == 1
    assert results["remaining_percent"] == pytest.approx(5.0, rel=RELATIVE_TOLERANCE)
    assert results["test_accuracy"] > 0.85  # a pruned mask that still classifies
    model_dir = tmp_path / f"run{epochs}"
    history = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    decays = [entry["score_weight_decay"] for entry in history]
    targets = [entry["target_remaining_percent"] for entry in history]
    regrowths = [entry["mask_regrowth"] for entry in history]
    assert regrowths[0] == 1.0 and all(g > 1.0 for g in regrowths[2:])  # gradients regrow
    assert decays[0] == 2.5e-4 and len(set(decays)) == epochs  # steered every epoch
    assert max(decays) > 10 * 2.5e-4  # far more than the start: the schedule is short
    assert targets == pytest.approx(sorted(targets, reverse=True)) and targets[-1] == 5.0
    logged = _scalars(str(model_dir / "logs" / "train" / "events.*"), "epoch_score_weight_decay")
    assert logged == pytest.approx(decays, rel=1e-6)


@pytest.mark.slow
def test_the_decay_counts_the_steps_an_epoch_ran_in_executions_of_several(tmp_path):
    """3 steps an epoch; with --steps_per_execution=2 the last execution runs
    1 of its 2, which Keras reports as a step number past the epoch's end."""
    splits = tiny_splits()
    settings = dict(epochs=3, target_remaining=20.0, weight_decay=1e-3)
    histories = []
    for steps in (1, 2):
        trainer.run(tiny_config(tmp_path / f"{steps}", steps_per_execution=steps, **settings),
                    splits=splits)
        history = (tmp_path / f"{steps}" / "run" / "history.jsonl").read_text().splitlines()
        histories.append([json.loads(line)["score_weight_decay"] for line in history])
    assert histories[1] == pytest.approx(histories[0], rel=1e-6) and len(set(histories[0])) == 3


@pytest.mark.slow
def test_a_killed_steered_run_resumes_to_the_same_result(tmp_path):
    """...on a path that reaches its target half-way (`--target_reach=0.5`)."""
    splits = tiny_splits()
    settings = dict(epochs=4, target_remaining=20.0, weight_decay=1e-3, target_reach=0.5)
    straight = trainer.run(tiny_config(tmp_path / "a", **settings), splits=splits)
    config = tiny_config(tmp_path / "b", **settings)
    crashed_run(config, splits)
    resumed = trainer.run(config, splits=splits)
    histories = [[json.loads(line) for line in (tmp_path / name / "run" / "history.jsonl")
                  .read_text().splitlines()] for name in ("a", "b")]
    steered = [[(entry["score_weight_decay"], entry["remaining_percent"]) for entry in history]
               for history in histories]
    assert steered[0] == steered[1] and len(set(decay for decay, _ in steered[0])) > 1
    path = [entry["target_remaining_percent"] for entry in histories[0]]
    assert path[0] > 20.0 and path[1:] == pytest.approx([20.0] * 3)  # reached after epoch 2 of 4
    assert resumed["remaining_percent"] == straight["remaining_percent"]
    models = [keras.saving.load_model(tmp_path / name / "run" / "model.keras") for name in "ab"]
    for layer_a, layer_b in zip(*(layers.masked_layers(model) for model in models)):
        np.testing.assert_array_equal(layer_a.scores.numpy(), layer_b.scores.numpy())


@pytest.mark.parametrize("overrides, message", [
    (dict(mask="topk"), "a --mask=topk mask keeps the fraction --density"),
    (dict(mask="signed_topk"), "a --mask=signed_topk mask keeps the fraction --density"),
    (dict(mask="bernoulli"), "--mask=bernoulli has no threshold"),
    (dict(regime="weights"), "--regime=weights trains none"),
    (dict(tau_fraction=0.0), "never brings a score across a threshold of 0"),
    (dict(target_remaining=100.0), "--target_remaining is a percentage in (0, 100)"),
    (dict(target_remaining=0.0), "--target_remaining is a percentage in (0, 100)"),
    (dict(target_reach=0.0), "--target_reach is the fraction of --epochs .* in (0, 1]. "
                             "Received: --target_reach=0.0"),
    (dict(target_reach=1.5), "in (0, 1]. Received: --target_reach=1.5"),
    (dict(target_remaining=None, target_reach=0.5),
     "--target_reach shapes the path of --target_remaining, which is not set"),
])
def test_target_remaining_is_refused_where_it_cannot_steer(tmp_path, overrides, message):
    config = tiny_config(tmp_path, **{"target_remaining": 3.0, **overrides})
    with pytest.raises(ssm_config.ConfigError, match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        config.validate()
    tiny_config(tmp_path, target_remaining=3.0, mask="binary").validate()


def _user_supermask(mask="signed", **arguments):
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Dense(300, activation="relu")(keras.layers.Flatten()(inputs))
    hidden = keras.layers.Dense(100, activation="relu")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    return ssm_keras.supermask(model, mask, seed=0, **arguments)


def _compiled(masked, optimizer=None, steps_per_execution=1):
    optimizer = optimizer or ssm_keras.decay_scores_only(keras.optimizers.SGD(0.05), masked,
                                                         2.5e-4)
    masked.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return masked


def _frozen_first_layer():
    masked = _user_supermask()
    masked.get_layer("dense").trainable = False
    return masked


@pytest.mark.slow
def test_a_users_supermask_ends_at_the_target_under_plain_fit(mnist_dir):
    splits = data.load_splits("mnist", str(mnist_dir.parent), validation_size=0,
                              max_examples=3000)
    (images, labels), (test_images, test_labels) = splits.train, splits.test
    masked = _user_supermask()
    sgd = keras.optimizers.SGD(0.1, momentum=0.9)
    # 47 steps an epoch: the last execution runs 7 of its 8.
    _compiled(masked, ssm_keras.decay_scores_only(sgd, masked, 2.5e-4), steps_per_execution=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "SparsityTarget")  # the target is met: no warning
        history = masked.fit(images / 255.0, labels, batch_size=64, epochs=8, shuffle=False,
                             verbose=0, callbacks=[ssm_keras.SparsityTarget(5.0)])
    remaining = 100.0 * np.mean(sparsity.threshold_ratios(masked) > 1.0)
    assert remaining == pytest.approx(5.0, rel=RELATIVE_TOLERANCE)
    decays = history.history["score_weight_decay"]
    assert decays[0] == pytest.approx(2.5e-4) and len(set(decays)) == 8
    assert history.history["target_remaining_percent"][-1] == 5.0
    assert masked.evaluate(test_images / 255.0, test_labels, verbose=0)[1] > 0.85
    assert masked.optimizer.weight_decay == pytest.approx(2.5e-4 / 0.1)  # as compiled again


@pytest.mark.parametrize("masked, compiled, fit, message", [
    (dict(mask="bernoulli"), {}, {}, "SparsityTarget steers signed and binary masks (weight "
     "decay against a threshold); layer 'dense' has mask='bernoulli'."),
    (dict(tau_fraction=0.0), {}, {}, "threshold of 0: layer 'dense' has tau_fraction=0."),
    (dict(regime="mask_then_weights"), {}, {}, "layer 'dense' trains its kernel under a "
     "frozen mask (regime='mask_then_weights')"),
    (dict(train_bias=True), dict(optimizer=keras.optimizers.SGD(0.05, weight_decay=0.1)), {},
     "but the optimiser would also decay dense/bias, dense_1/bias, dense_2/bias: compile with "
     "ssm_keras.decay_scores_only"),
    ({}, dict(optimizer=keras.optimizers.SGD(0.05, use_ema=True)), {},
     "an optimiser with use_ema=True ends the fit with their moving averages"),
    ({}, dict(optimizer=keras.optimizers.SGD(keras.optimizers.schedules.PolynomialDecay(
        0.0, 10, end_learning_rate=0.1))), {}, "needs a learning rate > 0 as the fit starts. "
     "Received: learning rate 0"),
    ({}, {}, dict(epochs=1), "it needs a fit of at least 2 epochs. Received: epochs=1"),
    ({}, {}, dict(initial_epoch=1), "this fit starts at epoch 1"),
])
def test_a_fit_the_target_cannot_steer_is_refused_as_it_starts(masked, compiled, fit, message):
    model = _compiled(_user_supermask(**{"mask": "signed", **masked}), **compiled)
    _refused_fit(model, fit, message)


def test_a_frozen_masked_layer_is_refused():
    _refused_fit(_compiled(_frozen_first_layer()), {}, "layer 'dense' is frozen "
                 "(trainable=False), so its mask cannot reach the target.")


def _refused_fit(model, fit, message):
    images = np.zeros((8, 28, 28, 1), np.float32)
    before = [variable.numpy() for variable in model.trainable_variables]
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(images, np.zeros(8), verbose=0, callbacks=[ssm_keras.SparsityTarget(5.0)],
                  **{"epochs": 2, **fit})
    for variable, value in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)  # nothing trained


def test_a_target_the_mask_already_keeps_is_refused():
    model = _compiled(_user_supermask())
    with pytest.raises(ValueError, match=r"remaining_percent=99\) is not below the \d\d\.\d\d% "
                                         "of the weights the mask keeps now"):
        model.fit(np.zeros((8, 28, 28, 1)), np.zeros(8), epochs=2, verbose=0,
                  callbacks=[ssm_keras.SparsityTarget(99)])


@pytest.mark.parametrize("arguments, error, message", [
    ((0,), ValueError, "remaining_percent must be a finite number in (0, 100). Received: "
                       "remaining_percent=0"),
    ((100,), ValueError, "remaining_percent=100"),
    (("5",), TypeError, "remaining_percent='5'"),
    ((5, 0), ValueError, "reach_fraction must be a finite number in (0, 1]. Received: "
                         "reach_fraction=0"),
])
def test_a_target_out_of_range_is_refused_when_made(arguments, error, message):
    with pytest.raises(error, match=re.escape(message)):
        ssm_keras.SparsityTarget(*arguments)


def test_a_fit_that_ends_below_the_target_says_so():
    target = ssm_keras.SparsityTarget(50.0)
    target.set_model(_compiled(_user_supermask()))
    target.set_params({"epochs": 2})
    target.on_train_begin()
    randomize_scores(target.model, density=0.2)  # as if pruned past the target
    with pytest.warns(UserWarning, match=r"SparsityTarget\(50\): the fit ended with \d\d\.\d\d% "
                                         "of the masked weights, below the target"):
        target.on_train_end()


def test_a_fit_that_ends_above_the_target_says_so():
    target = ssm_keras.SparsityTarget(5.0)
    target.set_model(_compiled(_user_supermask()))  # about 60% remain, as made
    target.set_params({"epochs": 2})
    target.on_train_begin()
    with pytest.warns(UserWarning, match=r"SparsityTarget\(5\): the fit ended with \d\d\.\d\d% "
                                         "of the masked weights, above the target"):
        target.on_train_end()


@pytest.mark.slow
def test_a_rate_set_as_the_epoch_begins_is_the_rate_the_decay_is_set_for():
    """A scheduler listed after the target changes the rate in
    `on_epoch_begin`; the epoch's decay is set for it at its first step.
    Without gradients to regrow the mask (zero images) the decay alone
    lands each epoch on its aim: a regrowth of 1."""
    model = _user_supermask()
    _compiled(model, ssm_keras.decay_scores_only(keras.optimizers.SGD(0.1), model, 2.5e-4))
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, _: 0.1 / 10 ** epoch)
    history = model.fit(np.zeros((64, 28, 28, 1)), np.zeros(64), batch_size=16, epochs=3,
                        verbose=0, callbacks=[ssm_keras.SparsityTarget(10.0), scheduler])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.01, 0.001])
    assert history.history["mask_regrowth"][1:] == pytest.approx([1.0, 1.0], abs=0.01)


@pytest.mark.slow
def test_a_fit_after_an_interrupted_one_starts_from_the_compiled_decay():
    """Keras calls no `on_train_end` after an exception: the optimiser keeps
    the steered decay until the next `SparsityTarget` fit starts."""
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    model = _user_supermask()
    _compiled(model, ssm_keras.decay_scores_only(keras.optimizers.SGD(0.1), model, 2.5e-4))
    images, labels = np.zeros((64, 28, 28, 1)), np.zeros(64)
    with pytest.raises(KeyboardInterrupt):
        model.fit(images, labels, batch_size=16, epochs=3, verbose=0,
                  callbacks=[ssm_keras.SparsityTarget(10.0), Interrupt()])
    assert model.optimizer.weight_decay > 10 * 2.5e-4 / 0.1  # the second epoch's
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0,
                        callbacks=[ssm_keras.SparsityTarget(5.0)])
    assert history.history["score_weight_decay"][0] == pytest.approx(2.5e-4)
    assert model.optimizer.weight_decay == pytest.approx(2.5e-4 / 0.1)
