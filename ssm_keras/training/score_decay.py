"""The signed-supermask paper's weight decay on the scores, for any Keras optimiser.

The paper's optimiser shrinks every score after each step by `wd_t * s`, with
`wd_t = weight_decay * lr_t / lr_0` following the learning-rate schedule.
Keras 3 optimisers decay decoupled, `v -= lr_t * wd_k * v` for every
trainable variable `v`; the two agree for `wd_k = weight_decay / lr_0`
applied to the scores alone, which is what `decay_scores_only` sets.

A Keras optimiser's `weight_decay` is a Python float, a constant of the
traced training step (and of its XLA cluster): changing it means tracing and
compiling the step again. `steer_decay` changes it every epoch without
that, through a variable the step reads (`VariableDecay`).
"""

import weakref

import keras
import tensorflow as tf

from ssm_keras import arguments
from ssm_keras import layers as ssm_layers


def applying_optimizer(optimizer):
    """The optimiser that applies the updates: `optimizer`, or the one a
    wrapper such as `keras.optimizers.LossScaleOptimizer` (which Keras puts
    around the optimiser under `mixed_float16`) hands them to. A wrapper
    never applies a weight decay of its own."""
    while isinstance(getattr(optimizer, "inner_optimizer", None), keras.optimizers.Optimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def decay_scores_only(optimizer, model, weight_decay):
    """Sets the paper's decoupled weight decay on `model`'s scores only.

    Trained biases, batch-norm parameters, kernels (`mask_then_weights`) and
    plain layers are excluded from the decay. Through a wrapper (a
    `LossScaleOptimizer`) the decay is set on the optimiser it wraps, which
    applies the updates. Keras saves the decay with the optimiser but not
    the variables it excludes: after `keras.saving.load_model`, call
    `exclude_all_but_scores(model.optimizer, model)` before training on.

    Args:
        optimizer: a Keras optimiser not yet used, or its name (its learning
            rate now is `lr_0`, > 0); SGD, Adam, AdamW, ...
        model: a model with masked layers (e.g. of `ssm_keras.supermask`).
        weight_decay: the paper's weight decay (e.g. 5e-4), in [0, 1): the
            scores shrink by `weight_decay * lr_t / lr_0` a step.

    Returns:
        `optimizer` (made from its name), for
        `model.compile(optimizer=decay_scores_only(...))`.

    Raises:
        TypeError, ValueError: a weight decay that is not a number in
            [0, 1), an unknown optimiser, one that has already been used or
            whose learning rate is not positive, a model without masked
            layers, or one whose masked layers are not built yet (a
            subclassed model not yet called).
    """
    weight_decay = arguments.number("weight_decay", weight_decay, 0, 1, high_open=True)
    if not isinstance(model, keras.Model):
        raise TypeError(f"decay_scores_only needs the keras.Model whose scores it decays. "
                        f"Received: model={model!r}")
    if not isinstance(optimizer, (str, dict, keras.optimizers.Optimizer)):
        raise TypeError("decay_scores_only needs a Keras optimiser, its name or its config. "
                        f"Received: optimizer={optimizer!r}")
    optimizer = keras.optimizers.get(optimizer)
    inner = applying_optimizer(optimizer)
    if optimizer.built or inner.built:
        raise ValueError("decay_scores_only needs an optimiser that has not been used yet.")
    masked = ssm_layers.masked_layers(model)
    if not masked:
        raise ValueError(f"model {model.name!r} has no masked layers (see ssm_keras.supermask).")
    unbuilt = [layer.name for layer in masked if not layer.built]
    if unbuilt:
        raise ValueError(f"model {model.name!r} has masked layers without weights yet "
                         f"({', '.join(unbuilt)}): call the model on a batch, or build it, "
                         "before decay_scores_only, so that its scores exist.")
    initial_rate = float(inner.learning_rate)  # a variable, or a schedule's tensor
    if not initial_rate > 0:
        raise ValueError("decay_scores_only needs a learning rate > 0 (the decay is "
                         f"weight_decay * lr_t / lr_0). Received: learning_rate={initial_rate}")
    inner.weight_decay = weight_decay / initial_rate if weight_decay else None
    exclude_all_but_scores(inner, model)
    return optimizer


def exclude_all_but_scores(optimizer, model):
    """Excludes every trainable variable of `model` but the masked layers'
    scores from the weight decay of `optimizer` (or of the optimiser it
    wraps): when it is made, and again after the model is loaded. What the
    optimiser already excluded (`exclude_from_weight_decay`'s variables and
    names, which a new call of it would replace) stays excluded."""
    optimizer = applying_optimizer(optimizer)
    others = non_score_variables(model)
    if not others:
        return
    excluded = set(getattr(optimizer, "_exclude_from_weight_decay", None) or ())
    names_pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
    optimizer.exclude_from_weight_decay(var_list=others)
    optimizer._exclude_from_weight_decay |= excluded
    optimizer._exclude_from_weight_decay_pattern = names_pattern


def non_score_variables(model):
    """The trainable variables of `model` other than its masked layers' scores."""
    scores = {id(layer.scores_variable(name)) for layer, name in ssm_layers.masked_kernels(model)}
    return [variable for variable in model.trainable_variables if id(variable) not in scores]


class VariableDecay(float):
    """An optimiser's `weight_decay` that a traced step reads from a variable.

    It is the float `value` wherever Keras reads it in Python (the
    optimiser's config, and so the saved model), and converts to
    `variable`'s value (float32, as the scores) inside a step, where the
    optimiser computes `v -= lr_t * cast(wd_k) * v`. The variable holds
    `float32(value)`, the constant a plain float is cast to; as it is no
    constant, TensorFlow's graph optimiser no longer reorders the product
    around it, which can round a score differently in its last bit. Copies
    and pickles are plain floats; an optimiser made in memory from the
    config (`from_config`) holds this object until `steer_decay` gives it
    a variable of its own (a saved model holds the float).
    """

    def __new__(cls, value, variable, optimizer, compiled):
        decay = super().__new__(cls, value)
        decay.variable = variable
        decay.optimizer = weakref.ref(optimizer)  # the one whose steps read `variable`
        decay.compiled = compiled  # the optimiser's decay before it was first steered
        return decay

    def __tf_tensor__(self, dtype=None, name=None):
        value = tf.convert_to_tensor(self.variable, name=name)
        return value if dtype in (None, value.dtype) else tf.cast(value, dtype)

    def __reduce__(self):
        return float, (float(self),)


def compiled_decay(optimizer):
    """The decay `wd_k` (Keras' sense) `optimizer` (or the one it wraps) was
    compiled with, before any `steer_decay`; 0 for none."""
    decay = applying_optimizer(optimizer).weight_decay
    return float(getattr(decay, "compiled", decay) or 0.0)


def steer_decay(model, keras_decay):
    """Sets the decoupled decay `wd_k` (Keras' sense, `weight_decay / lr_0`)
    of `model`'s optimiser (of the one it wraps) for the steps that follow.

    The first call for an optimiser puts a `VariableDecay` on it (its
    variable made in the model's distribution strategy) and has Keras trace
    the training step again, once; later calls assign the variable, and the
    traced step (an XLA cluster included) runs on unchanged.
    """
    optimizer = applying_optimizer(model.optimizer)
    decay = optimizer.weight_decay
    if isinstance(decay, VariableDecay) and decay.optimizer() is optimizer:
        decay.variable.assign(keras_decay)
        optimizer.weight_decay = VariableDecay(keras_decay, decay.variable, optimizer,
                                               decay.compiled)
        return
    with model.distribute_strategy.scope():
        variable = tf.Variable(keras_decay, trainable=False, dtype="float32",
                               name="score_weight_decay")
    compiled = decay.compiled if isinstance(decay, VariableDecay) else decay
    optimizer.weight_decay = VariableDecay(keras_decay, variable, optimizer, compiled)
    model.make_train_function(force=True)
