"""Trains a signed supermask (or a baseline) from the command line.

    python -m ssm_keras.train --arch=conv4 --signed --data_dir=../shared/data
    python -m ssm_keras.train --flagfile=flags/fcn_mnist_signed.flags

Every flag is a field of `ssm_keras.config.TrainConfig`; flags given after
`--flagfile` override it. The work is done by `ssm_keras.training.run`.
"""

import dataclasses
import sys
import typing

from absl import app, flags

from ssm_keras import callbacks as ssm_callbacks
from ssm_keras import config as ssm_config
from ssm_keras import data, init_file, run_dir

HELP = {
    "arch": "Architecture: fcn, conv2, conv4, conv6, conv8, resnet20/32/44/56/110, wrn28.",
    "mask": "Mask kind: signed, binary, bernoulli, topk, signed_topk.",
    "signed": "--signed / --nosigned: use the signed (keep, hide, invert) or unsigned "
              "(keep, hide) form of --mask (signed<->binary, signed_topk<->topk).",
    "tau_fraction": "Threshold masks: tau = tau_fraction * max|initial scores| per layer.",
    "density": "Top-k masks: fraction of each layer's weights kept, in (0, 1].",
    "weight_init": "Initialiser of the frozen weights: elus, elu, signed_kaiming_constant "
                   "or any Keras initialiser name.",
    "init_factor": "elus: W0 = sqrt(init_factor / fan_in) * sign(N(0, 1)).",
    "score_init": "Initialiser of the scores (default: the mask kind's).",
    "bernoulli_eval": "How bernoulli masks evaluate: expected (sigmoid(s) > 0.5) or sample.",
    "activation": "Hidden activation (default: elu for fcn/conv, relu for residual nets).",
    "width": "Width multiplier (wrn28: the widening factor k).",
    "seed": "Seed of the initial weights and scores, the data split and the shuffling.",
    "init_file": "Load the initial weights and scores from this init file (.npz).",
    "save_init_file": "Write the initial weights and scores to this new init file (.npz).",
    "regime": "mask: train the mask; weights: train the weights (baseline); "
              "mask_then_weights: freeze the mask of --mask_from and train its weights.",
    "mask_from": "mask_then_weights: run directory (or .keras file) of the trained mask.",
    "dataset": "mnist, fashion_mnist, cifar10 or cifar100.",
    "data_dir": "Local data (IDX .gz files, CIFAR archives, class folders or their "
                ".tar.gz) or a tensorflow_datasets data_dir.",
    "validation_size": "Training examples held out for validation.",
    "max_examples": "Use at most this many examples of each split (smoke tests).",
    "augment": "none, crop_flip (pad 4, random crop, flip) or flip_translate_rotate.",
    "batch_size": "Global batch size (split over replicas).",
    "epochs": "Training epochs.",
    "optimizer": "sgd (with --momentum, --nesterov) or adam.",
    "learning_rate": "Initial learning rate.",
    "momentum": "SGD momentum.",
    "nesterov": "Nesterov momentum.",
    "lr_schedule": "exponential (smooth), constant, cosine or plateau.",
    "lr_decay_rate": "exponential: factor per --lr_decay_epochs.",
    "lr_decay_epochs": "exponential: epochs per --lr_decay_rate.",
    "plateau_patience": "plateau: epochs without improvement before reducing.",
    "plateau_factor": "plateau: factor of each reduction.",
    "weight_decay": "Decoupled weight decay in the paper's sense (on the learning-rate "
                    "schedule: Keras weight_decay = weight_decay / learning_rate).",
    "loss": "crossentropy (exact, from the logits) or clipped_crossentropy (the paper's "
            "code: -log(clip(p_true, 1e-7, 1 - 1e-7)), no gradient where clipped).",
    "model_dir": "Run directory (default: runs/<arch>-<mask>-<dataset>-seed<seed>).",
    "resume": "Continue a finished run in --model_dir to a larger --epochs.",
    "overwrite": "Replace a run already in --model_dir.",
    "strategy": "default, one_device, mirrored (all GPUs, else all logical CPUs), "
                "multi_worker_mirrored (the workers of TF_CONFIG; --model_dir on a file system "
                "they share; scripts/local_workers.py starts N on this machine) or tpu.",
    "tpu": "TPU name or address (or 'local') for --strategy=tpu.",
    "mixed_precision": "float32, mixed_float16 or mixed_bfloat16.",
    "jit_compile": ("Compile training steps with XLA (--nojit_compile: never); unset, Keras "
                    "decides: on with a GPU or TPU and --strategy=default, else off."),
    "steps_per_execution": "Training steps per call into TensorFlow (helps small models).",
    "run_eagerly": "Run the model eagerly, without tf.function graphs (debugging; slow, "
                   "but starts at once).",
    "verbose": "0: silent, 1: progress bar, 2: one line per epoch (default: 1 on a terminal, else 2).",
}

USER_ERRORS = (
    ssm_config.ConfigError,
    data.DataError,
    init_file.InitFileError,
    run_dir.RunDirError,
    ssm_callbacks.Diverged,
)


def base_type(annotation):
    """`int` for `int | None`: the type of a `TrainConfig`-style field's flag."""
    options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return options[0] if options else annotation


def define_flags(flag_values=flags.FLAGS):
    """Defines one absl flag per `TrainConfig` field (not at import time)."""
    definers = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                float: flags.DEFINE_float, str: flags.DEFINE_string}
    for field in dataclasses.fields(ssm_config.TrainConfig):
        definer = definers[base_type(field.type)]
        definer(field.name, field.default, HELP[field.name], flag_values=flag_values)


def dataclass_from_flags(cls, flag_values=flags.FLAGS):
    """An instance of dataclass `cls` whose fields are the parsed flags' values."""
    return cls(**{
        field.name: flag_values[field.name].value for field in dataclasses.fields(cls)
    })


def config_from_flags(flag_values=flags.FLAGS):
    """A `TrainConfig` from parsed flags."""
    return dataclass_from_flags(ssm_config.TrainConfig, flag_values)


def exit_on_user_error(action, errors=USER_ERRORS):
    """Runs `action()`; a user error (one of `errors`) ends the command with
    one `error: ...` line on stderr and exit status 1, without a traceback."""
    try:
        return action()
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def parse_flags(argv, flag_values=flags.FLAGS):
    """Parses the command line into `flag_values`; an unknown or bad flag, or
    a missing flagfile, ends the command with one `error: ...` line on
    stderr and exit status 1, like every other bad input. Returns the
    arguments left over."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        message = " ".join(str(error).splitlines()).removeprefix("ERROR:: ")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def refuse_arguments(argv):
    """Ends the command with one `error: ...` line if `argv` has more than
    the program name (every input is a flag)."""
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(1)


def main(argv):
    from ssm_keras import training

    refuse_arguments(argv)
    exit_on_user_error(lambda: training.run(config_from_flags()))


def cli():
    """The `ssm-train` console script."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    cli()
