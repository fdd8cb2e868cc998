"""The masked-layer mixin: a stock Keras layer that computes with `W = W0 * m(s)`.

A masked layer is the Keras layer it masks, with `MaskedLayer` in front of
it in the method resolution order:

    class MaskedLSTMCell(MaskedLayer, keras.layers.LSTMCell):
        masked_kernels = {"kernel": "kernel_initializer",
                          "recurrent_kernel": "recurrent_initializer"}

For every masked kernel `k` it holds the frozen initial kernel `W0` (the
variable named `k`), a float32 score tensor `s` of the same shape and, for
threshold masks, a scalar threshold `tau`; the stock layer's code computes
with the effective kernel

    W = W0 * m(s)

where `m` is a mask function of `ssm_keras.masking`. How:

- The stock `build` runs unchanged. `MaskedLayer.add_weight` intercepts each
  weight `masked_kernels` names and creates `W0`, then its scores
  (`scores` for `kernel`, `recurrent_scores` for `recurrent_kernel`,
  `embeddings_scores` for `embeddings`; `role_names`), then its threshold
  (`threshold`, `recurrent_threshold`, ...). A single-kernel layer keeps the
  variables and the order of this package's first masked layers:
  `kernel, scores, threshold, bias`. A bias is created with
  `trainable=train_bias`.
- Each masked name is a class attribute (`EffectiveKernel`) that reads as
  `W0 * m(s)`: `layer.kernel` is the effective kernel, as Keras' LoRA makes
  it, and the stock `call` (which reads `self.kernel`,
  `self.depthwise_kernel`, `self.cell.recurrent_kernel`, ...) computes with
  it, so a masked layer equals its stock layer run with `W0 * m(s)` by
  construction. `W0` is `layer.kernel_variable(name)`.
- `call` computes the effective kernels once per call (one Bernoulli sample
  or top-k per call; a recurrent layer's once per sequence) and hands them
  to the stock `call`.

Two regimes: `mask` (only the scores train; `W0` is created frozen) and
`mask_then_weights` (the mask is frozen and `W0` trains under it, the
"supermask as initialisation" fine-tuning). A variable created
non-trainable is never unfrozen by `layer.trainable = True`. The threshold
`tau = tau_fraction * max(|s_init|)` of each kernel is fixed when the layer
is built and saved with it.

Why subclass the stock layers (the house style says not to): a subclass
runs Keras' own `build`, `call`, shape inference, masking and config, so
every argument of the stock layer works and nothing is re-implemented. The
trap the style warns of is saving: `Dense`, `EinsumDense`, the convolutions
and `Embedding` save their `kernel` slot themselves (for quantisation), which
would save `W0 * m(s)` and drop the scores. The mixin therefore takes
`save_own_variables` / `load_own_variables` from `keras.layers.Layer`
(every variable, by position), and refuses what a mask of a frozen kernel
cannot honour: kernel regularisers and constraints, LoRA, quantisation.

The public subclass interface (a user's layer becomes maskable with it):

    masked_kernels: class attribute, `{weight name: constructor argument
        holding its initialiser}`. The stock `build` must create each weight
        with `self.add_weight(name=<weight name>, ...)` and the stock `call`
        must read it as `self.<weight name>`.
    kernel_fan_in(name, shape): the fan-in `W0` and the scores of kernel
        `name` are drawn with; None for Keras' `prod(shape[:-1])`.
    kernel_uses(layer, name, input_shape, output_shape): classmethod, how
        many times per example a layer of this type multiplies by each entry
        of kernel `name` (FLOP counts); default: the output positions
        `prod(output_shape[1:-1])`.
    output_units: class attribute, the constructor argument that counts a
        single-kernel layer's output units when its kernel is
        `(..., inputs, units)` and unit `u` is output channel `u` (`units`,
        `filters`): dead-unit removal may then remove units. None otherwise.

Layers that hold other layers (attention, recurrent layers) are
`MaskedContainer`s: the stock layer, whose kernel-bearing sublayers are
masked leaves. Seeds are stateless: a leaf draws `W0`, scores and bias
keyed by `(mask_seed, mask_scope, variable name)`, where `mask_scope` is the
layer's name or, for a sublayer, `container/sublayer`.
"""

