"""The settings of one training run, checked in one place.

`TrainConfig` is what the `ssm_keras.train` flags, the flagfiles in `flags/`
and the tuner all produce; `validate()` turns every bad value into a
`ConfigError` that names the value and what is allowed.
"""

import dataclasses
import math
import os

from ssm_keras import choices, files
from ssm_keras.data import specs
from ssm_keras.errors import UserError
from ssm_keras.settings import comma_separated, setting

# `--signed` / `--nosigned` move a mask kind to its signed or unsigned twin.
SIGNED_TWIN = {"binary": "signed", "topk": "signed_topk", "signed": "signed",
               "signed_topk": "signed_topk"}
UNSIGNED_TWIN = {"signed": "binary", "signed_topk": "topk", "binary": "binary",
                 "topk": "topk", "bernoulli": "bernoulli"}


def resolved_mask_kind(mask, signed):
    """The mask kind `--mask=mask` gives after `--signed` (`signed=True`),
    `--nosigned` (`False`) or neither (`None`): `("binary", True)` ->
    `"signed"`."""
    if signed is None:
        return mask
    return (SIGNED_TWIN if signed else UNSIGNED_TWIN)[mask]


def _names(names):
    """`"a, b, c"`: a choice list as the help strings show it."""
    return ", ".join(names)


class ConfigError(UserError, ValueError):
    """A setting that is out of range or unknown; the message says which."""


# The settings whose default depends on the regime. The masks' are the
# defaults' recipe for `conv4`: the paper's with init factor 3 (not its 6) and
# half its weight decay (docs/recipes.md, "Conv nets"); trained weights start
# from the paper's baseline recipe (its plain `elu` init, learning rate 0.01,
# weight decay 5e-4), at which the constant-magnitude `elus` kernels and the
# masks' learning rate diverge in the first epoch.
# The settings of the mask, which `--regime=weights` ignores.
MASK_SETTINGS = ("mask", "signed", "tau_fraction", "density", "score_init", "bernoulli_eval")
REGIME_DEFAULTS = {
    "mask": {"weight_init": "elus", "learning_rate": 0.05, "weight_decay": 2.5e-4},
    "mask_then_weights": {"weight_init": "elus", "learning_rate": 0.05, "weight_decay": 2.5e-4},
    "weights": {"weight_init": "elu", "learning_rate": 0.01, "weight_decay": 5e-4},
}


