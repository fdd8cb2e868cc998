"""The scripts: benchmark, reproduction table, supermask-as-init study."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from ssm_keras import command, export, models, plots, train
from ssm_keras import config as ssm_config

from conftest import REPO, TFLITE_ACCURACY_TOLERANCE, shared_data_dir


def _script(name):
    """Imports `scripts/<name>.py` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(model_dir, accuracy, remaining_percent, epochs=3, regime="mask", flags=None):
    """A finished run directory: `results.json` and `history.jsonl`."""
    os.makedirs(model_dir, exist_ok=True)
    kept, inverted = remaining_percent / 200, remaining_percent / 200
    layers = [{"name": f"dense_{i}", "total": total, "kept_fraction": kept,
               "inverted_fraction": inverted, "hidden_fraction": 1 - kept - inverted}
              for i, total in enumerate((235200, 30000, 1000), 1)]
    results = {"status": "finished", "arch": "fcn", "dataset": "mnist", "regime": regime,
               "mask": "signed", "test_accuracy": accuracy, "epochs": epochs,
               "remaining_percent": remaining_percent, "best_validation_accuracy": accuracy,
               "remaining_weights": round(2662 * remaining_percent), "layers": layers,
               "flags": flags or {}}
    with open(os.path.join(model_dir, "results.json"), "w") as file:
        json.dump(results, file)
    with open(os.path.join(model_dir, "history.jsonl"), "w") as file:
        for epoch in range(1, epochs + 1):
            file.write(json.dumps({"epoch": epoch, "accuracy": accuracy, "loss": 0.1,
                                   "val_accuracy": accuracy * epoch / epochs, "val_loss": 0.2,
                                   "remaining_percent": remaining_percent,
                                   "mask_flips": 10 * epoch, "learning_rate": 0.05}) + "\n")


def _flag(command, name):
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}="))


# Benchmark.
@pytest.mark.slow
def test_benchmark_quick_fcn(tmp_path, capsys):
    benchmark = _script("benchmark")
    out = tmp_path / "bench.json"
    benchmark.main(["--archs=fcn", "--quick", f"--out={out}"])
    report = json.loads(out.read_text())
    (record,) = report["results"]
    train = record["training"]
    masked, plain = train["masked"]["images_per_s"], train["plain"]["images_per_s"]
    assert masked > 0 and plain > 0
    assert train["step_time_ratio"] == pytest.approx(plain / masked, rel=1e-12)
    assert len(train["masked"]["window_seconds"]) == len(train["plain"]["window_seconds"]) == 2
    assert train["window_steps"] % train["steps_per_execution"] == 0
    # As in training, Keras decides on XLA: off on CPUs.
    assert train["jit_compile"] == bool(tf.config.list_physical_devices("GPU"))
    assert record["masked_weights"] == 266200
    # The first layer (784 x 300) computes no input gradient.
    assert record["training_gflop_per_image"] == pytest.approx((3 * 266200 - 235200) * 2 / 1e9)
    assert record["inference"]["baked_images_per_s"] > 0
    assert record["inference"]["masked_images_per_s"] > 0
    machine = report["machine"]
    assert machine["cores"] == os.cpu_count() and machine["tensorflow"] == tf.__version__
    # The ceiling comes from the float32 matmul measured in this run.
    assert record["precision"] == "float32" and "speedup_over_float32" not in record
    assert record["peak_gflops"] == machine["matmul_gflops"]["float32"] > 0
    assert record["peak_source"] == "measured: float32 256^3 matmul"
    assert record["ceiling_images_per_s"] == pytest.approx(
        record["peak_gflops"] / record["training_gflop_per_image"])
    # The mask's own arithmetic is a part of the step.
    assert 0 <= record["mask_seconds_per_step"] < 128 / masked
    assert record["mask_fraction_of_plain_step"] == pytest.approx(
        record["mask_seconds_per_step"] * plain / 128)
    assert machine["cpu"] and set(machine["cpu_flags"]) <= set(benchmark.CPU_FEATURES)
    assert "TF_ENABLE_ONEDNN_OPTS" in machine["environment"]
    table = capsys.readouterr().out
    assert "| fcn | float32 | 128 |" in table and f"{train['step_time_ratio']:.3f}" in table
    assert (tmp_path / "bench.md").read_text().strip() in table
    # A second run refuses to replace the results, and names them.
    with pytest.raises(SystemExit):
        benchmark.main(["--archs=fcn", "--quick", f"--out={out}"])
    assert str(out) in capsys.readouterr().err
    assert json.loads(out.read_text()) == report


