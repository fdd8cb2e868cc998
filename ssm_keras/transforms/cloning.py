"""Copying a functional or Sequential model layer by layer, nested models included."""

import inspect

import keras


def _is_functional_or_sequential(model):
    """Whether `clone_model` can copy `model` layer by layer: a Sequential or
    a functional model (Keras' class `Functional`, or a subclass of it)."""
    return isinstance(model, keras.Sequential) or any(
        cls.__name__ == "Functional" for cls in type(model).__mro__
    )


def check_copyable(model, caller):
    """Refuses, in one `ValueError` naming `caller` (e.g. "bake"), a model
    that `copy_model` cannot copy: not a `keras.Model`, not built, or
    subclassed (itself or a sub-model)."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"{caller} takes a keras.Model. Received: {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"{caller} needs a built model, and {model.name!r} is not built: give the "
            "Sequential a keras.Input, or call model.build(input_shape) first.")
    _check_functional_or_sequential(model)


def _check_functional_or_sequential(model, what="model"):
    if not _is_functional_or_sequential(model):
        raise ValueError(
            f"{what} {model.name!r} is a subclassed keras.Model "
            f"({type(model).__name__}), whose layers keras.models.clone_model "
            "cannot see; build it as a functional or Sequential model, or use the "
            "masked layers (ssm_keras.layers) in it directly."
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_functional_or_sequential(layer, what="sub-model")


def copy_weights_in_order(layer, new_layer):
    """`new_layer.set_weights(layer.get_weights())`: `copy_model`'s default."""
    new_layer.set_weights(layer.get_weights())


def copy_model(model, convert, copy_weights=copy_weights_in_order):
    """`keras.models.clone_model(model, clone_function=convert, recursive=True)`,
    its weights copied as Keras' loader restores a model's.

    `convert(layer)` returns the new layer for each leaf layer of `model`
    (nested functional and Sequential models are copied around their
    leaves; a layer used twice is converted once). A layer frozen with
    `trainable=False` is frozen in the copy too, sublayers included (Keras
    builds a frozen `MultiHeadAttention`'s projections trainable when it
    makes them from its config). Then `copy_weights(old layer, new layer)`
    is called for every leaf layer, in the order `convert` saw them (a
    functional model's graph may also hold operations that are not layers,
    e.g. `keras.ops.add` applied to its tensors; they are copied but hold
    no weights), and the adapted normalizations derive their statistics
    from the copied variables (`refresh_normalizations`).

    Returns:
        The new model.
    """
    pairs = []

    def recording_convert(layer):
        new_layer = convert(layer)
        if isinstance(layer, keras.layers.Layer):
            pairs.append((layer, new_layer))
        return new_layer

    clone = keras.models.clone_model(model, clone_function=recording_convert, recursive=True)
    for layer, new_layer in pairs:
        if not layer.trainable:
            freeze(new_layer)
    for layer, new_layer in pairs:
        copy_weights(layer, new_layer)
    return refresh_normalizations(clone)


def freeze(layer):
    """`layer.trainable = False` for `layer` and every sublayer.

    Keras' setter does this, but on TensorFlow an assignment of the value an
    attribute has is skipped: a layer made from a config with
    `trainable=False` keeps the trainable sublayers its build made. The
    setter is called on each layer directly.
    """
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        keras.layers.Layer.trainable.fset(sublayer, False)


def weightless(layer):
    """Whether `layer` is a layer without weights (an activation, pooling,
    `Flatten`, `Dropout`, a `Lambda`): a copy of a model needs no weights
    copied for it (`weightless_copy`). (An operation of a functional graph
    that is not a layer, e.g. a `keras.ops.add`, is copied by Keras.)"""
    return isinstance(layer, keras.layers.Layer) and not layer.weights


def weightless_copy(layer):
    """A `weightless` layer for a copy of its model: `remade`, so that each
    model holds a layer of its own. A layer shared by two models answers
    `layer.output` (and `input`) with the graph it was called in first, so
    in a copy that shared its `Flatten`,
    `keras.Model(copy.input, copy.get_layer("flatten").output)` fails.
    A layer its config cannot make again (a custom layer without a
    complete `get_config`) is shared instead."""
    try:
        return remade(layer)
    except (TypeError, ValueError, NotImplementedError):
        return layer


def layer_config(layer, **changes):
    """`layer.get_config()` with `changes`, and with the layer's name where
    a `get_config` of its own leaves it out (Keras' base config holds it)
    and its class takes one: a copy made from it keeps the name."""
    config = {**layer.get_config(), **changes}
    if "name" not in config and _takes_name(type(layer)):
        config["name"] = layer.name
    return config


def _takes_name(layer_class):
    """Whether `layer_class(...)` takes a `name` (by name or in `**kwargs`)."""
    try:
        parameters = inspect.signature(layer_class.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(parameter.name == "name" or parameter.kind is parameter.VAR_KEYWORD
               for parameter in parameters)


def remade(layer, **changes):
    """A new, unbuilt layer like `layer`: its class made from its config
    with `changes` (e.g. `dtype="float32"`). A `Lambda` is made around its
    live function, output shape and mask instead of their serialised code,
    which Keras refuses to deserialise in safe mode."""
    config = layer_config(layer, **changes)
    if isinstance(layer, keras.layers.Lambda):
        return type(layer)(**{**config, "function": layer.function, "mask": layer.mask,
                              "output_shape": layer._output_shape,
                              "arguments": layer.arguments})
    return type(layer).from_config(config)


def leaf_layers(model):
    """The layers of `model`, nested models replaced by their layers, each
    once, in order: the layers `copy_model` converts. Layers held inside a
    layer (a `MultiHeadAttention`'s projections) are not listed; the walk
    that reaches them is `_flatten_layers` (`refresh_normalizations`)."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update((id(inner), inner) for inner in leaf_layers(layer))
        else:
            found[id(layer)] = layer
    return list(found.values())


def refresh_normalizations(model):
    """Derives again, from their `adapt_mean` and `adapt_variance`
    variables, the mean and variance each adapted `keras.layers.Normalization`
    of `model` computes with. A copy made from the layer's config derives
    them from the variables' initial values (0 and 1) as it is built, and
    setting the variables does not update them; Keras' loader calls
    `finalize_state` after it restores them, as this does. Returns `model`."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Normalization):  # also inside a layer
            layer.finalize_state()
    return model


def in_float32(model):
    """`model` with every layer computing in float32, weights shared by value.

    A model trained under a mixed-precision policy (`mixed_bfloat16`) keeps
    its variables in float32 but computes in bfloat16, and saving it keeps
    that policy. Exports and shipped files are meant for any processor, so
    they compute in float32: the copy holds the same variables, and its
    outputs are the float32 ones (`W0 * m` is exact in float32). A model
    whose layers are all float32 is returned as it is.
    """
    if all(layer.dtype_policy.name == "float32" for layer in leaf_layers(model)):
        return model

    def in_float32_layer(layer):
        if weightless(layer) and layer.dtype_policy.name == "float32":
            return weightless_copy(layer)
        return remade(layer, dtype="float32")

    return copy_model(model, in_float32_layer)
