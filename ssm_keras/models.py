"""The model zoo: a registry of architectures, each masked or plain.

Every builder writes its architecture once against a `LayerFactory` of plain
Keras layers (the baseline); the masked model is that model passed through
`ssm_keras.supermask`, as any user's model would be. Layers get fixed names,
and kernels are seeded by `(seed, layer name)`, so the masked and the plain
model of one seed start from the same `W0` bit for bit.

Every model takes raw pixels: its first layer is per-image standardisation.

| arch        | layers                                                  | masked weights (10 classes) |
| ----------- | ------------------------------------------------------- | --------------------------- |
| `fcn`       | 300, 100, 10 (input flattened)                          | 266,200 (28x28x1)           |
| `conv2`     | 64, 64, pool; 256, 256, 10                              | 4,300,992 (32x32x3)         |
| `conv4`     | 64, 64, pool, 128, 128, pool; 256, 256, 10              | 2,425,024                   |
| `conv6`     | ... 256, 256, pool; 256, 256, 10                        | 2,261,184                   |
| `conv8`     | ... 512, 512, pool; 256, 256, 10                        | 5,275,840                   |
| `resnetN`   | He et al. CIFAR ResNet, N = 6n + 2, stages 16w, 32w, 64w | (depends on N, w)          |
| `wrn28`     | Wide ResNet-28-k (pre-activation), stages 16k, 32k, 64k | (depends on k)              |
"""

import dataclasses
import math

import keras

from ssm_keras import initializers as ssm_initializers
from ssm_keras import layers as ssm_layers
from ssm_keras.transforms.supermasking import MaskConfig, supermask, with_regime  # noqa: F401


