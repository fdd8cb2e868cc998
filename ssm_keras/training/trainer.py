"""Training runs: from a `TrainConfig` to a trained model and its results.

`run(config)` is the whole job behind `python -m ssm_keras.train`: it loads
the data, builds and compiles the model inside the distribution strategy's
scope, trains with per-epoch checkpoints (a killed run restarted with the
same command resumes and ends exactly where an uninterrupted one would),
writes TensorBoard summaries, evaluates on the test split once, and writes
`model.keras`, `results.json` and `results.txt` (`ssm_keras.training.records`;
the layout of a run folder: `ssm_keras.training.run_dir`).
Its steps `prepare_data`, `make_model` and `fit` also train the trials of
`ssm_keras.tuning`, so that a trial trains exactly like a run.
"""

import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
import zipfile

import keras
import tensorflow as tf

from ssm_keras import choices, data, models, processor, settings
from ssm_keras import layers as ssm_layers
from ssm_keras.training import (
    averaging,
    batch_norm,
    distribute,
    forking,
    init_file,
    losses,
    records,
    run_dir,
    score_decay,
    sparsity,
    statistics,
)
from ssm_keras.training import callbacks as ssm_callbacks
from ssm_keras.training import config as ssm_config

log = logging.getLogger(__name__)


def make_optimizer(config, steps_per_epoch):
    """SGD (Nesterov) or Adam on the configured schedule and weight decay.

    `exponential`: `lr_t = lr_0 * lr_decay_rate ** (t / (lr_decay_epochs *
    steps_per_epoch))`, smooth; `cosine`: cosine decay to 0 over the run;
    `constant` and `plateau` (reduced by `ReduceLROnPlateau`): `lr_0`.
    With `--ema_momentum`, it keeps moving averages (`averaging`).
    """
    rate = config.learning_rate
    if config.lr_schedule == "exponential":
        rate = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate,
            decay_steps=config.lr_decay_epochs * steps_per_epoch,
            decay_rate=config.lr_decay_rate,
        )
    elif config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
    options = dict(weight_decay=config.keras_weight_decay() or None)
    if config.ema_momentum is not None:
        options.update(use_ema=True, ema_momentum=config.ema_momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, **options)
    return keras.optimizers.SGD(rate, momentum=config.momentum, nesterov=config.nesterov,
                                **options)


# What `keras.saving.load_model` raises for a damaged or foreign file.
LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, zipfile.BadZipFile)


def load_model_file(path, what, compile=True):
    """`keras.saving.load_model(path)`; RunDirError naming `what` and `path`
    if the file cannot be loaded."""
    try:
        return keras.saving.load_model(path, compile=compile)
    except LOAD_ERRORS as error:
        message = " ".join(str(error).splitlines())[:300]
        raise run_dir.RunDirError(f"{what}: cannot load {path} ({message}).") from None


def _load_mask_model(path):
    """The trained `mask`-regime model of a run directory or `.keras` file."""
    model_path = os.path.join(path, run_dir.MODEL) if os.path.isdir(path) else path
    if not os.path.isfile(model_path):
        raise run_dir.RunDirError(
            f"--mask_from={path}: no trained model at {model_path}."
        )
    return load_model_file(model_path, f"--mask_from={path}", compile=False)


