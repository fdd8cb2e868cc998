"""Shared test fixtures: quiet TensorFlow, the real-data folder, seeding."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that the mirrored strategy has two replicas.
# This must happen before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The real data sets: `$SSM_TEST_DATA`, else `<repo>/../shared/data`."""
    return pathlib.Path(os.environ.get("SSM_TEST_DATA", REPO.parent / "shared" / "data"))


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
