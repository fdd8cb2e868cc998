"""Hyperparameter search over supermasks with Keras Tuner.

`run(search, config)` searches the hyperparameters of the training run
`config` (a `TrainConfig`) with Keras Tuner. Every trial is trained by the
code of `trainer.run` (`prepare_data`, `make_model`, `fit`): the same data,
seeded model, compile, batches and number of epochs, so the objective a trial
records is what `python -m ssm_keras.train --flagfile=<the trial's flags>`
gets.

Search space: one `TrainConfig` field per hyperparameter, searched between the
ends of its `--<name>_range=LOW:HIGH` flag (equal ends fix it):

| hyperparameter  | scale  | default       | searched for                          |
| --------------- | ------ | ------------- | ------------------------------------- |
| `learning_rate` | log    | `0.01:0.2`    | every run                             |
| `weight_decay`  | log    | `1e-4:2e-3`   | every run (the paper's sense)         |
| `tau_fraction`  | linear | `0.2:0.6`     | threshold masks (`signed`, `binary`)  |
| `density`       | log    | `0.02:0.5`    | top-k masks (`topk`, `signed_topk`)   |
| `init_factor`   | log    | `2:8`         | `elus` weights                        |

(`tau_fraction`, `density` and `init_factor` only where they shape the start:
`--regime=mask` from a seed, not from `--init_file`.)

Categorical hyperparameters are searched over the values of their
`--<name>_choices=A,B,...` flag (unset: the training flag's value only):

| hyperparameter | choices flag           | example                       |
| -------------- | ---------------------- | ----------------------------- |
| `mask`         | `--mask_choices`       | `signed,signed_topk`          |
| `optimizer`    | `--optimizer_choices`  | `sgd,adam`                    |
| `lr_schedule`  | `--lr_schedule_choices`| `exponential,cosine`          |

With `--mask_choices` (`--regime=mask` only), `tau_fraction` is searched
only in trials of a threshold mask and `density` only in trials of a top-k
mask (Keras Tuner's conditional hyperparameters); the other one keeps its
default.

Objective, maximised, the value at a trial's last epoch on the validation
split (never the test split):

    val_accuracy
    val_sparse_objective = val_accuracy - sparsity_weight * remaining_percent / 100

Both, and the remaining weights, are recorded for every trial.

The project folder `out_dir/project_name`:

    oracle.json, tuner*.json,      Keras Tuner's state: a search started again
    trial_<id>/trial.json          with the same command continues it
    trial_<id>/flags.txt           the trial's flagfile for ssm_keras.train
    trial_<id>/checkpoint/         the trial's training state after each epoch
                                   (kept after the trial by Hyperband only)
    tensorboard/<id>/execution0/   TensorBoard: train/, validation/, masks/, hparams
    search.json                    the search's settings
    trials.csv, best.flags         the summary of all trials, the best trial's flags
    trials.png                     every finished trial's validation accuracy against its
                                   remaining weights, with the trials no other beats on both
"""

import contextlib
import csv
import dataclasses
import functools
import io
import json
import logging
import math
import os
import shutil
import traceback

import keras
import keras_tuner

from ssm_keras import choices, files, plotting
from ssm_keras.errors import UserError
from ssm_keras.training import callbacks as ssm_callbacks
from ssm_keras.training import run_dir, trainer
from ssm_keras.tuning.config import SPARSE_OBJECTIVE

log = logging.getLogger(__name__)

# Categorical `TrainConfig` fields that a `--<name>_choices` flag can search.
CHOICE_FIELDS = ("mask", "optimizer", "lr_schedule")
# Scale of each tunable `TrainConfig` field.
SCALES = {
    "learning_rate": "log",
    "weight_decay": "log",
    "tau_fraction": "linear",
    "density": "log",
    "init_factor": "log",
}
# What a trial reports, besides its objective.
TRIAL_METRICS = ("epochs", "val_accuracy", SPARSE_OBJECTIVE, "remaining_percent",
                 "remaining_weights")