# The fraction of the epochs after which a `--target_remaining` path reaches its target.
DEFAULT_TARGET_REACH = 0.75


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; the field names are the command-line flags."""

    # Model and mask.
    arch: str = setting(
        "conv4",
        f"Architecture: {_names(choices.ARCHITECTURES)}.")
    mask: str = setting("signed", f"Mask kind: {_names(choices.MASK_KINDS)}.")
    signed: bool | None = setting(
        None,
        "--signed / --nosigned: use the signed (keep, hide, invert) or unsigned (keep, hide) "
        "form of --mask (signed<->binary, signed_topk<->topk).")
    tau_fraction: float = setting(
        0.4,
        "Threshold masks: tau = tau_fraction * max|initial scores| per layer.")
    density: float = setting(
        0.5,
        "Top-k masks: fraction of each layer's weights kept, in (0, 1].")
    weight_init: str | None = setting(
        None,
        f"Initialiser of the frozen weights: {_names(choices.INITIALIZERS)} or any Keras "
        "initialiser name (default: per --regime, see REGIME_DEFAULTS: elus for the masks, elu "
        "for --regime=weights).")
    init_factor: float = setting(3.0, "elus: W0 = sqrt(init_factor / fan_in) * sign(N(0, 1)).")
    score_init: str | None = setting(
        None,
        "Initialiser of the scores (default: the mask kind's).")
    bernoulli_eval: str = setting(
        "expected",
        f"How bernoulli masks evaluate: {_names(choices.BERNOULLI_EVAL_MODES)} (expected: "
        "sigmoid(s) > 0.5).")
    train_batch_norm: bool = setting(
        False,
        "Masked models: train the batch norms' scale and offset too (they stay at 1 and 0 "
        "otherwise); the weight decay stays on the scores.")
    recalibrate_batch_norm: bool | None = setting(
        None,
        "Re-estimate the batch-norm statistics over training batches before every evaluation "
        "(ssm_keras.training.batch_norm). Unset: only for masks that evaluate another mask than "
        "they train with (bernoulli with --bernoulli_eval=expected); --recalibrate_batch_norm: "
        "every model with batch norm (short runs, whose moving statistics lag); "
        "--norecalibrate_batch_norm: never.")
    activation: str | None = setting(
        None,
        f"Hidden activation: {_names(choices.ACTIVATIONS)} (default: elu for fcn/conv, relu "
        "for residual nets).")
    width: int | None = setting(None, "Width multiplier (wrn28: the widening factor k).")
    seed: int = setting(
        0,
        "Seed of the initial weights and scores, the data split and the shuffling.")
    init_file: str | None = setting(
        None,
        "Load the initial weights and scores from this init file (.npz).")
    save_init_file: str | None = setting(
        None,
        "Write the initial weights and scores to this new init file (.npz).")
    regime: str = setting(
        "mask",
        "mask: train the mask; weights: train the weights (baseline); mask_then_weights: "
        "freeze the mask of --mask_from and train its weights.")
    mask_from: str | None = setting(
        None,
        "mask_then_weights: run directory (or .keras file) of the trained mask.")
    # Data.
    dataset: str = setting("cifar10", f"Data set: {_names(specs.DATASETS)}.")
    data_dir: str | None = setting(
        None,
        "Local data (IDX .gz files, CIFAR archives, class folders or their .tar.gz) or a "
        "tensorflow_datasets data_dir.")
    validation_size: int = setting(5000, "Training examples held out for validation.")
    max_examples: int | None = setting(
        None,
        "Use at most this many examples of each split (smoke tests).")
    augment: str = setting(
        "none",
        f"Augmentation: {_names(specs.AUGMENTATIONS)} (crop_flip: pad 4, random crop, "
        "flip).")
    augment_fraction: float = setting(
        1.0,
        "The fraction of --epochs, from the first, that --augment applies to; the later "
        "epochs train on the images as they are (in (0, 1]; 0.5 with --target_reach=0.5: "
        "augmented while the mask shrinks to its target, not while it holds it).")
    # Optimisation.
    batch_size: int = setting(128, "Global batch size (split over replicas).")
    epochs: int = setting(100, "Training epochs.")
    optimizer: str = setting(
        "sgd",
        f"Optimizer: {_names(choices.OPTIMIZERS)} (sgd with --momentum, --nesterov).")
    learning_rate: float | None = setting(
        None, "Initial learning rate (default: per --regime: 0.05 for the masks, 0.01 for "
        "--regime=weights).")
    momentum: float = setting(0.9, "SGD momentum.")
    nesterov: bool = setting(True, "Nesterov momentum.")
    lr_schedule: str = setting(
        "exponential",
        f"Learning-rate schedule: {_names(choices.SCHEDULES)} (exponential: smooth).")
    lr_decay_rate: float = setting(0.9, "exponential: factor per --lr_decay_epochs.")
    lr_decay_epochs: float = setting(10.0, "exponential: epochs per --lr_decay_rate.")
    plateau_patience: int = setting(15, "plateau: epochs without improvement before reducing.")
    plateau_factor: float = setting(0.2, "plateau: factor of each reduction.")
    weight_decay: float | None = setting(
        None,
        "Decoupled weight decay in the paper's sense (on the learning-rate schedule: Keras "
        "weight_decay = weight_decay / learning_rate; default: per --regime: 2.5e-4 for the "
        "masks, 5e-4 for --regime=weights).")
    ema_momentum: float | None = setting(
        None,
        "Keep an exponential moving average of the trained variables (a mask's scores), "
        "a = m * a + (1 - m) * v after every step with m this value in (0, 1), and evaluate "
        "with it: each validation, the final evaluation and the saved model (0.999: about the "
        "last 1,000 steps; ssm_keras.training.averaging). Unset: no average.")
    ema_start: float = setting(
        0.0,
        "--ema_momentum: the fraction of --epochs after which the average starts, from the "
        "variables as they are then (in [0, 1)); the validations before it evaluate the "
        "variables themselves (0.75 with --target_reach=0.75: the average of the hold).")
    target_remaining: float | None = setting(
        None,
        f"Threshold masks ({_names(choices.THRESHOLD_KINDS)}): the remaining weights (% of the "
        "masked weights) to end at: the weight decay of the scores (--weight_decay in the "
        "first epoch) is steered once per epoch along a path from the start to this value "
        "(ssm_keras.training.sparsity).")
    target_reach: float = setting(
        DEFAULT_TARGET_REACH,
        "--target_remaining: the fraction of --epochs after which the path reaches the target, "
        "which it then holds (in (0, 1]; 0.5: reached half-way, held for the second half).")
    loss: str = setting(
        "crossentropy",
        f"Loss: {_names(choices.LOSSES)} (crossentropy: exact, from the logits; "
        "clipped_crossentropy: the paper's code, -log(clip(p_true, 1e-7, 1 - 1e-7)), no "
        "gradient where clipped).")
    # Run.
    model_dir: str | None = setting(
        None,
        "Run directory (default: runs/<arch>-<mask>-<dataset>-seed<seed>).")
    resume: bool = setting(
        False,
        "Continue a finished run in --model_dir to a larger --epochs.")
    start_from: str | None = setting(
        None,
        "Start from another run's checkpoint (its run folder, its checkpoint/ folder or a "
        "kept checkpoint/epoch-N/ folder): the scores, weights, optimiser state, epoch "
        "history and target steering after its epoch N, then epochs N+1 to --epochs with "
        "this run's settings (ssm_keras.training.forking).")
    keep_checkpoints: str | None = setting(
        None,
        "Comma-separated epoch numbers (e.g. 50,75) after which a copy of the checkpoint is "
        "kept in checkpoint/epoch-N/, for --start_from (the checkpoint itself holds the last "
        "epoch only).")
    overwrite: bool = setting(False, "Replace a run already in --model_dir.")
    strategy: str = setting(
        "default",
        f"Distribution strategy: {_names(choices.STRATEGIES)} (mirrored: all GPUs, else all "
        "logical CPUs; multi_worker_mirrored: the workers of TF_CONFIG, --model_dir on a file "
        "system they share, scripts/local_workers.py starts N on this machine).")
    tpu: str | None = setting(None, "TPU name or address (or 'local') for --strategy=tpu.")
    worker_timeout: float = setting(
        600.0,
        "multi_worker_mirrored: seconds to wait for every worker of TF_CONFIG to start "
        "(0: no limit).")
    mixed_precision: str = setting(
        "float32", f"Precision policy: {_names(choices.PRECISIONS)}.")
    jit_compile: bool | None = setting(
        None,
        "Compile training steps with XLA (--nojit_compile: never); unset, Keras decides: on "
        "with a GPU or TPU and --strategy=default, else off.")
    steps_per_execution: int = setting(
        1,
        "Training steps per call into TensorFlow (helps small models).")
    run_eagerly: bool = setting(
        False,
        "Run the model eagerly, without tf.function graphs (debugging; slow, but starts at "
        "once).")
    verbose: int | None = setting(
        None,
        "0: silent, 1: progress bar, 2: one line per epoch (default: 1 on a terminal, else "
        "2).")

    def __post_init__(self):
        """Fills the settings left None whose default depends on the regime
        (`REGIME_DEFAULTS`); an unknown regime keeps them None (`validate`
        refuses it)."""
        for name, value in REGIME_DEFAULTS.get(self.regime, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    @property
    def mask_kind(self):
        """The mask kind after `--signed` / `--nosigned`."""
        return resolved_mask_kind(self.mask, self.signed)

    @property
    def masked(self):
        """Whether the model is masked (every regime but `weights`)."""
        return self.regime != "weights"

    def keras_weight_decay(self):
        """Keras' decoupled weight decay for the paper's `weight_decay`.

        Keras subtracts `lr_t * wd_keras * v`; the paper subtracted
        `wd_t * v` with `wd_t = weight_decay * lr_t / lr_0`. They agree for
        `wd_keras = weight_decay / lr_0` (e.g. 5e-4 / 0.05 = 0.01).
        """
        return self.weight_decay / self.learning_rate

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls):
        """Every setting's default, by name (None where it depends on the regime)."""
        return {field.name: field.default for field in dataclasses.fields(cls)}

    def validate(self):
        """Raises ConfigError on the first bad setting."""
        _choice("arch", self.arch, choices.ARCHITECTURES)
        _choice("mask", self.mask, choices.MASK_KINDS)
        if self.signed and self.mask not in SIGNED_TWIN:
            raise ConfigError(
                f"--signed needs a mask kind with a signed form "
                f"({', '.join(SIGNED_TWIN)}). Received: --mask={self.mask}"
            )
        _choice("regime", self.regime, choices.REGIMES)
        _choice("dataset", self.dataset, sorted(specs.DATASETS))
        _choice("augment", self.augment, specs.AUGMENTATIONS)
        _choice("optimizer", self.optimizer, choices.OPTIMIZERS)
        _choice("loss", self.loss, choices.LOSSES)
        _choice("lr_schedule", self.lr_schedule, choices.SCHEDULES)
        _choice("strategy", self.strategy, choices.STRATEGIES)
        _choice("mixed_precision", self.mixed_precision, choices.PRECISIONS)
        _choice("bernoulli_eval", self.bernoulli_eval, choices.BERNOULLI_EVAL_MODES)
        if self.activation is not None:
            _choice("activation", self.activation, choices.ACTIVATIONS)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(
                    f"--{field.name} must be a finite number. Received: --{field.name}={value}"
                )
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2**63). Received: --seed={self.seed}")
        for name in ("learning_rate", "batch_size", "epochs", "lr_decay_epochs",
                     "steps_per_execution", "init_factor"):
            _positive(name, getattr(self, name))
        for name in ("weight_decay", "momentum", "validation_size", "plateau_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"--{name} must be >= 0. Received: --{name}={getattr(self, name)}")
        if self.momentum > 1:
            raise ConfigError(f"--momentum must be in [0, 1]. Received: --momentum={self.momentum}")
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
        if self.worker_timeout < 0:
            raise ConfigError(
                f"--worker_timeout must be >= 0. Received: --worker_timeout={self.worker_timeout}"
            )
        self._check_averaging()
        self._check_augment_fraction()
        self._check_checkpoint_settings()
        self._check_mask_flags_used()
        self._check_target_remaining()
        self._check_flags_used()
        if self.width is not None:
            _positive("width", self.width)
        if self.max_examples is not None:
            _positive("max_examples", self.max_examples)
        for name in ("weight_init", "score_init"):
            value = getattr(self, name)
            if value is not None and value not in choices.INITIALIZERS:
                _check_keras_initializer(name, value)
        if self.score_init in ("zeros", "Zeros") and self.mask_kind in choices.THRESHOLD_KINDS:
            raise ConfigError(
                f"--score_init={self.score_init} "
                f"{choices.all_hidden_by_zero_scores(self.mask_kind)}; leave --score_init out "
                "(the mask's default).")
        if self.regime == "mask_then_weights" and not self.mask_from:
            raise ConfigError(
                "--regime=mask_then_weights starts from a trained mask: name its run "
                "directory or .keras file with --mask_from."
            )
        if self.mask_from and self.regime != "mask_then_weights":
            raise ConfigError("--mask_from is only used with --regime=mask_then_weights.")
        for name in ("init_file", "save_init_file"):
            if self.regime == "mask_then_weights" and getattr(self, name):
                raise ConfigError(
                    f"--{name} names the initial weights and scores, and a "
                    "--regime=mask_then_weights run takes them from --mask_from: leave it out. "
                    f"Received: --{name}={getattr(self, name)}")
        if self.strategy == "tpu" and not self.tpu:
            raise ConfigError("--strategy=tpu needs --tpu (a TPU name, address or 'local').")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other; pick one.")
        if self.verbose not in (None, 0, 1, 2):
            raise ConfigError(
                "--verbose is 0 (silent), 1 (a progress bar) or 2 (a line per epoch). "
                f"Received: --verbose={self.verbose}")
        if self.train_batch_norm and self.regime != "mask":
            raise ConfigError(
                "--train_batch_norm trains batch-norm parameters beside the mask: it needs "
                f"--regime=mask. Received: --regime={self.regime}"
            )

    def default_run_name(self):
        """`<arch>-<mask kind or baseline>-<dataset>-seed<seed>`."""
        what = self.mask_kind if self.masked else "baseline"
        if self.regime == "mask_then_weights":
            what += "-then-weights"
        return f"{self.arch}-{what}-{self.dataset}-seed{self.seed}"

    def run_folder(self):
        """`--model_dir`, or by default `runs/` + `default_run_name()`."""
        return self.model_dir or os.path.join("runs", self.default_run_name())

    def check_inputs_outside_run_folder(self):
        """Refuses a `--mask_from` or `--start_from` inside the run folder
        (the run would replace what it starts from), and with `--overwrite`
        an `--init_file` or `--save_init_file` inside it (`--overwrite`
        deletes everything in it); for a training run (`trainer.run`), after
        `validate`. ConfigError naming the path."""
        folder = self.run_folder()
        for name, replaced in (("mask_from", "the mask it starts from"),
                               ("start_from", "the checkpoint it starts from")):
            path = getattr(self, name)
            if path and files.inside(path, folder):
                raise ConfigError(
                    f"--{name}={path} lies in the run folder --model_dir={folder}: the run "
                    f"would replace {replaced}; give it another --model_dir"
                    + (", or leave --start_from out to resume the run there."
                       if name == "start_from" else "."))
        for name in ("init_file", "save_init_file"):
            path = getattr(self, name)
            if self.overwrite and path and files.inside(path, folder):
                raise ConfigError(
                    f"--{name}={path} lies in the run folder --model_dir={folder}, and "
                    "--overwrite deletes everything in it: move the file out of the folder, "
                    "or give the run another --model_dir.")

    def _check_mask_flags_used(self):
        """Refuses `--tau_fraction` / `--density` set for a mask that ignores
        it, and every mask setting for `--regime=weights`, which trains no mask."""
        defaults = self.defaults()
        if self.regime == "weights":
            for name in MASK_SETTINGS:
                if getattr(self, name) != defaults[name]:
                    raise ConfigError(
                        f"--{name} sets the mask, and --regime=weights trains none (a plain "
                        f"model). Received: --{name}={getattr(self, name)}")
            return
        if self.regime != "mask":
            return
        for name, kinds in choices.MASK_SHAPE_USERS.items():
            if self.mask_kind not in kinds and getattr(self, name) != defaults[name]:
                raise ConfigError(
                    f"--{name} only shapes {' and '.join(kinds)} masks; --mask={self.mask_kind} "
                    f"ignores it. Received: --{name}={getattr(self, name)}"
                )

    def _check_flags_used(self):
        """Refuses a flag set away from its default where the run ignores it
        (e.g. `--momentum` with `--optimizer=adam`)."""
        sgd = ("optimizer", "sgd")
        exponential = ("lr_schedule", "exponential")
        plateau = ("lr_schedule", "plateau")
        users = {  # flag: the setting under which it is used
            "momentum": sgd, "nesterov": sgd,
            "lr_decay_rate": exponential, "lr_decay_epochs": exponential,
            "plateau_patience": plateau, "plateau_factor": plateau,
            "init_factor": ("weight_init", "elus"),
            "bernoulli_eval": ("mask", "bernoulli"),
            "tpu": ("strategy", "tpu"),
            "worker_timeout": ("strategy", "multi_worker_mirrored"),
        }
        defaults = self.defaults()
        for name, (deciding, value) in users.items():
            actual = self.mask_kind if deciding == "mask" else getattr(self, deciding)
            if actual != value and getattr(self, name) != defaults[name]:
                raise ConfigError(
                    f"--{name} is only used with --{deciding}={value}; --{deciding}={actual} "
                    f"ignores it. Received: --{name}={getattr(self, name)}"
                )

    def _check_averaging(self):
        """Refuses `--ema_momentum` out of (0, 1), and `--ema_start` out of
        [0, 1) or without an average."""
        if self.ema_momentum is not None and not 0 < self.ema_momentum < 1:
            raise ConfigError(
                "--ema_momentum is the weight of the moving average's past, in (0, 1). "
                f"Received: --ema_momentum={self.ema_momentum}")
        if not 0 <= self.ema_start < 1:
            raise ConfigError(
                "--ema_start is the fraction of --epochs after which the moving average "
                f"starts, in [0, 1). Received: --ema_start={self.ema_start}")
        if self.ema_start and self.ema_momentum is None:
            raise ConfigError(
                "--ema_start is when the moving average of --ema_momentum starts, and "
                f"--ema_momentum is not set. Received: --ema_start={self.ema_start}")
        if self.ema_momentum is not None and self.ema_start_epoch() >= self.epochs:
            raise ConfigError(
                f"--ema_start={self.ema_start} of --epochs={self.epochs} starts the moving "
                f"average at epoch {self.ema_start_epoch() + 1}, after the last; it must start "
                f"by epoch {self.epochs}: --ema_start at most {self.epochs - 1}/{self.epochs}.")

    def _check_augment_fraction(self):
        """Refuses `--augment_fraction` out of (0, 1] or with no augmentation."""
        if not 0 < self.augment_fraction <= 1:
            raise ConfigError(
                "--augment_fraction is the fraction of --epochs that --augment applies to, in "
                f"(0, 1]. Received: --augment_fraction={self.augment_fraction}")
        if self.augment_fraction != 1 and self.augment == "none":
            raise ConfigError(
                "--augment_fraction limits the epochs of --augment, and --augment=none "
                f"augments none. Received: --augment_fraction={self.augment_fraction} (add "
                "--augment_fraction=1 to turn off a flagfile's augmentation)")

    def _check_checkpoint_settings(self):
        """Refuses `--keep_checkpoints` that are not epochs of the run, and
        init files with `--start_from` (its weights are the checkpoint's)."""
        self.kept_checkpoint_epochs()
        for name in ("init_file", "save_init_file"):
            if self.start_from and getattr(self, name):
                raise ConfigError(
                    f"--{name} names the initial weights and scores, and a --start_from run "
                    "takes them from its checkpoint: leave one out. Received: "
                    f"--{name}={getattr(self, name)}")

    def kept_checkpoint_epochs(self):
        """The epochs of `--keep_checkpoints` as a set of integers in
        `[1, epochs]`; ConfigError naming a value that is not one."""
        if self.keep_checkpoints is not None and not isinstance(self.keep_checkpoints, str):
            raise ConfigError(
                "--keep_checkpoints is a text of epoch numbers separated by commas, such as "
                f"'50,75'. Received: {self.keep_checkpoints!r}")
        epochs = set()
        for item in comma_separated(self.keep_checkpoints):
            try:
                epoch = int(item)
            except ValueError:
                epoch = None
            if epoch is None or not 1 <= epoch <= self.epochs:
                raise ConfigError(
                    f"--keep_checkpoints lists epoch numbers from 1 to --epochs={self.epochs}, "
                    f"separated by commas. Received: {item!r} in "
                    f"--keep_checkpoints={self.keep_checkpoints}")
            epochs.add(epoch)
        return epochs

    def augment_epochs(self):
        """The epochs `0 .. n - 1` that `--augment` applies to: `n = ceil(augment_fraction *
        epochs)`, or None for every epoch (`--augment_fraction=1`)."""
        if self.augment_fraction == 1:
            return None
        # Rounded first: 0.07 * 100 is 7.000000000000001.
        return math.ceil(round(self.augment_fraction * self.epochs, 9))

    def epoch_dependent_settings(self):
        """The settings whose schedule is a fraction of `--epochs` (a run of
        more epochs differs from their first epoch on), as flags:
        `--lr_schedule=cosine`, `--target_remaining` (its path reaches the
        target at a fraction of the run), `--augment_fraction` below 1 and
        `--ema_start` above 0."""
        settings = []
        if self.lr_schedule == "cosine":
            settings.append("--lr_schedule=cosine")
        if self.target_remaining is not None:
            settings.append(f"--target_remaining={self.target_remaining}")
        if self.augment_epochs() is not None:
            settings.append(f"--augment_fraction={self.augment_fraction}")
        if self.ema_momentum is not None and self.ema_start:
            settings.append(f"--ema_start={self.ema_start}")
        return settings

    def ema_start_epoch(self):
        """The epoch (from 0) at whose start the moving average starts:
        `ceil(ema_start * epochs)`."""
        return math.ceil(round(self.ema_start * self.epochs, 9))

    def _check_target_remaining(self):
        """Refuses `--target_remaining` out of (0, 100) or for a mask it cannot
        steer, and `--target_reach` out of (0, 1] or without a target."""
        target = self.target_remaining
        if target is None:
            if self.target_reach != DEFAULT_TARGET_REACH:
                raise ConfigError(
                    "--target_reach shapes the path of --target_remaining, which is not set. "
                    f"Received: --target_reach={self.target_reach}")
            return
        if not 0 < self.target_reach <= 1:
            raise ConfigError(
                "--target_reach is the fraction of --epochs after which the path reaches "
                f"the target, in (0, 1]. Received: --target_reach={self.target_reach}")
        if not 0 < target < 100:
            raise ConfigError(
                f"--target_remaining is a percentage in (0, 100). Received: "
                f"--target_remaining={target}")
        kinds = " and ".join(choices.THRESHOLD_KINDS)
        if self.regime != "mask":
            raise ConfigError(
                f"--target_remaining steers the pruning of a mask in training; "
                f"--regime={self.regime} trains none.")
        if self.mask_kind in choices.TOPK_KINDS:
            raise ConfigError(
                f"--target_remaining steers {kinds} masks; a --mask={self.mask_kind} mask keeps "
                "the fraction --density of each layer: set that instead.")
        if self.mask_kind not in choices.THRESHOLD_KINDS:
            raise ConfigError(
                f"--target_remaining steers {kinds} masks (weight decay against a threshold); "
                f"--mask={self.mask_kind} has no threshold.")
        if self.tau_fraction == 0:
            raise ConfigError(
                "--target_remaining prunes with weight decay, which never brings a score "
                "across a threshold of 0: set --tau_fraction in (0, 1). Received: "
                "--tau_fraction=0")
        if self.epochs < 2:
            raise ConfigError(
                "--target_remaining steers the weight decay from the second epoch on (the "
                f"first trains with --weight_decay): it needs --epochs >= 2. Received: "
                f"--epochs={self.epochs}")


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(
            f"Unknown --{name}={value!r}. Allowed: {', '.join(map(str, allowed))}."
        )


def _check_keras_initializer(name, value):
    """Raises ConfigError unless `value` names a Keras initialiser.

    The one check that needs Keras, imported here so that checking every
    other setting does not.
    """
    from ssm_keras import initializers  # pylint: disable=import-outside-toplevel

    try:
        initializers.get(value)
    except ValueError as error:
        raise ConfigError(f"--{name}: {error}") from None


def _positive(name, value):
    if not value > 0:
        raise ConfigError(f"--{name} must be > 0. Received: --{name}={value}")