import contextlib
import inspect
import math
import typing

import keras
import numpy as np
import tensorflow as tf

from ssm_keras import arguments, choices, masking
from ssm_keras import initializers as ssm_initializers

# The mask arguments of every masked layer, with their defaults.
MASK_DEFAULTS = {
    "mask": "signed",
    "tau_fraction": 0.4,
    "density": 0.5,
    "score_initializer": None,
    "train_bias": False,
    "regime": "mask",
    "bernoulli_eval": "expected",
    "mask_seed": None,
}


# The mask arguments that only some mask kinds use, and those kinds.
MASK_ARGUMENT_USERS = {**choices.MASK_SHAPE_USERS, "bernoulli_eval": ("bernoulli",)}


def ignored_argument_error(name, value, mask):
    """The ValueError for the mask argument `name` (of
    `MASK_ARGUMENT_USERS`) set to `value` for a mask kind that ignores it."""
    kinds = " and ".join(MASK_ARGUMENT_USERS[name])
    use = "only shapes" if name in choices.MASK_SHAPE_USERS else "only applies to"
    return ValueError(f"{name} {use} {kinds} masks; mask={mask!r} ignores it. "
                      f"Received: {name}={value!r}")


def pop_mask_arguments(kwargs):
    """Removes the mask arguments (`MASK_DEFAULTS`) from `kwargs` and
    returns them, checked (`ssm_keras.arguments`: one TypeError or ValueError
    naming the argument and its value).

    Args (in `kwargs`):
        mask: one of `choices.MASK_KINDS`.
        tau_fraction: threshold masks: `tau = tau_fraction * max(|s_init|)`,
            a number in [0, 1).
        density: top-k masks: the fraction of weights kept, a number in
            (0, 1].
        score_initializer: initialiser of the scores; None picks the mask
            kind's default (`glorot_uniform` for threshold masks, `zeros` for
            `bernoulli`, `he_uniform` for top-k).
        train_bias: whether the bias trains; False (the paper's regime)
            keeps it frozen in both regimes.
        regime: `mask` or `mask_then_weights`.
        bernoulli_eval: how a `bernoulli` mask evaluates: `expected`
            (`sigmoid(s) > 0.5`) or `sample` (a fresh sample, as Zhou et al.).
        mask_seed: an integer (Python's or NumPy's) or None. With an integer,
            the initial kernels, scores and bias are drawn from stateless
            RNGs keyed by `(mask_seed, mask_scope, variable name)`: the same
            seed and name give the same values bit for bit.
    """
    given = {key: kwargs.pop(key, default) for key, default in MASK_DEFAULTS.items()}
    checked = dict(
        given,
        mask=arguments.choice("mask", given["mask"], choices.MASK_KINDS),
        regime=arguments.choice("regime", given["regime"], choices.MASKED_REGIMES),
        bernoulli_eval=arguments.choice("bernoulli_eval", given["bernoulli_eval"],
                                        choices.BERNOULLI_EVAL_MODES),
        tau_fraction=arguments.number("tau_fraction", given["tau_fraction"], low=0, high=1,
                                      high_open=True),
        density=arguments.number("density", given["density"], low=0, high=1, low_open=True),
        train_bias=arguments.boolean("train_bias", given["train_bias"]),
    )
    for name, kinds in MASK_ARGUMENT_USERS.items():
        if checked["mask"] not in kinds and checked[name] != MASK_DEFAULTS[name]:
            raise ignored_argument_error(name, given[name], checked["mask"])
    if given["score_initializer"] is not None:
        # An unknown initialiser names itself.
        initializer = ssm_initializers.get(given["score_initializer"])
        if _draws_zeros(initializer) and checked["mask"] in choices.THRESHOLD_KINDS:
            raise ValueError(
                f"score_initializer={_described(given['score_initializer'])} "
                f"{choices.all_hidden_by_zero_scores(checked['mask'])}; use the mask's "
                "default (None) or one that draws different scores.")
    if given["mask_seed"] is not None:
        checked["mask_seed"] = arguments.integer("mask_seed", given["mask_seed"])
        if checked["mask"] == "bernoulli" and not -2**63 <= checked["mask_seed"] < 2**63:
            raise ValueError(  # Keras' seed generator holds it in an int64
                "a bernoulli mask's mask_seed must be in [-2**63, 2**63). Received: "
                f"mask_seed={checked['mask_seed']!r}")
    return checked