class LayerFactory:
    """Makes the plain Keras layers of one model, each kernel seeded.

    Args:
        kernel_initializer: initialiser name or object of the kernels `W0`.
        init_factor: the `factor` of the `elus` initialiser.
        activation: hidden-layer activation (`elu`, `relu`, ...).
        seed: int or None; each kernel is seeded by `derive_seed(seed, name,
            "kernel")`, as `supermask` seeds a masked layer's `W0` (None:
            unseeded, fresh random values).
    """

    def __init__(self, kernel_initializer, init_factor, activation, seed):
        self.kernel_initializer = ssm_initializers.get(kernel_initializer, init_factor)
        self.activation = activation
        self.seed = seed

    def _kwargs(self, name, activation):
        initializer = self.kernel_initializer
        if self.seed is not None:
            seed = ssm_initializers.derive_seed(self.seed, name, "kernel")
            initializer = ssm_initializers.with_seed(initializer, seed)
        return dict(
            name=name,
            activation=self.activation if activation == "hidden" else activation,
            use_bias=False,
            kernel_initializer=initializer,
        )

    def dense(self, units, name, activation="hidden"):
        """A dense layer; `activation="hidden"` means the model's activation."""
        return keras.layers.Dense(units, **self._kwargs(name, activation))

    def conv(self, filters, name, kernel_size=3, strides=1, activation="hidden"):
        """A `same`-padded 2-D convolution."""
        return keras.layers.Conv2D(filters, kernel_size=kernel_size, strides=strides,
                                   padding="same", **self._kwargs(name, activation))

    def batch_norm(self, name):
        """Batch norm: batch statistics while training, moving averages at
        inference (Keras' `training` flag). `supermask` freezes its `gamma`
        (1) and `beta` (0), so that a masked model's batch norm learns no
        affine parameters."""
        return keras.layers.BatchNormalization(name=name)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A registry entry: how to build an architecture and what it accepts."""

    name: str
    build: callable
    default_activation: str
    default_width: int
    downsamplings: int  # halvings of height and width before the classifier
    description: str


def _classifier(x, factory, hidden_units, num_classes):
    for index, units in enumerate(hidden_units, start=1):
        x = factory.dense(units, f"dense_{index}")(x)
    x = factory.dense(num_classes, f"dense_{len(hidden_units) + 1}", activation=None)(x)
    return keras.layers.Activation("softmax", dtype="float32", name="softmax")(x)


def _build_fcn(x, factory, num_classes, width):
    x = keras.layers.Flatten(name="flatten")(x)
    return _classifier(x, factory, (300 * width, 100 * width), num_classes)


def _vgg_builder(stage_channels):
    """A builder of the Conv-2/4/6/8 nets: two 3x3 convs and a pool per stage."""

    def build(x, factory, num_classes, width):
        index = 0
        for stage, channels in enumerate(stage_channels, start=1):
            for _ in range(2):
                index += 1
                x = factory.conv(channels * width, f"conv_{index}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"pool_{stage}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        return _classifier(x, factory, (256 * width, 256 * width), num_classes)

    return build


def _resnet_builder(depth):
    """He et al. (2016) CIFAR ResNet of `depth = 6n + 2` layers.

    conv3x3(16w)-BN-act; three stages of n basic blocks (16w, 32w, 64w
    channels, stride 1, 2, 2); block: conv-BN-act-conv-BN + shortcut, act;
    the shortcut is a 1x1 conv and BN where the shape changes; global
    average pooling; dense classifier.
    """
    blocks = (depth - 2) // 6

    def build(x, factory, num_classes, width):
        act = factory.activation
        x = factory.conv(16 * width, "conv_stem", activation=None)(x)
        x = factory.batch_norm("bn_stem")(x)
        x = keras.layers.Activation(act, name="act_stem")(x)
        for stage, channels in enumerate((16 * width, 32 * width, 64 * width), 1):
            for block in range(1, blocks + 1):
                strides = 2 if stage > 1 and block == 1 else 1
                prefix = f"stage{stage}_block{block}"
                shortcut = x
                y = factory.conv(channels, f"{prefix}_conv1", strides=strides, activation=None)(x)
                y = factory.batch_norm(f"{prefix}_bn1")(y)
                y = keras.layers.Activation(act, name=f"{prefix}_act1")(y)
                y = factory.conv(channels, f"{prefix}_conv2", activation=None)(y)
                y = factory.batch_norm(f"{prefix}_bn2")(y)
                if strides != 1 or shortcut.shape[-1] != channels:
                    shortcut = factory.conv(
                        channels, f"{prefix}_shortcut", kernel_size=1,
                        strides=strides, activation=None,
                    )(shortcut)
                    shortcut = factory.batch_norm(f"{prefix}_shortcut_bn")(shortcut)
                x = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
                x = keras.layers.Activation(act, name=f"{prefix}_out")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return _classifier(x, factory, (), num_classes)

    return build


def _build_wrn28(x, factory, num_classes, width):
    """Wide ResNet-28-k (Zagoruyko and Komodakis), pre-activation blocks.

    conv3x3(16); three groups of 4 blocks with 16k, 32k, 64k channels
    (stride 1, 2, 2); block: BN-act-conv3x3-BN-act-conv3x3 plus shortcut
    (a 1x1 conv of the pre-activated input where the shape changes); then
    BN-act, global average pooling and the dense classifier.
    """
    act = factory.activation
    x = factory.conv(16, "conv_stem", activation=None)(x)
    for group, channels in enumerate((16 * width, 32 * width, 64 * width), 1):
        for block in range(1, 5):
            strides = 2 if group > 1 and block == 1 else 1
            prefix = f"group{group}_block{block}"
            y = factory.batch_norm(f"{prefix}_bn1")(x)
            y = keras.layers.Activation(act, name=f"{prefix}_act1")(y)
            if strides != 1 or x.shape[-1] != channels:
                x = factory.conv(
                    channels, f"{prefix}_shortcut", kernel_size=1,
                    strides=strides, activation=None,
                )(y)
            y = factory.conv(channels, f"{prefix}_conv1", strides=strides, activation=None)(y)
            y = factory.batch_norm(f"{prefix}_bn2")(y)
            y = keras.layers.Activation(act, name=f"{prefix}_act2")(y)
            y = factory.conv(channels, f"{prefix}_conv2", activation=None)(y)
            x = keras.layers.Add(name=f"{prefix}_add")([x, y])
    x = factory.batch_norm("bn_final")(x)
    x = keras.layers.Activation(act, name="act_final")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return _classifier(x, factory, (), num_classes)


def _registry():
    entries = [
        Architecture("fcn", _build_fcn, "elu", 1, 0, "dense 300-100-classes"),
    ]
    vgg_stages = {"conv2": (64,), "conv4": (64, 128), "conv6": (64, 128, 256),
                  "conv8": (64, 128, 256, 512)}
    for name, stages in vgg_stages.items():
        entries.append(Architecture(
            name, _vgg_builder(stages), "elu", 1, len(stages),
            f"VGG-like, conv stages {stages}, dense 256-256-classes",
        ))
    for depth in (20, 32, 44, 56, 110):
        entries.append(Architecture(
            f"resnet{depth}", _resnet_builder(depth), "relu", 1, 2,
            f"CIFAR ResNet-{depth}, stages 16w-32w-64w",
        ))
    entries.append(Architecture(
        "wrn28", _build_wrn28, "relu", 10, 2, "Wide ResNet-28-k, k = width"
    ))
    return {entry.name: entry for entry in entries}


ARCHITECTURES = _registry()


def get_architecture(name):
    """The registry entry of `name`; a ValueError lists the choices."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture. Expected one of {sorted(ARCHITECTURES)}. "
            f"Received: arch={name!r}"
        )
    return ARCHITECTURES[name]


