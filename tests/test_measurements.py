"""The measurement commands: ssm-benchmark (training and inference
throughput), benchmark_inference (exported files), check_applications and
initial_logits, each run in this process."""

import json
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from support import (
    REPO,
    TFLITE_ACCURACY_TOLERANCE,
    assert_one_error_line,
    command_status,
    parsed_flags,
    shared_data_dir,
)

from ssm_keras import models, pretrained, processor
from ssm_keras.cli import (
    benchmark,
    benchmark_inference,
    check_applications,
    initial_logits,
    shell,
)
from ssm_keras.cli import report as reporting
from ssm_keras.experiments import (
    arithmetic,
    config,
    inference_speed,
    reports,
    throughput,
)
from ssm_keras.experiments import initial_logits as logits_lib
from ssm_keras.exporting import exporter


@pytest.mark.slow
def test_benchmark_quick_fcn(tmp_path, capsys):
    out = tmp_path / "bench.json"
    benchmark.run_command(parsed_flags(benchmark, "--archs=fcn", "--quick", f"--out={out}"))
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
    # --quick replaced the window settings; the report records what ran.
    assert report["settings"]["archs"] == ["fcn"] and report["settings"]["quick"] is True
    assert report["settings"]["windows"] == config.BENCHMARK_QUICK["windows"]
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
    assert machine["cpu"] and set(machine["cpu_flags"]) <= set(processor.CPU_FEATURES)
    assert "TF_ENABLE_ONEDNN_OPTS" in machine["environment"]
    table = capsys.readouterr().out
    assert "| fcn | float32 | 128 |" in table and f"{train['step_time_ratio']:.3f}" in table
    assert (tmp_path / "bench.md").read_text().strip() in table
    # A second run refuses to replace the results, and names them.
    assert command_status(benchmark, "--archs=fcn", "--quick", f"--out={out}") == 1
    assert_one_error_line(capsys.readouterr(), str(out))
    assert json.loads(out.read_text()) == report


@pytest.mark.slow
def test_benchmark_inference_measures_every_format(trained_fcn, tmp_path, capsys):
    run, results, _, labels = trained_fcn
    out = tmp_path / "inference.json"
    entry = "fcn_mnist_signed_seed0"  # an FCN on MNIST, as the run
    argv = [f"--runs={run}", f"--pretrained={entry}", f"--data_dir={shared_data_dir()}",
            "--quick", f"--out={out}", f"--work_dir={tmp_path / 'exports'}"]
    report = benchmark_inference.run_command(parsed_flags(benchmark_inference, *argv))
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["settings"]["runs"] == [str(run)]
    assert report["settings"]["pretrained"] == [entry]
    recorded = {str(run): results["test_accuracy"],
                entry: pretrained.load(entry)[2]["test_accuracy"]}
    assert [model["run"] for model in report["models"]] == [entry, str(run)]
    for model in report["models"]:
        assert model["dead_units_removed"] > 0 and model["regime"] == "mask"
        rows = {row["format"]: row for row in report["results"] if row["run"] == model["run"]}
        assert sorted(rows) == sorted([*inference_speed.runtime_formats(), "compact"])
        for name, row in rows.items():
            path = tmp_path / "exports" / model["name"] / row["file"]
            assert row["bytes"] == exporter.file_size(path) > 0
            if name == "compact":
                continue
            correct = round(row["test_accuracy"] * len(labels))
            expected = round(recorded[model["run"]] * len(labels))
            assert abs(correct - expected) <= TFLITE_ACCURACY_TOLERANCE.get(name, 0) * len(labels)
            assert row["batch_1_latency_us"] > 0 and row["batch_128_images_per_s"] > 0
        assert rows["tflite_sparse"]["bytes"] < rows["tflite"]["bytes"]
    table = (tmp_path / "inference.md").read_text()
    assert table.count(f"| fcn | {entry}: signed supermask") == len(inference_speed.runtime_formats()) + 1  # and model.ssm
    assert table.count(f"| fcn | {run.name}: signed supermask") == len(inference_speed.runtime_formats()) + 1
    capsys.readouterr()
    assert command_status(benchmark_inference, *argv) == 1  # no --overwrite
    assert_one_error_line(capsys.readouterr(),
                          "inference.md exist; choose another --out or pass --overwrite")


