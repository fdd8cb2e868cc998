"""One factory from a strategy name to a `tf.distribute.Strategy`, and what
the processes of a multi-worker run need to agree on."""

import faulthandler
import json
import logging
import os
import subprocess
import sys

import tensorflow as tf

from ssm_keras.errors import UserError

log = logging.getLogger(__name__)

# What each task of a multi-worker cluster may be.
TASK_TYPES = ("chief", "worker")


class DistributeError(UserError):
    """A cluster that cannot be used: a malformed `TF_CONFIG`, workers that do
    not join, a worker lost during the run."""


# The mirrored strategies made so far in this process, by name.
_MIRRORED = {}


def get_strategy(name, tpu=None, worker_timeout=600.0):
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
        worker_timeout: for `multi_worker_mirrored`: seconds to wait for
            the other workers of `TF_CONFIG` to start (see `join_workers`).

    Raises:
        ValueError: an unknown name, or `tpu` without a TPU address.
        DistributeError: `multi_worker_mirrored` with a malformed
            `TF_CONFIG`, or workers that did not start in time.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name in ("mirrored", "multi_worker_mirrored"):
        if name not in _MIRRORED:
            _MIRRORED[name] = _make_mirrored(name, worker_timeout)
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


def _make_mirrored(name, worker_timeout):
    if name == "multi_worker_mirrored":
        return join_workers(worker_timeout)
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def join_workers(timeout):
    """The `MultiWorkerMirroredStrategy` of the cluster in `TF_CONFIG`, made
    once every worker has started.

    TensorFlow makes the strategy only when all workers have joined, waiting
    for them in one call that holds Python's lock and ignores SIGTERM, with
    no time limit. Here the wait is announced at once on stderr (one `note:`
    line naming the workers waited for); if they have not all joined after
    `timeout` seconds (0: no limit), a watchdog process prints one `error:`
    line and kills this process (it has written nothing yet: the strategy is
    made before the run folder is touched).
    """
    cluster = cluster_config()
    task = cluster.get("task", {})
    others = [f"{kind} {index} ({address})"
              for kind, addresses in cluster.get("cluster", {}).items()
              for index, address in enumerate(addresses)
              if (kind, index) != (task.get("type"), task.get("index"))]
    watchdog = None
    if others:
        limit = f"up to {timeout:g} s" if timeout > 0 else "without a time limit"
        log.warning("waiting %s (--worker_timeout) for the other workers of TF_CONFIG: %s",
                    limit, ", ".join(others))
    if others and timeout > 0:
        message = (f"error: not every worker of TF_CONFIG started within --worker_timeout="
                   f"{timeout:g} s (waited for {', '.join(others)}). Start each with the same "
                   "command and its own TF_CONFIG task (scripts/local_workers.py does), or "
                   "raise --worker_timeout.")
        watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(timeout), message],
                                    stdin=subprocess.DEVNULL)
        # TensorFlow waits for the workers holding the interpreter, so no
        # Python code runs until they come: faulthandler's own thread ends
        # the process with status 1 once the watchdog has said why.
        faulthandler.dump_traceback_later(timeout + EXIT_DELAY_S, exit=True,
                                          file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        return MultiWorkerMirroredStrategy()
    except tf.errors.OpError as error:
        raise DistributeError(
            f"cannot start this worker of TF_CONFIG ({error.message.splitlines()[0]}); is "
            f"{cluster_address(cluster)} free and this machine's?"
        ) from None
    finally:
        if watchdog:
            faulthandler.cancel_dump_traceback_later()
            watchdog.kill()
            watchdog.wait()


# The watchdog of `join_workers`: `python -c _WATCHDOG SECONDS MESSAGE`
# prints MESSAGE on stderr after SECONDS, unless killed first.
_WATCHDOG = """
import sys, time
time.sleep(float(sys.argv[1]))
print(sys.argv[2], file=sys.stderr, flush=True)
"""
# Seconds between the watchdog's message and the end of the waiting process.
EXIT_DELAY_S = 1.0


def cluster_address(cluster):
    """The address of this process' task in a `cluster_config()`."""
    task = cluster.get("task", {})
    return cluster["cluster"][task["type"]][task["index"]] if task else "localhost"


def cluster_config():
    """The `TF_CONFIG` environment variable, parsed and checked; `{}` without it.

    It must be a JSON object whose `cluster` maps `chief` and/or `worker` to
    lists of `host:port` addresses, and whose `task` names one of them by
    `type` and `index`.

    Raises:
        DistributeError: anything else, saying what.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except ValueError as error:
        raise DistributeError(f"TF_CONFIG is not JSON ({error}). Received: {text[:200]}") from None
    example = ('e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not isinstance(config, dict):
        raise DistributeError(f"TF_CONFIG must be a JSON object, {example}. Received: {text[:200]}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise DistributeError(f"TF_CONFIG's cluster and task must be objects, {example}.")
    for kind, addresses in cluster.items():
        if kind not in TASK_TYPES or not isinstance(addresses, list):
            raise DistributeError(
                f"TF_CONFIG's cluster may only list {' and '.join(TASK_TYPES)} addresses "
                f"(a list each). Received: {kind!r}: {addresses!r}"
            )
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit() \
                    or not 0 < int(port) < 65536:
                raise DistributeError(
                    f"TF_CONFIG: {kind} address {address!r} is not host:port (a port in 1..65535)."
                )
    if len(cluster.get("chief", [])) > 1:
        raise DistributeError(
            f"TF_CONFIG's cluster names {len(cluster['chief'])} chiefs; a cluster has at most "
            "one (the others are workers).")
    if cluster and not task:
        raise DistributeError(f"TF_CONFIG names a cluster but no task of this process, {example}.")
    if task:
        kind, index = task.get("type"), task.get("index", 0)
        known = kind in cluster and isinstance(index, int) and not isinstance(index, bool)
        if not known or not 0 <= index < len(cluster[kind]):
            sizes = ", ".join(f"{name}: {len(found)}" for name, found in cluster.items())
            raise DistributeError(
                f"TF_CONFIG's task ({kind!r}, index {index!r}) is not in its cluster "
                f"({sizes or 'empty'}).")
        config["task"] = {**task, "index": index}
    return config


def is_chief():
    """Whether this process writes the run's files (the chief or worker 0).

    Without `TF_CONFIG` (a single process) it is.

    Raises:
        DistributeError: a malformed `TF_CONFIG` (see `cluster_config`).
    """
    config = cluster_config()
    task = config.get("task", {})
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type in (None, "chief"):
        return True
    return task_type == "worker" and index == 0 and "chief" not in config["cluster"]
