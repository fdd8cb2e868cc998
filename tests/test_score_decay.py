"""`decay_scores_only`: the paper's decay on the scores alone, through
optimiser wrappers and mixed precision, refusing what it cannot apply."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssm_keras
from ssm_keras.training import score_decay, trainer


def _masked():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    return ssm_keras.supermask(model, "signed", seed=0, train_bias=True)


def _zero_step(optimizer, model):
    """One step with zero gradients: only the decay moves a variable."""
    before = {variable.path: variable.numpy().copy() for variable in model.trainable_variables}
    optimizer.apply_gradients([(keras.ops.zeros_like(variable), variable)
                               for variable in model.trainable_variables])
    return {variable.path: variable.numpy() / np.where(before[variable.path] == 0, 1,
                                                        before[variable.path])
            for variable in model.trainable_variables}


@pytest.mark.parametrize("wrap", [False, True])
def test_the_scores_shrink_by_the_decay_also_through_a_loss_scale_wrapper(wrap):
    masked = _masked()
    sgd = keras.optimizers.SGD(0.1)
    optimizer = keras.optimizers.LossScaleOptimizer(sgd) if wrap else sgd
    assert score_decay.decay_scores_only(optimizer, masked, 0.5) is optimizer
    assert sgd.weight_decay == pytest.approx(0.5 / 0.1)
    ratios = _zero_step(optimizer, masked)
    for path, ratio in ratios.items():
        expected = 0.5 if path.endswith("scores") else 1.0  # the biases are not decayed
        np.testing.assert_allclose(ratio[ratio != 0], expected, rtol=1e-6, err_msg=path)


def test_under_mixed_float16_compile_wraps_and_a_loaded_model_decays_scores_only(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        masked = _masked()
        masked.compile(score_decay.decay_scores_only("sgd", masked, 0.5), "mse")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(masked.optimizer, keras.optimizers.LossScaleOptimizer)
    masked.fit(np.ones((4, 6), "float32"), np.zeros((4, 3), "float32"), verbose=0)
    masked.save(tmp_path / "masked.keras")
    with trainer.global_dtype_policy("mixed_float16"):  # as a resumed run loads its checkpoint
        loaded = keras.saving.load_model(tmp_path / "masked.keras")
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    for saved, restored in zip(masked.optimizer.variables, loaded.optimizer.variables,
                               strict=True):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)
    score_decay.exclude_all_but_scores(loaded.optimizer, loaded)
    ratios = _zero_step(loaded.optimizer, loaded)
    for path, ratio in ratios.items():
        expected = 1 - 0.5 * 0.01 / 0.01 if path.endswith("scores") else 1.0
        np.testing.assert_allclose(ratio[ratio != 0], expected, rtol=1e-3, err_msg=path)


@pytest.mark.parametrize("by_name", [False, True])
def test_what_the_optimizer_already_excluded_stays_excluded(by_name):
    """The biases train, so `decay_scores_only` excludes them too; the
    scores the user excluded before (by variable, or all by name) keep
    their values."""
    masked = _masked()
    first, second = (layer.scores for layer in masked.layers[1:])
    sgd = keras.optimizers.SGD(0.1)
    if by_name:
        sgd.exclude_from_weight_decay(var_names=["scores"])
    else:
        sgd.exclude_from_weight_decay(var_list=[first])
    score_decay.decay_scores_only(sgd, masked, 0.5)
    ratios = _zero_step(sgd, masked)
    expected = {first.path: 1.0, second.path: 1.0 if by_name else 0.5}
    for path, ratio in ratios.items():
        np.testing.assert_allclose(ratio[ratio != 0], expected.get(path, 1.0), rtol=1e-6,
                                   err_msg=path)


@pytest.mark.parametrize("weight_decay, error, message", [
    ("5e-4", TypeError, "weight_decay must be a finite number in \\[0, 1\\). Received: "
                        "weight_decay='5e-4'"),
    (None, TypeError, "Received: weight_decay=None"),
    (float("inf"), ValueError, "Received: weight_decay=inf"),
    (1.0, ValueError, "Received: weight_decay=1.0"),
    (-1e-4, ValueError, "Received: weight_decay=-0.0001"),
])
def test_a_weight_decay_that_is_not_a_number_in_0_1_is_refused(weight_decay, error, message):
    with pytest.raises(error, match=message):
        score_decay.decay_scores_only(keras.optimizers.SGD(0.1), _masked(), weight_decay)


def test_an_optimizer_by_name_is_made_and_a_zero_learning_rate_is_refused():
    masked = _masked()
    optimizer = score_decay.decay_scores_only("adam", masked, 1e-3)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.weight_decay == pytest.approx(1e-3 / 0.001)
    with pytest.raises(ValueError, match="learning rate > 0 .* Received: learning_rate=0.0"):
        score_decay.decay_scores_only(keras.optimizers.SGD(0.0), masked, 5e-4)
    with pytest.raises(ValueError, match="no_such_optimizer"):
        score_decay.decay_scores_only("no_such_optimizer", masked, 5e-4)


class _SubclassedNet(keras.Model):
    """A subclassed model built of a masked layer and a stock one."""

    def __init__(self):
        super().__init__(name="subclassed_net")
        self.hidden = ssm_keras.layers.MaskedDense(8, mask_seed=0, name="hidden")
        self.classifier = keras.layers.Dense(3, name="classifier")

    def call(self, inputs):
        return self.classifier(self.hidden(inputs))


def test_a_subclassed_model_is_refused_until_called_and_then_decays_its_scores_only():
    net = _SubclassedNet()
    with pytest.raises(ValueError) as error:
        score_decay.decay_scores_only(keras.optimizers.SGD(0.1), net, 0.1)
    assert str(error.value) == (
        "model 'subclassed_net' has masked layers without weights yet (hidden): call the "
        "model on a batch, or build it, before decay_scores_only, so that its scores exist.")
    net(np.ones((2, 5), "float32"))
    optimizer = score_decay.decay_scores_only(keras.optimizers.SGD(0.1), net, 0.1)
    ratios = _zero_step(optimizer, net)
    scores = net.hidden.scores_variable("kernel").path
    assert set(ratios) == {scores, net.classifier.kernel.path, net.classifier.bias.path}
    np.testing.assert_allclose(ratios[scores], 1 - 0.1, rtol=1e-6)
    np.testing.assert_array_equal(ratios[net.classifier.kernel.path], 1.0)  # not decayed
    np.testing.assert_array_equal(net.classifier.bias.numpy(), 0.0)  # zeros, not decayed


def test_a_steered_decay_changes_what_a_traced_step_applies_without_a_new_trace(tmp_path):
    masked = _masked()
    optimizer = score_decay.decay_scores_only(keras.optimizers.SGD(0.1), masked, 0.5)
    masked.compile(optimizer=optimizer, loss="mse")
    variables = masked.trainable_variables
    step = tf.function(lambda: optimizer.apply([tf.zeros_like(v) for v in variables], variables))
    for keras_decay in (5.0, 2.0, 0.0):
        score_decay.steer_decay(masked, keras_decay)
        before = {variable.path: variable.numpy() for variable in variables}
        step()
        for variable in variables:
            shrink = 1 - 0.1 * keras_decay if variable.path.endswith("scores") else 1.0
            np.testing.assert_allclose(variable.numpy(), shrink * before[variable.path],
                                       rtol=1e-6, err_msg=variable.path)
    assert step.experimental_get_tracing_count() == 1
    # Keras reads the float: the config, the saved model and copies hold 0.0.
    assert type(copy.deepcopy(optimizer.weight_decay)) is float
    masked.save(tmp_path / "steered.keras")
    loaded = keras.saving.load_model(tmp_path / "steered.keras")
    assert type(loaded.optimizer.weight_decay) is float and loaded.optimizer.weight_decay == 0.0


def test_an_optimizer_made_from_a_steered_ones_config_steers_its_own_decay():
    first = _masked()
    first.compile(score_decay.decay_scores_only(keras.optimizers.SGD(0.1), first, 0.5), "mse")
    score_decay.steer_decay(first, 2.0)
    second = _masked()
    second.compile(keras.optimizers.SGD.from_config(first.optimizer.get_config()), "mse")
    score_decay.steer_decay(second, 3.0)
    score_decay.steer_decay(first, 1.0)
    decays = [model.optimizer.weight_decay for model in (first, second)]
    assert decays == [1.0, 3.0] and decays[0].variable is not decays[1].variable
    assert [float(decay.variable.numpy()) for decay in decays] == [1.0, 3.0]