def _described(initializer):
    """`initializer` as a user wrote it: a name or config as given, an
    initialiser object as its class and config (`Constant(value=0.0)`)."""
    if not isinstance(initializer, keras.initializers.Initializer):
        return repr(initializer)
    settings = ", ".join(f"{key}={value!r}" for key, value in initializer.get_config().items())
    return f"{type(initializer).__name__}({settings})"


def _draws_zeros(initializer):
    """Whether `initializer` draws nothing but zeros (`Zeros`, `Constant(0)`)."""
    if isinstance(initializer, keras.initializers.Zeros):
        return True
    return (isinstance(initializer, keras.initializers.Constant)
            and not np.any(np.asarray(initializer.value)))


def unmaskable_reason(config, initializer_arguments, dtype_policy=None):
    """Why a layer of `config` (constructor arguments) cannot be masked
    exactly, or None: a regulariser or constraint on a masked kernel (the
    `*_initializer` arguments `initializer_arguments` name its kernels), LoRA
    or quantisation."""
    for argument in initializer_arguments:
        for what in ("regularizer", "constraint"):
            key = argument.replace("initializer", what)
            if config.get(key) is not None:
                return (f"it has a {key.replace('_', ' ')} ({key}={config[key]!r}), which a "
                        "mask of a frozen kernel cannot honour")
    if config.get("lora_rank"):
        return f"it uses LoRA (lora_rank={config['lora_rank']})"
    mode = getattr(dtype_policy, "quantization_mode", None)
    if config.get("quantization_config") is not None or mode:
        return "it is quantized (bake a supermask first, then quantize the stock layers)"
    return None


def _resolve_initializers(kwargs, arguments):
    """The masked kernels' initialisers default to `elus` and may be any
    `ssm_keras.initializers.get` identifier (a stock `__init__` knows only
    Keras' names)."""
    for argument in arguments:
        kwargs[argument] = ssm_initializers.get(kwargs.get(argument) or "elus")


def _prepare_arguments(cls, kwargs, initializer_arguments):
    """Pops and checks the mask arguments, resolves the kernels'
    initialisers and refuses what cannot be masked; returns the mask
    arguments."""
    arguments = pop_mask_arguments(kwargs)
    _resolve_initializers(kwargs, initializer_arguments)
    policy = kwargs.get("dtype")
    policy = None if policy is None else keras.dtype_policies.get(policy)
    reason = unmaskable_reason(kwargs, initializer_arguments, policy)
    if reason:
        raise ValueError(f"cannot make a {cls.__name__}: {reason}.")
    if kwargs.get("weights") is not None:
        raise ValueError(f"cannot make a {cls.__name__} with weights=; assign its variables.")
    return arguments