def test_benchmark_peaks_and_speedups():
    settings = shell.from_flags(config.BenchmarkConfig, parsed_flags(
        benchmark, "--precisions=float32,mixed_bfloat16", "--matmul_size=64"))
    assert settings.precision_names() == ["float32", "mixed_bfloat16"]
    peaks = {"float32": 100.0, "bfloat16": 300.0}
    assert arithmetic.peak_for("mixed_bfloat16", peaks, settings.peak_gflops,
                               settings.matmul_size) == (300.0, "measured: bfloat16 64^3 matmul")
    assert arithmetic.peak_for("mixed_bfloat16", peaks, 50.0, 64) == (50.0, "--peak_gflops")

    def record(arch, precision, masked, plain):
        return {"arch": arch, "precision": precision,
                "training": {"masked": {"images_per_s": masked},
                             "plain": {"images_per_s": plain}}}

    records = [record("conv2", "float32", 100, 120), record("conv2", "mixed_bfloat16", 150, 150),
               record("fcn", "mixed_float16", 10, 10)]
    throughput.add_speedups(records)
    assert records[1]["speedup_over_float32"] == {"masked": 1.5, "plain": 1.25}
    assert "speedup_over_float32" not in records[0] and "speedup_over_float32" not in records[2]


def test_benchmark_step_choices_and_flops():
    assert throughput.choose_steps_per_execution(0.004, 0.25) == 32  # 64 * 4 ms > 0.25 s
    assert throughput.choose_steps_per_execution(1e-5, 0.25) == 64  # the cap
    assert throughput.choose_steps_per_execution(0.9, 0.25) == 1
    assert throughput.window_steps_for(0.004, 32, 5.0) == 32 * 39  # 5 / 0.128 = 39.06
    assert throughput.window_steps_for(2.0, 1, 5.0) == 2
    assert throughput.median_images_per_second([1.0, 2.0, 4.0], 10, 128) == 640
    conv4 = models.build_architecture("conv4", masked=False)
    multiply_adds = (32 * 32 * (27 * 64 + 576 * 64) + 16 * 16 * (576 * 128 + 1152 * 128)
                     + 8192 * 256 + 256 * 256 + 256 * 10)
    gflop = arithmetic.training_gflop_per_image(conv4)
    assert gflop == pytest.approx((3 * multiply_adds - 32 * 32 * 27 * 64) * 2 / 1e9)
    assert gflop == pytest.approx(0.59, abs=0.005)  # 0.197 forward, 3x for training


@pytest.mark.parametrize("argument, named", [
    ("--archs=conv5", "conv5"), ("--windows=0", "--windows=0"), ("--batch_size=-1", "--batch_size"),
    ("--peak_gflops=0", "--peak_gflops"), ("--out=bench.md", "bench.md"),
    ("--precisions=float64", "float64"), ("--precisions=,", "--precisions"),
    ("--out=/dev/null/b.json", "/dev/null is a file"), ("--peak_gflops=nan", "--peak_gflops=nan"),
    ("--archs=", "--archs is empty"), ("--window_seconds=nan", "--window_seconds=nan"),
    ("--execution_seconds=inf", "--execution_seconds=inf"),
    ("--archs=conv2,MobileNetV2 --width=2 --quick", "(MobileNetV2) have no width multiplier"),
    ("--archs=fcn,InceptionV3 --quick", "--archs: InceptionV3 cannot be benchmarked on cifar10 "
     "images of shape (32, 32, 3) (Input size must be at least 75x75"),
])
def test_benchmark_bad_arguments_name_the_value(argument, named, tmp_path, capsys):
    out = f"--out={tmp_path / 'b.json'}"  # the settings are refused before anything runs
    assert command_status(benchmark, *argument.split(), *([] if "--out" in argument else [out])
                          ) == 1
    assert_one_error_line(capsys.readouterr(), named)


def test_training_flop_counts_separable_and_3d_convolutions():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(16, 3, strides=2, padding="same")(inputs)  # 4 x 4 out
    x = keras.layers.Reshape((4, 4, 16, 1))(x)
    x = keras.layers.Conv3D(2, 3, padding="valid")(x)  # 2 x 2 x 14 out
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    separable = 2 * 16 * (3 * 3 * 3 + 3 * 16)  # depthwise 3x3x3x1, pointwise 1x1x3x16
    conv3d = 2 * (2 * 2 * 14) * (3 * 3 * 3 * 1 * 2)
    dense = 2 * (2 * 2 * 14 * 2) * 5
    assert arithmetic.training_gflop_per_image(model) == pytest.approx(
        (2 * separable + 3 * conv3d + 3 * dense) / 1e9)


