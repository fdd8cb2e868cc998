"""Strategies: the factory, multi-worker training and its resume, speed settings."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from multi_worker_job import ModelRecorder
from support import REPO, parsed_flags

from ssm_keras.cli import shell, train
from ssm_keras.training import config as ssm_config
from ssm_keras.training import distribute, run_dir, trainer

# A tiny run of the FCN flagfile (which asks for --steps_per_execution=32 and
# --jit_compile) on real MNIST: 256 training examples, two steps per epoch.
FLAGFILE_RUN = [
    f"--flagfile={REPO / 'flags' / 'fcn_mnist_signed.flags'}", "--max_examples=256",
    "--validation_size=0", "--epochs=2", "--verbose=0",
]


def test_strategy_factory():
    assert distribute.get_strategy("mirrored").num_replicas_in_sync == 2  # two logical CPUs
    assert distribute.get_strategy("mirrored") is distribute.get_strategy("mirrored")
    assert distribute.get_strategy("one_device").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="strategy='horovod'"):
        distribute.get_strategy("horovod")


def test_chief_is_the_chief_or_worker_zero(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief()
    worker = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": %d}}'
    monkeypatch.setenv("TF_CONFIG", worker % 0)
    assert distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", worker % 1)
    assert not distribute.is_chief()


def test_multi_worker_reduce_takes_nests_and_scalars(monkeypatch):
    """In one process (one replica); two workers are checked by the job below."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.get_strategy("multi_worker_mirrored")
    values = strategy.experimental_distribute_values_from_function(
        lambda context: (tf.constant(1.5), tf.constant([[1.0, 2.0], [3.0, 5.0]]))
    )
    scalar, matrix = strategy.reduce("MEAN", values, axis=None)
    assert scalar.numpy() == 1.5 and matrix.numpy().tolist() == [[1, 2], [3, 5]]
    # Keras reduces each step's scalar metrics with axis=0; the stock class fails.
    assert strategy.reduce("MEAN", values[0], axis=0).numpy() == 1.5
    assert strategy.reduce("SUM", values[1], axis=0).numpy().tolist() == [4, 7]
    with pytest.raises(ValueError, match="Invalid reduction dimension 0"):
        tf.distribute.MultiWorkerMirroredStrategy().reduce("MEAN", values[0], axis=0)


def test_speed_settings_change_only_under_several_mirrored_replicas():
    mirrored = distribute.get_strategy("mirrored")
    jit, steps, notes = distribute.speed_settings(mirrored, True, 32)
    assert (jit, steps) == (False, 1)
    assert notes == [
        "--steps_per_execution=32 runs as 1: with 2 replicas of MirroredStrategy, "
        "Keras 3 fails on several steps per execution.",
        "--jit_compile runs as --nojit_compile: with 2 replicas of MirroredStrategy, "
        "Keras 3 cannot compile the replicas' steps with XLA.",
    ]
    assert distribute.speed_settings(mirrored, None, 1) == (None, 1, [])
    for strategy in (tf.distribute.MirroredStrategy(["/cpu:0"]),
                     distribute.get_strategy("one_device"), distribute.get_strategy("default")):
        assert distribute.speed_settings(strategy, True, 32) == (True, 32, [])


def test_a_worker_resumes_from_the_chiefs_epoch_or_stops(tmp_path, monkeypatch):
    """A worker (not the chief) of a multi-worker run, the chief's answer given."""
    strategy = distribute.get_strategy("multi_worker_mirrored")
    model_dir = tmp_path / "run"
    (model_dir / "checkpoint").mkdir(parents=True)
    state = {"epoch": 3, "history": [{"epoch": epoch} for epoch in (1, 2, 3)]}
    (model_dir / "checkpoint" / "state.json").write_text(json.dumps(state))
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')

    def as_worker(chief_epoch):
        monkeypatch.setattr(distribute, "chief_value", lambda strategy, value: chief_epoch)
        return trainer.prepare_model_dir(str(model_dir), {}, None, strategy, None)

    assert as_worker(3) == state
    with pytest.raises(run_dir.RunDirError, match="chief resumes after 2 finished epochs, but "
                       "this worker finds 3 there. --model_dir must be on a file system"):
        as_worker(2)
    with pytest.raises(run_dir.RunDirError, match="the chief refused --model_dir="):
        as_worker(-1)


LAUNCHER = [sys.executable, str(REPO / "scripts" / "local_workers.py")]
# A worker that prints its TF_CONFIG, then: worker 1 exits with status 3,
# worker 0 sleeps for a minute (unless the launcher stops it).
FAILING_WORKER = (
    "import json, os, sys, time; config = os.environ['TF_CONFIG']; print(config, flush=True); "
    "index = json.loads(config)['task']['index']; sys.exit(3) if index else time.sleep(60)"
)


def test_launcher_gives_each_worker_its_tf_config_and_stops_all_on_a_failure():
    start = time.time()
    job = subprocess.run([*LAUNCHER, "--workers=2", "--", sys.executable, "-c", FAILING_WORKER],
                         capture_output=True, text=True, timeout=60)
    assert job.returncode == 3 and time.time() - start < 30
    configs = {}
    for line in job.stdout.splitlines():
        prefix, _, config = line.partition("] ")
        configs[prefix] = json.loads(config)
    assert [configs[f"[worker {i}"]["task"] for i in (0, 1)] == [
        {"type": "worker", "index": 0}, {"type": "worker", "index": 1}]
    cluster = configs["[worker 0"]["cluster"]
    assert cluster == configs["[worker 1"]["cluster"] and len(set(cluster["worker"])) == 2
    assert all(address.startswith("localhost:") for address in cluster["worker"])