class MaskArguments:
    """The mask settings shared by masked leaves and containers."""

    def _set_mask_arguments(self, arguments):
        self.mask_kind = arguments["mask"]
        self.tau_fraction = float(arguments["tau_fraction"])
        self.density = float(arguments["density"])
        self.score_initializer = ssm_initializers.get(
            arguments["score_initializer"] or choices.DEFAULT_SCORE_INITIALIZERS[self.mask_kind]
        )
        self.train_bias = bool(arguments["train_bias"])
        self.regime = arguments["regime"]
        self.bernoulli_eval = arguments["bernoulli_eval"]
        self.mask_seed = arguments["mask_seed"]

    def mask_config(self):
        """The mask arguments, serialised (part of `get_config`)."""
        return {
            "mask": self.mask_kind,
            "tau_fraction": self.tau_fraction,
            "density": self.density,
            "score_initializer": keras.initializers.serialize(self.score_initializer),
            "train_bias": self.train_bias,
            "regime": self.regime,
            "bernoulli_eval": self.bernoulli_eval,
            "mask_seed": self.mask_seed,
        }

    @classmethod
    def counterpart_config(cls, layer):
        """The config of the masked counterpart of the stock `layer`, before
        the initialisers and mask arguments are added: `layer.get_config()`
        (subclasses add what Keras leaves out of it)."""
        return layer.get_config()


def role_names(kernel_name):
    """`(scores, threshold)` variable names of a masked kernel: `kernel` ->
    `scores, threshold`, `recurrent_kernel` -> `recurrent_scores,
    recurrent_threshold`, `embeddings` -> `embeddings_scores,
    embeddings_threshold`."""
    if kernel_name.endswith("kernel"):
        prefix = kernel_name[: -len("kernel")]
    else:
        prefix = f"{kernel_name}_"
    return f"{prefix}scores", f"{prefix}threshold"


def kernel_key(scope, name):
    """The key of masked kernel `name` of the layer at `scope` in statistics
    and reports: the scope for `kernel` (`dense_1`, `attention/query`),
    `scope/name` for the others (`lstm/lstm_cell/recurrent_kernel`)."""
    return scope if name == "kernel" else f"{scope}/{name}"


class MaskedKernel(typing.NamedTuple):
    """The variables of one masked kernel (`threshold` None for masks
    without one)."""

    kernel: keras.Variable
    scores: keras.Variable
    threshold: keras.Variable | None


class EffectiveKernel:
    """The class attribute a stock `call` reads a masked kernel through: it
    returns `W0 * m(s)`. The stock `build` may assign it the variable
    `add_weight` returned (`W0`), which `MaskedLayer` has registered."""

    def __init__(self, name):
        self.name = name

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        if self.name not in layer.__dict__.get("_masked", {}):
            raise AttributeError(f"layer {layer.name!r} is not built: it has no {self.name} yet")
        return layer.effective_kernel(self.name)

    def __set__(self, layer, value):
        if value is not layer.kernel_variable(self.name):
            raise AttributeError(
                f"{type(layer).__name__}.{self.name} is the effective kernel W0 * m(s) and "
                f"cannot be set; assign to layer.kernel_variable({self.name!r})."
            )