# Settings a search may change when it is started again.
_RESTART_KEYS = ("max_trials",)


class TuneError(UserError, keras_tuner.errors.FatalError):
    """A search that cannot run as asked; the message says why.

    A Keras Tuner `FatalError`: raised inside a trial, it stops the search
    instead of failing that trial only.
    """


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a hyperparameter is searched over: `[low, high]`."""

    low: float
    high: float
    sampling: str

    def declare(self, hp, name):
        """Adds the hyperparameter to `hp` (fixed when `low == high`); returns its value."""
        if self.low == self.high:
            return hp.Fixed(name, self.low)
        return hp.Float(name, self.low, self.high, sampling=self.sampling)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The values a categorical hyperparameter is searched over."""

    values: tuple

    def declare(self, hp, name):
        """Adds the hyperparameter to `hp` (fixed for one value); returns its value."""
        if len(self.values) == 1:
            return hp.Fixed(name, self.values[0])
        return hp.Choice(name, list(self.values))


def trial_config(config, values):
    """`config` with the hyperparameter `values` of a trial.

    A searched `mask` is the mask kind itself (`--signed` no longer applies),
    and a mask-shape field the trial's mask does not use (`tau_fraction` for
    top-k masks, `density` for threshold masks) takes its default.
    """
    config = dataclasses.replace(config, **values)
    if "mask" not in values:
        return config
    defaults = {field.name: field.default for field in dataclasses.fields(config)}
    unused = {name: defaults[name] for name, kinds in choices.MASK_SHAPE_USERS.items()
              if values["mask"] not in kinds and name not in values}
    return dataclasses.replace(config, signed=None, **unused)


def _check_value(config, flag, text, values):
    """Raises TuneError naming `flag=text` unless `trial_config(config, values)` is valid."""
    try:
        trial_config(config, values).validate()
    except UserError as error:
        raise TuneError(f"{flag}={text}: {error}") from None


def parse_choice(name, text, config):
    """The `Choice` of `--<name>_choices=A,B,...`, each value checked.

    Raises:
        TuneError: an empty or repeated value, a value `TrainConfig` refuses,
            or mask choices outside `--regime=mask`.
    """
    flag = f"--{name}_choices"
    values = tuple(part.strip() for part in text.split(","))
    if not all(values) or len(set(values)) != len(values):
        raise TuneError(f"{flag} must be distinct values separated by commas. "
                        f"Received: {flag}={text!r}")
    if name == "mask" and config.regime != "mask":
        raise TuneError(f"{flag} searches the mask kind of --regime=mask. "
                        f"Received: --regime={config.regime}")
    for value in values:
        _check_value(config, flag, text, {name: value})
    return Choice(values)


def parse_range(name, text):
    """The `Range` of `--<name>_range=LOW:HIGH`.

    Raises:
        TuneError: not two numbers, `LOW > HIGH`, or `LOW <= 0` on a log scale.
    """
    flag = f"--{name}_range"
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        raise TuneError(f"{flag} must be LOW:HIGH, two numbers (equal to fix the value). "
                        f"Received: {flag}={text!r}")
    if low > high:
        raise TuneError(f"{flag} is inverted: LOW must be <= HIGH. Received: {flag}={text}")
    if SCALES[name] == "log" and low <= 0:
        raise TuneError(f"{flag} is searched on a log scale and needs LOW > 0. "
                        f"Received: {flag}={text}")
    return Range(low, high, SCALES[name])


def tuned_names(config, masks=None):
    """The ranged hyperparameters that change what `config` trains with any
    of the mask kinds `masks` (default: its own)."""
    masks = masks or (config.mask_kind,)
    names = ["learning_rate", "weight_decay"]
    from_seed = config.regime == "mask" and not config.init_file
    for name, kinds in choices.MASK_SHAPE_USERS.items():
        if from_seed and any(mask in kinds for mask in masks):
            names.append(name)
    if (config.regime != "mask_then_weights" and not config.init_file
            and config.weight_init == "elus"):
        names.append("init_factor")
    return names