def test_benchmark_refuses_an_application_it_cannot_mask(tmp_path, monkeypatch, capsys):
    def regularized_net(weights, input_shape, classes):  # a kernel regularizer
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, kernel_regularizer="l2")(inputs)
        return keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(x)))

    monkeypatch.setattr(keras.applications, "RegularizedNet", regularized_net, raising=False)
    assert command_status(benchmark, "--archs=fcn,RegularizedNet", "--quick",
                          f"--out={tmp_path / 'b.json'}") == 1
    assert_one_error_line(capsys.readouterr(), "--archs: RegularizedNet cannot be benchmarked on "
                          "cifar10 images of shape (32, 32, 3) (cannot supermask layer")
    assert not (tmp_path / "b.json").exists()


def test_quick_sets_only_the_flags_not_given(tmp_path, capsys):
    out = f"--out={tmp_path / 'b.json'}"
    settings = reporting.settings_from_flags(
        config.BenchmarkConfig, parsed_flags(benchmark, "--quick", "--windows=3", out),
        config.BENCHMARK_QUICK)
    assert settings.windows == 3
    assert settings.window_seconds == config.BENCHMARK_QUICK["window_seconds"]
    # A bad value given with --quick is refused, not replaced.
    assert command_status(benchmark, "--quick", "--window_seconds=-1", out) == 1
    assert_one_error_line(capsys.readouterr(), "--window_seconds=-1")
    assert command_status(benchmark_inference, "--quick", "--runs=x", "--windows=0", out) == 1
    assert_one_error_line(capsys.readouterr(), "--windows=0")


def test_report_out_that_is_a_folder_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "b.json").mkdir()
    (tmp_path / "c.md").mkdir()
    for out in ("b.json", "c.json"):
        with pytest.raises(reports.ReportError, match="is a folder; name a JSON file"):
            reports.check_out(str(tmp_path / out), overwrite=True)


def test_report_folder_is_made_and_a_file_in_its_way_is_one_error_after_the_table(tmp_path,
                                                                                capsys):
    out = tmp_path / "new" / "b.json"
    reports.check_out(str(out), overwrite=False)
    reporting.write(str(out), {"settings": {"quick": True}}, "| the table |\n")
    assert json.loads(out.read_text()) == {"settings": {"quick": True}}
    assert (tmp_path / "new" / "b.md").read_text() == "| the table |\n"
    capsys.readouterr()
    (tmp_path / "taken").write_text("x")
    out = tmp_path / "taken" / "b.json"
    with pytest.raises(reports.ReportError, match="taken is a file, so its folder cannot be made"):
        reports.check_out(str(out), overwrite=False)
    # A file put in the folder's way during the measurements: the table is printed first.
    with pytest.raises(reports.ReportError, match=f"cannot make the folder of {out} "):
        reporting.write(str(out), {"settings": {}}, "| the table |\n")
    assert capsys.readouterr().out == "| the table |\n\n"
    assert (tmp_path / "taken").read_text() == "x"


@pytest.mark.parametrize("module, names", [
    (benchmark, ("archs", "precisions", "out", "overwrite", "quick")),
    (benchmark_inference, ("runs", "pretrained", "tflite_threads", "out", "overwrite", "quick")),
])
def test_measurement_help_lists_the_settings_and_report_flags(module, names):
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    listed = {flag.name for flag in flag_values.get_key_flags_for_module(module.__name__)}
    assert set(names) <= listed


def test_benchmark_unknown_flag_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parsed_flags(benchmark, "--window=3")
    assert exit_info.value.code == 1
    assert_one_error_line(capsys.readouterr(), "window")


def test_benchmark_inference_table_names_each_model():
    models = [{"run": "fcn_mnist_signed_seed0", "name": "fcn_mnist_signed_seed0",
               "arch": "fcn", "regime": "mask",
               "mask": "signed", "recorded_test_accuracy": 0.975, "remaining_weights": 6345,
               "dead_units_removed": 244},
              {"run": "/runs/fcn_mnist_baseline/seed1", "name": "fcn_mnist_baseline/seed1",
               "arch": "fcn", "regime": "weights",
               "mask": None, "recorded_test_accuracy": 0.98, "remaining_weights": None,
               "dead_units_removed": 0}]
    rows = [{"run": model["run"], "format": "compact", "runtime": None, "file": "model.ssm",
             "bytes": 4940} for model in models]
    lines = inference_speed.format_table(models, rows).splitlines()[2:]
    assert lines == [
        "| fcn | fcn_mnist_signed_seed0: signed supermask, 6,345 weights remain, 244 dead "
        "units removed | 97.50% | model.ssm | - | 4,940 | - | - | - |",
        "| fcn | fcn_mnist_baseline/seed1: baseline (weights trained) | 98.00% | model.ssm "
        "| - | 4,940 "
        "| - | - | - |"]


