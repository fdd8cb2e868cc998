"""What the tests share besides fixtures: the repository and the real-data
folder, a tiny learnable problem and its training settings, masked models
with trained-looking scores, and the commands run in this process on fresh
flags. Imported by the test modules; the fixtures are in `conftest.py`,
which sets TensorFlow up before this module loads."""

import gzip
import json
import math
import os
import pathlib
import struct

import keras
import numpy as np
import pytest
from absl import flags

from ssm_keras import data, layers, models
from ssm_keras.cli import export, shell
from ssm_keras.training import config as ssm_config
from ssm_keras.training import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
FCN_SHAPE = (8, 8, 1)
# Largest test-accuracy change each TFLite format may show against the Keras
# model: the float formats compute the same float32 network (probabilities
# within 1e-5), so no test image changes class; the dynamic-range file
# quantises activations to 8 bits, which moves a few borderline images.
TFLITE_ACCURACY_TOLERANCE = {"tflite": 0.0, "tflite_sparse": 0.0, "tflite_dynamic": 0.005}
CONV_SHAPE = (8, 8, 3)


def shared_data_dir():
    """The real data sets: `$SSM_TEST_DATA`, else `<repo>/../shared/data`."""
    return pathlib.Path(os.environ.get("SSM_TEST_DATA", REPO.parent / "shared" / "data"))


def tiny_splits(shape=(8, 8, 1), classes=3, train_size=96, seed=0):
    """A learnable toy problem: the class is the brightest of `classes` stripes."""
    rng = np.random.default_rng(seed)

    def make(size):
        labels = rng.integers(0, classes, size)
        images = rng.integers(0, 60, (size, *shape)).astype(np.uint8)
        rows = shape[0] // classes
        for index, label in enumerate(labels):
            images[index, label * rows:(label + 1) * rows] += 150
        return images, labels.astype(np.int64)

    spec = data.DatasetSpec("toy", shape, classes)
    return data.Splits(spec, make(train_size), make(32), make(32), source="toy")


def tiny_config(tmp_path, **overrides):
    settings = dict(arch="fcn", dataset="mnist", epochs=3, batch_size=32, learning_rate=0.1,
                    validation_size=32, model_dir=str(tmp_path / "run"), verbose=0)
    return ssm_config.TrainConfig(**{**settings, **overrides})


def randomize_scores(model, seed=0, density=None):
    """Scores and batch-norm statistics as after some training.

    Threshold masks get scores `N(0, (1.5 tau)^2)` (about half the weights
    remain) or, with `density`, exactly `round(density * n)` random entries
    of `+-3 tau` per layer and zeros elsewhere.
    """
    rng = np.random.default_rng(seed)
    for layer in layers.masked_layers(model):
        shape = tuple(layer.scores.shape)
        scale = 1.5 * float(layer.threshold.numpy()) if hasattr(layer, "threshold") else 1.0
        if density is None:
            scores = rng.normal(scale=scale, size=shape)
        else:
            scores = np.zeros(math.prod(shape))
            kept = rng.choice(scores.size, round(density * scores.size), replace=False)
            scores[kept] = 2.0 * scale * rng.choice([-1.0, 1.0], kept.size)
        layer.scores.assign(scores.reshape(shape).astype(np.float32))
    for layer in layers.find_layers(model, keras.layers.BatchNormalization):
        channels = layer.moving_mean.shape
        layer.moving_mean.assign(rng.normal(size=channels).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    return model


def randomized_model(arch="fcn", input_shape=FCN_SHAPE, density=None, **kwargs):
    """A masked model of `models.build_architecture` with `randomize_scores` applied."""
    model = models.build_architecture(arch, input_shape=input_shape, **kwargs)
    return randomize_scores(model, density=density)


def random_images(input_shape, count=6, seed=1):
    """`count` uint8 images of `input_shape`, uniform in [0, 255]."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *input_shape)).astype(np.uint8)



def scores(model):
    """The scores of every masked layer of `model`, as NumPy arrays, in order."""
    return [keras.ops.convert_to_numpy(layer.scores) for layer in layers.masked_layers(model)]


def effective_kernels(model):
    """`{layer name: its effective kernel W0 * m}` of every masked layer."""
    return {layer.name: layer.effective_kernel().numpy() for layer in layers.masked_layers(model)}


def _fresh_flags(module):
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    return flag_values


def export_cli(*argv):
    """Runs `ssm_keras.export` with `argv` in this process: its exit status."""
    return command_status(export, *argv)


def strict_json(path):
    """The JSON in `path`, refusing NaN and Infinity as strict parsers do."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def parsed_flags(module, *argv):
    """A fresh `FlagValues` with the flags of command `module`, parsed from
    `argv` as its command line is (`shell.parse_flags`: `--recipe` too)."""
    flag_values = _fresh_flags(module)
    shell.parse_flags([module.__name__, *argv], flag_values)
    return flag_values


def command_status(module, *argv, **work_arguments):
    """Runs command `module` with `argv` in this process on fresh flags, as
    its console script would (`shell.main`): the exit status of
    `module.run_command(flag_values, **work_arguments)` through the shell,
    or 1 for a command line it cannot parse (after its one error line)."""
    flag_values = _fresh_flags(module)
    try:
        left = shell.parse_flags([module.__name__, *argv], flag_values)
    except SystemExit as exit_info:
        return exit_info.code
    return shell.run(lambda: module.run_command(flag_values, **work_arguments), left)


def assert_one_error_line(captured, fragment):
    """A command printed one `error: ` line holding `fragment`, and nothing else."""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert fragment in lines[0]
    assert captured.out == ""


class Crash(keras.callbacks.Callback):
    """Stops training after `epoch` epochs (once their checkpoint is written,
    when it comes after the run's own callbacks), as a kill would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def crashed_run(config, splits, after_epoch=2):
    """Runs `config` in this process until a kill after `after_epoch` epochs."""
    with pytest.raises(KeyboardInterrupt):
        trainer.run(config, splits=splits, callbacks=[Crash(after_epoch)])


def idx(array):
    """An IDX file of unsigned bytes (MNIST's format)."""
    header = bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(folder, train, test, compress=True):
    """Writes the four MNIST IDX files of (images, labels) pairs into
    `folder` (made if missing), gzipped unless `compress` is False."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            content = idx(array)
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                content, name = gzip.compress(content), name + ".gz"
            (folder / name).write_bytes(content)