def _check_mask_source(config, trained, spec):
    """Refuses a `--mask_from` model without a trained mask (a baseline, a
    baked export), or of another architecture, mask kind, precision, number
    of classes or width than `config` records: the run trains that model, so
    its flags must name it."""
    masked = ssm_layers.masked_layers(trained)
    source = f"--mask_from={config.mask_from}"
    if not masked:
        raise run_dir.RunDirError(
            f"{source} holds no trained mask (a baseline or a baked export?); name the run "
            "directory or model.keras of a --regime=mask run."
        )
    if trained.name != config.arch:
        raise run_dir.RunDirError(
            f"{source} is a {trained.name} model; pass --arch={trained.name} to train it. "
            f"Received: --arch={config.arch}"
        )
    kinds = sorted({layer.mask_kind for layer in masked})
    if kinds != [config.mask_kind]:
        raise run_dir.RunDirError(
            f"{source} has {'/'.join(kinds)} masks; pass --mask={kinds[0]} to train it. "
            f"Received: --mask={config.mask_kind}"
        )
    policies = sorted({layer.dtype_policy.name for layer in masked})
    if policies != [config.mixed_precision]:
        raise run_dir.RunDirError(
            f"{source} computes in {'/'.join(policies)}; pass --mixed_precision={policies[0]} "
            f"to train it. Received: --mixed_precision={config.mixed_precision}")
    classes = trained.output_shape[-1]
    if classes != spec.num_classes:
        raise run_dir.RunDirError(
            f"{source} tells {classes} classes apart, and --dataset={config.dataset} has "
            f"{spec.num_classes}; name the data set it was trained on.")
    width = config.width or models.ARCHITECTURES[config.arch].default_width
    kernels_at = count_in_width(config.arch, spec, kernel_weights)
    found = kernel_weights(trained)
    if kernels_at(width) != found:
        widths = [other for other in range(1, MAX_WIDTH_NAMED + 1) if kernels_at(other) == found]
        named = f"of width {widths[0]}; pass --width={widths[0]}" if widths else (
            "of another width; pass its --width")
        raise run_dir.RunDirError(
            f"{source} is a {config.arch} model {named} to train it. Received: "
            + (f"--width={config.width}" if config.width else f"the default width {width}"))


# The widest model a refused --mask_from is searched among, to name its --width.
MAX_WIDTH_NAMED = 1024


def kernel_weights(model):
    """The number of weights in `model`'s kernels (variables named `kernel`:
    a masked layer's `W0`, a plain layer's kernel)."""
    return sum(math.prod(variable.shape) for variable in model.weights
               if variable.name == "kernel")


# Bytes a trained float32 weight costs: the kernel, the score (or, for a
# plain model, the kernel's gradient), the other's gradient and an optimiser
# slot (SGD's momentum).
TRAINING_BYTES_PER_WEIGHT = 16


def count_in_width(arch, spec, count):
    """`count` (a function of a model, e.g. its number of weights) of the
    plain `arch` model as a function of the width, without building it at
    that width: every kernel is (input size x output size), each linear in
    the width or constant, so such a count is a quadratic in the width, read
    off the models of widths 1, 2 and 3 (exact)."""
    counts = [count(models.build_architecture(arch, masked=False, input_shape=spec.image_shape,
                                              num_classes=spec.num_classes, width=small))
              for small in (1, 2, 3)]
    first, second = counts[1] - counts[0], counts[2] - 2 * counts[1] + counts[0]
    return lambda width: counts[0] + (width - 1) * first + (width - 1) * (width - 2) // 2 * second


def weight_count(arch, spec, width):
    """The weights of the plain `arch` model at `width` (`count_in_width`)."""
    return count_in_width(arch, spec, keras.Model.count_params)(width)


def check_memory(config, spec):
    """Refuses a `--width` whose model would not fit in this machine's memory
    to train (`TRAINING_BYTES_PER_WEIGHT` a weight), before it is built."""
    if config.width is None or config.width <= 3:
        return
    weights = weight_count(config.arch, spec, config.width)
    needed = weights * TRAINING_BYTES_PER_WEIGHT
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise ssm_config.ConfigError(
            f"--width={config.width}: the {config.arch} model would have {weights:,} weights, "
            f"about {needed / 2**30:,.0f} GiB to train, more than this machine's "
            f"{memory / 2**30:,.0f} GiB of memory")


