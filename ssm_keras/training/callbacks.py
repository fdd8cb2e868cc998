"""Callbacks of a training run: mask summaries, resumable checkpoints, and
stopping a run whose loss is no longer a number."""

import math
import os

import keras
import numpy as np
import tensorflow as tf

from ssm_keras import arguments
from ssm_keras import layers as ssm_layers
from ssm_keras.errors import UserError
from ssm_keras.training import averaging, run_dir, statistics


class Diverged(UserError):
    """Training stopped because the loss or a trained weight became NaN or infinite."""

    def __init__(self, epoch, what, kept=""):
        super().__init__(
            f"training diverged: {what} after epoch {epoch}. Try a smaller "
            "--learning_rate or --init_factor, or check --init_file." + (kept and f" {kept}")
        )
        self.epoch = epoch
        self.what = what


class StopOnNonFinite(keras.callbacks.Callback):
    """Raises `Diverged` at the end of an epoch whose loss, or any of whose
    trainable weights, is not finite.

    A masked layer with NaN scores hides every weight and still has a
    finite loss, so the weights are checked too, once per epoch, where they
    are: `all(isfinite(v))` is reduced on the device for each variable `v`,
    and only those booleans are copied to the host. Put it before
    `RunCheckpoint`, so that no checkpoint holds the diverged state.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise Diverged(epoch + 1, f"the loss is {loss}")
        variables = self.model.trainable_variables
        if not variables:
            return
        finite = keras.ops.convert_to_numpy(keras.ops.stack(
            [keras.ops.all(keras.ops.isfinite(variable)) for variable in variables]))
        for variable, ok in zip(variables, finite):
            if not ok:
                raise Diverged(epoch + 1, f"{variable.path} holds non-finite values")


def current_learning_rate(optimizer):
    """The optimiser's learning rate now (a variable, or a schedule's
    tensor), as a Python float."""
    return float(optimizer.learning_rate)


class EpochNumber(keras.callbacks.Callback):
    """The number of the epoch being trained (0-based), for the training data.

    Calling it returns the epoch; `data.make_epoch_dataset(..., epoch=it)`
    reads it when Keras starts iterating the data of an epoch, which Keras
    does after `on_epoch_begin`.

    Args:
        first_epoch: the value before training starts (`initial_epoch`).
    """

    def __init__(self, first_epoch=0):
        super().__init__()
        self.epoch = first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def __call__(self):
        return self.epoch


class MaskMonitor(keras.callbacks.Callback):
    """After each epoch: mask statistics to TensorBoard and to the epoch logs.

    Writes, under `log_dir/masks`: per layer and overall the remaining weights
    (count and %) and the kept / inverted / hidden fractions, the number of
    mask flips since the last epoch, the learning rate, and score
    histograms. Adds `remaining_percent`, `remaining_weights`, `mask_flips`
    and `learning_rate` to the epoch's logs, so that every later callback
    (history, CSV, checkpoints) sees them; with moving averages of the
    scores (`averaging`), also `averaged_remaining_percent`, that of the
    averaged mask, from the epoch `averages_from` on. It measures the model
    as it finds it: list it before `keras.callbacks.SwapEMAWeights(
    swap_on_epoch=True)`, after whose swap the model holds the averages.

    Args:
        log_dir: TensorBoard folder of the run, or None to write nothing.
        histograms: whether to write score histograms.
        averages_from: the epoch (from 0) from which the optimiser's moving
            averages are reported (`--ema_start`).
    """

    def __init__(self, log_dir, histograms=True, averages_from=0):
        super().__init__()
        self.log_dir = arguments.path("log_dir", log_dir, allow_none=True)
        self.histograms = arguments.boolean("histograms", histograms)
        self.averages_from = arguments.integer("averages_from", averages_from, low=0)
        self._writer = None
        self._previous = None

    def on_train_begin(self, logs=None):
        if self.log_dir:
            folder = os.path.join(self.log_dir, "masks")
            try:
                os.makedirs(folder, exist_ok=True)
                self._writer = tf.summary.create_file_writer(folder)
            except (OSError, tf.errors.OpError) as error:
                reason = getattr(error, "strerror", None) or getattr(error, "message", error)
                raise ValueError(f"MaskMonitor cannot write its logs to log_dir={self.log_dir!r} "
                                 f"({reason}); name a folder it can write") from None
        self._previous = statistics.layer_masks(self.model)

    def on_epoch_end(self, epoch, logs=None):
        masks = statistics.layer_masks(self.model)
        summary = statistics.summarize(self.model, masks)
        flips = statistics.mask_flips(self._previous, masks) if masks else 0
        self._previous = masks
        rate = current_learning_rate(self.model.optimizer)
        averaged = None
        if masks and epoch >= self.averages_from and averaging.averages(self.model.optimizer):
            with averaging.averaged_variables(self.model):
                averaged = statistics.summarize(self.model)["remaining_percent"]
        if logs is not None:
            logs.update(
                remaining_percent=summary["remaining_percent"],
                remaining_weights=summary["remaining_weights"],
                mask_flips=flips,
                learning_rate=rate,
            )
            if averaged is not None:
                logs.update(averaged_remaining_percent=averaged)
        if self._writer is not None:
            self._write(epoch + 1, summary, flips, rate, averaged)

    def _write(self, step, summary, flips, rate, averaged):
        with self._writer.as_default(step=step):
            tf.summary.scalar("overall/remaining_percent", summary["remaining_percent"])
            if averaged is not None:
                tf.summary.scalar("overall/averaged_remaining_percent", averaged)
            tf.summary.scalar("overall/remaining_weights", summary["remaining_weights"])
            total = max(summary["masked_weights"], 1)
            for kind in ("kept", "inverted", "hidden"):
                tf.summary.scalar(f"overall/{kind}_fraction", summary[kind] / total)
            tf.summary.scalar("overall/mask_flips", flips)
            tf.summary.scalar("learning_rate", rate)
            for record in summary["layers"]:
                name = record["name"]
                tf.summary.scalar(f"{name}/remaining_percent",
                                  100.0 * record["remaining"] / record["total"])
                for kind in ("kept", "inverted", "hidden"):
                    tf.summary.scalar(f"{name}/{kind}_fraction", record[f"{kind}_fraction"])
            if self.histograms:
                for layer, name in ssm_layers.masked_kernels(self.model):
                    tf.summary.histogram(f"{layer.kernel_key(name)}/scores",
                                         layer.scores_variable(name))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class RunCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state after each epoch, atomically.

    `directory/state.json` holds the number of finished epochs, the epoch
    logs so far, the wall time so far, the state of `stateful` callbacks
    (e.g. `ReduceLROnPlateau`), that of the Bernoulli masks' samplers
    (`mask_sampler_states`) and the name and checksum of the model file
    (with its optimiser state) next to it: one unit, written and checked by
    `run_dir.write_checkpoint` and `run_dir.read_checkpoint`. A run
    restarted from it reaches the same result as one never interrupted.

    Args:
        directory: the checkpoint folder.
        stateful: callbacks whose state is saved and restored: the
            attributes named by their `CHECKPOINT_ATTRIBUTES`, else `wait`,
            `best` and `cooldown_counter` (`ReduceLROnPlateau`); list them
            before this one.
        clock: a callable returning the wall time spent so far (seconds).
        write: False on non-chief workers of a multi-worker run.
        restored: the `state.json` of the checkpoint training resumes from;
            its `started_from` (the checkpoint a `--start_from` run started
            from, and its epoch) is written into every later one.
        keep_epochs: the epoch numbers (from 1) whose checkpoint is also
            kept in `directory/epoch-<N>/` (`run_dir.keep_checkpoint`).
        averages_from: the epoch (from 0) at whose start the run's moving
            averages start (`--ema_start`), written into every state as
            `averages_from`; None for a run without them.
    """

    STATE_ATTRIBUTES = ("wait", "best", "cooldown_counter")

    def __init__(self, directory, stateful=(), clock=None, write=True, restored=None,
                 keep_epochs=(), averages_from=None):
        super().__init__()
        self.directory = directory
        self.keep_epochs = frozenset(keep_epochs)
        self.averages_from = averages_from
        self.stateful = list(stateful)
        self.clock = clock
        self.write = write
        self.restored = restored or {}
        self.history = list(self.restored.get("history", []))
        self.started_from = self.restored.get("started_from")

    def on_train_begin(self, logs=None):
        # After the stateful callbacks reset themselves in their own
        # on_train_begin, put their saved state back.
        for callback, saved in zip(self.stateful,
                                   matched_states(self.restored.get("callbacks", []),
                                                  self.stateful)):
            for key, value in saved.items():
                setattr(callback, key, value)

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({"epoch": epoch + 1, **_plain(logs or {})})
        if not self.write:
            return
        state = {
            "epoch": epoch + 1,
            "history": self.history,
            "wall_time_s": self.clock() if self.clock else None,
            "callbacks": [
                {key: _plain_value(getattr(callback, key)) for key in state_keys(callback)
                 if hasattr(callback, key)}
                for callback in self.stateful
            ],
            "mask_samplers": mask_sampler_states(self.model),
        }
        if self.started_from:
            state["started_from"] = self.started_from
        if self.averages_from is not None:
            state["averages_from"] = self.averages_from
        run_dir.write_checkpoint(self.directory, self.model.save, state,
                                 keep=epoch + 1 in self.keep_epochs)


