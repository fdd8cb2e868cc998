"""Copying a functional or Sequential model layer by layer, nested models included."""

import keras


def clone_layers(model, convert):
    """`keras.models.clone_model(model, clone_function=convert, recursive=True)`.

    `convert(layer)` returns the new layer for each leaf layer of `model`
    (nested functional and Sequential models are copied around their
    leaves; a layer used twice is converted once).

    Returns:
        `(clone, pairs)`: the new model, and `(old layer, new layer)` for every
        leaf layer, in the order `convert` saw them, so that the caller can
        copy weights. (A functional model's graph may also hold operations
        that are not layers, e.g. `keras.ops.add` applied to its tensors;
        they are copied but not listed: they hold no weights.)
    """
    pairs = []

    def recording_convert(layer):
        new_layer = convert(layer)
        if isinstance(layer, keras.layers.Layer):
            pairs.append((layer, new_layer))
        return new_layer

    clone = keras.models.clone_model(model, clone_function=recording_convert, recursive=True)
    return clone, pairs


def leaf_layers(model):
    """The layers of `model`, nested models replaced by their layers, each
    once, in order."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update((id(inner), inner) for inner in leaf_layers(layer))
        else:
            found[id(layer)] = layer
    return list(found.values())
