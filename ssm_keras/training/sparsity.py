"""Sparsity you ask for: steering the scores' weight decay to a target.

A threshold mask (`signed`, `binary`) keeps the weights whose score is
beyond the fixed threshold `tau` of its layer; the decoupled weight decay on
the scores is what prunes it. How far a given decay prunes depends on the
architecture and the schedule's length, so `--target_remaining=P` steers the
decay instead: the mask stays the paper's threshold mask, only the decay
changes, once per epoch, so that the remaining percentage `p_e` after epoch
`e` follows the target path

    p*_e = p_0 * (P / p_0) ** min(1, e / (R * E))

from the measured start `p_0` (before training) to `P`: geometric (the same
share of the remaining weights pruned every epoch), reaching `P` after the
fraction `R` of the `E` epochs (`--target_reach`, 0.75 unless set) and
holding it for the rest.

The decay of each epoch after the first (which trains with `--weight_decay`)
is computed from the scores (`weight_decay_for`): the decay alone
multiplies every score by `f = (1 - lr * wd / lr_0) ** n` over the epoch's
`n` steps (`lr`: the learning rate of the epoch's first step), which leaves the
weights whose ratio `r = |s| / tau`
(`s / tau` for binary masks) exceeds `1 / f`; `f` is chosen so that exactly
the share `a_(e+1) / 100` of the weights does: the aim `a`, the path's next
value corrected for regrowth (below). A mask already at or below its aim
gets no decay: weight decay only shrinks scores, so it comes back only as
fast as the gradients regrow it. A run continued with `--resume` to more
epochs follows the path of its new `E`.

The loss's gradients pull the scores of the weights the network uses back
above the threshold, so an epoch whose decay alone would leave `q_e` ends
above it, at `p_e = g_e * q_e`, and the regrowth `g_e` grows as the mask
thins (Conv4 on CIFAR-10: about 1.07 an epoch at 8% remaining, 1.2 at 3%).
Aiming at the path itself therefore leaves a lasting shortfall (Conv4:
3.35% after 100 epochs for a target of 2.9%; 2.90% with the correction
below). So the controller measures each epoch's regrowth and aims the next
epoch past the path by it:

    g_e = clip(p_e / q_e, 1 / MAX_REGROWTH, MAX_REGROWTH),
    a_(e+1) = p*_(e+1) / g_e,

where `q_e` is the aim `a_e` of an epoch with decay and `p_(e-1)` of one
without (the first epoch, which trains with the decay it is given, keeps
`g = 1`). While the decay steers, `log g_e = log g_(e-1) + log(p_e / p*_e)`:
the sum of the errors against the path, the integral term of a controller.
If the regrowth is steady the mask lands on the path one epoch after it
is measured; if it grows with the cut, as it does, it settles where the
decay's cut and the regrowth balance on the path. The clip keeps one odd
epoch from wiping out the mask (or from stopping the pruning).
"""

import warnings

import keras
import numpy as np

from ssm_keras import arguments, choices
from ssm_keras import layers as ssm_layers
from ssm_keras.training import callbacks as ssm_callbacks
from ssm_keras.training import score_decay
from ssm_keras.training.config import DEFAULT_TARGET_REACH

# The largest regrowth (and the smallest, its inverse) an epoch may count.
MAX_REGROWTH = 4.0

# How far (relative) from its target a `SparsityTarget` fit may end unwarned.
TARGET_TOLERANCE = 0.05


def target_path(start_percent, target_percent, epoch, epochs,
                reach_fraction=DEFAULT_TARGET_REACH):
    """`p*_e`: the target remaining percentage after `epoch` of `epochs`
    (see the module docstring); `start_percent` at epoch 0, `target_percent`
    from `reach_fraction * epochs` on."""
    progress = min(1.0, epoch / (reach_fraction * epochs))
    return start_percent * (target_percent / start_percent) ** progress


def threshold_ratios(model):
    """`r = |s| / tau` (signed masks) or `s / tau` (binary) of every masked
    weight of `model`, one flat array: a weight remains while `r > 1`."""
    ratios = []
    for layer, name in ssm_layers.masked_kernels(model):
        scores = layer.scores_variable(name).numpy().ravel()
        tau = float(layer.threshold_variable(name).numpy())
        ratios.append((np.abs(scores) if layer.mask_kind == "signed" else scores) / tau)
    return np.concatenate(ratios)


def percent_above_threshold(ratios):
    """The percentage of the weights with threshold ratios `ratios` that
    remain: `100 * mean(r > 1)`."""
    return 100.0 * float(np.mean(ratios > 1.0))