def check_input_shape(arch, input_shape):
    """Raises ValueError when images of `input_shape` do not fit `arch`."""
    architecture = get_architecture(arch)
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(
            "input_shape must be (height, width, channels) of positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    smallest = 2 ** architecture.downsamplings
    if min(input_shape[:2]) < smallest:
        raise ValueError(
            f"Architecture {arch!r} halves height and width "
            f"{architecture.downsamplings} times, so it needs images of at least "
            f"{smallest}x{smallest} pixels. Received: input_shape={tuple(input_shape)}"
        )


def build_architecture(
    arch,
    *,
    masked=True,
    input_shape=(32, 32, 3),
    num_classes=10,
    mask_config=MaskConfig(),
    kernel_initializer="elus",
    init_factor=None,
    activation=None,
    width=None,
    seed=0,
    train_batch_norm=False,
):
    """Builds (does not compile) a masked or plain model of the registry.

    Args:
        arch: a name of `ARCHITECTURES`.
        masked: masked layers (supermask) or plain Keras layers (baseline).
        input_shape: `(height, width, channels)` of the raw images.
        num_classes: the number of output classes (softmax output).
        mask_config: `MaskConfig` of the masked layers.
        kernel_initializer: initialiser of `W0` (name or object).
        init_factor: `factor` of the `elus` initialiser (default 6).
        activation: hidden activation; None is the architecture's default
            (`elu` for FCN and Conv nets, `relu` for residual nets).
        width: width multiplier (residual nets: `w`; `wrn28`: `k`; FCN and
            Conv nets: every hidden width times `width`); None is the
            architecture's default (1; 10 for `wrn28`).
        seed: int; the initial kernels and scores are a function of it.
        train_batch_norm: masked models: whether the batch norms' `gamma`
            and `beta` train (`supermask`'s argument).

    Returns:
        A functional `keras.Model` named `arch`.
    """
    architecture = get_architecture(arch)
    check_input_shape(arch, tuple(input_shape))
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}"
        )
    width = architecture.default_width if width is None else width
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int. Received: width={width!r}")
    factory = LayerFactory(
        kernel_initializer=kernel_initializer,
        init_factor=init_factor,
        activation=activation or architecture.default_activation,
        seed=seed,
    )
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ssm_layers.PerImageStandardization(name="standardize")(inputs)
    outputs = architecture.build(x, factory, num_classes, width)
    plain = keras.Model(inputs, outputs, name=arch)
    if not masked:
        return plain
    return supermask(plain, kernel_initializer=kernel_initializer, init_factor=init_factor,
                     seed=seed, train_batch_norm=train_batch_norm,
                     **dataclasses.asdict(mask_config))


def masked_weight_count(model):
    """The number of masked weights (score entries) of a model."""
    return sum(math.prod(layer.scores_variable(name).shape)
               for layer, name in ssm_layers.masked_kernels(model))