def test_benchmark_inference_names_runs_by_the_path_parts_that_tell_them_apart():
    assert inference_speed.short_names([
        "fcn_mnist_signed_seed0", "/r/fcn_mnist_signed/seed0", "/r/fcn_mnist_baseline/seed0",
        "/r/fcn_mnist_baseline/seed1", "/q/fcn_mnist_baseline/seed1", "/r/fcn"]) == {
        "fcn_mnist_signed_seed0": "fcn_mnist_signed_seed0",
        "/r/fcn_mnist_signed/seed0": "fcn_mnist_signed/seed0",
        "/r/fcn_mnist_baseline/seed0": "fcn_mnist_baseline/seed0",
        "/r/fcn_mnist_baseline/seed1": "r/fcn_mnist_baseline/seed1",
        "/q/fcn_mnist_baseline/seed1": "q/fcn_mnist_baseline/seed1", "/r/fcn": "fcn"}
    # One path the end of another: a relative name still, never the run itself.
    assert inference_speed.short_names(["/data/fcn", "/mnt/data/fcn"]) == {
        "/data/fcn": "data/fcn", "/mnt/data/fcn": "mnt/data/fcn"}


def test_benchmark_inference_removes_its_temporary_exports(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    report = inference_speed.run(config.InferenceConfig())  # nothing to measure
    assert report["settings"]["work_dir"] is None and report["results"] == []
    assert not [path for path in tmp_path.iterdir()
                if path.name.startswith("benchmark_inference-")]


def test_benchmark_inference_reads_the_data_before_it_exports(tmp_path, capsys, monkeypatch,
                                                              mnist_dir):
    """MNIST is there, CIFAR-10 is not: nothing is exported or measured."""
    monkeypatch.setenv("SSM_OFFLINE", "1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_dir)
    assert command_status(benchmark_inference, "--quick",
                          "--pretrained=fcn_mnist_signed_seed0,conv2_cifar10_signed_seed0",
                          f"--data_dir={tmp_path / 'data'}", f"--work_dir={tmp_path / 'work'}",
                          f"--out={tmp_path / 'r.json'}") == 1
    assert "Cannot load the cifar10 data set" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_benchmark_inference_keeps_an_export_in_work_dir_without_overwrite(tmp_path, capsys):
    entry = "fcn_mnist_signed_seed0"
    earlier = tmp_path / entry / "export.json"
    earlier.parent.mkdir()
    earlier.write_text("an earlier export")
    assert command_status(benchmark_inference, f"--pretrained={entry}",
                          f"--work_dir={tmp_path}", f"--out={tmp_path / 'r.json'}") == 1
    assert_one_error_line(capsys.readouterr(), f"--work_dir: {earlier.parent} already holds an "
                          "export (export.json); choose another --work_dir or pass --overwrite")
    assert earlier.read_text() == "an earlier export" and not (tmp_path / "r.json").exists()
    inference_speed.check_work_dir(str(tmp_path), [entry], overwrite=True)
    inference_speed.check_work_dir(str(tmp_path), ["another"], overwrite=False)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(inference_speed.InferenceBenchmarkError, match="afile is a file"):
        inference_speed.check_work_dir(str(tmp_path), ["afile"], overwrite=True)


@pytest.mark.parametrize("arguments, named", [
    ([], "give --runs"), (["--runs=/no/such/run"], "/no/such/run"),
    (["--pretrained=fcn_imagenet"], "--pretrained: no pretrained model 'fcn_imagenet'"),
    (["--runs=x", "--windows=0"], "--windows=0"), (["--runs=x", "--seconds=nan"], "--seconds=nan"),
    (["--pretrained=fcn_mnist_signed_seed0,fcn_mnist_signed_seed0"],
     "--pretrained: fcn_mnist_signed_seed0 given more than once"),
    ([f"--runs={REPO},{REPO}/"], f"--runs: {os.path.realpath(REPO)} given more than once"),
])
def test_benchmark_inference_bad_arguments_name_the_value(arguments, named, capsys):
    assert command_status(benchmark_inference, *arguments) == 1
    assert_one_error_line(capsys.readouterr(), named)


def test_check_applications_refuses_unknown_models_before_any_check(tmp_path, capsys):
    assert command_status(check_applications, f"--out_dir={tmp_path / 'out'}",
                        "--models=MobileNetV2,NoSuchNet") == 1
    assert_one_error_line(capsys.readouterr(), "NoSuchNet not in keras.applications")
    assert not (tmp_path / "out").exists()
    assert command_status(check_applications, "--models=MobileNetV2") == 1
    assert_one_error_line(capsys.readouterr(), "give --out_dir")



def test_check_applications_refuses_bad_settings_before_any_check(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert command_status(check_applications, f"--out_dir={afile}", "--models=MobileNetV2") == 1
    assert_one_error_line(capsys.readouterr(), f"--out_dir={afile}: cannot make this folder")
    assert afile.read_text() == "mine"
    out = tmp_path / "out"
    for timeout in ("0", "inf", "3e6"):
        assert command_status(check_applications, f"--out_dir={out}", "--models=MobileNetV2",
                              f"--timeout={timeout}") == 1
        assert_one_error_line(capsys.readouterr(), f"--timeout={float(timeout)}: give the "
                              "seconds per model, > 0 and at most 2,000,000 (23 days)")
    out.mkdir()
    (out / "applications.md").write_text("an earlier check")
    assert command_status(check_applications, f"--out_dir={out}", "--models=MobileNetV2") == 1
    assert_one_error_line(capsys.readouterr(), "applications.md exists; choose another "
                          "--out_dir or pass --overwrite")
    assert (out / "applications.md").read_text() == "an earlier check"


# Initial logits.
def test_initial_logit_statistics_match_numpy():
    kernel = np.array([[1.0, -1.0, 0.0], [10.0, 0.0, -10.0]], np.float32)
    inputs = keras.Input((1, 1, 2))
    logits = keras.layers.Dense(3, use_bias=False)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(logits))
    model.layers[2].kernel.assign(kernel)
    images = np.array([[0, 0], [1, 0], [0, 1], [0, 2]], np.uint8).reshape(4, 1, 1, 2)
    labels = np.array([0, 1, 2, 0])
    expected_logits = images.reshape(4, 2).astype(np.float32) @ kernel
    # p_true: 1/3; e^1/(e^1+e^-1+1); e^-10/(e^10+1+e^-10) ~ 2e-9; e^20/(...) ~ 1.
    statistics = logits_lib.logit_statistics(model, images, labels, batch_size=3)
    assert statistics["logit_std"] == pytest.approx(expected_logits.std(), rel=1e-6)
    assert statistics["clipped_fraction"] == 0.25


def test_initial_logits_of_a_registry_model_are_those_of_its_softmax():
    """On the registry's masked Conv2 (a copy `supermask` made), the images
    whose logits clip are those whose output probability is below 1e-7."""
    model = models.build_architecture("conv2", init_factor=6, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    probabilities = model(images.astype(np.float32)).numpy()
    labels = probabilities.argmin(axis=1)
    statistics = logits_lib.logit_statistics(model, images, labels, batch_size=2)
    clipped = np.mean(probabilities[np.arange(4), labels] < 1e-7)
    assert statistics["logit_std"] > 1.0 and statistics["clipped_fraction"] == clipped


@pytest.mark.parametrize("argument, named", [
    ("--init_factors=6,x", "--init_factors and --seeds"), ("--init_factors=0", "> 0"),
    ("--init_factors=nan", "--init_factors must be > 0"), ("--seeds=0,-1", "--seed=-1"),
    ("--archs=conv5", "conv5"), ("--examples=0", "--examples=0"),
    ("--archs=", "--archs is empty; give at least one, separated by commas. Received: "
                 "--archs=''"), ("--seeds= ,", "--seeds is empty"),
])
def test_initial_logits_bad_arguments_name_the_value(argument, named, tmp_path, capsys):
    assert command_status(initial_logits, argument, f"--out={tmp_path / 'logits.json'}") == 1
    assert_one_error_line(capsys.readouterr(), named)