def regrowth(remaining_percent, expected_percent):
    """`g_e` of the module docstring: how many times more weights remain
    (`remaining_percent`) than the decay alone would have left
    (`expected_percent`), within `[1 / MAX_REGROWTH, MAX_REGROWTH]`."""
    if expected_percent <= 0.0:
        return 1.0 if remaining_percent <= 0.0 else MAX_REGROWTH
    return float(np.clip(remaining_percent / expected_percent, 1.0 / MAX_REGROWTH, MAX_REGROWTH))


def weight_decay_for(ratios, wanted_percent, steps, learning_rate, initial_learning_rate):
    """The paper's decay `wd` that leaves `wanted_percent` of `ratios` above 1.

    Over `steps` steps at `learning_rate` Keras multiplies each score by
    `f = (1 - learning_rate * wd / initial_learning_rate) ** steps`; the
    kept share of `ratios * f > 1` is `wanted_percent / 100` for
    `f = 1 / quantile(ratios, 1 - wanted_percent / 100)`. Returns 0 when no
    shrinking is needed (`f >= 1`; `wanted_percent >= 100`, an aim over the
    regrowth `g < 1` after an epoch that pruned more than aimed), and when
    none is possible: at a learning rate of 0 (where a cosine schedule
    ends) the decay shrinks nothing.
    """
    if wanted_percent >= 100.0:
        return 0.0
    threshold = np.quantile(ratios, 1.0 - wanted_percent / 100.0)
    if threshold <= 1.0 or learning_rate <= 0.0:
        return 0.0
    factor = 1.0 / threshold
    return float((1.0 - factor ** (1.0 / steps)) * initial_learning_rate / learning_rate)


