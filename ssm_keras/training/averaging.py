"""Averaged trained variables (`--ema_momentum`): Polyak averaging of the scores.

With `--ema_momentum=m` the optimiser (Keras' `use_ema`) keeps, for every
trained variable `v` (a mask's scores), an exponential moving average
updated after every step `t`:

    a_t = m * a_{t-1} + (1 - m) * v_t,    a_1 = v_1,

which weighs the last `1 / (1 - m)` steps most (0.999: about 1,000). A
mask trained to a fixed share of remaining weights keeps changing from
step to step; the mask of the averaged scores is that of the last
thousand steps' consensus rather than of the last step.

With `--ema_start=f` the average restarts from `v` at the start of epoch
`ceil(f * epochs)` (from 0), e.g. for the last quarter of the run, where a
`--target_remaining` path holds its target.

Training goes on with `v` (as without averages, but for the learning-rate
reductions of `--lr_schedule=plateau`, which follow the validation loss);
the model is evaluated with `a`: each epoch's
validation once the average has started (`AverageScores`), the final
evaluation and the saved model (`fit` assigns `a` to `v` at its end). The averages are
optimiser variables, named `<variable>_average`, so every checkpoint holds
them and a resumed run goes on with them. The epoch's mask statistics
(and `--target_remaining`'s steering) are those of `v`;
`averaged_remaining_percent` is that of the averaged mask.
"""

import contextlib
import dataclasses
import itertools

import keras

from ssm_keras.training import config as ssm_config
from ssm_keras.training import score_decay

# How Keras names the moving average of a variable among the optimiser's variables.
AVERAGE_SUFFIX = "_average"


def is_average(variable):
    """Whether an optimiser variable is the moving average of a trained variable."""
    return variable.path.endswith(AVERAGE_SUFFIX)


def averages(optimizer):
    """The moving averages of `optimizer` (built; or of the optimiser it
    wraps), in the order of the variables they average; `[]` for an
    optimiser without them (`use_ema=False`)."""
    if not getattr(score_decay.applying_optimizer(optimizer), "use_ema", False):
        return []
    return [variable for variable in optimizer.variables if is_average(variable)]


def swap_in(model):
    """Assigns to `model`'s trained variables their moving averages.

    Returns:
        Their own values (NumPy arrays), for `restore`; `[]` for a model
        whose optimiser keeps no averages (nothing is assigned).
    """
    moving = averages(model.optimizer) if model.optimizer is not None else []
    if not moving:
        return []
    variables = model.trainable_variables
    own = [keras.ops.convert_to_numpy(variable) for variable in variables]
    for variable, average in zip(variables, moving):
        variable.assign(average)
    return own


def restart(model):
    """Sets the moving averages of `model`'s optimiser to its trained
    variables (`a = v`)."""
    for average, variable in zip(averages(model.optimizer), model.trainable_variables):
        average.assign(variable)


def restore(model, own):
    """Assigns `own` (from `swap_in`) back to `model`'s trained variables."""
    for variable, value in zip(model.trainable_variables, own):
        variable.assign(value)


@contextlib.contextmanager
def averaged_variables(model):
    """Within the block `model`'s trained variables hold their moving
    averages; after it, their own values again, bit for bit. Does nothing
    for a model whose optimiser keeps no averages."""
    own = swap_in(model)
    try:
        yield
    finally:
        restore(model, own)


def check_start(config, state):
    """Refuses a run that goes on from the checkpoint `state` (resumed, or
    started from it) whose average would start before that checkpoint at
    another epoch than the checkpoint's average did (e.g. `--resume` to
    more `--epochs`, which moves `ceil(ema_start * epochs)`): an average
    cannot restart in the past. A checkpoint without an average (a parent
    trained without `--ema_momentum`) passes: the average starts at its
    scores (`forking`). Where the checkpoint's average started is its
    `averages_from` (`callbacks.RunCheckpoint`), or in checkpoints without
    it the first epoch with an `averaged_remaining_percent` (masks only)."""
    if config.ema_momentum is None or not state:
        return
    start, done = config.ema_start_epoch(), state["epoch"]
    if "averages_from" in state:
        started = state["averages_from"] if state["averages_from"] < done else None
    else:
        started = next((record["epoch"] - 1 for record in state.get("history", [])
                        if "averaged_remaining_percent" in record), None)
    if start < done and started is not None and started != start:
        raise ssm_config.ConfigError(
            f"--ema_start={config.ema_start} of --epochs={config.epochs} starts the moving "
            f"average at epoch {start + 1}, but the checkpoint after epoch {done} holds one "
            f"started at epoch {started + 1}, which cannot be moved: "
            + (_epochs_that_fit(config, started, done) if config.resume else
               f"choose --ema_start and --epochs that start it at epoch {started + 1}, or "
               f"after epoch {done}."))


def _epochs_that_fit(config, started, done):
    """The advice for a `--resume` (which keeps `--ema_start`): the
    `--epochs` beyond `done` that start the average where the checkpoint's
    did (at `started`, from 0), and the least that start it after `done`."""
    def start_of(epochs):
        return dataclasses.replace(config, epochs=epochs).ema_start_epoch()

    least = next(epochs for epochs in itertools.count(done + 1) if start_of(epochs) >= done)
    going_on = [str(epochs) for epochs in range(done + 1, least) if start_of(epochs) == started]
    advice = f"--epochs={least} or more starts a new one after epoch {done}"
    if going_on:
        advice = (f"--epochs={' or '.join(going_on)} goes on with it, and " + advice)
    return f"--resume keeps --ema_start={config.ema_start}; {advice}."


class AverageScores(keras.callbacks.Callback):
    """The moving averages of a run, from the epoch `start_epoch` (from 0)
    on (`--ema_start`).

    At the start of that epoch the averages restart from the variables as
    they are (`a = v`; at epoch 0 the first step does it, `a_1 = v_1`);
    before it they are set to the variables after every epoch, so that a
    run stopped before the start ends with its own variables.
    From then on every validation of `fit` evaluates the averages, and
    training goes on with the variables' own values, bit for bit; before
    it the validations evaluate the variables themselves. (Keras'
    `SwapEMAWeights` swaps by sums and differences, `v <- v + a`,
    `a <- v - a`, `v <- v - a`, which changes the trained variables in
    their last bits at every validation, so that a run with averages would
    no longer train exactly as one without.) List it before any callback
    that prepares the model for the evaluation (batch-norm re-estimation).
    """

    def __init__(self, start_epoch=0):
        super().__init__()
        self.start_epoch = start_epoch
        self._epoch = None
        self._own = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if epoch == self.start_epoch:
            restart(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            restart(self.model)

    def on_test_begin(self, logs=None):
        if self._epoch is not None and self._epoch >= self.start_epoch:
            self._own = swap_in(self.model)

    def on_test_end(self, logs=None):
        if self._own is not None:
            restore(self.model, self._own)
            self._own = None
