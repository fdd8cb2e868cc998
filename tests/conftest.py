"""The shared fixtures: quiet TensorFlow on two logical CPUs (under
pytest-xdist, on the worker's share of the cores), the real-data folder
(`mnist_dir`), a signed FCN trained on real MNIST (`trained_fcn`), the
commands run in this process (`cli`) with their output (`command_output`),
and a fresh Keras state for every test. The helpers the test modules import
are in `support.py`."""

import fcntl
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN on, as the commands turn it on (`ssm_keras.cli`) and as TensorFlow
# does by itself on CPUs with AVX-512 VNNI or AMX: the suite computes alike
# on every processor, in one process or under pytest-xdist (whose workers
# inherit the variable once the controller has imported the package), and
# a channels-first convolution runs on the CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# Under pytest-xdist each worker's thread pools (TensorFlow's two, OpenMP's
# for NumPy's BLAS) get the worker's share of the cores, not every core:
# two workers on 2 cores ran 454 s of tests instead of 499 s (`bash
# scripts/test.sh`, AMD Zen 3). The processes a test starts inherit it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    for _pool in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_pool, _threads)

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that the mirrored strategy has two replicas.
# This must happen before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

from support import command_status, shared_data_dir  # noqa: E402  (after the devices are set)

from ssm_keras import data  # noqa: E402
from ssm_keras.cli import shell  # noqa: E402
from ssm_keras.training import config as ssm_config  # noqa: E402
from ssm_keras.training import run_dir, trainer  # noqa: E402


@pytest.fixture
def cli(capsys):
    """`cli(module, *argv)`: runs command `module` in this process on fresh
    flags (`command_status`); returns its exit status and what it printed
    on stderr."""

    def run(module, *argv):
        capsys.readouterr()
        code = command_status(module, *argv)
        return code, capsys.readouterr().err

    return run


# The test files that take longest, longest first (91 to 37 s each of the
# 865 s of tests, `bash scripts/test.sh --durations=0` on 2 cores of an AMD
# Zen 3), run first: pytest-xdist hands each worker whole files in
# collection order, so a long file collected last would keep one worker
# busy after the other ends. (Measured there: 444-489 s in this order,
# 483-488 s in the alphabetical one; the machine varied more than that.)
LONGEST_FILES_FIRST = ("test_tuning.py", "test_recipes.py", "test_run_dir.py",
                       "test_sparsity.py", "test_robustness.py", "test_trainer.py",
                       "test_distribute.py", "test_measurements.py", "test_averaging.py",
                       "test_pretrained.py")


def pytest_collection_modifyitems(items):
    """Puts the tests of `LONGEST_FILES_FIRST` first, each file's tests in
    their order."""
    def rank(item):
        name = item.path.name
        return LONGEST_FILES_FIRST.index(name) if name in LONGEST_FILES_FIRST else len(
            LONGEST_FILES_FIRST)
    items.sort(key=rank)


@pytest.fixture
def command_output():
    """The package's log shown as a command shows it (information on stdout,
    warnings as `note:` lines on stderr), for a test that calls the library
    as a command does; taken away afterwards."""
    shell.show_package_log()
    yield
    logger = logging.getLogger("ssm_keras")
    for handler in [h for h in logger.handlers if isinstance(h, shell.CommandOutput)]:
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST IDX files' folder in the shared data folder
    (`shared_data_dir`); a test that needs it is skipped, with the reason,
    when they are not there."""
    path = shared_data_dir() / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {path} (set SSM_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def trained_fcn(tmp_path_factory, mnist_dir):
    """A signed FCN trained for 3 epochs on 12,000 real MNIST training images
    with a strong weight decay (about 1% of the weights remain, many units
    dead): `(run directory, results, test images, test labels)`, the test
    split being the full 10,000-image MNIST test set. Trained once a test
    session: pytest-xdist workers share it in their common temporary folder,
    the first to need it training it while the others wait (the tests only
    read the run)."""
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the session's folder, above each worker's own
    run = shared / "trained_fcn"
    full = data.load_splits("mnist", str(mnist_dir.parent), validation_size=0)
    with open(shared / "trained_fcn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run / run_dir.RESULTS).is_file():
            train = (full.train[0][:12000], full.train[1][:12000])
            splits = data.Splits(full.spec, train, (full.test[0][:500], full.test[1][:500]),
                                 full.test, source=full.source)
            settings = ssm_config.TrainConfig(
                arch="fcn", dataset="mnist", mask="signed", regime="mask", weight_init="elus",
                epochs=3, batch_size=128, learning_rate=0.05, weight_decay=0.005,
                validation_size=0, steps_per_execution=32, jit_compile=True, model_dir=str(run),
                verbose=0)
            trainer.run(settings, splits)
            keras.utils.clear_session()
    return run, run_dir.read_results(str(run)), *full.test


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with float32 and fresh layer names."""
    keras.mixed_precision.set_global_policy("float32")
    # Without the garbage collection clear_session() runs by default, which
    # took about 0.5 s per test once a few models had been built.
    keras.utils.clear_session(free_memory=False)
    yield
    keras.mixed_precision.set_global_policy("float32")
