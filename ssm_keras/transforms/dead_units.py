"""Dead units removed from a baked model, leaving its outputs unchanged.

A trained signed supermask keeps 1-4% of the weights, and many hidden units
(dense units, conv channels) end up with all incoming or all outgoing
weights hidden. `prune_dead_units(baked)` returns a smaller stock Keras
model without them, and a per-layer report of what each layer lost.

The layers whose units can go are the stock layers whose registry entry
(`ssm_keras.layers.registry`) names their `output_units`: `Dense` and
`Conv1D` / `Conv2D` / `Conv3D` (channels last, one group), with a kernel
`(..., inputs, units)`. Each such layer `P` whose output reaches exactly one
next such layer `C` through per-channel layers only (batch norm,
activations, pooling, dropout, and a `Flatten` before a dense `C`) is a
*producer*; its unit `u` is removed when

- its outgoing weights are zero, `V[rows(u)] = 0` (`V` the kernel of `C`,
  `rows(u)` the inputs of `C` that `u` feeds: one for a dense or global-pooled
  chain, one per position after `Flatten`, one per kernel tap for a conv):
  `u` does not reach `C`; or
- its incoming weights are zero, `W[..., u] = 0`: `u` emits the constant
  `k_u = chain(act(b_u))` whatever the input (`b_u` its bias, 0 without one;
  `chain` the batch norm, activations and pooling between `P` and `C`, at
  inference). If `k_u = 0` it is removed; otherwise its contribution is folded
  into `C`'s bias, `b_C += sum_i k_u[i] V[rows(u)[i]]`, when `C` has a bias
  and the contribution is the same at every output position (always for a
  dense `C`; for a conv `C`, when `k_u` is the same at every position and
  `C` pads nothing: `padding="valid"` or a kernel of size 1). Else `u` stays.

Removing units of one layer can kill units of its neighbours (a unit of `C`
whose only inputs were removed), so the passes repeat until nothing
changes. A layer keeps at least one unit. Units of the output layer, of
layers whose output branches (residual `Add`, `Concatenate`, several
consumers) or reaches an unsupported layer, and of a layer called more
than once (shared by branches) or feeding one, stay.

The pruned model is checked against the original on `check_inputs`
(default: random raw pixels in [0, 255]):

    allclose(pruned(x), baked(x), rtol=RTOL, atol=ATOL)

with `RTOL = 1e-5`, `ATOL = 1e-6` (only float32 round-off differs: removed
weights are zeros, folded biases change the order of a sum).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from ssm_keras.errors import ExportError
from ssm_keras.layers import registry
from ssm_keras.transforms import cloning

RTOL = 1e-5
ATOL = 1e-6
ELEMENTWISE = (
    keras.layers.Activation, keras.layers.ELU, keras.layers.ReLU, keras.layers.LeakyReLU,
    keras.layers.Dropout,
)
PER_CHANNEL = (
    *ELEMENTWISE, keras.layers.BatchNormalization,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D, keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D,
)
_ACROSS_UNITS = ("softmax", "log_softmax", "sparsemax")  # activations that mix a layer's units


class PruningError(ExportError):
    """The pruned model's outputs differ from the original's (a bug, never expected)."""


@dataclasses.dataclass
class _Chain:
    """What lies between a producer and its consumer."""

    producer: keras.layers.Layer
    layers: list  # per-channel layers, then possibly a Flatten
    consumer: keras.layers.Layer
    flatten_shape: tuple | None  # the positions (H, W, ...) a Flatten flattens


def _acts_per_unit(layer):
    """Whether the layer's activation (if any) acts on each unit alone."""
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") not in _ACROSS_UNITS


def _channels_last(layer):
    """Whether the layer works on channels along the last axis."""
    data_format = getattr(layer, "data_format", "channels_last")
    axis = getattr(layer, "axis", -1)
    return data_format == "channels_last" and (
        not isinstance(layer, keras.layers.BatchNormalization)
        or list(np.atleast_1d(axis)) in ([-1], [len(layer.input.shape) - 1])
    )


def _output_units(layer):
    """The constructor argument counting the units of a stock layer whose
    units may be removed (its registry entry's `output_units`), or None."""
    masked = registry.masked_type(type(layer))
    return None if masked is None else masked.output_units