def search_space(search, config):
    """`{TrainConfig field: Choice | Range}` of the search, choices first;
    every choice and both ends of each range are checked.

    Raises:
        TuneError: a malformed range or choice list, or a value that
            `TrainConfig.validate` refuses.
    """
    space = {name: parse_choice(name, getattr(search, f"{name}_choices"), config)
             for name in CHOICE_FIELDS if getattr(search, f"{name}_choices") is not None}
    masks = space["mask"].values if "mask" in space else (config.mask_kind,)
    for name in tuned_names(config, masks):
        text = getattr(search, f"{name}_range")
        bounds = parse_range(name, text)
        # Checked with a mask kind that uses the field.
        kinds = [mask for mask in masks if mask in choices.MASK_SHAPE_USERS.get(name, masks)]
        mask = {"mask": kinds[0]} if "mask" in space else {}
        for end in (bounds.low, bounds.high):
            _check_value(config, f"--{name}_range", text, {**mask, name: end})
        space[name] = bounds
    return space


def conditions(space):
    """`{field: mask kinds}`: the fields searched only in trials of those masks."""
    if "mask" not in space:
        return {}
    return {name: [mask for mask in space["mask"].values if mask in kinds]
            for name, kinds in choices.MASK_SHAPE_USERS.items() if name in space}


def flagfile_text(config):
    """The `ssm_keras.train` flagfile of `config`: every setting but where a run goes."""
    return run_dir.to_flagfile(_training_settings(config))


def _training_settings(config):
    return {**config.to_dict(), "model_dir": None, "resume": None, "overwrite": None,
            "verbose": None}


