"""One factory from a strategy name to a `tf.distribute.Strategy`."""

import json
import os

import tensorflow as tf


def get_strategy(name, tpu=None):
    """Returns the strategy named `name`.

    Args:
        name: `default` (no distribution), `one_device` (the first GPU, else
            the CPU), `mirrored` (all GPUs of this machine; without GPUs, all
            logical CPU devices), `multi_worker_mirrored` (the cluster in the
            `TF_CONFIG` environment variable) or `tpu`.
        tpu: for `tpu`: the TPU's name or address, or `local`.

    Raises:
        ValueError: an unknown name, or `tpu` without a TPU address.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if not tpu:
            raise ValueError("The tpu strategy needs a TPU address. Received: tpu=None")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu == "local" else tpu
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        "Unknown strategy. Expected one of default, one_device, mirrored, "
        f"multi_worker_mirrored, tpu. Received: strategy={name!r}"
    )


def is_chief():
    """Whether this process writes the run's files (the chief or worker 0).

    Without `TF_CONFIG` (a single process) it is.
    """
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type in (None, "chief"):
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    return task_type == "worker" and index == 0 and "chief" not in cluster