@pytest.mark.slow
def test_benchmark_inference_measures_every_format(trained_fcn, tmp_path, capsys):
    run, results, _, labels = trained_fcn
    script = _script("benchmark_inference")
    out = tmp_path / "inference.json"
    argv = [f"--runs={run}", f"--data_dir={shared_data_dir()}", "--quick", f"--out={out}",
            f"--work_dir={tmp_path / 'exports'}"]
    report = script.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {row["format"]: row for row in report["results"]}
    assert sorted(rows) == sorted([*script.RUNTIME_FORMATS, "compact"])
    recorded = round(results["test_accuracy"] * len(labels))
    (model,) = report["models"]
    assert model["dead_units_removed"] > 0 and model["regime"] == "mask"
    for name, row in rows.items():
        path = tmp_path / "exports" / run.name / row["file"]
        assert row["bytes"] == export.file_size(path) > 0
        if name == "compact":
            continue
        correct = round(row["test_accuracy"] * len(labels))
        assert abs(correct - recorded) <= TFLITE_ACCURACY_TOLERANCE.get(name, 0) * len(labels)
        assert row["batch_1_latency_us"] > 0 and row["batch_128_images_per_s"] > 0
    assert rows["tflite_sparse"]["bytes"] < rows["tflite"]["bytes"]
    table = (tmp_path / "inference.md").read_text()
    assert table.count("| fcn | signed supermask") == 6
    with pytest.raises(SystemExit):
        script.main(argv)  # no --overwrite
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err


def test_benchmark_peaks_and_speedups():
    benchmark = _script("benchmark")
    args = benchmark.parse_args(["--precisions=float32,mixed_bfloat16", "--matmul_size=64",
                                 "--out=/tmp/unused.json"])
    assert args.precisions == ["float32", "mixed_bfloat16"]
    peaks = {"float32": 100.0, "bfloat16": 300.0}
    assert benchmark.peak_for("mixed_bfloat16", peaks, args) == (
        300.0, "measured: bfloat16 64^3 matmul")
    args.peak_gflops = 50.0
    assert benchmark.peak_for("mixed_bfloat16", peaks, args) == (50.0, "--peak_gflops")

    def record(arch, precision, masked, plain):
        return {"arch": arch, "precision": precision,
                "training": {"masked": {"images_per_s": masked},
                             "plain": {"images_per_s": plain}}}

    records = [record("conv2", "float32", 100, 120), record("conv2", "mixed_bfloat16", 150, 150),
               record("fcn", "mixed_float16", 10, 10)]
    benchmark.add_speedups(records)
    assert records[1]["speedup_over_float32"] == {"masked": 1.5, "plain": 1.25}
    assert "speedup_over_float32" not in records[0] and "speedup_over_float32" not in records[2]


def test_benchmark_step_choices_and_flops():
    benchmark = _script("benchmark")
    assert benchmark.choose_steps_per_execution(0.004, 0.25) == 32  # 64 * 4 ms > 0.25 s
    assert benchmark.choose_steps_per_execution(1e-5, 0.25) == 64  # the cap
    assert benchmark.choose_steps_per_execution(0.9, 0.25) == 1
    assert benchmark.window_steps_for(0.004, 32, 5.0) == 32 * 39  # 5 / 0.128 = 39.06
    assert benchmark.window_steps_for(2.0, 1, 5.0) == 2
    assert benchmark.median_images_per_second([1.0, 2.0, 4.0], 10, 128) == 640
    conv4 = models.build_architecture("conv4", masked=False)
    multiply_adds = (32 * 32 * (27 * 64 + 576 * 64) + 16 * 16 * (576 * 128 + 1152 * 128)
                     + 8192 * 256 + 256 * 256 + 256 * 10)
    gflop = benchmark.training_gflop_per_image(conv4)
    assert gflop == pytest.approx((3 * multiply_adds - 32 * 32 * 27 * 64) * 2 / 1e9)
    assert gflop == pytest.approx(0.59, abs=0.005)  # 0.197 forward, 3x for training


@pytest.mark.parametrize("argument, named", [
    ("--archs=conv5", "conv5"), ("--windows=0", "--windows=0"), ("--batch_size=-1", "--batch_size"),
    ("--peak_gflops=0", "--peak_gflops"), ("--out=bench.md", "bench.md"),
    ("--precisions=float64", "float64"), ("--precisions=,", "--precisions"),
    ("--out=/no/such/folder/b.json", "/no/such/folder"), ("--peak_gflops=nan", "--peak_gflops=nan"),
])
@pytest.mark.slow
def test_benchmark_bad_arguments_name_the_value(argument, named, capsys):
    benchmark = _script("benchmark")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args([argument])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


