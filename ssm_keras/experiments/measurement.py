"""What every measurement command shares: the machine it ran on and the
rate of repeated calls. (Its report files: `reports`; the settings of the
commands: `config`.)

`machine_info()` records the CPU (`processor.cpu_info`: model name,
family/model/stepping, the `processor.CPU_FEATURES` present), cores, load
averages, Python, TensorFlow and Keras versions, devices, threading
settings and the environment variables of `ENV_KEYS`;
`finish_machine_info` adds the load averages at the end.
"""

import os
import platform
import statistics
import time

import keras
import tensorflow as tf

from ssm_keras import processor

ENV_KEYS = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
            "OMP_NUM_THREADS", "KERAS_BACKEND")


# The machine.
def machine_info():
    """CPU, cores, load, TensorFlow and Keras versions, devices, settings."""
    return {
        **processor.cpu_info(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [device.name for device in tf.config.list_logical_devices()],
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "environment": {key: os.environ.get(key) for key in ENV_KEYS},
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def finish_machine_info(machine):
    """Adds to `machine` (`machine_info()`) the load averages at the end,
    `load_average_end`; returns it."""
    machine["load_average_end"] = list(os.getloadavg())
    return machine


def machine_summary(machine, *details):
    """The first line of a report: CPU (family, model; features), cores,
    TensorFlow and Keras versions, `details`, and the one-minute load
    average at the start and at the end."""
    return ", ".join([
        processor.describe(machine, features=True), f"{machine['cores']} cores",
        f"TensorFlow {machine['tensorflow']}", f"Keras {machine['keras']}", *details,
        f"load average {machine['load_average'][0]:.2f} -> "
        f"{machine['load_average_end'][0]:.2f}"])


# Rates.
def images_per_second(predict, batch, windows, seconds):
    """Median images/s of `predict(batch)` over `windows` windows of `calls`
    calls each, `len(batch) * calls / window seconds`, where `calls` makes a
    window last about `seconds` by the time of one call after a warm-up call
    (which traces a `tf.function`). `predict` must return when its result
    is computed (e.g. as a NumPy array)."""
    predict(batch)
    begin = time.perf_counter()
    predict(batch)
    calls = max(1, round(seconds / (time.perf_counter() - begin)))
    rates = []
    for _ in range(windows):
        begin = time.perf_counter()
        for _ in range(calls):
            predict(batch)
        rates.append(calls * len(batch) / (time.perf_counter() - begin))
    return statistics.median(rates)