def _supported_weighted(layer):
    """A stock layer with `_output_units` whose weights are
    `[kernel(, bias)]` (no LoRA, no quantisation, no groups, channels last)."""
    return (_output_units(layer) is not None
            and not getattr(layer, "lora_enabled", False) and layer.quantization_mode is None
            and getattr(layer, "groups", 1) == 1
            and getattr(layer, "data_format", "channels_last") == "channels_last")


def _is_dense(layer):
    """Whether a supported layer's kernel is a matrix `(inputs, units)`."""
    return len(layer.kernel.shape) == 2


def _calls(layer):
    """The nodes of `layer`: one per call, in every graph it was called in
    (Keras' `layer.input` and `layer.output` give only the first)."""
    return layer._inbound_nodes


def _single_node_output(layer):
    """The layer's output tensor, or None unless it was called exactly once
    (a layer shared by two branches feeds both: its units cannot go)."""
    return layer.output if len(_calls(layer)) == 1 else None


def _consumers(model):
    """`{id(tensor): [layers that take it]}` over every call of the model's layers."""
    consumers = {}
    for layer in model.layers:
        for node in _calls(layer):
            for tensor in keras.tree.flatten(node.input_tensors):
                consumers.setdefault(id(tensor), []).append(layer)
    return consumers


def _chains(model):
    """`{producer name: _Chain}` for every producer whose units may go."""
    consumers = _consumers(model)
    outputs = {id(tensor) for tensor in model.outputs}
    chains = {}
    for producer in model.layers:
        if not (_supported_weighted(producer) and _acts_per_unit(producer)):
            continue
        tensor = _single_node_output(producer)
        chain, flatten_shape = [], None
        while tensor is not None and id(tensor) not in outputs:
            users = consumers.get(id(tensor), [])
            if len(users) != 1 or _single_node_output(users[0]) is None:
                break
            layer = users[0]
            if _output_units(layer) is not None:
                if _supported_weighted(layer) and len(tensor.shape) == len(layer.kernel.shape):
                    chains[producer.name] = _Chain(producer, chain, layer, flatten_shape)
                break
            if isinstance(layer, keras.layers.Flatten):
                if (flatten_shape is not None or len(tensor.shape) < 3
                        or None in tensor.shape[1:-1] or layer.data_format != "channels_last"):
                    break
                flatten_shape = tuple(tensor.shape[1:-1])
            elif not (isinstance(layer, PER_CHANNEL) and _channels_last(layer)
                      and _acts_per_unit(layer)):
                break
            elif flatten_shape is not None and not isinstance(layer, ELEMENTWISE):
                break
            chain.append(layer)
            tensor = layer.output
    return chains


class _Weights:
    """The model's weights as NumPy arrays, sliced as units go."""

    def __init__(self, model):
        self.arrays = {layer.name: [np.array(w) for w in layer.get_weights()]
                       for layer in model.layers}

    def kernel(self, layer):
        return self.arrays[layer.name][0]

    def bias(self, layer):
        """The bias array, or None for a layer without one."""
        return self.arrays[layer.name][1] if layer.use_bias else None

    def units(self, layer):
        return self.kernel(layer).shape[-1]

    def remove_units(self, chain, units):
        """Deletes `units` of the producer: its kernel columns and bias
        entries, the per-channel weights on the way, the consumer's rows."""
        rows = _rows(chain, self.units(chain.producer), units)
        for layer in (chain.producer, *chain.layers):
            self.arrays[layer.name][:] = [
                np.delete(array, units, axis=-1) for array in self.arrays[layer.name]]
        consumer = self.arrays[chain.consumer.name]
        consumer[0] = np.delete(consumer[0], rows, axis=_input_axis(consumer[0]))


def _input_axis(kernel):
    """The input-channel axis of a dense `(in, out)` or conv `(*window, in, out)` kernel."""
    return kernel.ndim - 2


def _rows(chain, channels, units):
    """The consumer's inputs (along its kernel's input axis) that `units`
    of the producer's `channels` feed: the units themselves, or after a
    `Flatten` of `(*positions, channels)` the flat indices `p * channels + u`."""
    units = np.asarray(units, dtype=int)
    if chain.flatten_shape is None:
        return units
    positions = np.arange(int(np.prod(chain.flatten_shape)))
    return (positions[:, None] * channels + units[None, :]).ravel()