# Reproduction.
@pytest.mark.slow
def test_reproduce_skips_finished_runs_and_aggregates(tmp_path):
    reproduce = _script("reproduce")
    runs = tmp_path / "runs"
    accuracies, remaining = (0.97, 0.975, 0.98), (3.0, 3.5, 4.0)
    for seed in range(3):
        _fake_run(runs / "fcn_mnist_signed" / f"seed{seed}", accuracies[seed], remaining[seed])
    for seed in range(2):
        _fake_run(runs / "fcn_mnist_baseline" / f"seed{seed}", 0.97 + 0.01 * seed, 100.0,
                  regime="weights")
    commands = []

    def runner(command):
        commands.append(command)
        _fake_run(_flag(command, "model_dir"), 0.99, 100.0, epochs=5, regime="weights")
        return 0

    status = reproduce.main(["--experiments=fcn_mnist_signed,fcn_mnist_baseline",
                             "--seeds=0,1,2", f"--runs_dir={runs}", "--epochs=5"], runner)
    assert status == 0
    (command,) = commands  # only the missing run
    assert _flag(command, "flagfile") == str(REPO / "flags" / "fcn_mnist_baseline.flags")
    assert _flag(command, "seed") == "2"
    assert _flag(command, "model_dir") == str(runs / "fcn_mnist_baseline" / "seed2")
    assert command[-1] == "--epochs=5"  # after the flagfile: it overrides it
    table = json.loads((runs / "table.json").read_text())["experiments"]
    signed = table["fcn_mnist_signed"]
    assert signed["test_accuracy"]["mean"] == pytest.approx(97.5)
    assert signed["test_accuracy"]["std"] == pytest.approx(0.5)
    assert signed["remaining_percent"]["mean"] == pytest.approx(3.5)
    assert signed["remaining_percent"]["std"] == pytest.approx(np.std(remaining, ddof=1))
    baseline = table["fcn_mnist_baseline"]
    assert baseline["test_accuracy"]["mean"] == pytest.approx(np.mean([97, 98, 99]))
    assert baseline["epochs"] == [3, 5]
    text = (runs / "table.md").read_text()
    assert "| FCN | MNIST | 97.42 | 98.00 ± 1.00 | 3 × 3/5 of 50 | 97.48 | 97.50 ± 0.50 " in text
    assert "| 3.77% (10.1K) | 3.50 ± 0.50% (9.3K ± 1.3K) | 3 × 3 of 100 |" in text
    assert baseline["flagfile_epochs"] == 50 and signed["flagfile_epochs"] == 100
    assert "--epochs=5" in text
    for name in ("accuracy_vs_remaining.png", "validation_accuracy.png",
                 "fcn_mnist_signed/mask_composition.png",
                 "fcn_mnist_signed/seed1/training_curves.png"):
        assert (runs / name).stat().st_size > 10_000, name


@pytest.mark.slow
def test_reproduce_tuned_recipe_has_its_own_row(tmp_path):
    reproduce = _script("reproduce")
    runs = tmp_path / "runs"
    for seed, accuracy in enumerate((0.977, 0.978, 0.979)):
        _fake_run(runs / "fcn_mnist_signed_tuned" / f"seed{seed}", accuracy, 2.4)
    _fake_run(runs / "fcn_mnist_signed" / "seed0", 0.975, 2.38)
    assert reproduce.split_experiment("fcn_mnist_signed_tuned") == ("fcn_mnist", "signed_tuned")
    assert all((REPO / "flags" / f"{name}.flags").is_file() for name in reproduce.TUNED)
    assert reproduce.main(["--experiments=fcn_mnist_signed,fcn_mnist_signed_tuned",
                           "--seeds=0,1,2", f"--runs_dir={runs}", "--aggregate_only"]) == 0
    text = (runs / "table.md").read_text()
    assert "| FCN | MNIST | 97.42 | - | - | 97.48 | 97.50 | 3.77% (10.1K) | 2.38% (6.3K) |" in text
    assert ("| FCN, tuned recipe | MNIST | 97.42 | - | - | 97.48 | 97.80 ± 0.10 "
            "| 3.77% (10.1K) | 2.40 ± 0.00% (6.4K ± 0.0K) | 3 × 3") in text
    assert (runs / "fcn_mnist_signed_tuned" / "mask_composition.png").stat().st_size > 10_000


