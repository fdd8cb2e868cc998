"""One factory from a strategy name to a `tf.distribute.Strategy`, and what
the processes of a multi-worker run need to agree on."""

import json
import os

import tensorflow as tf


# The mirrored strategies made so far in this process, by name.
_MIRRORED = {}


def get_strategy(name, tpu=None):
    """Returns the strategy named `name`.

    `mirrored` and `multi_worker_mirrored` are made once per process and then
    reused: every new mirrored strategy numbers its collective operations
    from the same start, so a second one's all-reduces clash with the
    first's ("Shape mismatch in the collective instance 100").

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
    if name in ("mirrored", "multi_worker_mirrored"):
        if name not in _MIRRORED:
            _MIRRORED[name] = _make_mirrored(name)
        return _MIRRORED[name]
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


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3's `fit` can use.

    Keras 3.15's TensorFlow trainer calls `strategy.reduce` in two ways that
    the collective strategy does not accept: on a nest (the first batch's
    `(x, y)` tuple, when it builds the model) and with `axis=0` on the scalar
    metrics of each step. Here `reduce` reduces each leaf `v` of a nest on
    its own, over the replicas `r = 1..R`, and takes scalars with `axis=None`:

        reduce("MEAN", v, axis) = (1 / R) * sum_r v_r    for a scalar v,

    which is what Keras computes under `MirroredStrategy`; other leaves keep
    `axis`.
    """

    def reduce(self, reduce_op, value, axis):
        def reduce_leaf(leaf):
            rank = self.experimental_local_results(leaf)[0].shape.rank
            return super(MultiWorkerMirroredStrategy, self).reduce(
                reduce_op, leaf, None if rank == 0 else axis
            )

        return tf.nest.map_structure(reduce_leaf, value)


def speed_settings(strategy, jit_compile, steps_per_execution):
    """The `jit_compile` and `steps_per_execution` Keras 3.15 can train with.

    Under `MirroredStrategy` or `MultiWorkerMirroredStrategy` with more than
    one replica, both speed settings fail in Keras' trainer, which puts the
    `strategy.run` of all replicas into one function:

    - `steps_per_execution > 1` runs that function in a `tf.while_loop`
      under a `tf.cond`, where the replicas' cross-replica updates fail
      ("You must feed a value for placeholder tensor"); it becomes 1.
    - `jit_compile=True` compiles all replicas into one XLA computation,
      which cannot reach the other devices' variables ("Trying to access
      resource ... located in device CPU:1 from device CPU:0") and, across
      workers on CPUs, aborts the process ("Collectives are not yet
      implemented for CPU devices when compiling with XLA"); it becomes
      False. (Keras' own default never uses XLA under `tf.distribute`.)

    Other strategies, and these two with one replica, keep both settings.

    Returns:
        `(jit_compile, steps_per_execution, notes)`, where `notes` says in
        one line each what was changed and why.
    """
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy,
                                     tf.distribute.MultiWorkerMirroredStrategy))
    if not mirrored or strategy.num_replicas_in_sync == 1:
        return jit_compile, steps_per_execution, []
    replicas = f"{strategy.num_replicas_in_sync} replicas of {type(strategy).__name__}"
    notes = []
    if steps_per_execution > 1:
        notes.append(f"--steps_per_execution={steps_per_execution} runs as 1: with "
                     f"{replicas}, Keras 3 fails on several steps per execution.")
    if jit_compile:
        notes.append(f"--jit_compile runs as --nojit_compile: with {replicas}, Keras 3 "
                     "cannot compile the replicas' steps with XLA.")
    return (None if jit_compile is None else False), 1, notes


def chief_value(strategy, value):
    """The chief's integer `value`, returned on every worker of `strategy`.

    A collective: every worker must call it, and it returns once all did, so
    it is also a barrier. Replica 0 contributes `value`, every other replica
    0, and the contributions are summed. Replica 0 is on the chief:
    TensorFlow numbers the replicas of the task with cluster id `k`
    `k * local_replicas + 0, 1, ...`, where the chief has id 0 and worker `i`
    id `i` (`i + 1` when the cluster has a `chief` task).
    """

    def contribution(context):
        return tf.constant(value if context.replica_id_in_sync_group == 0 else 0, tf.int64)

    values = strategy.experimental_distribute_values_from_function(contribution)
    return int(strategy.reduce("SUM", values, axis=None))


def _make_mirrored(name):
    if name == "multi_worker_mirrored":
        return MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


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
