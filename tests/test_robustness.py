"""Inputs a careless or hostile user gives: damaged run files, mismatched
models, flags a run would ignore, unusable files and clusters. Each is
either handled right or refused with one line that says what to do."""

import json
import os
import socket
import subprocess
import sys

import keras
import pytest
from support import (
    REPO,
    assert_one_error_line,
    command_status,
    export_cli,
    parsed_flags,
    tiny_config,
    tiny_splits,
)
from test_experiments import _fake_run, _no_training

from ssm_keras.cli import initial_logits, plots, reproduce, shell, study, train
from ssm_keras.experiments import launch, reproduction
from ssm_keras.training import config as ssm_config
from ssm_keras.training import distribute, run_dir, trainer
from ssm_keras.transforms import baking


@pytest.mark.slow
def test_mask_from_must_hold_a_trained_mask_of_the_named_model(tmp_path):
    fcn_splits, conv_splits = tiny_splits(), tiny_splits(shape=(8, 8, 3))
    conv2 = tmp_path / "conv2" / "run"
    trainer.run(tiny_config(tmp_path / "conv2", arch="conv2", epochs=1), splits=conv_splits)
    trainer.run(tiny_config(tmp_path / "weights", regime="weights", epochs=1), splits=fcn_splits)
    trainer.run(tiny_config(tmp_path / "mask", epochs=1), splits=fcn_splits)
    mask_run = tmp_path / "mask" / "run"
    baked = tmp_path / "baked.keras"
    baking.bake(keras.saving.load_model(mask_run / "model.keras")).save(baked)

    def tune(mask_from, splits=fcn_splits, **overrides):
        return trainer.run(tiny_config(tmp_path / "tuned", regime="mask_then_weights", epochs=1,
                                        mask_from=str(mask_from), **overrides), splits=splits)

    with pytest.raises(run_dir.RunDirError, match="is a conv2 model; pass --arch=conv2 to train "
                                                  "it. Received: --arch=fcn"):
        tune(conv2, splits=conv_splits)
    for no_mask in (tmp_path / "weights" / "run", baked):
        with pytest.raises(run_dir.RunDirError, match="holds no trained mask"):
            tune(no_mask)
    with pytest.raises(run_dir.RunDirError, match="has signed masks; pass --mask=signed"):
        tune(mask_run, mask="binary")
    with pytest.raises(run_dir.RunDirError, match="is a fcn model of width 1; pass --width=1 to "
                                                  "train it. Received: --width=2"):
        tune(mask_run, width=2)
    with pytest.raises(run_dir.RunDirError, match="tells 3 classes apart, and --dataset=mnist "
                                                  "has 4; name the data set it was trained on"):
        tune(mask_run, splits=tiny_splits(classes=4))
    with pytest.raises(run_dir.RunDirError, match="computes in float32; pass --mixed_precision="
                       "float32 to train it. Received: --mixed_precision=mixed_bfloat16"):
        tune(mask_run, mixed_precision="mixed_bfloat16")
    with pytest.raises(run_dir.RunDirError, match="is a conv2 model of width 1; pass --width=1"):
        tune(conv2, splits=conv_splits, arch="conv2", width=3)
    assert not (tmp_path / "tuned").exists()
    for inside in (mask_run, mask_run / "model.keras"):  # --overwrite would delete its mask
        with pytest.raises(ssm_config.ConfigError,
                           match=f"--mask_from={inside} lies in the run folder --model_dir="
                                 f"{mask_run}: the run would replace the mask it starts"):
            trainer.run(tiny_config(tmp_path / "mask", regime="mask_then_weights", epochs=1,
                                    mask_from=str(inside), overwrite=True), splits=fcn_splits)
    assert (mask_run / "model.keras").is_file()
    results = tune(conv2, splits=conv_splits, arch="conv2")
    saved = json.loads((tmp_path / "tuned" / "run" / "results.json").read_text())
    assert results["arch"] == saved["arch"] == "conv2" and saved["mask"] == "signed"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _start_worker(folder, mnist_dir, ports):
    """Starts worker 0 of a cluster on localhost `ports` as a command in `folder`."""
    tf_config = json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                            "task": {"type": "worker", "index": 0}})
    folder.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "ssm_keras.train", "--arch=fcn", "--dataset=mnist",
         f"--data_dir={mnist_dir.parent}", "--max_examples=64", "--epochs=1",
         "--strategy=multi_worker_mirrored", "--worker_timeout=2", "--model_dir=run"],
        cwd=folder, env={**os.environ, "TF_CONFIG": tf_config, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_a_worker_that_cannot_start_or_whose_peers_never_start_is_one_error_line(
        tmp_path, mnist_dir):
    # Two workers in their own processes at once (each takes seconds to start):
    # one whose address is taken, one whose peer never starts.
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        alone = [_free_port(), _free_port()]
        jobs = {"taken": _start_worker(tmp_path / "taken", mnist_dir, [port, _free_port()]),
                "alone": _start_worker(tmp_path / "alone", mnist_dir, alone)}
        try:
            stderr = {name: job.communicate(timeout=300)[1] for name, job in jobs.items()}
        finally:
            for job in jobs.values():
                job.kill()
    lines = [line for line in stderr["taken"].splitlines() if line.startswith("error:")]
    assert lines == [f"error: cannot start this worker of TF_CONFIG (Could not start gRPC "
                     f"server); is localhost:{port} free and this machine's?"], stderr["taken"][-3000:]
    assert jobs["taken"].returncode == 1 and "Traceback" not in stderr["taken"]
    lines = [line for line in stderr["alone"].splitlines() if line.startswith(("note:", "error:"))]
    assert lines == [
        "note: waiting up to 2 s (--worker_timeout) for the other workers of TF_CONFIG: "
        f"worker 1 (localhost:{alone[1]})",
        "error: not every worker of TF_CONFIG started within --worker_timeout=2 s (waited for "
        f"worker 1 (localhost:{alone[1]})). Start each with the same command and its own "
        "TF_CONFIG task (scripts/local_workers.py does), or raise --worker_timeout.",
    ], stderr["alone"][-3000:]
    assert jobs["alone"].returncode == 1 and "Traceback" not in stderr["alone"]
    assert not (tmp_path / "alone" / "run").exists()


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not JSON"),
    ('[1, 2]', "TF_CONFIG must be a JSON object"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "task ('worker', index 3) is not in its cluster (worker: 1)"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "ps", "index": 0}}',
     "may only list chief and worker addresses"),
    ('{"cluster": {"worker": ["a:1", "no port"]}, "task": {"type": "worker", "index": 0}}',
     "worker address 'no port' is not host:port"),
    ('{"cluster": {"worker": ["a:1", "b:99999"]}, "task": {"type": "worker", "index": 0}}',
     "worker address 'b:99999' is not host:port"),
    ('{"cluster": {"chief": ["a:1", "a:2"]}, "task": {"type": "chief", "index": 1}}',
     "TF_CONFIG's cluster names 2 chiefs; a cluster has at most one (the others are workers)"),
])
def test_malformed_tf_config_is_one_line(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(distribute.DistributeError, match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        distribute.join_workers(timeout=1)


@pytest.mark.slow
def test_runs_read_no_tf_config_unless_multi_worker_and_expand_home(tmp_path, monkeypatch):
    # Not even a malformed TF_CONFIG, nor one that makes this process worker 1;
    # `~` in the file and folder settings is the home folder, as in a shell.
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribute.DistributeError):
        distribute.is_chief()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    results = trainer.run(tiny_config(tmp_path, epochs=1, model_dir="~/runs/x",
                                       save_init_file="~/init.npz"), splits=tiny_splits())
    assert results["epochs"] == 1
    assert (tmp_path / "home" / "runs" / "x" / "results.json").is_file()
    assert (tmp_path / "home" / "init.npz").is_file()
    assert results["model_dir"] == str(tmp_path / "home" / "runs" / "x")
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(optimizer="adam", momentum=0.5),
     "--momentum is only used with --optimizer=sgd; --optimizer=adam ignores it. "
     "Received: --momentum=0.5"),
    (dict(optimizer="adam", nesterov=False), "--nesterov is only used with --optimizer=sgd"),
    (dict(lr_schedule="constant", lr_decay_rate=0.5),
     "--lr_decay_rate is only used with --lr_schedule=exponential; --lr_schedule=constant"),
    (dict(lr_schedule="cosine", lr_decay_epochs=3.0), "--lr_decay_epochs is only used with"),
    (dict(plateau_patience=3), "--plateau_patience is only used with --lr_schedule=plateau"),
    (dict(weight_init="glorot_uniform", init_factor=6.0),
     "--init_factor is only used with --weight_init=elus; --weight_init=glorot_uniform"),
    (dict(mask="signed", bernoulli_eval="sample"),
     "--bernoulli_eval is only used with --mask=bernoulli; --mask=signed ignores it"),
    (dict(tpu="foo"), "--tpu is only used with --strategy=tpu; --strategy=default"),
    (dict(worker_timeout=5.0), "--worker_timeout is only used with --strategy=multi_worker"),
    (dict(worker_timeout=-1.0), "--worker_timeout must be >= 0"),
    (dict(seed=2**64), r"--seed must be in \[0, 2\*\*63\)"),
    (dict(momentum=1.5), r"--momentum must be in \[0, 1\]. Received: --momentum=1.5"),
    (dict(score_init="zeros"), r"--score_init=zeros hides every weight of a signed mask"),
    (dict(mask="binary", score_init="zeros"), "--score_init=zeros hides every weight of a binary"),
    (dict(lr_schedule="plateau", plateau_patience=-1),
     "--plateau_patience must be >= 0. Received: --plateau_patience=-1"),
])
def test_flags_the_run_would_ignore_are_refused(tmp_path, overrides, message):
    with pytest.raises(ssm_config.ConfigError, match=message.replace("(", r"\(").replace(
            ")", r"\)") if "\\" not in message else message):
        tiny_config(tmp_path, **overrides).validate()