def build_model(config, spec):
    """The model of `config` for images of `spec` (a `data.DatasetSpec`)."""
    if config.regime == "mask_then_weights":
        trained = _load_mask_model(config.mask_from)
        if tuple(trained.input_shape[1:]) != spec.image_shape:
            raise run_dir.RunDirError(
                f"--mask_from={config.mask_from} takes images of shape "
                f"{tuple(trained.input_shape[1:])}, but --dataset={config.dataset} "
                f"has {spec.image_shape}."
            )
        _check_mask_source(config, trained, spec)
        return models.with_regime(trained, "mask_then_weights")
    check_memory(config, spec)
    model = models.build_architecture(
        config.arch,
        masked=config.masked,
        input_shape=spec.image_shape,
        num_classes=spec.num_classes,
        mask_config=models.MaskConfig(
            mask=config.mask_kind, score_initializer=config.score_init,
            bernoulli_eval=config.bernoulli_eval,
            **{name: getattr(config, name) for name, kinds in choices.MASK_SHAPE_USERS.items()
               if config.mask_kind in kinds}),
        kernel_initializer=config.weight_init,
        init_factor=config.init_factor if config.weight_init == "elus" else None,
        activation=config.activation,
        width=config.width,
        seed=config.seed,
        train_batch_norm=config.train_batch_norm,
    )
    if config.init_file:
        init_file.load_init(model, config.init_file, config.arch,
                            init_file.given_start_settings(config))
    if config.save_init_file:
        init_file.save_init(model, config.save_init_file, config.arch,
                            init_file.start_settings(config))
    return model


def compile_model(model, config, steps_per_epoch):
    """Compiles `model` with `make_optimizer`, `losses.get(config.loss)` and
    accuracy; in the `mask` regime the weight decay acts on the scores only
    (not on batch-norm parameters that `--train_batch_norm` trains)."""
    optimizer = make_optimizer(config, steps_per_epoch)
    if config.regime == "mask":
        score_decay.exclude_all_but_scores(optimizer, model)
    model.compile(
        optimizer=optimizer,
        loss=losses.get(config.loss),
        metrics=["accuracy"],
        jit_compile="auto" if config.jit_compile is None else config.jit_compile,
        steps_per_execution=config.steps_per_execution,
        run_eagerly=config.run_eagerly,
    )


def stateful_callbacks(config):
    """The callbacks whose state a checkpoint keeps: `ReduceLROnPlateau` for
    `plateau`, `sparsity.SparsityController` for `--target_remaining`. They
    read the logs of `callbacks.MaskMonitor`: list them after it."""
    stateful = []
    if config.lr_schedule == "plateau":
        stateful.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss" if config.validation_size else "loss",
            factor=config.plateau_factor, patience=config.plateau_patience,
        ))
    if config.target_remaining is not None:
        stateful.append(sparsity.SparsityController(
            config.target_remaining, config.epochs, config.weight_decay, config.learning_rate,
            reach_fraction=config.target_reach))
    return stateful


def _callbacks(config, model_dir, restored, clock, chief):
    log_dir = os.path.join(model_dir, run_dir.LOGS) if chief else None
    monitor = ssm_callbacks.MaskMonitor(log_dir, averages_from=config.ema_start_epoch())
    stop = ssm_callbacks.StopOnNonFinite()
    stateful = stateful_callbacks(config)
    checkpoint = ssm_callbacks.RunCheckpoint(
        run_dir.checkpoint_dir(model_dir), stateful=stateful, clock=clock,
        write=chief, restored=restored, keep_epochs=config.kept_checkpoint_epochs(),
        averages_from=config.ema_start_epoch() if config.ema_momentum is not None else None,
    )
    extra = []
    if chief:
        extra.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
    # The monitor first, so that later callbacks see the mask statistics;
    # the divergence check before the checkpoint, which must not save it.
    return [monitor, stop, *stateful, *extra, checkpoint], checkpoint


def _write_flags_summary(model_dir, flags_text):
    writer = tf.summary.create_file_writer(os.path.join(model_dir, run_dir.LOGS, "flags"))
    with writer.as_default(step=0):
        tf.summary.text("flags", "\n\n".join(f"`{line}`" for line in flags_text.splitlines()))
    writer.close()


def _evaluate(model, images, labels, batch_size):
    if len(images) == 0:
        return None
    dataset = data.make_eval_dataset(images, labels, batch_size)
    loss, accuracy = model.evaluate(dataset, verbose=0)
    return {"loss": float(loss), "accuracy": float(accuracy)}


