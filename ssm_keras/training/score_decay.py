"""The signed-supermask paper's weight decay on the scores, for any Keras optimiser.

The paper's optimiser shrinks every score after each step by `wd_t * s`, with
`wd_t = weight_decay * lr_t / lr_0` following the learning-rate schedule.
Keras 3 optimisers decay decoupled, `v -= lr_t * wd_k * v` for every
trainable variable `v`; the two agree for `wd_k = weight_decay / lr_0`
applied to the scores alone, which is what `decay_scores_only` sets.
"""

import keras

from ssm_keras import layers as ssm_layers


def decay_scores_only(optimizer, model, weight_decay):
    """Sets the paper's decoupled weight decay on `model`'s scores only.

    Trained biases, batch-norm parameters, kernels (`mask_then_weights`) and
    plain layers are excluded from the decay.

    Args:
        optimizer: a Keras optimiser not yet used (its learning rate now is
            `lr_0`); SGD, Adam, AdamW, ...
        model: a model with masked layers (e.g. of `ssm_keras.supermask`).
        weight_decay: the paper's weight decay (e.g. 5e-4), >= 0.

    Returns:
        `optimizer`, for `model.compile(optimizer=decay_scores_only(...))`.

    Raises:
        ValueError: a negative weight decay, an optimiser that has already
            been built, or a model without masked layers.
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0. Received: weight_decay={weight_decay}")
    if optimizer.built:
        raise ValueError("decay_scores_only needs an optimiser that has not been used yet.")
    masked = ssm_layers.masked_layers(model)
    if not masked:
        raise ValueError(f"model {model.name!r} has no masked layers (see ssm_keras.supermask).")
    initial_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    optimizer.weight_decay = weight_decay / initial_rate if weight_decay else None
    exclude_all_but_scores(optimizer, model)
    return optimizer


def exclude_all_but_scores(optimizer, model):
    """Excludes every trainable variable of `model` but the masked layers'
    scores from `optimizer`'s weight decay (before the optimiser is built)."""
    scores = {id(layer.scores_variable(name)) for layer, name in ssm_layers.masked_kernels(model)}
    others = [variable for variable in model.trainable_variables if id(variable) not in scores]
    if others:
        optimizer.exclude_from_weight_decay(var_list=others)
