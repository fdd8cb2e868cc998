"""What every measurement command shares: the machine it ran on and the
rate of repeated calls. (Its report files: `reports`; the settings of the
commands: `config`.)

`machine_info()` records the CPU (model name, family/model/stepping, the
`CPU_FEATURES` present), cores, load averages, Python, TensorFlow and Keras
versions, devices, threading settings and the environment variables of
`ENV_KEYS`; `finish_machine_info` adds the load averages at the end.
"""

import os
import platform
import statistics
import time

import keras
import tensorflow as tf

# CPU features that decide which kernels TensorFlow can use: vector width,
# and the fast bfloat16 / float16 paths (AVX-512 BF16 dot products, AMX tiles).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
ENV_KEYS = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
            "OMP_NUM_THREADS", "KERAS_BACKEND")


# The machine.
def _first_cpuinfo_entry():
    """`/proc/cpuinfo`'s fields for the first processor ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info():
    """Model name, family/model/stepping (which name a processor generation
    when the name does not, e.g. "AMD EPYC" in a virtual machine) and the
    `CPU_FEATURES` present."""
    fields = _first_cpuinfo_entry()
    present = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": {key.replace(" ", "_"): fields.get(key) for key in
                   ("vendor_id", "cpu family", "model", "stepping")},
        "cpu_flags": [flag for flag in CPU_FEATURES if flag in present],
    }


def machine_info():
    """CPU, cores, load, TensorFlow and Keras versions, devices, settings."""
    return {
        **cpu_info(),
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
    cpu_id = machine["cpu_id"]
    return ", ".join([
        f"{machine['cpu']} (family {cpu_id['cpu_family']}, model {cpu_id['model']}; "
        f"{' '.join(machine['cpu_flags'])})", f"{machine['cores']} cores",
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
