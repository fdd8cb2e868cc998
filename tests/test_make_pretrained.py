"""The command that writes the shipped supermasks, `ssm_keras.pretrained.make`,
run in this process on a trained FCN."""

import dataclasses
import json
import os
import shutil

import pytest
from support import (
    FCN_SHAPE,
    REPO,
    assert_one_error_line,
    command_status,
    parsed_flags,
    randomized_model,
    shared_data_dir,
)
from test_compact import file_size_limit

from ssm_keras.cli import make_pretrained as make
from ssm_keras.exporting import compact
from ssm_keras.pretrained import make as pretrained_make
from ssm_keras.training.config import TrainConfig

FLAGFILE = str(REPO / "flags" / "fcn_mnist_signed.flags")


@pytest.mark.slow
def test_make_pretrained_records_the_run_and_its_command(trained_fcn, tmp_path, capsys):
    run, results, _, _ = trained_fcn
    argv = [f"--runs={run}", f"--recipe_flagfile={FLAGFILE}", f"--out_dir={tmp_path}"]
    (path,) = make.run_command(parsed_flags(make, *argv))
    assert path == str(tmp_path / "fcn_mnist_signed_seed0.ssm")
    metadata = compact.load_compact(path).metadata
    assert metadata["test_accuracy"] == results["test_accuracy"]
    assert metadata["remaining_weights"] == results["remaining_weights"]
    assert metadata["recipe"]["flagfile"] == FLAGFILE
    # The flagfile, then every setting in which the run differs from it.
    command_line = metadata["command"].split()
    assert command_line[:6] == ["python", "-m", "ssm_keras.train", f"--flagfile={FLAGFILE}",
                                "--data_dir=DATA", "--seed=0"]
    assert {"--epochs=3", "--weight_decay=0.005", "--validation_size=0"} <= set(command_line)
    assert not any(flag.startswith(("--arch=", "--model_dir=")) for flag in command_line)
    capsys.readouterr()
    assert command_status(make, *argv) == 1  # no --overwrite
    assert_one_error_line(capsys.readouterr(), f"{path} exists; pass --overwrite")


@pytest.mark.slow
def test_a_mixed_precision_run_records_its_float32_accuracy(trained_fcn, tmp_path, capsys):
    run, results, _, _ = trained_fcn
    mixed = tmp_path / "mixed_run"
    shutil.copytree(run, mixed)
    as_trained = 0.5  # what a run would record under bfloat16, told apart from float32's
    (mixed / "results.json").write_text(json.dumps({
        **results, "test_accuracy": as_trained,
        "flags": {**results["flags"], "mixed_precision": "mixed_bfloat16"}}))
    argv = [f"--runs={mixed}", f"--recipe_flagfile={FLAGFILE}", f"--out_dir={tmp_path}"]
    assert command_status(make, *argv) == 1
    assert_one_error_line(capsys.readouterr(), "--mixed_precision=mixed_bfloat16; pass --data_dir")
    (path,) = make.run_command(
        parsed_flags(make, *argv, f"--data_dir={shared_data_dir()}"))
    metadata = compact.load_compact(path).metadata
    # The float32 model's, counted over the 10,000 test images.
    assert round(metadata["test_accuracy"] * 10_000) == round(results["test_accuracy"] * 10_000)
    assert metadata["test_accuracy_as_trained"] == as_trained


@pytest.mark.parametrize("argv, named", [
    ([f"--recipe_flagfile={FLAGFILE}"], "--runs is required"),
    (["--runs=x", "--recipe_flagfile=no/such.flags"], "--recipe_flagfile=no/such.flags"),
    (["--runs=x", f"--flagfile={FLAGFILE}"], "arch"),  # absl's --flagfile reads flags
])
def test_make_pretrained_bad_arguments_name_the_value(argv, named, tmp_path, capsys):
    assert command_status(make, *argv, f"--out_dir={tmp_path}") == 1
    assert_one_error_line(capsys.readouterr(), named)


def test_make_pretrained_out_dir_that_is_a_file_is_one_error_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert command_status(make, "--runs=x", f"--recipe_flagfile={FLAGFILE}",
                          f"--out_dir={afile}") == 1
    assert_one_error_line(capsys.readouterr(), f"--out_dir={afile}: cannot make this folder")
    assert afile.read_text() == "mine"


