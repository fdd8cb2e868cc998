"""Masked composite layers: a layer of any type with the registered layers inside it masked.

keras_hub's `TransformerEncoder`, `ViTEncoder`, `ViTEncoderBlock`, `MLP`
and `ViTPatchingAndEmbedding`, like many users' layers, are layers that make
`Dense`, `EinsumDense`, `MultiHeadAttention`, `Conv2D` or `Embedding` layers
in their `build` and call them. `keras.models.clone_model` sees only the
composite layer, so `supermask` wraps it: `MaskedComposite(layer)` builds
`layer` as it was built, then replaces every sublayer of a registered type,
at any depth, by its masked counterpart, built the same way and put in the
same attribute (or list entry) and the same place among the parent's
sublayers. The composite's own code then calls the masked layers: it
computes with `W0 * m(s)` for every kernel inside it.

- A masked sublayer is seeded as `<composite>/<path>`, the names of the
  layers on the way down (`transformer_layer_0/self_attention_layer/query`,
  `vit_encoder/transformer_block_1/mlp/dense_1`), which is also its
  `mask_scope` in compact files and records.
- Every other variable inside (layer norms, a class token) is frozen; the
  masked sublayers' biases train only with `train_bias`.
- The config holds the wrapped layer's config as it was before masking,
  without entries its constructor refuses when the layer made without them
  reports the same config (keras_hub's `ViTPatchingAndEmbedding` reports the
  `num_patches` and `num_positions` it derives), and its build config: made
  from its config, a `MaskedComposite` is built and masked at once, so
  compact files and `keras.saving` read it back (the wrapped layer's class
  must be registered with Keras: import its package first).

What cannot be masked exactly is refused (`unmaskable_reason`): a sublayer
with a kernel of an unregistered type, a model inside the layer, a sublayer
held in a tuple or a nested container (a list of lists), two sublayers of
one path, a registered sublayer with a
kernel regulariser, constraint, LoRA or quantisation, or a config that does
not make the layer again. Keras' own wrappers
(`TimeDistributed`, `Bidirectional`) are not composites here.
"""

import contextlib
import inspect

import keras

from ssm_keras import initializers as ssm_initializers
from ssm_keras.layers import base, registry

_NOT_COMPOSITES = (keras.Model, keras.layers.Wrapper, keras.layers.Bidirectional)


def _sublayers(layer):
    """`(path, parent, sublayer)` of every layer inside `layer`, parents
    before their sublayers, not looking inside registered layers; the path
    joins the names on the way down."""
    for sublayer in layer._layers:
        yield sublayer.name, layer, sublayer
        if registry.masked_class_of(sublayer) is None:
            for path, parent, inner in _sublayers(sublayer):
                yield f"{sublayer.name}/{path}", parent, inner


def is_composite(layer):
    """Whether `layer` is of no registered type and holds a layer of one (not
    a model, nor a Keras wrapper such as `TimeDistributed`)."""
    return (registry.masked_class_of(layer) is None
            and not isinstance(layer, (*_NOT_COMPOSITES, base.MaskedLayer, base.MaskedContainer))
            and any(registry.masked_class_of(sublayer) is not None
                    for _, _, sublayer in _sublayers(layer)))


def _constructor_arguments(cls):
    """The keyword arguments `cls(...)` accepts by name, along the `__init__`s
    that pass `**kwargs` on to their parents."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names.update(parameter.name for parameter in parameters
                     if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                                           parameter.KEYWORD_ONLY))
        if not any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
            break
    return names


def constructor_config(layer):
    """`layer.get_config()` without the entries its constructor refuses, or
    None if the layer made without them reports another config; with the
    layer's name where the constructor takes one (Keras leaves it out of the
    config of a layer whose `__init__` passes `**kw` on under another name
    than `kwargs`; a copy would get another name, and its sublayers'
    variables other keys)."""
    config = layer.get_config()
    accepted = _constructor_arguments(type(layer))
    kept = {key: value for key, value in config.items() if key in accepted}
    if kept != config and type(layer).from_config(kept).get_config() != config:
        return None
    if "name" in accepted:
        kept.setdefault("name", layer.name)
    return kept


def _replaceable(parent, sublayer):
    """Whether `_replace` can put a masked layer wherever `parent` holds
    `sublayer` for its `call`: held in an attribute, or an entry of a list
    or dict attribute, and nowhere else (not in a tuple, nor deeper in a
    container)."""
    values = [value for name, value in vars(parent).items()
              if name != "_layers"]  # the tracker's list, which `call` does not read
    held = any(value is sublayer or (not isinstance(value, tuple)
                                     and any(entry is sublayer for entry in _entries(value)))
               for value in values)
    elsewhere = any((isinstance(value, tuple) and any(entry is sublayer for entry in
                                                      _entries(value)))
                    or any(_holds_deeper(entry, sublayer) for entry in _entries(value))
                    for value in values)
    return held and not elsewhere


def _entries(value):
    """The entries of a list, tuple or dict (its values); `[]` for anything else."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return list(value.values()) if isinstance(value, dict) else []