class SparsityController(keras.callbacks.Callback):
    """Steers the optimiser's weight decay so that the mask ends at a target.

    The first epoch of a run trains with the decay it is given. Every later
    one, the first after a restore included, sets its decay as its first
    step begins (after every callback's `on_epoch_begin`, a learning-rate
    scheduler's too) with `weight_decay_for`: the path's value after the
    epoch over the last epoch's regrowth, the epoch's number of steps (as
    Keras counts them, else as many as the optimiser applied in the last
    epoch), the learning rate of its first step. It adds to the epoch's
    logs, hence to the history and to TensorBoard
    (`train/epoch_score_weight_decay`, `train/epoch_target_remaining_percent`):
    `score_weight_decay`, the decay the epoch trained with (the paper's
    sense, see `config.TrainConfig.keras_weight_decay`), and
    `target_remaining_percent`, the path's value after the epoch, and
    `mask_regrowth`, the epoch's regrowth `g`.

    The decay reaches the traced training step through a variable
    (`score_decay.steer_decay`), so the step is traced (and compiled, with
    XLA) once, not once an epoch. Its state (`start_percent`,
    `weight_decay`, `regrowth`, `expected_percent`, `aimed_percent`: the
    path's value the last decay aimed at) is kept by `callbacks.RunCheckpoint`
    (`CHECKPOINT_ATTRIBUTES`), so a resumed run steers exactly as one never
    interrupted, and one that goes on along another path (`--start_from`
    with another target, `--resume` to more epochs) steers along its own.

    Args:
        target_percent: `P`, the remaining percentage to end at.
        epochs: the run's epochs `E`.
        reach_fraction: `R`, the fraction of the epochs after which the
            path reaches the target.
        weight_decay: the decay of the first epoch (the paper's sense).
        initial_learning_rate: `lr_0`; Keras' decay is `weight_decay / lr_0`.
    """

    CHECKPOINT_ATTRIBUTES = ("start_percent", "weight_decay", "regrowth", "expected_percent",
                             "aimed_percent")

    def __init__(self, target_percent, epochs, weight_decay, initial_learning_rate,
                 reach_fraction=DEFAULT_TARGET_REACH):
        super().__init__()
        self.target_percent = target_percent
        self.epochs = epochs
        self.reach_fraction = reach_fraction
        self.initial_learning_rate = initial_learning_rate
        self.weight_decay = weight_decay
        self.start_percent = None
        self.regrowth = 1.0
        self.expected_percent = None  # what the decay alone leaves; None in the first epoch
        self.aimed_percent = None  # the path's value the last decay aimed at
        self._steering = False
        self._epoch = None  # the epoch whose decay is still to be set, or None
        self._first_iteration = 0
        self._steps = 0  # the steps the optimiser applied in the last epoch of this fit

    def _apply(self):
        score_decay.steer_decay(self.model, self.weight_decay / self.initial_learning_rate)

    def _path(self, epoch):
        return target_path(self.start_percent, self.target_percent, epoch, self.epochs,
                           self.reach_fraction)

    def _iterations(self):
        optimizer = score_decay.applying_optimizer(self.model.optimizer)
        return int(optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._steering = False
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        # After `on_train_begin`, where `RunCheckpoint` restores this
        # callback's state: a run's first epoch has no start measured yet.
        self._first_iteration = self._iterations()
        self._epoch = epoch if self.start_percent is not None else None
        if self.start_percent is None:
            self.start_percent = self._start(epoch)
        if not self._steering:
            self._apply()
            self._steering = True

    def _start(self, epoch):
        """`p_0`: the remaining percentage as the run's first epoch `epoch` begins."""
        return percent_above_threshold(threshold_ratios(self.model))

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch is not None:
            self._aim(self._epoch + 1, self.params.get("steps") or self._steps)
            self._apply()
            self._epoch = None

    def on_epoch_end(self, epoch, logs=None):
        self._steps = self._iterations() - self._first_iteration
        remaining = percent_above_threshold(threshold_ratios(self.model))
        if self.expected_percent is not None:
            self.regrowth = regrowth(remaining, self.expected_percent)
        if logs is not None:
            logs.update(score_weight_decay=self.weight_decay,
                        target_remaining_percent=self._path(epoch + 1),
                        mask_regrowth=self.regrowth)

    def _aim(self, epoch, steps):
        """Sets the decay of epoch `epoch` (from 1), of `steps` steps, at
        the path's value after it over the regrowth; without a step count
        (a data set of unknown length, in the first epoch after a restore)
        the decay stays."""
        if not steps:
            return
        ratios = threshold_ratios(self.model)
        remaining = percent_above_threshold(ratios)
        self.aimed_percent = self._path(epoch)
        aim = self.aimed_percent / self.regrowth
        self.weight_decay = weight_decay_for(
            ratios, aim, steps, ssm_callbacks.current_learning_rate(self.model.optimizer),
            self.initial_learning_rate)
        self.expected_percent = min(aim, remaining) if self.weight_decay > 0 else remaining


class SparsityTarget(SparsityController):
    """`--target_remaining` for a supermask of one's own in `model.fit`.

    Steers the scores' weight decay so that `remaining_percent` of the masked
    weights remain after the fit, along the path of the module docstring
    over the fit's `epochs` (reached after `reach_fraction` of them)::

        masked = ssm_keras.supermask(model, "signed")
        masked.compile(optimizer=ssm_keras.decay_scores_only("sgd", masked, 5e-4),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        masked.fit(x, y, epochs=20, callbacks=[ssm_keras.SparsityTarget(5.0)])

    The first epoch trains with the decay `decay_scores_only` set (the
    paper's `wd`; `lr_0` is the learning rate as the fit starts); each
    later one with the decay the controller chose. The epoch's logs, hence
    the history, gain `score_weight_decay`, `target_remaining_percent` and
    `mask_regrowth`. One fit is one path: it starts at epoch 0 and keeps
    its state in this callback only (`ssm_keras.train --target_remaining`
    checkpoints it and resumes bit-identical).

    Args:
        remaining_percent: the percentage of masked weights to end at, in
            (0, 100) and below what the mask keeps as the fit starts.
        reach_fraction: the fraction of the epochs after which the path
            reaches the target, in (0, 1].

    After the fit the optimiser decays as compiled again (after a fit an
    exception stopped, where Keras calls no `on_train_end`, the optimiser
    keeps the last epoch's decay until the next `SparsityTarget` fit
    starts). The decay of an epoch is set as its first step begins (after
    `on_epoch_begin`, so a `LearningRateScheduler`'s rate counts), for the
    rate of that step; a schedule that steps the rate down within an epoch
    (Keras applies `PiecewiseConstantDecay`'s boundary `b` from step
    `b + 1`) makes the epoch prune less than aimed, and the regrowth
    correction then overshoots: put such boundaries one step before an
    epoch's start. A fit that ends more than `TARGET_TOLERANCE` (relative)
    away from its target warns.

    Raises (ValueError, when the fit starts, naming what to change): a
    model whose masks are not threshold masks (`signed`, `binary`) training
    their scores (not frozen) with a threshold above 0, an optimiser that
    decays other variables than the scores (compile with
    `decay_scores_only`, or after `keras.saving.load_model` call
    `exclude_all_but_scores`), one with `use_ema=True` or a learning rate of
    0 as the fit starts, a fit of fewer than 2 epochs or one that starts
    after epoch 0, and a target at or above the share of weights the mask
    keeps.
    """

    def __init__(self, remaining_percent, reach_fraction=DEFAULT_TARGET_REACH):
        remaining_percent = arguments.number("remaining_percent", remaining_percent, 0, 100,
                                             low_open=True, high_open=True)
        reach_fraction = arguments.number("reach_fraction", reach_fraction, 0, 1, low_open=True)
        super().__init__(remaining_percent, None, None, None, reach_fraction)

    def on_train_begin(self, logs=None):
        self._check_masks()
        optimizer = score_decay.applying_optimizer(self.model.optimizer)
        self._check_decays_scores_only(optimizer)
        epochs = self.params.get("epochs") or 0
        if epochs < 2:
            raise ValueError("SparsityTarget steers the weight decay from the second epoch on "
                             f"(the first trains with the compiled one): it needs a fit of at "
                             f"least 2 epochs. Received: epochs={epochs}")
        if optimizer.use_ema:
            raise ValueError(
                "SparsityTarget steers the trained scores; an optimiser with use_ema=True ends "
                "the fit with their moving averages, another mask. Received: use_ema=True")
        self.initial_learning_rate = ssm_callbacks.current_learning_rate(optimizer)
        if not self.initial_learning_rate > 0:
            raise ValueError(
                "SparsityTarget sets the decay as weight_decay * lr_t / lr_0 and needs a "
                "learning rate > 0 as the fit starts. Received: learning rate "
                f"{self.initial_learning_rate:g}")
        self.epochs = epochs
        self.weight_decay = score_decay.compiled_decay(optimizer) * self.initial_learning_rate
        self.start_percent = self.expected_percent = self.aimed_percent = None
        self.regrowth = 1.0
        super().on_train_begin(logs)

    def _start(self, epoch):
        if epoch != 0:
            raise ValueError(
                "SparsityTarget steers one fit along its path from epoch 0; this fit starts at "
                f"epoch {epoch} (initial_epoch, or a restored backup).")
        start = super()._start(epoch)
        if self.target_percent >= start:
            raise ValueError(
                f"SparsityTarget(remaining_percent={self.target_percent:g}) is not below the "
                f"{start:.2f}% of the weights the mask keeps now; weight decay only prunes, so "
                "ask for less.")
        return start

    def on_train_end(self, logs=None):
        # Later fits decay as compiled again.
        score_decay.steer_decay(self.model, score_decay.compiled_decay(self.model.optimizer))
        remaining = percent_above_threshold(threshold_ratios(self.model))
        if abs(remaining / self.target_percent - 1.0) <= TARGET_TOLERANCE:
            return
        if remaining > self.target_percent:
            reason = ("above the target: the gradients regrew more weights than the decay "
                      "pruned (Adam's steps do; the steering is made for SGD), or the fit ended "
                      "early")
        else:
            reason = ("below the target: an epoch's decay pruned more than its aim (the "
                      "first epoch's is decay_scores_only's weight_decay * lr_t / lr_0, which a "
                      "learning rate rising from a warm-up multiplies)")
        warnings.warn(f"SparsityTarget({self.target_percent:g}): the fit ended with "
                      f"{remaining:.2f}% of the masked weights, {reason}.", stacklevel=2)

    def _check_masks(self):
        kinds = " and ".join(choices.THRESHOLD_KINDS)
        masked = ssm_layers.masked_layers(self.model)
        if not masked:
            raise ValueError(f"SparsityTarget steers a supermask; model {self.model.name!r} has "
                             "no masked layers (see ssm_keras.supermask).")
        for layer in masked:
            if layer.mask_kind not in choices.THRESHOLD_KINDS:
                raise ValueError(f"SparsityTarget steers {kinds} masks (weight decay against a "
                                 f"threshold); layer {layer.name!r} has mask="
                                 f"{layer.mask_kind!r}.")
            if layer.regime != "mask":
                raise ValueError(f"SparsityTarget steers the pruning of a mask in training; "
                                 f"layer {layer.name!r} trains its kernel under a frozen mask "
                                 f"(regime={layer.regime!r}).")
        for layer, name in ssm_layers.masked_kernels(self.model):
            if not layer.scores_variable(name).trainable:
                raise ValueError(
                    f"SparsityTarget steers the masks in training; layer {layer.name!r} is "
                    "frozen (trainable=False), so its mask cannot reach the target.")
            if not float(layer.threshold_variable(name).numpy()) > 0:
                raise ValueError(
                    "SparsityTarget prunes with weight decay, which never brings a score across "
                    f"a threshold of 0: layer {layer.name!r} has tau_fraction=0.")

    def _check_decays_scores_only(self, optimizer):
        decayed = [variable.path for variable in score_decay.non_score_variables(self.model)
                   if optimizer._use_weight_decay(variable)]
        if decayed:
            raise ValueError(
                "SparsityTarget steers the weight decay of the scores alone, but the optimiser "
                f"would also decay {', '.join(decayed)}: compile with "
                "ssm_keras.decay_scores_only(optimizer, model, weight_decay), or after "
                "keras.saving.load_model call "
                "ssm_keras.training.score_decay.exclude_all_but_scores(model.optimizer, model).")