@pytest.mark.parametrize("arguments, message", [
    (["--workers=0", "--", "true"], "error: --workers must be >= 1. Received: --workers=0"),
    (["--workers=2"], "error: no command given"),
    (["--", "no-such-command-here"], "error: cannot start 'no-such-command-here'"),
])
def test_launcher_refuses_bad_arguments(arguments, message):
    job = subprocess.run([*LAUNCHER, *arguments], capture_output=True, text=True, timeout=60)
    assert job.returncode == 1 and job.stderr.startswith(message) and not job.stdout


def _parse(argv):
    return shell.from_flags(ssm_config.TrainConfig, parsed_flags(train, *argv))


@pytest.fixture
def mnist_data_dir(mnist_dir):
    return str(mnist_dir.parent)


@pytest.mark.slow
def test_two_workers_train_resume_and_match_mirrored(tmp_path, mnist_data_dir, caplog):
    """Two worker processes on localhost train 1 epoch, resume to 2, and end
    with the weights they reach straight through, and, to float32 rounding,
    with those of one process training 2 epochs under `mirrored` on two CPUs."""
    model_dir, out_dir = tmp_path / "workers", tmp_path / "out"
    out_dir.mkdir()
    job = subprocess.Popen(
        [*LAUNCHER, "--workers=2", "--", sys.executable, str(REPO / "tests" / "multi_worker_job.py"),
         str(out_dir), *FLAGFILE_RUN, f"--data_dir={mnist_data_dir}", f"--model_dir={model_dir}",
         "--strategy=multi_worker_mirrored"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    # Meanwhile, in this process: two replicas, no interruption.
    config = _parse([*FLAGFILE_RUN, f"--data_dir={mnist_data_dir}",
                     f"--model_dir={tmp_path / 'mirrored'}", "--strategy=mirrored"])
    trained = ModelRecorder()
    try:
        mirrored = trainer.run(config, callbacks=[trained])
        output = job.communicate(timeout=300)[0]
    finally:
        if job.poll() is None:
            job.terminate()  # the launcher stops its workers
    assert any(record.levelname == "WARNING" and record.getMessage().startswith(
        "--steps_per_execution=32 runs as 1") for record in caplog.records)

    assert job.returncode == 0, output[-3000:]
    for index in (0, 1):  # each worker notes the speed settings it cannot use
        assert f"[worker {index}] note: --steps_per_execution=32 runs as 1: with 2 replicas of " \
               "MultiWorkerMirroredStrategy" in output
        assert f"[worker {index}] note: --jit_compile runs as --nojit_compile" in output

    workers = [np.load(out_dir / f"worker{index}.npz") for index in (0, 1)]
    for worker in workers:  # reduce over both workers: the mean of 0 and 1
        assert worker["pair_scalar"] == 0.5 and worker["scalar"] == 0.5
        assert worker["pair_vector"].tolist() == [0.5, 1.0]
    names = [f"weight{i}" for i in range(sum(key.startswith("weight") for key in workers[0].files))]
    for name in names:
        np.testing.assert_array_equal(workers[0][name], workers[1][name])

    # Only the chief (worker 0) wrote the run folder.
    files = sorted(str(path.relative_to(model_dir)) for path in model_dir.rglob("*")
                   if path.is_file())
    assert [name for name in files if "tfevents" not in name] == [
        "checkpoint/model-2.keras", "checkpoint/state.json", "flags.json", "flags.txt",
        "history.jsonl", "model.keras", "results.json", "results.txt"]
    event_pids = {name.split(".")[-3] for name in files if "tfevents" in name}
    assert event_pids == {str(workers[0]["pid"])}
    results = json.loads((model_dir / "results.json").read_text())
    history = [json.loads(line) for line in (model_dir / "history.jsonl").read_text().splitlines()]
    assert results["epochs"] == 2 and [entry["epoch"] for entry in history] == [1, 2]

    # Killed and resumed, the job ends as the same job run straight through: bits.
    for name in names:
        np.testing.assert_array_equal(workers[0][name], workers[0][name.replace("weight",
                                                                                "straight")])
    # Two processes of one replica each against one process of two: the same
    # arithmetic in another summation order (TensorFlow promises none; it
    # differs between processors), a few float32 ulps a step. The scores are
    # about 0.04-0.12 (an ulp: 4e-9 to 7.5e-9), seen 1.5e-8 apart on AMD Zen 3;
    # one SGD step moves them by 1e-4 to 1.6e-3, so 1e-6 is far above rounding
    # and far below a lost or doubled step, a wrong shard or an unsynchronised update.
    for name, weight in zip(names, trained.models[0].get_weights()):
        np.testing.assert_allclose(workers[0][name], weight, rtol=0, atol=1e-6, err_msg=name)
    # A score within rounding of its threshold may flip one mask entry, and
    # with it one borderline test image.
    test_images = results["examples"]["test"]
    assert abs(results["test_accuracy"] - mirrored["test_accuracy"]) <= 1 / test_images