class MaskedLayer(MaskArguments, keras.layers.Layer):
    """Mixin that masks the kernels of the Keras layer it precedes.

    `class MaskedX(MaskedLayer, keras.layers.X)` takes the arguments of
    `keras.layers.X` (with Keras' defaults, except that the masked kernels'
    initialisers default to `elus` and may be any
    `ssm_keras.initializers.get` identifier) plus the mask arguments of
    `pop_mask_arguments`.

    The subclass interface: `masked_kernels`, `kernel_fan_in`,
    `kernel_uses`, `output_units` (see the module docstring).

    Attributes and methods: `layer.<kernel name>` is the effective kernel;
    `kernel_variable(name)` (`W0`), `scores_variable(name)`,
    `threshold_variable(name)`, `effective_kernel(name, training)`,
    `compute_mask_values(name, training)`, `mask_counts()`,
    `seeded_initializer(role)`, `mask_scope`, `kernel_key(name)`.
    """

    masked_kernels = {}
    output_units = None
    _seed_generator_attribute = "mask_seed_generator"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.masked_kernels:
            if not isinstance(cls.__dict__.get(name), EffectiveKernel):
                setattr(cls, name, EffectiveKernel(name))

    def __init__(self, *args, **kwargs):
        arguments = _prepare_arguments(type(self), kwargs, self.initializer_arguments())
        super().__init__(*args, **kwargs)
        self._set_mask_arguments(arguments)
        object.__setattr__(self, "_masked", {})
        object.__setattr__(self, "_call_kernels", None)
        object.__setattr__(self, "_mask_scope", None)
        self._stock_call_takes_training = (
            "training" in inspect.signature(super().call).parameters)
        if self.mask_kind == "bernoulli":
            setattr(self, self._seed_generator_attribute,
                    keras.random.SeedGenerator(self.mask_seed))

    # The subclass interface.
    @classmethod
    def initializer_arguments(cls):
        """The constructor arguments of the masked kernels' initialisers."""
        return tuple(sorted(set(cls.masked_kernels.values())))

    def kernel_fan_in(self, name, shape):
        """The fan-in `W0` and the scores of kernel `name` (of `shape`) are
        drawn with; None: Keras' `prod(shape[:-1])`."""
        return None

    @classmethod
    def kernel_uses(cls, layer, name, input_shape, output_shape):
        """How many times per example `layer` (stock or masked) multiplies by
        each entry of kernel `name`: its forward pass costs `2 * size * uses`
        FLOP. Default: the output positions, `prod(output_shape[1:-1])`."""
        return math.prod(output_shape[1:-1])

    # Where the layer's seeds and statistics live.
    @property
    def mask_scope(self):
        """The layer's name, or `container/sublayer` for a container's
        sublayer: the key of its seeds, init-file entries and records."""
        return self._mask_scope or self.name

    @mask_scope.setter
    def mask_scope(self, scope):
        object.__setattr__(self, "_mask_scope", scope)

    def kernel_key(self, name="kernel"):
        """`kernel_key(mask_scope, name)`: the key of kernel `name` in
        statistics and reports."""
        return kernel_key(self.mask_scope, name)

    # Variables.
    def add_weight(self, *args, **kwargs):
        if args:
            raise TypeError("masked layers take add_weight's arguments by keyword")
        name = kwargs.get("name")
        if name in self.masked_kernels:
            return self._add_masked_kernel(**kwargs)
        if name == "bias":
            kwargs["trainable"] = self.train_bias
            if not hasattr(self, "bias_initializer"):  # a layer whose bias is drawn as it says
                return super().add_weight(**kwargs)
            seeded, stock = self.seeded_initializer("bias"), self.bias_initializer
            if kwargs.get("initializer") is stock:
                kwargs["initializer"] = seeded
            else:
                # A stock closure that reads `self.bias_initializer` (LSTMCell's
                # `unit_forget_bias`) reads the seeded one while it runs.
                self.bias_initializer = seeded
                try:
                    return super().add_weight(**kwargs)
                finally:
                    self.bias_initializer = stock
        return super().add_weight(**kwargs)

    def _add_masked_kernel(self, name, shape, dtype=None, **unused):
        """Creates `W0`, its scores and its threshold (threshold masks);
        returns `W0`. The stock initialiser, regulariser and constraint are
        not used (the initialiser argument's value is, seeded). A seeded
        Bernoulli mask's sampler starts at the seed of `(mask_seed,
        mask_scope, "mask_samples")`."""
        shape = tuple(shape)
        scores_name, threshold_name = role_names(name)
        kernel = super().add_weight(
            name=name, shape=shape, dtype=dtype,
            initializer=self.seeded_initializer(name, shape),
            trainable=self.regime == "mask_then_weights",
        )
        scores = super().add_weight(
            name=scores_name, shape=shape, dtype="float32", autocast=False,
            initializer=self.seeded_initializer(scores_name, shape),
            trainable=self.regime == "mask",
        )
        threshold = None
        if self.mask_kind in choices.THRESHOLD_KINDS:
            def initial_threshold(shape, dtype=None):
                """`tau = tau_fraction * max(|s_init|)`, fixed for the whole run."""
                value = self.tau_fraction * tf.reduce_max(tf.abs(tf.convert_to_tensor(scores)))
                return tf.cast(value, dtype)

            threshold = super().add_weight(
                name=threshold_name, shape=(), dtype="float32", autocast=False,
                initializer=initial_threshold, trainable=False,
            )
        if self.mask_kind == "bernoulli" and self.mask_seed is not None:
            # Each layer samples its own masks: its generator starts at the
            # seed of (mask_seed, mask_scope), as W0 and the scores do.
            generator = getattr(self, self._seed_generator_attribute)
            generator.state.assign(
                [ssm_initializers.derive_seed(self.mask_seed, self.mask_scope, "mask_samples"), 0])
        self._masked[name] = MaskedKernel(kernel, scores, threshold)
        setattr(self, scores_name, scores)
        if threshold is not None:
            setattr(self, threshold_name, threshold)
        return kernel

    def kernel_variable(self, name="kernel"):
        """The variable `W0` of masked kernel `name`."""
        return self._masked[name].kernel

    def scores_variable(self, name="kernel"):
        """The float32 scores `s` of masked kernel `name`."""
        return self._masked[name].scores

    def threshold_variable(self, name="kernel"):
        """The threshold `tau` of masked kernel `name` (None for top-k and
        Bernoulli masks)."""
        return self._masked[name].threshold

    def seeded_initializer(self, role, shape=None):
        """The initialiser of variable `role` (a masked kernel's name, its
        scores' name, or `bias`): the configured one, seeded by
        `(mask_seed, mask_scope, role)` when the layer has a seed, and for
        kernels and scores drawn with the kernel's fan-in (`shape`: the
        kernel's, by default that of the built kernel)."""
        scores_of = {role_names(name)[0]: name for name in self.masked_kernels}
        if role == "bias":
            initializer, kernel_name = self.bias_initializer, None
        elif role in self.masked_kernels:
            initializer, kernel_name = getattr(self, self.masked_kernels[role]), role
        elif role in scores_of:
            initializer, kernel_name = self.score_initializer, scores_of[role]
        else:
            raise ValueError(f"layer {self.name!r} has no variable {role!r} to initialise")
        if self.mask_seed is not None:
            seed = ssm_initializers.derive_seed(self.mask_seed, self.mask_scope, role)
            initializer = ssm_initializers.with_seed(initializer, seed)
        else:
            # A fresh copy draws its own seed: an unseeded Keras initialiser
            # gives the same values at every call of one instance.
            initializer = initializer.__class__.from_config(initializer.get_config())
        if kernel_name is None:
            return initializer
        if shape is None:
            shape = tuple(self.kernel_variable(kernel_name).shape)
        return self._shaped_initializer(kernel_name, shape, initializer)

    def _shaped_initializer(self, name, shape, initializer):
        fan_in = self.kernel_fan_in(name, shape)
        if fan_in is None or len(shape) < 2 or fan_in == math.prod(shape[:-1]):
            return initializer
        return ssm_initializers.FanInKernel(initializer, int(fan_in))

    # Masks and effective kernels.
    def _samples_mask(self, training):
        return (
            self.mask_kind == "bernoulli"
            and self.regime == "mask"
            and (training or self.bernoulli_eval == "sample")
        )

    def compute_mask_values(self, name="kernel", training=False):
        """The float32 mask `m(s)` of kernel `name`, with the straight-through
        gradient. `bernoulli` masks sample while training (in the `mask`
        regime) and, at inference, as `bernoulli_eval` says; otherwise they
        are `[sigmoid(s) > 0.5]`."""
        variables = self._masked[name]
        if self.mask_kind == "bernoulli" and not self._samples_mask(training):
            mask = masking.expected_bernoulli_mask(variables.scores)
        else:
            mask = masking.compute_mask(
                self.mask_kind, variables.scores, threshold=variables.threshold,
                density=self.density,
                seed=getattr(self, self._seed_generator_attribute, None),
            )
        if self.regime == "mask_then_weights":
            mask = tf.stop_gradient(mask)
        return mask

    def _compute_effective_kernel(self, name, training):
        """`W = W0 * m(s)`, in the dtype `W0` is read in (the compute dtype
        inside a call). The mask is in {-1, 0, 1}, so the product is exact;
        threshold masks compute it in one fused pass
        (`masking.threshold_masked_kernel`)."""
        variables = self._masked[name]
        if self.mask_kind in choices.THRESHOLD_KINDS:
            scores = variables.scores
            if self.regime == "mask_then_weights":
                scores = tf.stop_gradient(scores)
            return masking.threshold_masked_kernel(
                self.mask_kind, variables.kernel, scores, variables.threshold,
                frozen_kernel=not variables.kernel.trainable,
            )
        mask = self.compute_mask_values(name, training)
        kernel = tf.convert_to_tensor(variables.kernel)
        return kernel * tf.cast(mask, kernel.dtype)

    def effective_kernel(self, name="kernel", training=False):
        """`W = W0 * m(s)` of kernel `name`; inside a call, the one the call
        computes with."""
        if self._call_kernels is not None and name in self._call_kernels:
            return self._call_kernels[name]
        return self._compute_effective_kernel(name, bool(training))

    @contextlib.contextmanager
    def effective_kernels_scope(self, training=False):
        """Within it, every kernel attribute returns one effective kernel
        computed on entry (one Bernoulli sample, one top-k per call or per
        sequence). Nested scopes reuse the outer one."""
        if self._call_kernels is not None:
            yield
            return
        kernels = {name: self._compute_effective_kernel(name, bool(training))
                   for name in self.masked_kernels}
        object.__setattr__(self, "_call_kernels", kernels)
        try:
            yield
        finally:
            object.__setattr__(self, "_call_kernels", None)

    def mask_counts(self):
        """Kept (+1), inverted (-1), hidden (0), remaining and total entries
        over all masked kernels, of the inference mask (for `bernoulli` with
        `bernoulli_eval="sample"`: one sample)."""
        totals = {}
        for name in self.masked_kernels:
            counts = masking.mask_counts(self.compute_mask_values(name, training=False))
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def call(self, inputs, *args, training=None, **kwargs):
        if self._stock_call_takes_training:
            kwargs["training"] = training
        with self.effective_kernels_scope(training):
            return super().call(inputs, *args, **kwargs)

    # Every variable is saved, by position, as `keras.layers.Layer` saves
    # them: the stock Dense, EinsumDense, convolutions and Embedding save
    # their kernel slot, which would store `W` and drop the scores.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), **self.mask_config()}

    def enable_lora(self, *args, **kwargs):
        raise ValueError(f"{type(self).__name__} cannot use LoRA: its kernels are masked.")

    def quantize(self, *args, **kwargs):
        raise ValueError(f"{type(self).__name__} cannot be quantized; bake the model first.")