def test_flags_that_are_used_pass(tmp_path):
    for overrides in (dict(optimizer="sgd", momentum=0.5), dict(lr_decay_rate=0.5),
                      dict(lr_schedule="plateau", plateau_patience=3),
                      dict(weight_init="elus", init_factor=6.0),
                      dict(mask="bernoulli", bernoulli_eval="sample"),
                      dict(strategy="tpu", tpu="local"),
                      dict(strategy="multi_worker_mirrored", worker_timeout=5.0)):
        tiny_config(tmp_path, **overrides).validate()


def test_files_that_are_not_what_they_should_be_are_one_error_line(tmp_path, capsys):
    binary = tmp_path / "run.flags"
    binary.write_bytes(b"\x00\xff\xfe\x80binary")
    assert command_status(train, f"--flagfile={binary}") == 1
    assert_one_error_line(capsys.readouterr(), "a flagfile is not UTF-8 text")
    (tmp_path / "a file").write_text("x")
    assert export_cli(f"--model_dir={tmp_path / 'a file'}", f"--out_dir={tmp_path / 'out'}") == 1
    assert_one_error_line(capsys.readouterr(), "a file is a file, not a training run's folder")


@pytest.mark.slow
def test_only_runs_that_finished_count_as_finished(tmp_path):
    splits = tiny_splits()
    diverged = tmp_path / "diverged"
    with pytest.raises(Exception, match="diverged"):
        trainer.run(tiny_config(diverged, regime="weights", learning_rate=1e6), splits=splits)
    trainer.run(tiny_config(tmp_path / "done", epochs=1), splits=splits)
    truncated = tmp_path / "truncated" / "run"
    truncated.mkdir(parents=True)
    (truncated / "results.json").write_text('{"status": "fini')
    calls = []

    def runner(shell):
        calls.append(shell)
        return 1

    for folder, expected in ((diverged / "run", "failed"), (truncated, "failed"),
                             (tmp_path / "done" / "run", "finished")):
        assert launch.train_if_missing(["train"], str(folder), runner) == expected
    assert len(calls) == 2  # the diverged and the truncated runs are not skipped


