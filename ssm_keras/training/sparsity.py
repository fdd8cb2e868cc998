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
`n` steps (`lr`: the learning rate as the epoch starts), which leaves the
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

import keras
import numpy as np

from ssm_keras import layers as ssm_layers
from ssm_keras.training import callbacks as ssm_callbacks
from ssm_keras.training import score_decay
from ssm_keras.training.config import DEFAULT_TARGET_REACH

# The largest regrowth (and the smallest, its inverse) an epoch may count.
MAX_REGROWTH = 4.0


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
        scores = keras.ops.convert_to_numpy(layer.scores_variable(name)).ravel()
        tau = float(keras.ops.convert_to_numpy(layer.threshold_variable(name)))
        ratios.append((np.abs(scores) if layer.mask_kind == "signed" else scores) / tau)
    return np.concatenate(ratios)


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
    shrinking is needed (`f >= 1`), and when none is possible: at a learning
    rate of 0 (where a cosine schedule ends) the decay shrinks nothing.
    """
    threshold = np.quantile(ratios, 1.0 - wanted_percent / 100.0)
    if threshold <= 1.0 or learning_rate <= 0.0:
        return 0.0
    factor = 1.0 / threshold
    return float((1.0 - factor ** (1.0 / steps)) * initial_learning_rate / learning_rate)


class SparsityController(keras.callbacks.Callback):
    """Steers the optimiser's weight decay so that the mask ends at a target.

    The first epoch trains with the decay it is given; after each epoch it
    sets the next epoch's decay with `weight_decay_for` (the path's next
    value over the last epoch's regrowth, the epoch's number of steps, the
    learning rate now), and adds
    to the epoch's logs, hence to the history and to TensorBoard
    (`train/epoch_score_weight_decay`, `train/epoch_target_remaining_percent`):
    `score_weight_decay`, the decay the epoch trained with (the paper's
    sense, see `config.TrainConfig.keras_weight_decay`), and
    `target_remaining_percent`, the path's value after the epoch, and
    `mask_regrowth`, the epoch's regrowth `g`.

    The decay reaches the traced training step through a variable
    (`score_decay.steer_decay`), so the step is traced (and compiled, with
    XLA) once, not once an epoch. Its state (`start_percent`,
    `weight_decay`, `regrowth`, `expected_percent`, `aimed_percent`: the
    path's value the decay aims at) is kept by `callbacks.RunCheckpoint`
    (`CHECKPOINT_ATTRIBUTES`), so a resumed run steers exactly as one never
    interrupted; a run that goes on from a checkpoint along another path
    (`--start_from` with another target, `--resume` to more epochs) aims
    its first decay at its own path.

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
        self.aimed_percent = None  # the path's value the decay aims at; None in the first epoch
        self._steering = False
        self._steps = 0

    def _apply(self):
        score_decay.steer_decay(self.model, self.weight_decay / self.initial_learning_rate)

    def _path(self, epoch):
        return target_path(self.start_percent, self.target_percent, epoch, self.epochs,
                           self.reach_fraction)

    def on_train_begin(self, logs=None):
        self._steering = False

    def on_epoch_begin(self, epoch, logs=None):
        # The first time after `on_train_begin`, where `RunCheckpoint`
        # restores this callback's state.
        self._steps = 0
        if self._steering:
            return
        if self.start_percent is None:
            ratios = threshold_ratios(self.model)
            self.start_percent = 100.0 * float(np.mean(ratios > 1.0))
        elif self.aimed_percent not in (None, self._path(epoch + 1)):
            self._aim(epoch + 1, self.params.get("steps"))
        self._apply()
        self._steering = True

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1  # Keras passes the last step an execution ran

    def on_epoch_end(self, epoch, logs=None):
        ratios = threshold_ratios(self.model)
        remaining = 100.0 * float(np.mean(ratios > 1.0))
        if self.expected_percent is not None:
            self.regrowth = regrowth(remaining, self.expected_percent)
        if logs is not None:
            logs.update(score_weight_decay=self.weight_decay,
                        target_remaining_percent=self._path(epoch + 1),
                        mask_regrowth=self.regrowth)
        self._aim(epoch + 2, self._steps, ratios, remaining)
        self._apply()

    def _aim(self, epoch, steps, ratios=None, remaining=None):
        """Sets the decay of epoch `epoch` (from 1), of `steps` steps, at
        the path's value after it over the regrowth (`ratios`, `remaining`:
        the mask now, measured if not given); without a step count (a data
        set of unknown length) the decay stays."""
        if not steps:
            return
        if ratios is None:
            ratios = threshold_ratios(self.model)
            remaining = 100.0 * float(np.mean(ratios > 1.0))
        self.aimed_percent = self._path(epoch)
        aim = self.aimed_percent / self.regrowth
        self.weight_decay = weight_decay_for(
            ratios, aim, steps, ssm_callbacks.current_learning_rate(self.model.optimizer),
            self.initial_learning_rate)
        self.expected_percent = min(aim, remaining) if self.weight_decay > 0 else remaining