def _fatal_user_errors(method):
    """Turns user errors (`errors.UserError`) into `TuneError`s, which stop
    the search; a diverged trial (`callbacks.Diverged`) only fails."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ssm_callbacks.Diverged:
            raise  # fails this trial only: others may have better settings
        except UserError as error:
            raise TuneError(str(error)) from None

    return wrapper


class SparseObjective(keras.callbacks.Callback):
    """Adds the sparsity-aware objective to the epoch logs.

    `val_sparse_objective = val_accuracy - weight * remaining_percent / 100`:
    accuracy traded against the fraction of weights that remain. Put it after
    `callbacks.MaskMonitor`, which adds `remaining_percent`.

    Args:
        weight: the trade-off `lambda >= 0`.
    """

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def on_epoch_end(self, epoch, logs=None):
        logs[SPARSE_OBJECTIVE] = (logs["val_accuracy"]
                                  - self.weight * logs["remaining_percent"] / 100)


class SupermaskHyperModel(keras_tuner.HyperModel):
    """The trials of a search: each trains like `trainer.run` with its flags.

    `build(hp)` declares the search space and returns the compiled model of
    the trial's `TrainConfig`; `fit(hp, model, ...)` trains it for the
    trial's epochs and returns the metrics of its last epoch.

    Args:
        config: the `TrainConfig` of every trial, but for the tuned fields.
        space: `{TrainConfig field: Range}`.
        splits: the data, a `data.Splits`.
        strategy: the `tf.distribute.Strategy` of each trial.
        sparsity_weight: `lambda` of `val_sparse_objective`.
        callbacks: more `keras.callbacks.Callback`s for every trial, called
            after the trial's own (see `run`).
    """

    def __init__(self, config, space, splits, strategy, sparsity_weight, callbacks=()):
        super().__init__(name="supermask")
        self.config = config
        self.space = space
        self.splits = splits
        self.strategy = strategy
        self.sparsity_weight = sparsity_weight
        self.callbacks = list(callbacks)

    def declare_hyperparameters(self, hp):
        only_for = conditions(self.space)
        for name, values in self.space.items():
            if name in only_for:
                with hp.conditional_scope("mask", only_for[name]):
                    values.declare(hp, name)
            else:
                values.declare(hp, name)

    def config_for(self, values):
        """The `TrainConfig` of the trial with these (active) hyperparameter values.

        A Hyperband trial trains for its `tuner/epochs`.
        """
        return trial_config(self.config, {
            **{name: values[name] for name in self.space if name in values},
            "epochs": values.get("tuner/epochs", self.config.epochs),
        })

    @_fatal_user_errors
    def build(self, hp):
        self.declare_hyperparameters(hp)
        return trainer.make_model(self.config_for(hp.values), self.splits, self.strategy)

    @_fatal_user_errors
    def fit(self, hp, model, *, trial_dir, parent_dir=None, callbacks=(), **hyperband_args):
        """Trains the trial; returns `TRIAL_METRICS` and both objectives of its last epoch.

        A trial goes on from a training state when that ends exactly like
        training from scratch: its own (an interrupted attempt), else, for a
        Hyperband trial that continues the one in `parent_dir`, that one's,
        unless a setting's schedule depends on the number of epochs (a
        cosine learning rate, `--target_remaining`, `--augment_fraction`,
        `--ema_start`). `hyperband_args` (`epochs`, `initial_epoch`) are in
        `hp`.
        """
        config = self.config_for(hp.values)
        files.write_text_atomically(os.path.join(trial_dir, "flags.txt"), flagfile_text(config))
        checkpoint = _checkpoint_to_continue(config, trial_dir, parent_dir)
        if checkpoint:
            model = trainer.make_model(config, self.splits, self.strategy, checkpoint)
        restored = run_dir.read_checkpoint(checkpoint)[0] if checkpoint else None
        stateful = trainer.stateful_callbacks(config)
        recorder = ssm_callbacks.RunCheckpoint(
            run_dir.checkpoint_dir(trial_dir), stateful=stateful, restored=restored
        )
        log_dir = next((callback.log_dir for callback in callbacks
                        if isinstance(callback, keras.callbacks.TensorBoard)), None)
        monitors = [ssm_callbacks.MaskMonitor(log_dir), SparseObjective(self.sparsity_weight),
                    ssm_callbacks.StopOnNonFinite()]
        trainer.fit(model, config, self.splits,
                     [*monitors, *stateful, *callbacks, recorder, *self.callbacks],
                     initial_epoch=restored["epoch"] if restored else 0)
        last = {**recorder.history[-1], "epochs": recorder.history[-1]["epoch"]}
        return {name: float(last[name]) for name in TRIAL_METRICS}


def _checkpoint_to_continue(config, trial_dir, parent_dir):
    """The checkpoint folder a trial goes on from, or None (see `fit`): its
    own, else its parent's, unless a setting's schedule depends on the
    number of epochs (`TrainConfig.epoch_dependent_settings`), which the
    parent trained fewer of."""
    candidates = [trial_dir]
    if parent_dir and not config.epoch_dependent_settings():
        candidates.append(parent_dir)
    for folder in candidates:
        checkpoint = run_dir.checkpoint_dir(folder)
        if os.path.isfile(os.path.join(checkpoint, run_dir.STATE)):
            return checkpoint
    return None


class _TrialFolders:
    """Gives `SupermaskHyperModel.fit` the folders of the trial and of the one it continues.

    Outside Hyperband no trial continues another, so a finished trial's
    training state is deleted. A failed trial is recorded as Keras Tuner
    records it (status and traceback in its trial.json), without the
    traceback Keras Tuner 1.4 also prints: a diverged trial is expected, and
    `summarize` logs each trial's error as one line.
    """

    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        try:
            self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
            trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
        except keras_tuner.errors.FatalError:
            raise
        except Exception as error:  # noqa: BLE001  (as Keras Tuner: any error fails the trial)
            failed = isinstance(error, keras_tuner.errors.FailedTrialError)
            trial.status = (keras_tuner.engine.trial.TrialStatus.FAILED if failed
                            else keras_tuner.engine.trial.TrialStatus.INVALID)
            trial.message = traceback.format_exc()

    def run_trial(self, trial, *args, **kwargs):
        parent = trial.hyperparameters.values.get("tuner/trial_id")
        trial_dir = self.get_trial_dir(trial.trial_id)
        results = super().run_trial(
            trial, *args, trial_dir=trial_dir,
            parent_dir=self.get_trial_dir(parent) if parent else None, **kwargs,
        )
        if not isinstance(self, keras_tuner.Hyperband):
            shutil.rmtree(run_dir.checkpoint_dir(trial_dir))
        worker = "" if tuner_role() == "single" else f"{self.tuner_id}: "
        log.info("%strial %s %s", worker, trial.trial_id, _describe(results[-1]))
        return results


class RandomSearch(_TrialFolders, keras_tuner.RandomSearch):
    """Keras Tuner's random search over a `SupermaskHyperModel`."""