def _mask_samplers(model):
    """`{mask scope: seed generator}` of the layers that sample their masks
    (Bernoulli)."""
    samplers = {layer.mask_scope: getattr(layer, layer._seed_generator_attribute, None)
                for layer in ssm_layers.masked_layers(model)}
    return {scope: generator for scope, generator in samplers.items() if generator is not None}


def mask_sampler_states(model):
    """`{mask scope: [seed, counter]}` of the seed generators that draw the
    Bernoulli masks' samples: each draw advances its counter, which a Keras
    model file does not hold, so a checkpoint keeps it (`RunCheckpoint`)."""
    return {scope: [int(value) for value in keras.ops.convert_to_numpy(generator.state)]
            for scope, generator in _mask_samplers(model).items()}


def restore_mask_samplers(model, states):
    """Sets the seed generators of `mask_sampler_states` back to `states`.

    Raises:
        run_dir.RunDirError: `states` names a layer the model has no sampler
            for, or holds a value that is not two integers.
    """
    samplers = _mask_samplers(model)
    for scope, state in states.items():
        generator = samplers.get(scope)
        if generator is None or not (isinstance(state, list) and len(state) == 2 and all(
                isinstance(value, int) and not isinstance(value, bool) for value in state)):
            raise run_dir.RunDirError(
                f"the checkpoint's mask sampler state {scope!r}: {state!r} does not fit the "
                "model (a Bernoulli mask's layer and two integers). Delete the checkpoint "
                "folder to train from the last intact state, or pass --overwrite to start over.")
        generator.state.assign(np.asarray(state, generator.state.dtype))


def state_keys(callback):
    """The attributes of `callback` that a checkpoint keeps (`RunCheckpoint`)."""
    return getattr(callback, "CHECKPOINT_ATTRIBUTES", RunCheckpoint.STATE_ATTRIBUTES)


def matched_states(saved, stateful):
    """The states of `saved` (a checkpoint's `callbacks` list) for the
    `stateful` callbacks, in their order: each the first unused saved state
    whose keys are among the callback's `state_keys` (a checkpoint written
    before an attribute was added lacks it), else `{}` (it starts afresh:
    a `--start_from` run with a callback its parent did not have)."""
    states = []
    unused = list(saved)
    for callback in stateful:
        keys = set(state_keys(callback))
        match = next((state for state in unused if state and set(state) <= keys), None)
        if match is not None:
            unused.remove(match)
        states.append(match or {})
    return states


def _plain_value(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.item()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy()).item()
    return value


def _plain(logs):
    return {key: _plain_value(value) for key, value in logs.items()}
