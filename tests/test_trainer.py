"""Training runs end to end: results, regimes, strategies, speed settings, refused settings."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import tiny_config, tiny_splits

from ssm_keras import data, layers, models
from ssm_keras.training import config as ssm_config
from ssm_keras.training import trainer


@pytest.mark.slow
def test_run_learns_and_writes_results(tmp_path):
    results = trainer.run(tiny_config(tmp_path, epochs=4), splits=tiny_splits())
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


@pytest.mark.slow
def test_baseline_and_mask_then_weights_regimes(tmp_path):
    splits = tiny_splits()
    mask_run = trainer.run(tiny_config(tmp_path / "mask", epochs=2), splits=splits)
    baseline = trainer.run(tiny_config(tmp_path / "weights", regime="weights", epochs=2),
                            splits=splits)
    assert baseline["remaining_percent"] == 100.0 and baseline["mask"] is None
    tuned = trainer.run(tiny_config(tmp_path / "tuned", regime="mask_then_weights", epochs=1,
                                     learning_rate=1e-3,
                                     mask_from=str(tmp_path / "mask" / "run")), splits=splits)
    assert tuned["remaining_weights"] == mask_run["remaining_weights"]
    trained = keras.saving.load_model(tmp_path / "mask" / "run" / "model.keras")
    finetuned = keras.saving.load_model(tmp_path / "tuned" / "run" / "model.keras")
    for before, after in zip(layers.masked_layers(trained), layers.masked_layers(finetuned)):
        np.testing.assert_array_equal(before.compute_mask_values().numpy(),
                                      after.compute_mask_values().numpy())
        assert not np.array_equal(before.kernel_variable().numpy(),
                                  after.kernel_variable().numpy())


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    """...with the decay steered in the second epoch (its variable mirrored)."""
    assert len(tf.config.list_logical_devices("CPU")) == 2
    splits = tiny_splits()
    steered = dict(epochs=2, target_remaining=40.0, weight_decay=1e-3)
    single = trainer.run(tiny_config(tmp_path / "one", **steered), splits=splits)
    mirrored = trainer.run(tiny_config(tmp_path / "two", strategy="mirrored", **steered),
                            splits=splits)
    decays = [[json.loads(line)["score_weight_decay"] for line in
               (tmp_path / name / "run" / "history.jsonl").read_text().splitlines()]
              for name in ("one", "two")]
    assert decays[0][1] > 10 * decays[0][0] and decays[1] == pytest.approx(decays[0], rel=1e-3)
    one = keras.saving.load_model(tmp_path / "one" / "run" / "model.keras")
    two = keras.saving.load_model(tmp_path / "two" / "run" / "model.keras")
    for a, b in zip(layers.masked_layers(one), layers.masked_layers(two)):
        np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), rtol=1e-4, atol=1e-6)
    assert mirrored["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=0.07)


@pytest.mark.slow
def test_images_too_small_for_the_architecture(tmp_path):
    with pytest.raises(ssm_config.ConfigError, match="needs images of at least 16x16"):
        trainer.run(tiny_config(tmp_path, arch="conv8"), splits=tiny_splits(shape=(8, 8, 3)))


@pytest.mark.parametrize("jit_compile, expected", [
    (None, bool(tf.config.list_physical_devices("GPU"))),  # Keras decides: XLA on GPUs only
    (True, True),
    (False, False),
])
@pytest.mark.slow
def test_jit_compile_setting_reaches_keras(jit_compile, expected):
    config = ssm_config.TrainConfig(arch="fcn", dataset="mnist", jit_compile=jit_compile)
    model = trainer.build_model(config, data.DATASETS["mnist"])
    trainer.compile_model(model, config, steps_per_epoch=10)
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
def test_steps_per_execution_trains_exactly_each_epochs_batches(tmp_path):
    # 300 examples in batches of 32: 10 batches per epoch, 4 per execution.
    splits = tiny_splits(train_size=300)
    counter = _EpochBatches()
    runs = {}
    for steps in (4, 1):
        runs[steps] = trainer.run(tiny_config(tmp_path / str(steps), steps_per_execution=steps,
                                               augment="crop_flip"), splits=splits,
                                   callbacks=[counter])
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


def test_augment_fraction_augments_the_first_epochs_only(tmp_path):
    assert [tiny_config(tmp_path, augment="crop_flip", augment_fraction=fraction,
                        epochs=epochs).augment_epochs()
            for fraction, epochs in ((0.5, 100), (0.07, 100), (0.01, 10), (1.0, 10))] == [
        50, 7, 1, None]
    splits = tiny_splits()
    history = {}
    for name, fraction in (("every", 1.0), ("first", 0.5)):
        trainer.run(tiny_config(tmp_path / name, epochs=2, augment="crop_flip",
                                augment_fraction=fraction), splits=splits)
        history[name] = [json.loads(line) for line in
                         (tmp_path / name / "run" / "history.jsonl").read_text().splitlines()]
    # Epoch 1 is augmented in both runs, epoch 2 only in the first.
    assert history["first"][0]["loss"] == history["every"][0]["loss"]
    assert history["first"][0]["accuracy"] == history["every"][0]["accuracy"]
    assert history["first"][1]["loss"] != history["every"][1]["loss"]


@pytest.mark.parametrize("overrides, message", [
    (dict(learning_rate=float("inf")), "--learning_rate must be a finite number"),
    (dict(momentum=float("nan")), "--momentum must be a finite number"),
    (dict(weight_decay=float("inf")), "--weight_decay must be a finite number"),
    (dict(init_factor=float("inf")), "--init_factor must be a finite number"),
    (dict(mask="topk", tau_fraction=0.3), "--tau_fraction only shapes signed and binary"),
    (dict(mask="signed", density=0.2), "--density only shapes topk and signed_topk"),
    (dict(seed=-1), r"--seed must be in \[0, 2\*\*63\)"),
    (dict(regime="weights", density=0.2), "--density sets the mask, and --regime=weights"),
    (dict(regime="weights", tau_fraction=0.3), "--tau_fraction sets the mask"),
    (dict(regime="weights", score_init="zeros"), "--score_init sets the mask"),
    (dict(regime="weights", mask="binary"), "--mask sets the mask"),
    (dict(target_remaining=10.0, epochs=1), "it needs --epochs >= 2"),
    (dict(verbose=7), r"--verbose is 0 \(silent\), 1 .* Received: --verbose=7"),
    (dict(augment_fraction=0.5), "--augment_fraction limits the epochs of --augment, and "
                                 "--augment=none augments none. Received: --augment_fraction=0.5 "
                                 r"\(add --augment_fraction=1 to turn off a flagfile's "
                                 r"augmentation\)"),
    (dict(augment="crop_flip", augment_fraction=0.0), r"in \(0, 1\]. Received: "
                                                      "--augment_fraction=0.0"),
    (dict(augment="crop_flip", augment_fraction=1.5), "Received: --augment_fraction=1.5"),
])
@pytest.mark.slow
def test_settings_that_cannot_work_are_refused(tmp_path, overrides, message):
    with pytest.raises(ssm_config.ConfigError, match=message):
        trainer.run(tiny_config(tmp_path, **overrides), splits=tiny_splits())
    assert not (tmp_path / "run").exists()
    tiny_config(tmp_path, mask="topk", density=0.2).validate()  # used flags pass


@pytest.mark.parametrize("overrides, message", [
    (dict(train_batch_norm=True), "--train_batch_norm: the fcn model has no batch norm"),
    (dict(recalibrate_batch_norm=True), "--recalibrate_batch_norm: the fcn model has no batch"),
    (dict(target_remaining=99.9), r"--target_remaining=99.9 is not below the \d+\.\d\d% of "
                                  "the weights the mask keeps now"),
])
def test_settings_the_built_model_would_ignore_are_refused_before_anything_is_written(
        tmp_path, overrides, message):
    with pytest.raises(ssm_config.ConfigError, match=message):
        trainer.run(tiny_config(tmp_path, **overrides), splits=tiny_splits())
    assert not (tmp_path / "run").exists()


def test_a_width_that_cannot_fit_in_memory_is_refused_naming_its_size(tmp_path):
    spec = tiny_splits().spec
    counts = {width: models.build_architecture("fcn", masked=False, input_shape=spec.image_shape,
                                               num_classes=spec.num_classes,
                                               width=width).count_params()
              for width in (4, 7)}
    assert {width: trainer.weight_count("fcn", spec, width) for width in counts} == counts
    with pytest.raises(ssm_config.ConfigError, match=r"--width=3333334: the fcn model would "
                       r"have [\d,]+ weights, about [\d,]+ GiB to train, more than this"):
        trainer.run(tiny_config(tmp_path, width=3333334), splits=tiny_splits())
    assert not (tmp_path / "run").exists()


def test_weight_init_learning_rate_and_weight_decay_default_per_regime():
    masks = ssm_config.TrainConfig()
    weights = ssm_config.TrainConfig(regime="weights")
    assert (masks.weight_init, masks.learning_rate, masks.weight_decay) == ("elus", 0.05, 2.5e-4)
    assert (weights.weight_init, weights.learning_rate, weights.weight_decay) == ("elu", 0.01, 5e-4)
    given = ssm_config.TrainConfig(regime="weights", learning_rate=0.1, weight_init="he_normal")
    assert (given.learning_rate, given.weight_init) == (0.1, "he_normal")
    weights.validate()


@pytest.mark.slow
def test_conv4_trains_its_weights_at_the_regime_defaults(tmp_path):
    """`--arch=conv4 --regime=weights` and nothing else: the masks' defaults
    (elus kernels, learning rate 0.05) made its loss NaN in the first epoch."""
    splits = tiny_splits(shape=(32, 32, 3), classes=4, train_size=256)
    results = trainer.run(tiny_config(tmp_path, arch="conv4", dataset="cifar10", regime="weights",
                                      epochs=2, learning_rate=None), splits=splits)
    assert results["flags"]["learning_rate"] == 0.01 and results["flags"]["weight_init"] == "elu"
    assert results["test_accuracy"] > 0.5  # four classes: it learned