def run(config, splits=None, strategy=None, callbacks=()):
    """Trains, evaluates and saves one run; returns its results dict.

    In a multi-worker run every worker calls it with the same `config`; they
    train together and only the chief writes `model_dir` (see
    `prepare_model_dir`). Speed settings the strategy cannot run are changed
    with a note (`speed_settings_for`).

    Args:
        config: a `TrainConfig`.
        splits: `data.Splits` to use instead of loading `config.dataset`
            (tests, benchmarks).
        strategy: a `tf.distribute.Strategy` instead of `config.strategy`.
        callbacks: more `keras.callbacks.Callback`s for `model.fit`, called
            after the run's own, so they see each epoch's logs with the mask
            statistics once its checkpoint is written (`self.model` is the
            model being trained). One that raises stops the run as a kill
            would: the same command resumes it from the last checkpoint. One
            that sets `self.model.stop_training` ends training early; the
            run is then evaluated and saved with the epochs it trained.

    Returns:
        The results dict, as written to `results.json` (see `run_dir`), with
        `model_dir`.

    Raises:
        ConfigError, DataError, InitFileError, RunDirError: bad settings or
            inputs, with a message for the user; nothing was written.
        callbacks.Diverged: the loss or a trained weight became NaN or
            infinite; `results.json` has `"status": "diverged"` (a finished
            run continued by `--resume` keeps its own records).
    """
    config.validate()
    config.check_inputs_outside_run_folder()
    config = settings.with_home_expanded(config)
    model_dir = config.run_folder()
    flags = {**config.to_dict(), "model_dir": model_dir}
    strategy = strategy or make_strategy(config)
    config = speed_settings_for(config, strategy)
    if config.augment != "none" and not data.DATASETS[config.dataset].mirrors_keep_labels:
        log.warning("--augment=%s mirrors the images left-right, and a mirrored %s image "
                    "may show no class of it (a mirrored 3 is no digit)", config.augment,
                    config.dataset)
    try:
        # Everything is checked, and the data and the model are made, before
        # the chief writes the folder (`start_run`): a bad input changes nothing.
        with contextlib.ExitStack() as held:
            held.enter_context(global_dtype_policy(config.mixed_precision))
            restored = prepare_model_dir(model_dir, flags, config, strategy, held)
            start_run = (lambda: run_dir.start(model_dir, flags, config.overwrite)
                         ) if _is_chief(strategy) else None
            return _train(config, model_dir, splits, strategy, restored, start_run, callbacks)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError) as error:
        if not _multi_worker(strategy):
            raise
        # A worker stopped: TensorFlow aborts the job's collectives.
        raise distribute.DistributeError(
            f"a worker of the job stopped or cannot be reached ({error.message.splitlines()[0]}). "
            "Start all workers again with the same command: the run resumes from its last "
            "checkpoint."
        ) from None