def _outgoing(chain, weights, unit):
    """The slice of the consumer's kernel that one producer unit feeds."""
    kernel = weights.kernel(chain.consumer)
    rows = _rows(chain, weights.units(chain.producer), [unit])
    return np.take(kernel, rows, axis=_input_axis(kernel))


def _chain_constants(chain, weights):
    """What the producer's units emit when their inputs are ignored: the
    chain applied to `act(bias)`, shaped as the chain's output before any
    `Flatten` (batch 1); None when a spatial size is unknown."""
    producer = chain.producer
    shape = (1, *producer.output.shape[1:-1], weights.units(producer))
    if None in shape:
        return None
    bias = weights.bias(producer)
    values = np.broadcast_to(np.zeros(shape[-1], np.float32) if bias is None else bias, shape)
    values = producer.activation(keras.ops.convert_to_tensor(values, "float32"))
    for layer in chain.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = _batch_norm(layer, weights.arrays[layer.name], values)
        elif not isinstance(layer, keras.layers.Flatten):
            values = layer(values, training=False)
    return np.asarray(values)


def _batch_norm(layer, arrays, values):
    """Inference batch norm with the (sliced) weights `arrays`."""
    arrays = list(arrays)
    gamma = arrays.pop(0) if layer.scale else None
    beta = arrays.pop(0) if layer.center else None
    mean, variance = arrays
    return keras.ops.batch_normalization(values, mean, variance, axis=-1, offset=beta,
                                         scale=gamma, epsilon=layer.epsilon)


def _folds_exactly(chain, constant):
    """Whether a constant channel's effect on the consumer is a bias shift."""
    consumer = chain.consumer
    if not consumer.use_bias:
        return False
    if _is_dense(consumer):
        return True
    spatially_constant = bool(np.all(constant == constant.flat[0]))
    no_padding = consumer.padding == "valid" or set(consumer.kernel_size) == {1}
    return spatially_constant and no_padding


def _fold(chain, weights, constant, outgoing):
    """`b_C += sum_i k[i] V[rows(u)[i]]`: a constant unit's share of the consumer."""
    bias = weights.bias(chain.consumer)
    if _is_dense(chain.consumer):
        bias += np.tensordot(constant.ravel(), outgoing, axes=1).astype(bias.dtype)
    else:  # spatially constant input channel of a conv that pads nothing
        taps = tuple(range(outgoing.ndim - 1))
        bias += (constant.flat[0] * outgoing.sum(axis=taps)).astype(bias.dtype)


def _prune_chain(chain, weights):
    """Removes the dead units of one producer: `(removed, folded)` counts."""
    kernel = weights.kernel(chain.producer)
    channels = kernel.shape[-1]
    incoming_dead = ~np.any(kernel.reshape(-1, channels), axis=0)
    constants = _chain_constants(chain, weights) if incoming_dead.any() else None
    removable, folds = [], {}
    for unit in range(channels):
        outgoing = _outgoing(chain, weights, unit)
        if not np.any(outgoing):
            removable.append(unit)
        elif incoming_dead[unit] and constants is not None:
            constant = constants[..., unit]
            if not np.any(constant):
                removable.append(unit)
            elif _folds_exactly(chain, constant):
                removable.append(unit)
                folds[unit] = (constant, outgoing)
    if len(removable) == channels:  # a layer of no units cannot be built: keep one
        folds.pop(removable.pop(0), None)
    for constant, outgoing in folds.values():
        _fold(chain, weights, constant, outgoing)
    if removable:
        weights.remove_units(chain, removable)
    return len(removable), len(folds)


def _pruned_layer(layer, weights):
    """A fresh copy of `layer` (no weights yet) with its remaining units; a
    layer without weights (`cloning.weightless_copy`)."""
    if cloning.weightless(layer):
        return cloning.weightless_copy(layer)
    config = layer.get_config()
    if _supported_weighted(layer):
        config[_output_units(layer)] = weights.units(layer)
    return layer.__class__.from_config(config)


def _layer_report(layer, pruned_layer, folded):
    before = [np.asarray(w) for w in layer.get_weights()]
    after = [np.asarray(w) for w in pruned_layer.get_weights()]
    entry = {
        "layer": layer.name,
        "class": type(layer).__name__,
        "weights_before": int(sum(w.size for w in before)),
        "weights_after": int(sum(w.size for w in after)),
    }
    if _supported_weighted(layer):
        entry.update(units_before=int(before[0].shape[-1]), units_after=int(after[0].shape[-1]),
                     folded_into_next_bias=folded)
    entry["units_removed"] = entry.get("units_before", 0) - entry.get("units_after", 0)
    entry["weights_removed"] = entry["weights_before"] - entry["weights_after"]
    return entry


