"""The settings of one training run, checked in one place.

`TrainConfig` is what the `ssm_keras.train` flags, the flagfiles in `flags/`
and the tuner all produce; `validate()` turns every bad value into a
`ConfigError` that names the value and what is allowed.
"""

import dataclasses
import math

from ssm_keras import data, initializers, losses, masking, models

REGIMES = ("mask", "weights", "mask_then_weights")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("exponential", "constant", "cosine", "plateau")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
ACTIVATIONS = ("elu", "relu", "gelu", "swish", "tanh", "sigmoid")
# `--signed` / `--nosigned` move a mask kind to its signed or unsigned twin.
SIGNED_TWIN = {"binary": "signed", "topk": "signed_topk", "signed": "signed",
               "signed_topk": "signed_topk"}
UNSIGNED_TWIN = {"signed": "binary", "signed_topk": "topk", "binary": "binary",
                 "topk": "topk", "bernoulli": "bernoulli"}


class ConfigError(ValueError):
    """A setting that is out of range or unknown; the message says which."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; the field names are the command-line flags."""

    # Model and mask.
    arch: str = "conv4"
    mask: str = "signed"
    signed: bool | None = None
    tau_fraction: float = 0.4
    density: float = 0.5
    weight_init: str = "elus"
    # The defaults train `conv4` (the default arch): the paper's recipe with
    # init factor 3 (not its 6) and half its weight decay (README, "Conv nets").
    init_factor: float = 3.0
    score_init: str | None = None
    bernoulli_eval: str = "expected"
    activation: str | None = None
    width: int | None = None
    seed: int = 0
    init_file: str | None = None
    save_init_file: str | None = None
    regime: str = "mask"
    mask_from: str | None = None
    # Data.
    dataset: str = "cifar10"
    data_dir: str | None = None
    validation_size: int = 5000
    max_examples: int | None = None
    augment: str = "none"
    # Optimisation.
    batch_size: int = 128
    epochs: int = 100
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    lr_schedule: str = "exponential"
    lr_decay_rate: float = 0.9
    lr_decay_epochs: float = 10.0
    plateau_patience: int = 15
    plateau_factor: float = 0.2
    weight_decay: float = 2.5e-4
    loss: str = "crossentropy"
    # Run.
    model_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    strategy: str = "default"
    tpu: str | None = None
    mixed_precision: str = "float32"
    jit_compile: bool | None = None
    steps_per_execution: int = 1
    run_eagerly: bool = False
    verbose: int | None = None

    @property
    def mask_kind(self):
        """The mask kind after `--signed` / `--nosigned`."""
        if self.signed is None:
            return self.mask
        twins = SIGNED_TWIN if self.signed else UNSIGNED_TWIN
        return twins[self.mask]

    @property
    def masked(self):
        """Whether the model is masked (every regime but `weights`)."""
        return self.regime != "weights"

    def mask_config(self):
        """The `models.MaskConfig` of this run."""
        return models.MaskConfig(
            mask=self.mask_kind,
            tau_fraction=self.tau_fraction,
            density=self.density,
            score_initializer=self.score_init,
            bernoulli_eval=self.bernoulli_eval,
        )

    def keras_weight_decay(self):
        """Keras' decoupled weight decay for the paper's `weight_decay`.

        Keras subtracts `lr_t * wd_keras * v`; the paper subtracted
        `wd_t * v` with `wd_t = weight_decay * lr_t / lr_0`. They agree for
        `wd_keras = weight_decay / lr_0` (e.g. 5e-4 / 0.05 = 0.01).
        """
        return self.weight_decay / self.learning_rate

    def to_dict(self):
        return dataclasses.asdict(self)

    def validate(self):
        """Raises ConfigError on the first bad setting."""
        _choice("arch", self.arch, sorted(models.ARCHITECTURES))
        _choice("mask", self.mask, masking.MASK_KINDS)
        if self.signed and self.mask not in SIGNED_TWIN:
            raise ConfigError(
                f"--signed needs a mask kind with a signed form "
                f"({', '.join(SIGNED_TWIN)}). Received: --mask={self.mask}"
            )
        _choice("regime", self.regime, REGIMES)
        _choice("dataset", self.dataset, sorted(data.DATASETS))
        _choice("augment", self.augment, data.AUGMENTATIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, losses.LOSSES)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("bernoulli_eval", self.bernoulli_eval, ("expected", "sample"))
        if self.activation is not None:
            _choice("activation", self.activation, ACTIVATIONS)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(
                    f"--{field.name} must be a finite number. Received: --{field.name}={value}"
                )
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0. Received: --seed={self.seed}")
        for name in ("learning_rate", "batch_size", "epochs", "lr_decay_epochs",
                     "steps_per_execution", "init_factor"):
            _positive(name, getattr(self, name))
        for name in ("weight_decay", "momentum", "validation_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0. Received: --{name}={getattr(self, name)}")
        if not 0 < self.density <= 1:
            raise ConfigError(f"--density must be in (0, 1]. Received: --density={self.density}")
        if not 0 <= self.tau_fraction < 1:
            raise ConfigError(
                f"--tau_fraction must be in [0, 1). Received: --tau_fraction={self.tau_fraction}"
            )
        if not 0 < self.lr_decay_rate <= 1 or not 0 < self.plateau_factor < 1:
            raise ConfigError(
                "--lr_decay_rate must be in (0, 1] and --plateau_factor in (0, 1). "
                f"Received: {self.lr_decay_rate}, {self.plateau_factor}"
            )
        self._check_mask_flags_used()
        if self.width is not None:
            _positive("width", self.width)
        if self.max_examples is not None:
            _positive("max_examples", self.max_examples)
        for name in ("weight_init", "score_init"):
            value = getattr(self, name)
            if value is not None:
                try:
                    initializers.get(value)
                except ValueError as error:
                    raise ConfigError(f"--{name}: {error}") from None
        if self.regime == "mask_then_weights" and not self.mask_from:
            raise ConfigError(
                "--regime=mask_then_weights starts from a trained mask: name its run "
                "directory or .keras file with --mask_from."
            )
        if self.mask_from and self.regime != "mask_then_weights":
            raise ConfigError("--mask_from is only used with --regime=mask_then_weights.")
        if self.strategy == "tpu" and not self.tpu:
            raise ConfigError("--strategy=tpu needs --tpu (a TPU name, address or 'local').")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other; pick one.")
        try:
            models.check_input_shape(self.arch, data.DATASETS[self.dataset].image_shape)
        except ValueError as error:
            raise ConfigError(f"--arch={self.arch} does not fit --dataset={self.dataset}: {error}") from None

    def _check_mask_flags_used(self):
        """Refuses `--tau_fraction` / `--density` set for a mask that ignores it."""
        if self.regime != "mask":
            return
        used_by = {"tau_fraction": masking.THRESHOLD_KINDS, "density": masking.TOPK_KINDS}
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        for name, kinds in used_by.items():
            if self.mask_kind not in kinds and getattr(self, name) != defaults[name]:
                raise ConfigError(
                    f"--{name} only shapes {' and '.join(kinds)} masks; --mask={self.mask_kind} "
                    f"ignores it. Received: --{name}={getattr(self, name)}"
                )


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(
            f"Unknown --{name}={value!r}. Allowed: {', '.join(map(str, allowed))}."
        )


def _positive(name, value):
    if not value > 0:
        raise ConfigError(f"--{name} must be > 0. Received: --{name}={value}")