@pytest.mark.slow
def test_reproduce_names_flags_that_differ_from_the_flagfile(tmp_path):
    reproduce = _script("reproduce")
    _fake_run(tmp_path / "fcn_mnist_signed" / "seed0", 0.9, 3.0, epochs=100,
              flags={"arch": "fcn", "weight_decay": 0.00025, "seed": 0, "jit_compile": False})
    _fake_run(tmp_path / "fcn_mnist_signed" / "seed1", 0.9, 3.0, epochs=100,
              flags={"arch": "fcn", "weight_decay": 0.00025, "max_examples": 2000, "seed": 1})
    assert reproduce.main(["--experiments=fcn_mnist_signed", "--seeds=0,1",
                           f"--runs_dir={tmp_path}", "--aggregate_only"]) == 0
    record = json.loads((tmp_path / "table.json").read_text())["experiments"]["fcn_mnist_signed"]
    assert record["other_flags"] == ["--max_examples=2000"]  # seed and XLA are not the recipe
    assert "| 2 × 100; --max_examples=2000 |" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("arguments, named", [
    (["--seeds=a,b"], "--seeds=a,b"), (["--seed=3"], "--seed=3"), (["--epoch=5"], "--epoch=5"),
    (["--model_dir=x"], "--model_dir"), (["--aggregate_only", "--epochs=5"], "--epochs=5"),
    (["--epochs", "5"], "'5'"),
])
@pytest.mark.slow
def test_reproduce_bad_arguments_name_the_value(arguments, named, capsys):
    reproduce = _script("reproduce")
    with pytest.raises(SystemExit) as exit_info:
        reproduce.parse_args(arguments)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_reproduce_reports_failed_runs(tmp_path, capsys):
    reproduce = _script("reproduce")
    status = reproduce.main(["--experiments=conv4_cifar10_signed", "--seeds=0",
                             f"--runs_dir={tmp_path}"], lambda command: 1)
    assert status == 1
    assert "failed" in capsys.readouterr().err
    record = json.loads((tmp_path / "table.json").read_text())["experiments"]
    assert record["conv4_cifar10_signed"]["seeds"] == []


def test_reproduce_mean_std():
    reproduce = _script("reproduce")
    assert reproduce.mean_std([1.0, 2.0, 6.0]) == pytest.approx((3.0, np.std([1, 2, 6], ddof=1)))
    assert reproduce.mean_std([4.0]) == (4.0, None)
    assert reproduce.mean_std([]) == (None, None)


# Supermask as initialisation.
@pytest.mark.slow
def test_study_runs_every_regime_from_one_seed(tmp_path):
    study = _script("supermask_init_study")
    runs = tmp_path / "study"
    commands = []

    def runner(command):
        commands.append(command)
        run = os.path.basename(_flag(command, "model_dir"))
        epochs = 2 if run.startswith("mask") and run != "mask_then_weights" else 3
        remaining = {"weights": 100.0, "mask_bernoulli": 30.0}.get(run, 50.0)
        _fake_run(_flag(command, "model_dir"), 0.5, remaining, epochs=epochs,
                  regime=run, flags={"width": 1, "dataset": "mnist"})
        return 0

    argv = [f"--runs_dir={runs}", "--width=1", "--epochs=3", "--dataset=mnist"]
    assert study.main(argv, runner) == 0
    assert [os.path.basename(_flag(c, "flagfile")) for c in commands] == [
        "wrn28_cifar10_weights.flags", "wrn28_cifar10_mask.flags",
        "wrn28_cifar10_mask.flags", "wrn28_cifar10_mask_then_weights.flags"]
    for command_line in commands:  # each command's flags are a valid training run
        flag_values = flags.FlagValues()
        train.define_flags(flag_values)
        flag_values(["train", *command_line[3:]])
        command.from_flags(ssm_config.TrainConfig, flag_values).validate()
    assert [os.path.basename(_flag(c, "model_dir")) for c in commands] == list(study.RUNS)
    assert {_flag(c, "seed") for c in commands} == {"0"}
    assert all("--width=1" in c and "--epochs=3" in c and "--dataset=mnist" in c
               for c in commands)
    # The Bernoulli variant starts from the binary mask's scores; (3) from the binary mask.
    assert _flag(commands[2], "mask") == "bernoulli"
    assert _flag(commands[2], "score_init") == "glorot_uniform"
    # The binary mask trains with the flagfile's Adam, the Bernoulli mask with SGD at a large
    # learning rate (Zhou et al.).
    assert (_flag(commands[2], "optimizer"), _flag(commands[2], "learning_rate")) == (
        "sgd", str(study.BERNOULLI_LEARNING_RATE))
    assert "--optimizer=sgd" not in commands[1] and "--optimizer=adam" not in commands[1]
    assert "--mask=bernoulli" not in commands[1]
    assert _flag(commands[3], "mask_from") == str(runs / "mask")
    histories = {run: plots.load_run(str(runs / run))[1] for run in study.RUNS}
    curves = study.study_curves(histories)
    assert [curve["epochs"] for curve in curves] == [[1, 2, 3], [1, 2], [1, 2], [3, 4, 5]]
    assert (runs / "validation_accuracy.png").stat().st_size > 10_000
    assert (runs / "layer_utilisation.png").stat().st_size > 10_000
    summary = (runs / "study.md").read_text()
    assert "Wide ResNet-28-1 on mnist" in summary
    assert "| 1. weights only | 50.00% | 50.00% | 100.00% | 3 |" in summary
    assert "| 2b. mask only (Bernoulli) | 50.00% | 50.00% | 30.00% | 2 |" in summary
    assert "| 3. mask then weights (Adam, lr 1e-5) | 50.00% | 50.00% | 50.00% | 3 |" in summary
    record = json.loads((runs / "study.json").read_text())
    utilisation = {entry["label"]: entry for entry in record["layer_utilisation"]}
    assert set(utilisation) == {study.LABELS["mask"], study.LABELS["mask_bernoulli"]}
    assert utilisation["2b. mask only (Bernoulli)"]["totals"] == [235200, 30000, 1000]
    assert utilisation["2b. mask only (Bernoulli)"]["kept_percent"] == pytest.approx([30.0] * 3)
    assert study.main(argv, runner) == 0 and len(commands) == 4  # all finished