class BayesianOptimization(_TrialFolders, keras_tuner.BayesianOptimization):
    """Keras Tuner's Gaussian-process search over a `SupermaskHyperModel`."""


class Hyperband(_TrialFolders, keras_tuner.Hyperband):
    """Keras Tuner's Hyperband over a `SupermaskHyperModel` (`max_epochs = --epochs`).

    A trial that continues another goes on from that one's training state,
    optimiser included, or starts afresh (`SupermaskHyperModel.fit`): the
    model it is given is built, not loaded with the other trial's weights
    (Keras Tuner's Hyperband loads them, without the optimiser's state)."""

    def _build_hypermodel(self, hp):
        return super(keras_tuner.Hyperband, self)._build_hypermodel(hp)


TUNERS = {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband}


def _describe(metrics):
    return (f"val_accuracy {metrics['val_accuracy']:.4f}, remaining weights "
            f"{metrics['remaining_weights']:,.0f} ({metrics['remaining_percent']:.2f}%), "
            f"{SPARSE_OBJECTIVE} {metrics[SPARSE_OBJECTIVE]:.4f}, {metrics['epochs']:.0f} "
            f"epoch{'' if metrics['epochs'] == 1 else 's'}")


def tuner_role():
    """`single`, or, with `KERASTUNER_ORACLE_IP` set, `chief` (an id with "chief") or `worker`."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def project_dir(search, config):
    """`out_dir/project_name`.

    The default name is `<arch>-<mask>-<dataset>-seed<seed>-<tuner>`.
    """
    name = search.project_name or f"{config.default_run_name()}-{search.tuner}"
    return os.path.join(search.out_dir, name)


def tuner_seed(seed):
    """The Keras Tuner seed of `--seed`: `seed + 1`, as Keras Tuner takes a
    seed of 0 to mean "draw one at random"."""
    return seed + 1


def make_tuner(search, config, hypermodel, overwrite=False):
    """The Keras Tuner tuner of `search` over `hypermodel`, seeded from
    `config.seed` (see `tuner_seed`): the same command, the same search."""
    budget = ({"max_epochs": config.epochs, "factor": search.hyperband_factor,
               "hyperband_iterations": search.hyperband_iterations}
              if search.tuner == "hyperband" else {"max_trials": search.max_trials})
    folder = project_dir(search, config)
    try:
        return TUNERS[search.tuner](
            hypermodel=hypermodel,
            objective=keras_tuner.Objective(search.objective_name, direction="max"),
            seed=tuner_seed(config.seed),
            directory=os.path.dirname(folder),
            project_name=os.path.basename(folder),
            overwrite=overwrite,
            **budget,
        )
    except ImportError as error:
        raise TuneError(f"--tuner={search.tuner}: {error}") from None


def _check_tunable(config):
    if not config.validation_size:
        raise TuneError("The objective is measured on the validation split, never the test "
                        "split: --validation_size must be > 0.")
    if config.save_init_file:
        raise TuneError("--save_init_file would be written by every trial: write it with "
                        "ssm_keras.train, then tune with --init_file.")
    for name in ("start_from", "keep_checkpoints"):
        if getattr(config, name):
            raise TuneError(f"--{name} is a setting of one run of ssm_keras.train; the trials "
                            f"of a search start afresh. Received: --{name}={getattr(config, name)}")
    if config.ema_momentum is not None:
        raise TuneError("--ema_momentum: Keras Tuner keeps each trial's best epoch as the "
                        "trained scores, not the averaged ones the trial validates; tune "
                        f"without it. Received: --ema_momentum={config.ema_momentum}")
    if config.strategy == "multi_worker_mirrored":
        raise TuneError("--strategy=multi_worker_mirrored: a trial runs in one process. "
                        "Spread the trials over processes with KERASTUNER_TUNER_ID, "
                        "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT instead.")


def _settings(search, config):
    """What a search is: its flags, but where it lives, and every training setting."""
    search_settings = {key: value for key, value in dataclasses.asdict(search).items()
                       if key not in ("out_dir", "project_name")}
    return {**search_settings, **_training_settings(config)}


def _check_folder(folder):
    """Raises TuneError unless `folder` is, or can be made, a writable folder."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise TuneError(f"--out_dir: the search folder {folder} cannot be made: "
                        f"{existing} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TuneError(f"--out_dir: the search folder {folder} cannot be written "
                        f"({existing} is not writable).")