def _holds_deeper(container, sublayer):
    """Whether `sublayer` is in the list, tuple or dict `container`, at any depth."""
    return any(entry is sublayer or _holds_deeper(entry, sublayer)
               for entry in _entries(container))


def unmaskable_reason(layer, train_bias=False):
    """Why the composite `layer` cannot be masked exactly, or None: one
    clause naming the sublayer and what to do."""
    if constructor_config(layer) is None:
        return (f"its get_config() holds arguments its constructor ({type(layer).__name__}) "
                "refuses, and without them it is made differently; make get_config() return "
                "the constructor's arguments")
    leave = "pass layers= to leave the layer as it is"
    scopes = set()
    for path, parent, sublayer in _sublayers(layer):
        where = f"its sublayer {path!r}"
        if path in scopes:
            return f"two of its sublayers are at {path!r}; give them distinct names"
        scopes.add(path)
        cls = registry.masked_class_of(sublayer)
        if isinstance(sublayer, keras.Model):
            return (f"{where} is a model ({type(sublayer).__name__}), inside which supermask "
                    f"does not mask; {leave}, or build it with the masked layers "
                    "(ssm_keras.layers)")
        if cls is None:
            own = sublayer._trainable_variables + sublayer._non_trainable_variables
            if any(variable.name.endswith("kernel") for variable in own):
                maskable = ", ".join(stock.__name__ for stock, _ in registry.entries())
                return (f"{where} has a kernel and its type {type(sublayer).__name__} has no "
                        f"masked counterpart (maskable: {maskable}); {leave}, or register a "
                        "masked layer for that type (ssm_keras.register)")
            continue
        if not _replaceable(parent, sublayer):
            return (f"{where} is held in a tuple or a nested container, where no masked layer "
                    f"can take its place; {leave}, or hold it only in attributes, lists or "
                    "dicts")
        config = cls.counterpart_config(sublayer)
        reason = base.unmaskable_reason(config, cls.initializer_arguments(),
                                          sublayer.dtype_policy)
        if reason:
            return f"{where}: {reason}"
        for key in ("bias_regularizer", "bias_constraint"):
            if train_bias and config.get(key) is not None:
                return f"{where} has a {key.replace('_', ' ')} and train_bias=True"
    return None


def _replace(parent, old, new):
    """Puts `new` where `parent` holds `old`: in its attributes, their list
    and dict entries, and its list of sublayers (`_layers`, where it keeps
    its place, and with it the order of the parent's weights). The
    parent's tracker, locked since it was built, is not asked."""
    for name, value in list(vars(parent).items()):
        if value is old:
            object.__setattr__(parent, name, new)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if item is old:
                    list.__setitem__(value, index, new)
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                if item is old:
                    dict.__setitem__(value, key, new)


def _freeze_own_variables(layer):
    for variable in layer._trainable_variables:
        variable.trainable = False


