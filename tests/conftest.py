"""Shared test fixtures and helpers: quiet TensorFlow, the repository and the
real-data folder, a tiny learnable problem and its training settings."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that the mirrored strategy has two replicas.
# This must happen before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

from ssm_keras import config as ssm_config  # noqa: E402  (after the devices are set)
from ssm_keras import data  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


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


class Crash(keras.callbacks.Callback):
    """Stops the process' training after `epoch` epochs, as a kill would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture
def mnist_dir():
    path = shared_data_dir() / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {path} (set SSM_TEST_DATA)")
    return path


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with float32 and fresh layer names."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")