class MaskedContainer(MaskArguments):
    """Mixin of a stock layer whose kernel-bearing sublayers are masked
    leaves (`MaskedMultiHeadAttention`, `MaskedLSTM`, ...): it takes the
    stock layer's arguments and the mask arguments, which its sublayers get.

    Subclasses name `sublayer_attributes`, the attributes holding the
    maskable sublayers (`cell`; `_query_dense`, ...), and
    `kernel_initializer_arguments`, the stock constructor's kernel
    initialisers.
    """

    sublayer_attributes = ()
    kernel_initializer_arguments = ("kernel_initializer",)
    output_units = None  # dead-unit removal leaves a container's units alone

    @classmethod
    def initializer_arguments(cls):
        """The constructor arguments of the masked kernels' initialisers."""
        return cls.kernel_initializer_arguments

    def _pop_container_arguments(self, kwargs):
        return _prepare_arguments(type(self), kwargs, self.initializer_arguments())

    @classmethod
    def sublayers_of(cls, layer):
        """The maskable sublayers of `layer`, a stock or masked instance of
        this container's type, in a fixed order."""
        found = (getattr(layer, attribute, None) for attribute in cls.sublayer_attributes)
        return [sublayer for sublayer in found if sublayer is not None]

    @property
    def masked_sublayers(self):
        """The masked leaves of this container."""
        return self.sublayers_of(self)

    @property
    def mask_scope(self):
        """The container's name, or its path inside a composite layer
        (`encoder/self_attention`): its sublayers are seeded as
        `<mask_scope>/<sublayer>`."""
        return self.__dict__.get("_mask_scope") or self.name

    @mask_scope.setter
    def mask_scope(self, scope):
        object.__setattr__(self, "_mask_scope", scope)
        for sublayer in self.masked_sublayers:
            sublayer.mask_scope = f"{scope}/{sublayer.name}"

    @classmethod
    def sublayer_uses(cls, layer, sublayer, leaf_class, name, input_shape):
        """`kernel_uses` of kernel `name` of `sublayer` (whose masked class
        is `leaf_class`) inside `layer` (stock or masked) called on
        `input_shape`. Default: the sublayer's own rule on the input shape it
        was built with."""
        built = sublayer.get_build_config()["input_shape"]
        return leaf_class.kernel_uses(sublayer, name, built, sublayer.compute_output_shape(built))

    def _masked_copy(self, cls, stock, **extra):
        """`cls` from the config of the stock sublayer `stock` and this
        container's mask arguments, seeded as `container/sublayer`."""
        masked = cls.from_config({**stock.get_config(), **self.mask_config(), **extra})
        masked.mask_scope = f"{self.mask_scope}/{stock.name}"
        return masked

    def get_config(self):
        return {**super().get_config(), **self.mask_config()}