@keras.saving.register_keras_serializable(package="ssm_keras")
class MaskedComposite(base.MaskedContainer, keras.layers.Layer):
    """A layer (`layer`) with every registered layer inside it masked.

    Args:
        layer: the layer (unbuilt), or its serialised config.
        layer_build_config: its build config (`layer.get_build_config()` of
            the built layer): it is built and masked at once, as it was
            built, not by a call.
        kernel_initializer: initialiser of every masked kernel's `W0` (an
            `ssm_keras.initializers.get` identifier), or None for each
            sublayer's own.
        **kwargs: the mask arguments (`mask`, `mask_seed`, ...;
            `ssm_keras.layers.base.pop_mask_arguments`) and the base layer's
            (`name` and `dtype` default to `layer`'s; a `dtype` is taken
            with a layer config only, and applies to the layer too, as
            `keras.Model.from_config` and a float32 copy for export pass it).

    It takes and returns what `layer` does.

    Example:

    >>> encoder = keras_hub.layers.TransformerEncoder(32, 4, name="encoder")
    >>> masked = MaskedComposite(encoder, {"input_shape": (None, 10, 16)}, mask_seed=0)
    >>> [leaf.mask_scope for leaf in masked.masked_sublayers][:2]
    ['encoder/self_attention_layer/query', 'encoder/self_attention_layer/key']
    """

    def __init__(self, layer, layer_build_config, kernel_initializer=None, **kwargs):
        arguments = base.pop_mask_arguments(kwargs)
        if isinstance(layer, dict):
            if "dtype" in kwargs:
                layer = {**layer, "config": {**layer["config"], "dtype": kwargs["dtype"]}}
            layer = keras.layers.deserialize(layer)
        elif "dtype" in kwargs:
            raise ValueError("MaskedComposite takes dtype= with a layer config only; make the "
                             "layer with the dtype it should have.")
        if layer.built:
            raise ValueError(f"MaskedComposite takes an unbuilt layer; {layer.name!r} is built. "
                             "Make it from its config.")
        config = constructor_config(layer)
        if config is None:
            raise ValueError(f"cannot make a MaskedComposite of layer {layer.name!r}: "
                             f"{unmaskable_reason(layer)}.")
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self._set_mask_arguments(arguments)
        self.kernel_initializer = (None if kernel_initializer is None
                                   else ssm_initializers.get(kernel_initializer))
        serialized = keras.layers.serialize(layer)
        serialized.pop("build_config", None)
        self._layer_config = {**serialized, "config": config}
        self.layer_build_config = layer_build_config
        self.layer = layer
        self.supports_masking = layer.supports_masking
        layer.build_from_config(layer_build_config)
        self._mask_sublayers(layer, "")
        _freeze_own_variables(layer)
        self.built = True

    @classmethod
    def around(cls, layer, kernel_initializer=None, **kwargs):
        """The masked composite of the built stock `layer`: made from its
        config and built as it is, with new variables."""
        unbuilt = type(layer).from_config(constructor_config(layer))
        return cls(unbuilt, layer.get_build_config(), kernel_initializer, **kwargs)

    @property
    def mask_scope(self):
        """The layer's name: its masked sublayers are seeded as
        `<name>/<path>`."""
        return self.name

    @property
    def masked_sublayers(self):
        """Every masked leaf inside, in order (a masked attention layer's
        projections, a masked recurrent layer's cell)."""
        return [leaf for _, _, sublayer in _sublayers(self.layer)
                for leaf in base.masked_leaves(sublayer)]

    def _masked_copy_of(self, stock):
        """The masked counterpart of a stock sublayer, from its config with
        this layer's mask arguments and kernel initialiser."""
        cls = registry.masked_class_of(stock)
        config = cls.counterpart_config(stock)
        if self.kernel_initializer is not None:
            config.update({argument: self.kernel_initializer
                           for argument in cls.initializer_arguments()})
        return cls.from_config({**config, **self.mask_config()})

    def _mask_sublayers(self, parent, prefix):
        """Replaces the registered layers inside `parent` (at `prefix`) by
        masked ones, and freezes the variables of the others."""
        for stock in list(parent._layers):
            path = f"{prefix}/{stock.name}"
            if registry.masked_class_of(stock) is None:
                self._mask_sublayers(stock, path)
                _freeze_own_variables(stock)
                continue
            if not stock.built:
                raise ValueError(
                    f"cannot supermask layer {self.name!r}: its sublayer {path[1:]!r} is not "
                    "built by its build(); build sublayers in build() to mask them.")
            masked = self._masked_copy_of(stock)
            masked.mask_scope = f"{self.mask_scope}{path}"
            # Variable paths as the stock layer's (`encoder/attention/query/kernel`).
            with contextlib.ExitStack() as scopes:
                for name in f"{self.layer.name}{prefix}".split("/"):
                    scopes.enter_context(keras.name_scope(name))
                masked.build_from_config(stock.get_build_config())
            _replace(parent, stock, masked)

    def call(self, *args, **kwargs):
        return self.layer(*args, **kwargs)

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, *args, **kwargs):
        return self.layer.compute_mask(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "layer": self._layer_config,
                "layer_build_config": self.layer_build_config,
                "kernel_initializer": (None if self.kernel_initializer is None else
                                       keras.initializers.serialize(self.kernel_initializer))}

    def stock_layer(self):
        """A new stock layer like the wrapped one before masking, built the
        same way (with its initial weights)."""
        layer = keras.layers.deserialize(self._layer_config)
        layer.build_from_config(self.layer_build_config)
        return layer