def test_plots_of_hand_edited_run_files_are_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    _fake_run(run, 0.97, 3.0)
    results = json.loads((run / "results.json").read_text())
    for name, text, message in (
        ("results.json", json.dumps({**results, "layers": [{"name": "dense_1"}]}),
         f"the results.json or history.jsonl of {run}"),
        ("results.json", json.dumps({**results, "layers": [[1, 2]]}),
         f"the results.json or history.jsonl of {run}"),
        ("results.json", json.dumps({**results, "test_accuracy": "high"}),
         f"{run / 'results.json'} is damaged: test_accuracy is 'high'"),
        ("history.jsonl", "[1, 2]\n", f"the results.json or history.jsonl of {run}"),
    ):
        good = (run / name).read_text()
        (run / name).write_text(text)
        assert command_status(plots, f"--model_dir={run}") == 1
        assert_one_error_line(capsys.readouterr(), message)
        (run / name).write_text(good)


@pytest.mark.slow
def test_experiments_skip_diverged_and_damaged_runs_and_check_their_folders(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(2):
        _fake_run(runs / "fcn_mnist_signed" / f"seed{seed}", 0.97, 3.0)
    diverged = runs / "fcn_mnist_signed" / "seed2"
    diverged.mkdir()
    (diverged / "results.json").write_text('{"status": "diverged", "message": "nan", "epoch": 1}')
    truncated = runs / "fcn_mnist_baseline" / "seed0"
    truncated.mkdir(parents=True)
    (truncated / "results.json").write_text('{"status": "fini')
    with pytest.raises(reproduction.ReproduceError, match="the table leaves out runs that did "
                       f"not finish: {diverged} .*; {truncated} "):
        reproduce.run_command(parsed_flags(
            reproduce, "--experiments=fcn_mnist_signed,fcn_mnist_baseline", "--seeds=0,1,2",
            f"--out_dir={runs}", "--aggregate_only"), _no_training)
    table = json.loads((runs / "table.json").read_text())["experiments"]
    assert table["fcn_mnist_signed"]["seeds"] == [0, 1]
    capsys.readouterr()
    (tmp_path / "a file").write_text("x")
    for module, argv, message in (
        (reproduce, [f"--out_dir={tmp_path / 'a file'}"], "is a file; name a folder"),
        (study, [f"--out_dir={tmp_path / 'a file'}"], "is a file; name a folder"),
        (initial_logits, ["--init_factors=6,-3"], "--init_factors must be > 0"),
        (initial_logits, [f"--out={tmp_path / 'a file' / 'x.json'}"], "is a file, so its folder "
                                                                       "cannot be made"),
    ):
        runner = {"runner": _no_training} if module is not initial_logits else {}
        assert command_status(module, *argv, **runner) == 1
        assert_one_error_line(capsys.readouterr(), message)


def test_another_keras_backend_is_one_error_line(tmp_path):
    job = subprocess.run([sys.executable, "-m", "ssm_keras.train", "--arch=fcn"], cwd=tmp_path,
                         env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 1
    assert job.stderr == ("error: ssm_keras needs the TensorFlow backend of Keras 3, but Keras "
                          "uses 'jax' (KERAS_BACKEND, or ~/.keras/keras.json). Set "
                          "KERAS_BACKEND=tensorflow.\n")


class _PeerLost(keras.callbacks.Callback):
    """Raises what TensorFlow raises in a worker whose peer is gone."""

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by: failed to "
                                         "connect to all addresses\nmore")


@pytest.mark.slow
def test_a_worker_lost_during_training_is_one_error_line(tmp_path, monkeypatch, capsys):
    """TensorFlow aborts a multi-worker job's collectives when a peer is gone
    (measured with two workers, one killed with SIGKILL in epoch 3); here the
    abort is raised in this process' one-worker job."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.get_strategy("multi_worker_mirrored")
    code = shell.run(lambda: trainer.run(tiny_config(tmp_path), splits=tiny_splits(),
                                            strategy=strategy, callbacks=[_PeerLost()]))
    assert code == 1
    assert_one_error_line(capsys.readouterr(), "a worker of the job stopped or cannot be reached "
                          "(Collective ops is aborted by: failed to connect to all addresses). "
                          "Start all workers again with the same command")


def test_ctrl_c_is_one_error_line_saying_what_continues(capsys):
    def stopped_by_ctrl_c():
        raise KeyboardInterrupt

    assert shell.run(stopped_by_ctrl_c) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    assert shell.run(stopped_by_ctrl_c, on_interrupt="interrupted; the same command "
                     "resumes the run from its last finished epoch") == 130
    assert capsys.readouterr().err == ("error: interrupted; the same command resumes the run "
                                       "from its last finished epoch\n")
