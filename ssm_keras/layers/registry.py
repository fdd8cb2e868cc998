"""The registry of masked layers: each stock Keras layer type with its masked type.

One table, read by `ssm_keras.supermask` (stock type -> masked type),
`ssm_keras.bake` (masked type -> stock type), dead-unit removal and the FLOP
arithmetic. The package registers its masked layers here (see
`ssm_keras.layers`); `register` adds a user's:

    @keras.saving.register_keras_serializable(package="my_project")
    @ssm_keras.register
    class MaskedScaledDense(ssm_keras.MaskedLayer, ScaledDense):
        masked_kernels = {"kernel": "kernel_initializer"}

Types are matched exactly: a subclass of a registered stock type may compute
something else, so it is not masked as its parent, unless its class body
defines no method, property or public attribute (keras_hub's
`ReversibleEmbedding` is Keras' under another name); `bake` then gives the
parent.
"""

import keras

from ssm_keras.layers.base import MaskedContainer, MaskedLayer

_MASKED = {}  # stock type -> masked type
_STOCK = {}  # masked type -> stock type


def _stock_base(masked_class):
    """The stock Keras layer a masked class subclasses: the first class in
    its MRO that is a Keras layer and not a mask mixin."""
    for base in masked_class.__mro__[1:]:
        if (issubclass(base, keras.layers.Layer)
                and not issubclass(base, (MaskedLayer, MaskedContainer))):
            return base
    raise TypeError(f"{masked_class.__name__} subclasses no Keras layer")


def register(masked_class=None, *, stock=None):
    """Registers a masked layer class as the counterpart of a stock layer type.

    Usable as `@register` or `@register(stock=keras.layers.X)`.

    Args:
        masked_class: a subclass of `MaskedLayer` (or `MaskedContainer`) and
            of a Keras layer.
        stock: the stock type it masks: the Keras layer it subclasses
            (`keras.layers.Dense` for
            `class MaskedDense(MaskedLayer, keras.layers.Dense)`, the
            default) or a subclass of that layer.

    Returns:
        `masked_class` (or, without it, the decorator).

    Raises:
        TypeError: `masked_class` is not a masked layer class, or the stock
            type is not a Keras layer type (a subclass of `keras.layers.Layer`)
            of which `masked_class` computes the layers.
        ValueError: a `MaskedLayer` that names no `masked_kernels`, or the
            stock type already has another masked type.
    """

    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, (MaskedLayer, MaskedContainer))):
            raise TypeError(
                "register takes a subclass of ssm_keras.MaskedLayer and a Keras layer. "
                f"Received: {cls!r}")
        computes_as = _stock_base(cls)
        if computes_as is keras.layers.Layer:
            raise TypeError(
                f"{cls.__name__} subclasses no Keras layer type; a masked layer is "
                "class MaskedX(ssm_keras.MaskedLayer, keras.layers.X)")
        stock_class = computes_as if stock is None else stock
        if not (isinstance(stock_class, type) and issubclass(stock_class, keras.layers.Layer)):
            raise TypeError(
                f"register masks a Keras layer type, a subclass of keras.layers.Layer; "
                f"{cls.__name__} would mask {stock_class!r}")
        if not issubclass(stock_class, computes_as):
            raise TypeError(
                f"{cls.__name__} computes as {computes_as.__name__}, so it masks "
                f"{computes_as.__name__} or a subclass of it, not {stock_class.__name__}")
        if issubclass(cls, MaskedLayer) and not cls.masked_kernels:
            raise ValueError(
                f"{cls.__name__} names no masked_kernels: its class body must map each "
                "masked weight to the constructor argument of its initialiser, e.g. "
                "masked_kernels = {'kernel': 'kernel_initializer'}")
        if _MASKED.get(stock_class, cls) is not cls:
            raise ValueError(
                f"{stock_class.__name__} is registered already, with "
                f"{_MASKED[stock_class].__name__}; cannot register {cls.__name__} for it")
        _MASKED[stock_class] = cls
        _STOCK[cls] = stock_class
        return cls

    return add if masked_class is None else add(masked_class)


def _renames_its_parent(cls):
    """Whether `cls` has one parent and its class body defines no method,
    property or public attribute: it computes what its parent computes."""
    return len(cls.__bases__) == 1 and not any(
        callable(value) or isinstance(value, (property, classmethod, staticmethod))
        or not name.startswith("_")
        for name, value in vars(cls).items()
        if not (name.startswith("__") and name.endswith("__")))


def masked_type(stock_type):
    """The masked type registered for `stock_type`, or for the parent it
    renames (`_renames_its_parent`); None if there is none."""
    while stock_type not in _MASKED and _renames_its_parent(stock_type):
        stock_type = stock_type.__bases__[0]
    return _MASKED.get(stock_type)


def stock_type(masked_class):
    """The stock type of a registered masked type, or None."""
    return _STOCK.get(masked_class)


def entries():
    """`(stock type, masked type)` of every registration, in order."""
    return tuple(_MASKED.items())


def masked_class_of(layer):
    """The masked class of `layer`, a stock or masked instance of a
    registered type; None for any other layer."""
    return type(layer) if type(layer) in _STOCK else masked_type(type(layer))


def kernel_leaves(layer):
    """`(scope, leaf, leaf masked class)` of every leaf of a registered
    layer, stock or masked: the layer itself (scope: its name), or a
    container's sublayers (scope `container/sublayer`); empty for any other
    layer."""
    cls = masked_class_of(layer)
    if cls is None:
        return []
    if issubclass(cls, MaskedContainer):
        return [(f"{layer.name}/{sublayer.name}", sublayer, masked_class_of(sublayer))
                for sublayer in cls.sublayers_of(layer)]
    return [(layer.name, layer, cls)]


def leaf_kernels(leaf, cls):
    """The names of the kernels the masked class `cls` masks in `leaf`, a
    stock or masked instance: a masked one's own list (a tied
    `ReversibleEmbedding` has no `reverse_embeddings`), else those of the
    class that `leaf` has."""
    if isinstance(leaf, cls):
        return list(leaf.masked_kernels)
    names = {variable.name for variable in leaf.weights}
    return [name for name in cls.masked_kernels if name in names]


def kernels(layer):
    """`(scope, kernel name, variable)` of every kernel a registered layer
    masks or would mask: `W0` of a masked layer, the kernel of a stock one
    (`("dense_1", "kernel", ...)`, `("attention/query", "kernel", ...)`,
    `("lstm/lstm_cell", "recurrent_kernel", ...)`); empty for any other
    layer."""
    found = []
    for scope, leaf, cls in kernel_leaves(layer):
        variables = {variable.name: variable for variable in leaf.weights}
        found.extend((scope, name, variables[name]) for name in leaf_kernels(leaf, cls))
    return found
