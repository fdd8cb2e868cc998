"""Starting a run from another run's checkpoint (`--start_from`).

A run started from the checkpoint of epoch `N` of another run (its parent)
goes on from the parent's state with its own settings, training epochs
`N + 1 .. E`. With the parent's settings it ends exactly where the parent
ends. With a setting that acts only after epoch `N` changed (e.g.
`--augment_fraction=0.75` from epoch 75 of a 100-epoch run), it ends where
a run with that setting from the start would.
So an experiment on the end of a long schedule costs the epochs that
differ, not the whole run.

The run's model is built and compiled from its own settings, and the
parent's state copied into it:

- every variable of the model (scores, frozen weights, thresholds,
  batch-norm statistics), in order: the parent's model must have as many,
  of the same shapes (the same `--arch`, `--width`, mask kind and regime);
- the optimiser's step count and its slots (momentum), so that the run's
  learning-rate schedule goes on at the parent's step; a rate reduced on
  plateaus carries over when both runs use `--lr_schedule=plateau` (the
  run goes on at the rate the parent's reductions left, and its own
  `--learning_rate` then only scales the weight decay, `weight_decay /
  learning_rate`); otherwise the run's schedule (`constant`: its
  `--learning_rate`) gives the rate;
  so do the moving averages of `--ema_momentum`, which start at the
  parent's variables when the parent kept none;
- the state of the callbacks a checkpoint keeps, each to the run's callback
  with those state attributes (`callbacks.matched_states`: the
  `--target_remaining` steering, `ReduceLROnPlateau`); one the parent did
  not have starts afresh (e.g. a target set for the continuation only);
- the Bernoulli masks' sampler counters, the epoch history and the wall
  time, so the run's history, curves and `results.json` cover all its
  epochs, the parent's first.
"""

from ssm_keras.training import averaging, callbacks, run_dir
from ssm_keras.training import config as ssm_config

# The optimiser variable that holds a learning rate not given by a schedule.
_LEARNING_RATE = "learning_rate"


def parent_checkpoint(config):
    """`(state, model path)` of the checkpoint `config.start_from` names.

    Raises:
        RunDirError: it names no checkpoint, or a damaged one.
        ConfigError: the checkpoint is at or after `--epochs`.
    """
    state, model_path = run_dir.find_checkpoint(config.start_from)
    if state["epoch"] >= config.epochs:
        raise ssm_config.ConfigError(
            f"--start_from={config.start_from} is the checkpoint after epoch {state['epoch']}, "
            f"and --epochs={config.epochs} leaves no epoch to train after it: ask for more "
            "--epochs.")
    return state, model_path


def reduces_on_plateau(state, config):
    """Whether both the run of `config` and the parent whose checkpoint
    `state` it starts from reduce the learning rate on plateaus (the
    parent's checkpoint keeps a `ReduceLROnPlateau` state)."""
    plateau = set(callbacks.RunCheckpoint.STATE_ATTRIBUTES)
    return config.lr_schedule == "plateau" and any(
        plateau <= set(saved) for saved in state.get("callbacks", []))


def copy_training_state(parent, model, source, plateau_rate=False):
    """Copies the variables of `parent` (a compiled model loaded from a
    checkpoint) and of its optimiser into `model`, compiled with the run's
    settings (see the module docstring); the learning rate too with
    `plateau_rate` (both runs reduce it on plateaus).

    Raises:
        ConfigError: the two models or optimisers have other variables;
            the message names `source` and the first that differs.
    """
    _copy(parent.weights, model.weights, source, "model",
          "start from a checkpoint of the same --arch, --width, --mask and --regime")
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    parent_rates, parent_averages, parent_state = _split(parent.optimizer.variables)
    rates, averages, state = _split(optimizer.variables)
    _copy(parent_state, state, source, "optimiser",
          "start from a checkpoint of the same --optimizer, with --mixed_precision="
          "mixed_float16 (loss scaling) on both sides or neither")
    if plateau_rate and len(parent_rates) == len(rates):
        for parent_rate, rate in zip(parent_rates, rates):
            rate.assign(parent_rate)
    if averages:
        _copy(parent_averages or model.trainable_variables, averages, source,
              "moving averages", "start from a checkpoint of the same model")


def _split(variables):
    """`([the learning-rate variable, if any], [the moving averages],
    [every other variable])` of an optimiser: the step counts and slots, in
    order (a loss-scaling optimiser's own before its inner one's)."""
    def is_rate(variable):
        return variable.path.rsplit("/", 1)[-1] == _LEARNING_RATE
    return ([variable for variable in variables if is_rate(variable)],
            [variable for variable in variables if averaging.is_average(variable)],
            [variable for variable in variables
             if not is_rate(variable) and not averaging.is_average(variable)])


def _copy(sources, targets, source, what, advice):
    """Assigns each of `sources` to the target at its place; ConfigError
    if their numbers or shapes differ."""
    if len(sources) != len(targets):
        raise ssm_config.ConfigError(
            f"--start_from={source}: the checkpoint's {what} has {len(sources)} variables and "
            f"this run's has {len(targets)}; {advice}.")
    for parent, variable in zip(sources, targets):
        if tuple(parent.shape) != tuple(variable.shape):
            raise ssm_config.ConfigError(
                f"--start_from={source}: the checkpoint's {what} variable {parent.path} has "
                f"the shape {tuple(parent.shape)}, and this run's {variable.path} "
                f"{tuple(variable.shape)}; {advice}.")
    for parent, variable in zip(sources, targets):
        variable.assign(parent)