def _finished_run(folder, seed, **flags):
    """A run folder whose results.json says it finished (no model: nothing may load it)."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "status": "finished", "arch": "fcn", "dataset": "mnist", "mask": "signed",
        "flags": {"seed": seed, **flags}}))
    return folder


def test_a_run_on_part_of_its_data_set_is_refused(tmp_path, capsys):
    run = _finished_run(tmp_path / "a", 0, max_examples=512)
    assert command_status(make, f"--runs={run}", f"--recipe_flagfile={FLAGFILE}",
                          f"--out_dir={tmp_path / 'out'}") == 1
    assert_one_error_line(capsys.readouterr(), f"{run} was trained with --max_examples=512, "
                          "so its test accuracy is of a part of the test split")
    assert list((tmp_path / "out").iterdir()) == []


def test_make_pretrained_checks_every_run_before_writing_any(tmp_path, capsys):
    first, second = _finished_run(tmp_path / "a", 0), _finished_run(tmp_path / "b", 0)
    out = tmp_path / "out"
    base = [f"--recipe_flagfile={FLAGFILE}", f"--out_dir={out}", "--overwrite"]
    # Two runs of one entry: the second would replace the first's file.
    assert command_status(make, f"--runs={first},{second}", *base) == 1
    assert_one_error_line(capsys.readouterr(), f"--runs: {first} and {second} would both be "
                          f"written to {out / 'fcn_mnist_signed_seed0.ssm'}")
    # The file of a later run exists: nothing is written, not even the first run's.
    third = _finished_run(tmp_path / "c", 1)
    (out / "fcn_mnist_signed_seed1.ssm").write_text("mine")
    assert command_status(make, f"--runs={first},{third}", *base[:2]) == 1
    assert_one_error_line(capsys.readouterr(), "fcn_mnist_signed_seed1.ssm exists")
    assert sorted(path.name for path in out.iterdir()) == ["fcn_mnist_signed_seed1.ssm"]
    assert (out / "fcn_mnist_signed_seed1.ssm").read_text() == "mine"


@pytest.mark.slow
def test_make_pretrained_writes_nothing_when_a_later_run_cannot_be_loaded(trained_fcn, tmp_path,
                                                                          capsys):
    broken = _finished_run(tmp_path / "broken", 1)  # finished, but its model.keras is gone
    out = tmp_path / "out"
    assert command_status(make, f"--runs={trained_fcn[0]},{broken}",
                          f"--recipe_flagfile={FLAGFILE}", f"--out_dir={out}") == 1
    assert_one_error_line(capsys.readouterr(), f"{broken} has no model.keras")
    assert list(out.iterdir()) == []


def test_an_overwrite_that_cannot_be_written_leaves_the_old_file_whole(tmp_path, capsys):
    """A full disk (here: a file-size limit) while replacing a shipped file."""
    run = _finished_run(tmp_path / "run", 0)
    randomized_model().save(run / "model.keras")
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({
        **results, "regime": "mask", "input_shape": list(FCN_SHAPE), "num_classes": 10,
        "test_accuracy": 0.5, "remaining_weights": 1, "masked_weights": 2,
        "remaining_percent": 50.0, "epochs": 1}))
    out = tmp_path / "out"
    out.mkdir()
    shipped = out / "fcn_mnist_signed_seed0.ssm"
    old = b"the shipped model\n" * 100
    shipped.write_bytes(old)
    argv = [f"--runs={run}", f"--recipe_flagfile={FLAGFILE}", f"--out_dir={out}", "--overwrite"]
    with file_size_limit(len(old) + 100):
        status = command_status(make, *argv)
    assert status == 1
    assert_one_error_line(capsys.readouterr(), f"error: cannot write {shipped}: File too large")
    assert shipped.read_bytes() == old and os.listdir(out) == [shipped.name]
    assert command_status(make, *argv) == 0  # with room, it is replaced
    assert os.path.getsize(shipped) > len(old) + 100


def test_training_command_names_only_the_settings_the_flagfile_does_not_give(tmp_path):
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text("# a recipe\n--arch=fcn\n--nonesterov\n--weight_decay=2.5e-4\n")
    run_flags = {**dataclasses.asdict(TrainConfig(arch="fcn", nesterov=False,
                                                  weight_decay=0.00025, epochs=3, seed=1,
                                                  keep_checkpoints="2")),
                 "model_dir": "runs/mine"}
    given = pretrained_make.recipe_settings(str(flagfile))
    assert pretrained_make.training_command(str(flagfile), run_flags, given) == (
        f"python -m ssm_keras.train --flagfile={flagfile} --data_dir=DATA --seed=1 --epochs=3")