def _check_same_search(folder, settings):
    """Refuses to continue the search in `folder` with other settings."""
    path = os.path.join(folder, "search.json")
    if not os.path.isfile(path):
        return
    saved = run_dir.read_json(path)
    differences = [f"--{key}: {saved.get(key)!r} -> {settings.get(key)!r}"
                   for key in sorted(set(saved) | set(settings))
                   if key not in _RESTART_KEYS and saved.get(key) != settings.get(key)]
    if differences:
        raise TuneError(
            f"{folder} holds a search with other settings ({'; '.join(differences)}). "
            "Use the same flags to continue it (a larger --max_trials runs more trials), "
            "--overwrite to start it again, or another --project_name or --out_dir."
        )


def run(search, config, splits=None, callbacks=()):
    """Runs a search, or continues the one in its project folder.

    On a distributed worker (`tuner_role() == "worker"`) it runs trials of
    the chief's search until none is left. Elsewhere it ends by writing
    `trials.csv` and `best.flags` and printing the summary.

    Args:
        search: a `tuning.config.SearchConfig`.
        config: the `TrainConfig` of every trial, but for the tuned fields.
        splits: `data.Splits` to use instead of loading `config.dataset`.
        callbacks: more `keras.callbacks.Callback`s for every trial's
            `model.fit` (the same objects in each trial), called after the
            trial's own, so they see each epoch's logs with the objective
            and the mask statistics once the trial's checkpoint is written.
            One that raises a `UserError` stops the search, any other
            exception fails the trial (a `KeyboardInterrupt` stops the
            process as a kill would: the same command continues the search).

    Returns:
        The summary rows (see `trial_rows`), best first; None on a worker.

    Raises:
        TuneError, ConfigError, DataError, InitFileError, RunDirError: bad
            settings or inputs, with a message for the user.
    """
    search.validate()
    config.validate()
    _check_tunable(config)
    space = search_space(search, config)
    folder = project_dir(search, config)
    role = tuner_role()
    settings = _settings(search, config)
    _check_folder(folder)
    held = contextlib.ExitStack()
    try:
        if role != "worker":  # one search at a time in a folder; its workers join it
            try:
                held.enter_context(run_dir.lock(folder))
            except run_dir.RunDirError as error:
                raise TuneError(str(error).replace("--model_dir=", "the search folder ", 1)
                                .replace("--model_dir", "--project_name or --out_dir")) from None
            if not config.overwrite:
                _check_same_search(folder, settings)
        strategy = trainer.make_strategy(config)
        held.enter_context(trainer.global_dtype_policy(config.mixed_precision))
        hypermodel = SupermaskHyperModel(
            trainer.speed_settings_for(config, strategy), space,
            trainer.prepare_data(config, splits), strategy, search.sparsity_weight, callbacks,
        )
        # A worker never deletes the chief's folder.
        tuner = make_tuner(search, config, hypermodel, config.overwrite and role != "worker")
        if role != "worker":
            files.write_json_atomically(os.path.join(folder, "search.json"), settings)
        tuner.search(callbacks=[keras.callbacks.TensorBoard(
            os.path.join(folder, "tensorboard"), write_graph=False)])
        if role == "worker":
            return None
        return summarize(tuner, hypermodel, folder)
    finally:
        held.close()