def find_layers(model, types):
    """The layers of `model` that are instances of `types`, in order,
    nested models included, each once."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, types):
            found[id(layer)] = layer
        elif hasattr(layer, "layers"):
            found.update((id(inner), inner) for inner in find_layers(layer, types))
    return list(found.values())


def masked_leaves(layer):
    """The `MaskedLayer`s of one layer: itself, or a container's sublayers."""
    if isinstance(layer, MaskedLayer):
        return [layer]
    if isinstance(layer, MaskedContainer):
        return list(layer.masked_sublayers)
    return []


def masked_layers(model):
    """Every `MaskedLayer` of a model, in order, nested models and the
    sublayers of masked containers included."""
    return [leaf for layer in find_layers(model, (MaskedLayer, MaskedContainer))
            for leaf in masked_leaves(layer)]


def masked_kernels(model):
    """`(layer, kernel name)` of every masked kernel of a model, in order."""
    return [(layer, name) for layer in masked_layers(model) for name in layer.masked_kernels]


def named_variables(layer):
    """`{key: variable}` of a layer and its sublayers: `name` for its own
    variables, `sublayer/name` for a sublayer's (`query/kernel`,
    `lstm_cell/recurrent_kernel`), `sublayer/inner/name` deeper down
    (`transformer_block_1/mha/query/kernel`). A masked layer and its stock
    counterpart share the keys of the stock layer's variables."""
    found = {}

    def add(current, prefix):
        for variable in current._trainable_variables + current._non_trainable_variables:
            found[prefix + variable.name] = variable
        for sublayer in current._layers:
            add(sublayer, f"{prefix}{sublayer.name}/")

    add(layer, "")
    return found