def default_check_inputs(model, count=8, seed=0):
    """`count` random raw-pixel inputs in [0, 255] of the model's input
    shape, for a model of one floating-point input of known shape."""
    if len(model.inputs) != 1 or None in model.input_shape[1:]:
        raise ExportError(f"model {model.name!r} has not one input of known shape; "
                          "pass check_inputs to prune_dead_units")
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise ExportError(f"model {model.name!r} takes {dtype} inputs (tokens or indices, not "
                          "pixels); pass check_inputs to prune_dead_units")
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, *model.input_shape[1:])).astype(np.float32)


def prune_dead_units(model, check_inputs=None):
    """A copy of a baked (stock Keras) model without its dead units.

    Args:
        model: a built Sequential or functional model of stock layers.
        check_inputs: inputs on which the outputs must stay equal (default:
            `default_check_inputs`).

    Returns:
        `(pruned_model, report)`: `report` is a list, per layer with weights,
        of `{layer, class, weights_before, weights_after, weights_removed,
        units_removed}` (and for dense and conv layers `units_before`,
        `units_after`, `folded_into_next_bias`).

    Raises:
        PruningError: the pruned model's outputs differ from the model's
            beyond `RTOL`, `ATOL` on `check_inputs`.
    """
    chains = _chains(model)
    weights = _Weights(model)
    folded = {name: 0 for name in chains}
    changed = True
    while changed:
        changed = False
        for name, chain in chains.items():
            removed, folds = _prune_chain(chain, weights)
            folded[name] += folds
            changed = changed or removed > 0
    pruned = keras.models.clone_model(
        model, clone_function=lambda layer: _pruned_layer(layer, weights))
    for layer in model.layers:
        if weights.arrays[layer.name]:
            pruned.get_layer(layer.name).set_weights(weights.arrays[layer.name])
    cloning.refresh_normalizations(pruned)
    _check_outputs(model, pruned, check_inputs)
    report = [
        _layer_report(layer, pruned.get_layer(layer.name), folded.get(layer.name, 0))
        for layer in model.layers if layer.get_weights()
    ]
    return pruned, report


def _cause(error):
    """The line of a Keras error that says what went wrong (Keras puts "Exception
    encountered when calling ..." before it and the arguments after it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("Exception encountered",
                                                             "Arguments received", "•"))]
    return causes[0] if causes else type(error).__name__


def _check_outputs(model, pruned, check_inputs):
    if check_inputs is None:
        check_inputs = default_check_inputs(model)
    try:
        expected = keras.tree.flatten(model(check_inputs, training=False))
    except (ValueError, TypeError, IndexError, tf.errors.OpError) as error:
        raise ExportError(f"check_inputs do not fit model {model.name!r} ({_cause(error)}); "
                          "pass what the model takes (a batch of its inputs)") from None
    actual = keras.tree.flatten(pruned(check_inputs, training=False))
    for before, after in zip(expected, actual):
        before, after = np.asarray(before), np.asarray(after)
        if not np.allclose(after, before, rtol=RTOL, atol=ATOL):
            difference = float(np.max(np.abs(after - before)))
            raise PruningError(
                f"removing the dead units of {model.name!r} changed its outputs by up to "
                f"{difference:.3g} (tolerance rtol={RTOL:g}, atol={ATOL:g})")


def total_removed(report):
    """`(units, weights)` removed over all layers of a report."""
    return (sum(entry["units_removed"] for entry in report),
            sum(entry["weights_removed"] for entry in report))


def format_report(report):
    """One line per layer that lost units or weights, and the totals."""
    lines = [
        f"{entry['layer']}: "
        + (f"{entry['units_before']:,} -> {entry['units_after']:,} units, "
           if "units_before" in entry else "")
        + f"{entry['weights_before']:,} -> {entry['weights_after']:,} weights"
        for entry in report if entry["weights_removed"]
    ]
    units, removed_weights = total_removed(report)
    before = sum(entry["weights_before"] for entry in report)
    lines.append(f"dead units removed: {units:,} units, {removed_weights:,} of {before:,} weights")
    return lines