@contextlib.contextmanager
def global_dtype_policy(name):
    """Keras' global dtype policy `name` inside (the policy models are built
    and compiled under), the caller's again afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_strategy(config):
    """The `tf.distribute.Strategy` of `config.strategy` (see `distribute.get_strategy`)."""
    return distribute.get_strategy(config.strategy, config.tpu, config.worker_timeout)


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _is_chief(strategy):
    """Whether this process writes the run folder: always, but in a
    multi-worker run, where only the chief does (`TF_CONFIG` is read only then)."""
    return not _multi_worker(strategy) or distribute.is_chief()


def speed_settings_for(config, strategy):
    """`config` with the speed settings Keras can train with under `strategy`
    (see `distribute.speed_settings`); each change logged as a warning, and
    a warning if `config.mixed_precision` is slow here (`warn_of_slow_precision`)."""
    jit_compile, steps, notes = distribute.speed_settings(
        strategy, config.jit_compile, config.steps_per_execution
    )
    for note in notes:
        log.warning(note)
    warn_of_slow_precision(config.mixed_precision)
    return dataclasses.replace(config, jit_compile=jit_compile, steps_per_execution=steps)


def warn_of_slow_precision(policy):
    """Logs a warning when the dtype policy `policy` lacks fast arithmetic on
    this processor (`processor.missing_fast_path`) and no GPU or TPU is
    there to train on instead."""
    missing = processor.missing_fast_path(policy)
    if not missing or any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU")):
        return
    log.warning(
        "--mixed_precision=%s has no fast path on this processor, %s, which has no %s: "
        "training can be many times slower than in float32 (18 times for Conv8 on an AVX2-only "
        "AMD Zen 3). Leave --mixed_precision out to train in float32.",
        policy, processor.describe(processor.cpu_info()), " or ".join(missing))


def prepare_model_dir(model_dir, flags, config, strategy, held):
    """Checks `model_dir` for the run; returns the checkpoint state to resume
    from, or None. Writes nothing.

    The chief takes the folder's lock (held until `held`, a
    `contextlib.ExitStack`, closes) and checks it (`run_dir.check`). In a
    multi-worker run it then tells every worker the epoch it resumes from
    (-1: it refused the folder), and each worker reads the checkpoint of that
    epoch from the folder, which must be on a file system they all share.

    Raises:
        RunDirError: the folder cannot be used, or a worker finds another
            epoch there than the chief.
    """
    chief = _is_chief(strategy)
    refusal, restored = None, None
    if chief:
        try:
            held.enter_context(run_dir.lock(model_dir))
            restored = run_dir.check(model_dir, flags, config.resume, config.overwrite,
                                     defaults=ssm_config.TrainConfig.defaults())
        except run_dir.RunDirError as error:
            refusal = error
    if not _multi_worker(strategy):
        if refusal:
            raise refusal
        return restored if chief else run_dir.read_state(model_dir)
    epoch = distribute.chief_value(strategy, -1 if refusal else (restored or {}).get("epoch", 0))
    if refusal:
        raise refusal
    if chief:
        return restored
    if epoch < 0:
        raise run_dir.RunDirError(f"the chief refused --model_dir={model_dir}; its error says why.")
    if epoch == 0:  # a fresh run (or one the chief will overwrite)
        return None
    restored = run_dir.read_state(model_dir)
    found = (restored or {}).get("epoch", 0)
    if found != epoch:
        raise run_dir.RunDirError(
            f"--model_dir={model_dir}: the chief resumes after {epoch} finished epochs, but this "
            f"worker finds {found} there. --model_dir must be on a file system all workers share."
        )
    return restored


def prepare_data(config, splits=None):
    """`splits`, or the data of `config` loaded; checked to fit `config.arch`.

    Raises:
        DataError: the data cannot be loaded.
        ConfigError: its images do not fit the architecture.
    """
    splits = splits or data.load_splits(
        config.dataset, config.data_dir, config.validation_size, config.seed, config.max_examples
    )
    try:
        models.check_input_shape(config.arch, splits.spec.image_shape)
    except ValueError as error:
        raise ssm_config.ConfigError(f"--dataset={config.dataset}: {error}") from None
    return splits


def steps_per_epoch(config, splits):
    """`ceil(N_train / batch_size)`: the last, smaller batch is kept."""
    return math.ceil(len(splits.train[1]) / config.batch_size)


def make_model(config, splits, strategy, checkpoint=None):
    """The compiled model of a run, in `strategy`'s scope.

    Built and compiled from `config`, or, given a checkpoint folder (see
    `callbacks.RunCheckpoint`), loaded from it with its optimiser state (and
    the weight decay on the scores only, which Keras does not save).
    """
    with strategy.scope():
        if checkpoint:
            found = run_dir.read_checkpoint(checkpoint)
            if found is None:
                raise run_dir.RunDirError(f"{checkpoint} holds no checkpoint.")
            model = load_model_file(found[1], "the checkpoint")
            ssm_callbacks.restore_mask_samplers(model, found[0].get("mask_samplers", {}))
            if config.regime == "mask":
                # Keras saves an optimiser's weight decay but not the variables
                # it excludes: exclude all but the scores again.
                score_decay.exclude_all_but_scores(model.optimizer, model)
            return model
        model = build_model(config, splits.spec)
        compile_model(model, config, steps_per_epoch(config, splits))
    return model


def make_started_model(config, splits, strategy):
    """The compiled model of a `--start_from` run and the checkpoint state it
    trains on from (see `forking`).

    Returns:
        `(model, state)`: the model built and compiled from `config` with
        the parent checkpoint's variables, and that checkpoint's state with
        `started_from` recorded (`callbacks.RunCheckpoint` gives its
        callbacks' states to the run's with the same attributes).
    """
    state, path = forking.parent_checkpoint(config)
    parent = load_model_file(path, f"--start_from={config.start_from}")
    with strategy.scope():
        model = build_model(config, splits.spec)
        compile_model(model, config, steps_per_epoch(config, splits))
        forking.copy_training_state(parent, model, config.start_from,
                                    plateau_rate=forking.reduces_on_plateau(state, config))
        ssm_callbacks.restore_mask_samplers(model, state.get("mask_samplers", {}))
    state = {**state, "started_from": {"checkpoint": os.path.realpath(os.path.dirname(path)),
                                       "epoch": state["epoch"]}}
    return model, state


def fit(model, config, splits, callbacks, initial_epoch=0):
    """Trains `model` for epochs `initial_epoch` to `config.epochs - 1`.

    Epoch `e` trains exactly the `steps_per_epoch(config, splits)` batches
    of `data.make_epoch_dataset` for `(seed, e)`, whatever
    `--steps_per_execution`, and is validated on `splits.validation` (when
    it is not empty), so a run resumed at epoch `e` ends like one never
    interrupted. With `--recalibrate_batch_norm` (by default, a model that
    evaluates other masks than it trains with), the batch-norm statistics
    are re-estimated before each validation (`batch_norm`). With
    `--ema_momentum`, validations and the model after `fit` use the moving
    averages (`averaging`). Trains nothing when `initial_epoch >=
    config.epochs` (a run killed after its last checkpoint): it only puts
    the averages in the model, as Keras' `fit` does at its end.
    """
    if initial_epoch >= config.epochs:
        model.optimizer.finalize_variable_values(model.trainable_variables)
        return
    if batch_norm.recalibrates(model, config.recalibrate_batch_norm):
        callbacks = [batch_norm.RecalibrateBatchNorm(splits.train[0], config.batch_size),
                     *callbacks]
    if config.ema_momentum is not None:
        # First: the averages are in the model before the batch norms are
        # re-estimated for them.
        callbacks = [averaging.AverageScores(config.ema_start_epoch()), *callbacks]
    epoch_number = ssm_callbacks.EpochNumber(initial_epoch)
    train_data = data.make_epoch_dataset(
        *splits.train, config.batch_size, augment=config.augment,
        augment_epochs=config.augment_epochs(), seed=config.seed, epoch=epoch_number,
    )
    validation = None
    if len(splits.validation[1]):
        validation = data.make_eval_dataset(*splits.validation, config.batch_size)
    model.fit(
        train_data,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        # None: Keras iterates the data anew each epoch (after `epoch_number`
        # has moved on) and ends an epoch, and its last execution, where the
        # epoch's batches end. With a number it would run whole executions
        # and carry the iterator over from one epoch to the next.
        steps_per_epoch=None,
        validation_data=validation,
        callbacks=[epoch_number, *callbacks],
        verbose=config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2),
        shuffle=False,  # each epoch is shuffled already
    )


def check_model_settings(config, model, fresh=True):
    """Refuses the settings the built `model` would ignore: batch-norm
    training or re-estimation for a model without batch norm, and for a
    `fresh` run (a resumed one may have pruned past it already) a
    `--target_remaining` at or above the share of weights its mask keeps
    (weight decay only prunes)."""
    if not ssm_layers.find_layers(model, keras.layers.BatchNormalization):
        for name in ("train_batch_norm", "recalibrate_batch_norm"):
            if getattr(config, name):
                raise ssm_config.ConfigError(
                    f"--{name}: the {config.arch} model has no batch norm. Received: "
                    f"--{name}")
    if fresh and config.target_remaining is not None:
        start = statistics.summarize(model)["remaining_percent"]
        if config.target_remaining >= start:
            raise ssm_config.ConfigError(
                f"--target_remaining={config.target_remaining:g} is not below the "
                f"{start:.2f}% of the weights the mask keeps now; weight decay only prunes, "
                "so ask for less")


def check_kept_epochs(config, model_dir, restored, resumed):
    """Refuses a `--keep_checkpoints` epoch that a run going on from the
    checkpoint `restored` (`resumed` from its own, or started from another
    run's) trained before it and did not keep: its checkpoint cannot be made
    any more.

    Returns:
        The epochs whose copy a resumed run still makes: its checkpoint's
        own (named as the run resumes, or a kill came while it was being
        copied).
    """
    done = (restored or {}).get("epoch", 0)
    checkpoints = run_dir.checkpoint_dir(model_dir)
    missed = sorted(epoch for epoch in config.kept_checkpoint_epochs() if epoch <= done and not (
        resumed and os.path.isdir(run_dir.kept_checkpoint_dir(checkpoints, epoch))))
    copied = [done] if resumed and done in missed else []
    missed = [epoch for epoch in missed if epoch not in copied]
    if missed:
        raise ssm_config.ConfigError(
            f"--keep_checkpoints={config.keep_checkpoints} names epoch {missed[0]}, and this "
            f"run goes on after epoch {done} without a kept checkpoint of it, which can no "
            f"longer be made: name epochs after {done}.")
    return copied


def _train(config, model_dir, splits, strategy, restored, start_run, extra_callbacks):
    """Trains the run; `start_run()` (on the chief; None elsewhere) writes
    the run folder once the data and the model are made. `extra_callbacks`
    come after the run's own (see `run`)."""
    chief = start_run is not None
    strategy = strategy or make_strategy(config)
    splits = prepare_data(config, splits)
    fresh = not restored
    if restored:
        model = make_model(config, splits, strategy, run_dir.checkpoint_dir(model_dir))
    elif config.start_from:
        model, restored = make_started_model(config, splits, strategy)
    else:
        model = make_model(config, splits, strategy)
    check_model_settings(config, model, fresh=not restored)
    averaging.check_start(config, restored)
    copied = check_kept_epochs(config, model_dir, restored, resumed=not fresh)
    initial_epoch = restored["epoch"] if restored else 0
    previous_time = (restored or {}).get("wall_time_s") or 0.0
    start = time.time()

    def clock():
        return previous_time + time.time() - start

    if chief:
        start_run()
        if fresh:
            _write_flags_summary(model_dir, run_dir.to_flagfile(config.to_dict()))
        for epoch in copied:
            run_dir.keep_checkpoint(run_dir.checkpoint_dir(model_dir), epoch, restored["model"])
    callbacks, checkpoint = _callbacks(config, model_dir, restored, clock, chief)
    try:
        fit(model, config, splits, [*callbacks, *extra_callbacks], initial_epoch)
    except ssm_callbacks.Diverged as error:
        if chief and not records.write_divergence(model_dir, config, checkpoint, error):
            raise ssm_callbacks.Diverged(
                error.epoch, error.what, kept="The finished run's results.json, history.jsonl "
                f"and model.keras are kept; its checkpoint holds epoch {error.epoch - 1}."
            ) from None
        raise
    if batch_norm.recalibrates(model, config.recalibrate_batch_norm):
        batch_norm.recalibrate(model, splits.train[0], config.batch_size)
    evaluations = {
        "validation": _evaluate(model, *splits.validation, config.batch_size),
        "test": _evaluate(model, *splits.test, config.batch_size),
    }
    results = records.collect(config, model, splits, checkpoint.history, clock(), evaluations)
    results.update(records.start_record(checkpoint), model_dir=model_dir)
    if chief:
        records.write_history(model_dir, checkpoint.history)
        records.write(model_dir, model, results)
        log.info(records.summary_line(results))
    return results