def trial_rows(oracle, names):
    """One dict per trial, best first: id, status, the values of `names`, objective, metrics."""
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        rows.append({
            "trial_id": trial.trial_id,
            "status": trial.status,
            **{name: values.get(name) for name in names},
            "objective": trial.score,
            **{name: _metric(trial, name) for name in TRIAL_METRICS},
        })
    return sorted(rows, key=lambda row: (row["objective"] is None, -(row["objective"] or 0),
                                         row["trial_id"]))


def _metric(trial, name):
    """The trial's last value of metric `name` (counts as ints), or None."""
    if not trial.metrics.exists(name):
        return None
    value = trial.metrics.get_last_value(name)
    return int(value) if name in ("epochs", "remaining_weights") else value


def format_table(rows):
    """The rows as a text table for people."""
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells))
              for index, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summarize(tuner, hypermodel, folder):
    """Writes `trials.csv`, `trials.png` and `best.flags` in `folder`, logs
    the table, the failed trials and the best; returns the rows.

    Raises:
        TuneError: no trial finished.
    """
    rows = trial_rows(tuner.oracle, list(hypermodel.space))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["trial_id"])
    writer.writeheader()
    writer.writerows(rows)
    files.write_text_atomically(os.path.join(folder, "trials.csv"), table.getvalue())
    if rows:
        log.info(format_table(rows))
    for trial in tuner.oracle.trials.values():
        if trial.message:
            last_line = trial.message.strip().splitlines()[-1]
            log.info("Trial %s %s: %s", trial.trial_id, trial.status, last_line)
    finished = [trial for trial in tuner.oracle.get_best_trials(1)
                if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED]
    if not finished:
        raise TuneError(f"No trial of the search in {folder} finished; their errors are in "
                        f"{os.path.join(folder, 'trial_*', 'trial.json')}.")
    best = finished[0]
    plotting.plot_trials(
        [{"label": row["trial_id"], "remaining_percent": row["remaining_percent"],
          "accuracy": 100 * row["val_accuracy"]}
         for row in rows
         if row["status"] == keras_tuner.engine.trial.TrialStatus.COMPLETED
         and row["val_accuracy"] is not None],
        os.path.join(folder, "trials.png"),
        f"{os.path.basename(folder)}: {len(rows)} trials", best=best.trial_id)
    best_path = os.path.join(folder, "best.flags")
    files.write_text_atomically(
        best_path,
        f"# Best trial {best.trial_id} of {folder} ({tuner.oracle.objective.name} "
        f"{best.score:.6g}). Train it from scratch with:\n"
        f"#   python -m ssm_keras.train --flagfile={best_path}\n"
        + flagfile_text(hypermodel.config_for(best.hyperparameters.values)))
    log.info("Best trial %s: %s\nSummary: %s; best flags: %s", best.trial_id,
             json.dumps(best.hyperparameters.values), os.path.join(folder, "trials.csv"),
             best_path)
    return rows
