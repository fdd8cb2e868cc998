"""The shipped pretrained models and the evaluate command."""

import os
import shutil

import keras
import numpy as np
import pytest
from support import assert_one_error_line, command_status, shared_data_dir

from ssm_keras import data, layers, pretrained
from ssm_keras.cli import evaluate
from ssm_keras.experiments import evaluation
from ssm_keras.exporting import compact
from ssm_keras.pretrained import catalog


def evaluate_cli(*argv):
    """Runs `ssm_keras.cli.evaluate` with `argv` in this process: its exit status."""
    return command_status(evaluate, *argv)


def test_the_entries_are_shipped_in_kilobytes():
    fcns = {f"fcn_mnist_signed_seed{seed}" for seed in (0, 1, 2)}
    convs = {f"conv{depth}_cifar10_signed_seed0" for depth in (2, 4, 6, 8)}
    assert fcns | convs <= set(pretrained.names())
    sizes = {name: os.path.getsize(pretrained.path(name)) for name in pretrained.names()}
    assert sum(sizes.values()) < 1_000_000
    assert max(sizes[name] for name in fcns) < 20_000


# The deeper conv entries' evaluations on the 10,000 CIFAR-10 test images
# take 20-60 s each on 2 cores: `pytest -m entries` runs them, `bash
# scripts/test.sh` leaves them out. They run the code path of the Conv2 and
# FCN entries' evaluations, which it keeps; what they add is that this
# processor reproduces these files' recorded figures.
DEEP_CONVS = ("conv4", "conv6", "conv8")