@pytest.mark.slow
def test_study_without_bernoulli_runs_three(tmp_path):
    study = _script("supermask_init_study")
    commands = []

    def runner(command):
        commands.append(command)
        _fake_run(_flag(command, "model_dir"), 0.5, 50.0)
        return 0

    assert study.main([f"--runs_dir={tmp_path}", "--nobernoulli"], runner) == 0
    assert [os.path.basename(_flag(c, "model_dir")) for c in commands] == [
        "weights", "mask", "mask_then_weights"]


def test_study_bernoulli_learning_rate_is_a_flag(tmp_path):
    study = _script("supermask_init_study")
    args, extra = study.parse_args([f"--runs_dir={tmp_path}", "--bernoulli_learning_rate=0.01"])
    assert _flag(study.regime_command(args, extra, "mask_bernoulli"), "learning_rate") == "0.01"
    assert "--learning_rate=0.01" not in study.regime_command(args, extra, "mask")


def test_reproduce_compress_shortens_each_flagfiles_schedule(tmp_path):
    reproduce = _script("reproduce")
    commands = []

    def runner(command):
        commands.append(command)
        return 1

    reproduce.main(["--experiments=conv4_cifar10_signed,resnet20_cifar10_signed", "--seeds=0",
                    f"--runs_dir={tmp_path}", "--compress=5", "--verbose=2"], runner)
    conv4, resnet20 = commands
    # Conv4: 100 epochs, decay every 10; ResNet-20: 110 epochs, plateau patience 15.
    assert conv4[-3:] == ["--epochs=20", "--lr_decay_epochs=2", "--verbose=2"]
    assert resnet20[-3:] == ["--epochs=22", "--plateau_patience=3", "--verbose=2"]
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--compress=5", "--epochs=3"])
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--compress=0"])


# Initial logits.
def test_initial_logit_statistics_match_numpy():
    initial_logits = _script("initial_logits")
    kernel = np.array([[1.0, -1.0, 0.0], [10.0, 0.0, -10.0]], np.float32)
    inputs = keras.Input((1, 1, 2))
    logits = keras.layers.Dense(3, use_bias=False)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(logits))
    model.layers[2].kernel.assign(kernel)
    images = np.array([[0, 0], [1, 0], [0, 1], [0, 2]], np.uint8).reshape(4, 1, 1, 2)
    labels = np.array([0, 1, 2, 0])
    expected_logits = images.reshape(4, 2).astype(np.float32) @ kernel
    # p_true: 1/3; e^1/(e^1+e^-1+1); e^-10/(e^10+1+e^-10) ~ 2e-9; e^20/(...) ~ 1.
    statistics = initial_logits.logit_statistics(model, images, labels, batch_size=3)
    assert statistics["logit_std"] == pytest.approx(expected_logits.std(), rel=1e-6)
    assert statistics["clipped_fraction"] == 0.25