def _marked_by_cost(name):
    """`name` as a parameter, marked `entries` if its architecture (the
    name's first part, as `make.entry_name` writes it) is in DEEP_CONVS."""
    marks = [pytest.mark.entries] if name.split("_")[0] in DEEP_CONVS else []
    return pytest.param(name, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("name", pretrained.names())
def test_entry_rebuilds_bit_exact(name, tmp_path):
    masked, baked, metadata = pretrained.load(name)
    # The shipped file (format version 1 or 2), written again as version 2,
    # reads back to the same kernels and is written to the same bytes again.
    resaved = tmp_path / "again.ssm"
    compact.save_compact(masked, resaved, metadata)
    again = compact.load_compact(resaved).masked_model
    compact.save_compact(again, tmp_path / "twice.ssm", metadata)
    assert (tmp_path / "twice.ssm").read_bytes() == resaved.read_bytes()
    kernels = {layer.name: layer.effective_kernel().numpy() for layer in layers.masked_layers(masked)}
    for layer in layers.masked_layers(again):
        np.testing.assert_array_equal(layer.effective_kernel().numpy(), kernels[layer.name])
    for layer_name, kernel in kernels.items():
        np.testing.assert_array_equal(baked.get_layer(layer_name).kernel.numpy(), kernel)
    assert sum(np.count_nonzero(kernel) for kernel in kernels.values()) == (
        metadata["remaining_weights"])
    assert metadata["command"].startswith("python -m ssm_keras.train --flagfile=flags/")
    assert metadata["recipe"]["settings"]["seed"] == metadata["seed"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [_marked_by_cost(name) for name in pretrained.names()])
def test_entry_scores_its_recorded_accuracy(name):
    try:
        result = evaluation.evaluate(name, data_dir=str(shared_data_dir()))
    except data.DataError as error:
        pytest.skip(f"no local data set for {name} ({error}; set SSM_TEST_DATA)")
    assert result["total"] == 10_000
    assert result["correct"] == round(result["recorded_test_accuracy"] * result["total"])


@pytest.mark.slow
def test_evaluate_a_run_scores_its_recorded_accuracy(trained_fcn, capsys):
    run, results, _, labels = trained_fcn
    assert evaluate_cli(f"--model_dir={run}", f"--data_dir={shared_data_dir()}") == 0
    correct = round(results["test_accuracy"] * len(labels))
    expected = f"test accuracy {100 * correct / len(labels):.2f}% ({correct:,} of 10,000 mnist"
    assert expected in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_refuses_bad_input_with_one_error_line(mnist_dir, tmp_path, capsys,
                                                        monkeypatch):
    name = "fcn_mnist_signed_seed0"
    data_dir = f"--data_dir={shared_data_dir()}"
    assert evaluate_cli("--pretrained=fcn_imagenet", data_dir) == 1
    assert_one_error_line(capsys.readouterr(), "no pretrained model 'fcn_imagenet'; the "
                                               f"shipped ones are: {', '.join(pretrained.names())}")
    assert evaluate_cli(f"--pretrained={name}", data_dir, "--dataset=cifar10") == 1
    assert_one_error_line(capsys.readouterr(), "--dataset=cifar10 does not match "
                                               f"{name}, which was trained on mnist")
    damaged = tmp_path / "pretrained_models"
    shutil.copytree(pretrained.FOLDER, damaged)
    content = bytearray((damaged / f"{name}.ssm").read_bytes())
    content[len(content) // 2] ^= 0xFF
    (damaged / f"{name}.ssm").write_bytes(bytes(content))
    monkeypatch.setattr(catalog, "FOLDER", str(damaged))
    assert evaluate_cli(f"--pretrained={name}", data_dir) == 1
    assert_one_error_line(capsys.readouterr(), "is corrupt (SHA-256 checksum mismatch)")


def _two_layer_net(mask, **mask_arguments):
    inputs = keras.Input((4,))
    hidden = layers.MaskedDense(6, mask=mask, activation="relu", seed=0, **mask_arguments)(inputs)
    outputs = layers.MaskedDense(3, mask=mask, seed=1, **mask_arguments)(hidden)
    return keras.Model(inputs, outputs)


def test_evaluation_runs_the_net_without_its_dead_units_unless_it_samples_its_mask():
    model = _two_layer_net("signed")
    first, _ = layers.masked_layers(model)
    scores = first.scores_variable("kernel").numpy()
    scores[:, :2] = 0.0  # hidden units 0 and 1 lose every input...
    first.scores_variable("kernel").assign(scores)
    first.bias.assign(np.zeros(6, np.float32))  # ...and emit relu(0) = 0
    deployable = evaluation.deployable(model)
    assert deployable.get_layer(first.name).kernel.shape == (4, 4)
    assert not any(isinstance(layer, layers.MaskedDense) for layer in deployable.layers)
    inputs = np.random.default_rng(0).uniform(0, 255, (32, 4)).astype(np.float32)
    np.testing.assert_allclose(deployable.predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), rtol=1e-5, atol=1e-5)
    sampling = _two_layer_net("bernoulli", bernoulli_eval="sample")
    assert evaluation.deployable(sampling) is sampling


def test_dataset_check_names_what_does_not_fit():
    with pytest.raises(evaluation.EvaluationError, match=r"cifar10 has 10 classes of \(32, 32, 3\)"):
        evaluation.check_dataset(None, "cifar10", (28, 28, 1), 10, "model.ssm")
    with pytest.raises(evaluation.EvaluationError, match="does not record its data set"):
        evaluation.check_dataset(None, None, (28, 28, 1), 10, "model.ssm")
    assert evaluation.check_dataset("mnist", None, (28, 28, 1), 10, "x") == "mnist"


def test_summary_line_names_the_images_a_recorded_figure_was_measured_on():
    result = {"name": "runs/fcn", "dataset": "mnist", "correct": 8357, "total": 10_000,
              "test_accuracy": 0.8357, "recorded_test_accuracy": 0.8465}
    full = "runs/fcn: test accuracy 83.57% (8,357 of 10,000 mnist test images); recorded 84.65%"
    assert evaluate.summary_line({**result, "recorded_test_images": None}) == full
    assert evaluate.summary_line({**result, "recorded_test_images": 10_000}) == full
    assert evaluate.summary_line({**result, "recorded_test_images": 2_000}) == (
        full + " (on 2,000 test images)")
    assert evaluate.summary_line({**result, "recorded_test_accuracy": None}).endswith(
        "images); none recorded")


def test_evaluate_fails_when_it_classifies_otherwise_than_recorded(monkeypatch, capsys):
    result = {"name": "fcn_mnist_signed_seed0", "dataset": "mnist", "correct": 9751,
              "total": 10_000, "test_accuracy": 0.9751, "recorded_test_accuracy": 0.9752,
              "recorded_test_images": None}
    monkeypatch.setattr(evaluation, "evaluate_settings", lambda settings: result)
    assert evaluate_cli("--pretrained=fcn_mnist_signed_seed0") == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("fcn_mnist_signed_seed0: test accuracy 97.51%")
    assert captured.err == ("error: fcn_mnist_signed_seed0: 9,751 test images classified right, "
                            "9,752 recorded (-1); the model's file changed, or this processor "
                            "computes a borderline image otherwise\n")
    evaluation.check_recorded({**result, "correct": 9752})  # as recorded: no error
    evaluation.check_recorded({**result, "recorded_test_images": 2_000})  # another test set
