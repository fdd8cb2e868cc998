"""The commands that drive many training runs, ssm-reproduce and ssm-study,
run in this process with a runner that fakes each training run."""

import json
import os
import pathlib

import numpy as np
import pytest
from support import REPO, assert_one_error_line, command_status, parsed_flags

from ssm_keras import plotting, settings
from ssm_keras.cli import reproduce, shell, study
from ssm_keras.experiments import init_study, launch, reproduction
from ssm_keras.training import config as ssm_config
from ssm_keras.training import run_dir


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


def _flag(command_line, name):
    return next(arg.split("=", 1)[1] for arg in command_line if arg.startswith(f"--{name}="))


def _no_training(command_line):
    raise AssertionError(f"nothing should train: {command_line}")


# Reproduction.
@pytest.mark.slow
def test_reproduce_skips_finished_runs_and_aggregates(tmp_path):
    runs = tmp_path / "runs"
    accuracies, remaining = (0.97, 0.975, 0.98), (3.0, 3.5, 4.0)
    for seed in range(3):
        _fake_run(runs / "fcn_mnist_signed" / f"seed{seed}", accuracies[seed], remaining[seed])
    for seed in range(2):
        _fake_run(runs / "fcn_mnist_baseline" / f"seed{seed}", 0.97 + 0.01 * seed, 100.0,
                  regime="weights")
    commands = []

    def runner(command_line):
        commands.append(command_line)
        _fake_run(_flag(command_line, "model_dir"), 0.99, 100.0, epochs=5, regime="weights")
        return 0

    reproduce.run_command(parsed_flags(
        reproduce, "--experiments=fcn_mnist_signed,fcn_mnist_baseline", "--seeds=0,1,2",
        f"--out_dir={runs}", "--epochs=5"), runner)
    (command_line,) = commands  # only the missing run
    # The shipped recipe, which flags/ of the checkout links to.
    flagfile = _flag(command_line, "flagfile")
    assert flagfile == os.path.join(settings.recipes_dir(), "fcn_mnist_baseline.flags")
    assert pathlib.Path(flagfile).read_text() == (REPO / "flags" / "fcn_mnist_baseline.flags"
                                                  ).read_text()
    assert _flag(command_line, "seed") == "2"
    assert _flag(command_line, "model_dir") == str(runs / "fcn_mnist_baseline" / "seed2")
    assert command_line[-1] == "--epochs=5"  # after the flagfile: it overrides it
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
    runs = tmp_path / "runs"
    for seed, accuracy in enumerate((0.977, 0.978, 0.979)):
        _fake_run(runs / "fcn_mnist_signed_tuned" / f"seed{seed}", accuracy, 2.4)
    _fake_run(runs / "fcn_mnist_signed" / "seed0", 0.975, 2.38)
    assert reproduction.split_experiment("fcn_mnist_signed_tuned") == ("fcn_mnist", "signed_tuned")
    assert set(reproduction.TUNED) <= set(settings.recipe_names())
    reproduce.run_command(parsed_flags(
        reproduce, "--experiments=fcn_mnist_signed,fcn_mnist_signed_tuned", "--seeds=0,1,2",
        f"--out_dir={runs}", "--aggregate_only"), _no_training)
    text = (runs / "table.md").read_text()
    assert "| FCN | MNIST | 97.42 | - | - | 97.48 | 97.50 | 3.77% (10.1K) | 2.38% (6.3K) |" in text
    assert ("| FCN, tuned recipe | MNIST | 97.42 | - | - | 97.48 | 97.80 ± 0.10 "
            "| 3.77% (10.1K) | 2.40 ± 0.00% (6.4K ± 0.0K) | 3 × 3") in text
    assert (runs / "fcn_mnist_signed_tuned" / "mask_composition.png").stat().st_size > 10_000


@pytest.mark.slow
def test_reproduce_names_flags_that_differ_from_the_flagfile(tmp_path):
    _fake_run(tmp_path / "fcn_mnist_signed" / "seed0", 0.9, 3.0, epochs=100,
              flags={"arch": "fcn", "weight_decay": 0.00025, "seed": 0, "jit_compile": False})
    _fake_run(tmp_path / "fcn_mnist_signed" / "seed1", 0.9, 3.0, epochs=100,
              flags={"arch": "fcn", "weight_decay": 0.00025, "max_examples": 2000, "seed": 1})
    reproduce.run_command(parsed_flags(
        reproduce, "--experiments=fcn_mnist_signed", "--seeds=0,1", f"--out_dir={tmp_path}",
        "--aggregate_only"), _no_training)
    record = json.loads((tmp_path / "table.json").read_text())["experiments"]["fcn_mnist_signed"]
    assert record["other_flags"] == ["--max_examples=2000"]  # seed and XLA are not the recipe
    assert "| 2 × 100; --max_examples=2000 |" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("arguments, named", [
    (["--seeds=a,b"], "--seeds=a,b"), (["--seed=3"], "--seed=3"), (["--epoch=5"], "'epoch'"),
    (["--model_dir=x"], "--model_dir"), (["--aggregate_only", "--epochs=5"], "--epochs=5"),
    (["--start_from=x"], "--start_from=x: every run of the command would start from that one"),
    (["--epochs=x"], "--epochs=x"), (["--experiments=conv5_cifar10_signed"], "conv5_cifar10"),
    (["--compress=0"], "--compress=0"), (["--compress=5", "--epochs=3"], "drop --epochs=3"),
    (["--recipe=fcn_mnist_signed"], "'recipe'"), (["--experiments= ,"], "--experiments is empty"),
])
def test_reproduce_bad_arguments_name_the_value(arguments, named, tmp_path, capsys):
    assert command_status(reproduce, f"--out_dir={tmp_path}", *arguments,
                          runner=_no_training) == 1
    assert_one_error_line(capsys.readouterr(), named)
    assert not (tmp_path / "table.md").exists()


def test_reproduce_aggregate_only_names_runs_that_did_not_finish_and_fails(tmp_path, capsys):
    _fake_run(tmp_path / "fcn_mnist_signed" / "seed0", 0.97, 3.0)
    diverged, damaged = (tmp_path / "fcn_mnist_signed" / name for name in ("seed1", "seed2"))
    diverged.mkdir()
    (diverged / "results.json").write_text(json.dumps({"status": "diverged"}))
    _fake_run(damaged, 0.97, 3.0)
    (damaged / "results.json").write_text(json.dumps({"status": "finished",
                                                       "test_accuracy": "0.97"}))
    assert command_status(reproduce, f"--out_dir={tmp_path}", "--experiments=fcn_mnist_signed",
                          "--seeds=0,1,2", "--aggregate_only", runner=_no_training) == 1
    captured = capsys.readouterr()
    assert "| 1 × 3 of 100 |" in (tmp_path / "table.md").read_text()  # the finished one
    (line,) = captured.err.splitlines()
    assert line.startswith("error: the table leaves out runs that did not finish: "
                           f"{diverged} (the run in {diverged} has status 'diverged'")
    assert f"{damaged} ({damaged / 'results.json'} is damaged: test_accuracy is '0.97'" in line


def test_reproduce_aggregate_only_refuses_a_runs_dir_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "runs_misspelt"
    assert command_status(reproduce, f"--out_dir={missing}", "--aggregate_only",
                          runner=_no_training) == 1
    assert_one_error_line(capsys.readouterr(),
                          f"--aggregate_only: --out_dir={missing} does not exist")
    assert not missing.exists()


def test_reproduce_reports_failed_runs(tmp_path, capsys):
    status = command_status(reproduce, "--experiments=conv4_cifar10_signed", "--seeds=0",
                            f"--out_dir={tmp_path}", runner=lambda command_line: 1)
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the runs in {tmp_path / 'conv4_cifar10_signed' / 'seed0'} failed; "
                   "see their output above"]
    record = json.loads((tmp_path / "table.json").read_text())["experiments"]
    assert record["conv4_cifar10_signed"]["seeds"] == []


@pytest.mark.parametrize("arguments, named", [
    (["--epochs=-1"], "fcn_mnist_signed/seed0 cannot start: --epochs must be > 0"),
    (["--flags_dir=/no/such/recipes"], "/no/such/recipes/fcn_mnist_signed.flags"),
    # The recipe sets --init_factor=6, which only the elus initialiser uses.
    (["--weight_init=he_normal"], "--init_factor is only used with --weight_init=elus"),
])
def test_reproduce_checks_every_run_before_the_first_trains(arguments, named, tmp_path,
                                                             capsys):
    assert command_status(reproduce, "--experiments=fcn_mnist_signed,fcn_mnist_baseline",
                          "--seeds=0,1", f"--out_dir={tmp_path}", *arguments,
                          runner=_no_training) == 1
    assert_one_error_line(capsys.readouterr(), named)


def test_study_checks_every_run_before_the_first_trains(tmp_path, capsys):
    # Only the third run, mask_bernoulli, uses this learning rate.
    assert command_status(study, f"--out_dir={tmp_path}", "--bernoulli_learning_rate=-1",
                          runner=_no_training) == 1
    assert_one_error_line(capsys.readouterr(), f"the run {tmp_path / 'mask_bernoulli'} cannot "
                          "start: --learning_rate must be > 0. Received: --learning_rate=-1.0")


def test_reproduce_reads_each_finished_results_file_once(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for seed in range(2):
        _fake_run(runs / "fcn_mnist_signed" / f"seed{seed}", 0.97, 3.0)
    (runs / "fcn_mnist_signed" / "seed2").mkdir()  # still training
    reads, read_json = [], run_dir.read_json
    monkeypatch.setattr(run_dir, "read_json", lambda path: reads.append(path) or read_json(path))
    found = reproduction.load_results(str(runs), "fcn_mnist_signed", [0, 1, 2])
    assert sorted(found) == [0, 1] and found[1]["test_accuracy"] == 0.97
    assert sorted(reads) == [str(runs / "fcn_mnist_signed" / f"seed{seed}" / "results.json")
                             for seed in range(2)]


@pytest.mark.parametrize("module, arguments", [
    (reproduce, ["--experiments=fcn_mnist_signed", "--aggregate_only"]), (study, []),
])
def test_experiments_refuse_a_runs_dir_below_a_file(module, arguments, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert command_status(module, f"--out_dir={afile / 'runs'}", *arguments,
                          runner=_no_training) == 1
    assert_one_error_line(capsys.readouterr(), f"--out_dir={afile / 'runs'}: {afile} is a file")
    assert afile.read_text() == "mine"


def test_reproduce_mean_std():
    assert reproduction.mean_std([1.0, 2.0, 6.0]) == pytest.approx((3.0, np.std([1, 2, 6], ddof=1)))
    assert reproduction.mean_std([4.0]) == (4.0, None)
    assert reproduction.mean_std([]) == (None, None)


# Supermask as initialisation.
@pytest.mark.slow
def test_study_runs_every_regime_from_one_seed(tmp_path):
    runs = tmp_path / "study"
    commands = []

    def runner(command_line):
        commands.append(command_line)
        run = os.path.basename(_flag(command_line, "model_dir"))
        epochs = 2 if run.startswith("mask") and run != "mask_then_weights" else 3
        remaining = {"weights": 100.0, "mask_bernoulli": 30.0}.get(run, 50.0)
        _fake_run(_flag(command_line, "model_dir"), 0.5, remaining, epochs=epochs,
                  regime=run, flags={"width": 1, "dataset": "mnist"})
        return 0

    argv = [f"--out_dir={runs}", "--width=1", "--epochs=3", "--dataset=mnist"]
    study.run_command(parsed_flags(study, *argv), runner)
    assert [os.path.basename(_flag(c, "flagfile")) for c in commands] == [
        "wrn28_cifar10_weights.flags", "wrn28_cifar10_mask.flags",
        "wrn28_cifar10_mask.flags", "wrn28_cifar10_mask_then_weights.flags"]
    for command_line in commands:  # each command's flags are a valid training run
        launch.run_config(command_line)
    assert [os.path.basename(_flag(c, "model_dir")) for c in commands] == list(init_study.RUNS)
    assert {_flag(c, "seed") for c in commands} == {"0"}
    assert all("--width=1" in c and "--epochs=3" in c and "--dataset=mnist" in c
               for c in commands)
    # The Bernoulli variant starts from the binary mask's scores; (3) from the binary mask.
    assert _flag(commands[2], "mask") == "bernoulli"
    assert _flag(commands[2], "score_init") == "glorot_uniform"
    # The binary mask trains with the flagfile's Adam, the Bernoulli mask with SGD at a large
    # learning rate (Zhou et al.).
    assert (_flag(commands[2], "optimizer"), _flag(commands[2], "learning_rate")) == (
        "sgd", str(init_study.BERNOULLI_LEARNING_RATE))
    assert "--optimizer=sgd" not in commands[1] and "--optimizer=adam" not in commands[1]
    assert "--mask=bernoulli" not in commands[1]
    assert _flag(commands[3], "mask_from") == str(runs / "mask")
    histories = {run: plotting.load_run(str(runs / run))[1] for run in init_study.RUNS}
    curves = init_study.study_curves(histories)
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
    assert set(utilisation) == {init_study.LABELS["mask"], init_study.LABELS["mask_bernoulli"]}
    assert utilisation["2b. mask only (Bernoulli)"]["totals"] == [235200, 30000, 1000]
    assert utilisation["2b. mask only (Bernoulli)"]["kept_percent"] == pytest.approx([30.0] * 3)
    study.run_command(parsed_flags(study, *argv), runner)
    assert len(commands) == 4  # all finished


@pytest.mark.slow
def test_study_without_bernoulli_runs_three(tmp_path):
    commands = []

    def runner(command_line):
        commands.append(command_line)
        _fake_run(_flag(command_line, "model_dir"), 0.5, 50.0)
        return 0

    study.run_command(parsed_flags(study, f"--out_dir={tmp_path}", "--nobernoulli"), runner)
    assert [os.path.basename(_flag(c, "model_dir")) for c in commands] == [
        "weights", "mask", "mask_then_weights"]


def test_a_study_whose_first_run_fails_says_which_study_it_is(tmp_path, capsys):
    assert command_status(study, f"--out_dir={tmp_path}", "--width=2", "--dataset=mnist",
                          runner=lambda command_line: 1) == 1
    assert capsys.readouterr().err.strip() == (
        "error: run weights failed; see its output above")
    assert (tmp_path / "study.md").read_text().startswith(
        "Supermask as initialisation: Wide ResNet-28-2 on mnist, every run")


@pytest.mark.parametrize("module, report, argv", [
    (study, "study.md", ["--dataset=mnist"]),
    (reproduce, "table.md", ["--experiments=fcn_mnist_signed", "--seeds=0"]),
])
def test_a_report_that_cannot_be_written_is_one_error_line_after_the_table(
        module, report, argv, tmp_path, capsys):
    (tmp_path / report).mkdir()  # where the report goes
    assert command_status(module, f"--out_dir={tmp_path}", *argv,
                          runner=lambda command_line: 1) == 1
    captured = capsys.readouterr()
    assert "| --- |" in captured.out  # the table was printed first
    assert captured.err.strip() == f"error: cannot write {tmp_path / report}: Is a directory"


def test_a_run_that_would_replace_what_it_starts_from_is_refused_before_any_trains(tmp_path):
    run = tmp_path / "seed0"
    command = launch.train_command(os.path.join(settings.recipes_dir(), "fcn_mnist_signed.flags"),
                                   str(run), 0, None, [f"--start_from={run / 'checkpoint'}"])
    with pytest.raises(ssm_config.ConfigError, match=f"--start_from={run / 'checkpoint'} lies in "
                                                     "the run folder"):
        launch.run_config(command)


def test_study_bernoulli_learning_rate_is_a_flag(tmp_path):
    settings = shell.from_flags(init_study.StudyConfig, parsed_flags(
        study, f"--out_dir={tmp_path}", "--bernoulli_learning_rate=0.01"))
    bernoulli = init_study.training_command(settings, 0, None, [], "mask_bernoulli")
    assert _flag(bernoulli, "learning_rate") == "0.01"
    assert "--learning_rate=0.01" not in init_study.training_command(settings, 0, None, [], "mask")
    # The training flags given to the study set the other runs, not the Bernoulli one's own,
    # but the same scores' initialiser.
    extra = ["--learning_rate=0.003", "--optimizer=adam", "--mask=signed", "--score_init=ones"]
    bernoulli = launch.run_config(init_study.training_command(settings, 0, None, extra,
                                                              "mask_bernoulli"))
    assert (bernoulli.learning_rate, bernoulli.optimizer, bernoulli.mask,
            bernoulli.score_init) == (0.01, "sgd", "bernoulli", "ones")
    mask = launch.run_config(init_study.training_command(settings, 0, None, extra, "mask"))
    assert (mask.learning_rate, mask.optimizer, mask.mask, mask.score_init) == (
        0.003, "adam", "signed", "ones")


def test_reproduce_compress_shortens_each_flagfiles_schedule(tmp_path):
    commands = []

    def runner(command_line):
        commands.append(command_line)
        return 1

    assert command_status(reproduce, "--experiments=conv4_cifar10_signed,resnet20_cifar10_signed",
                          "--seeds=0", f"--out_dir={tmp_path}", "--compress=5", "--verbose=2",
                          runner=runner) == 1
    conv4, resnet20 = commands
    # Conv4: 100 epochs, decay every 10; ResNet-20: 110 epochs, plateau patience 15.
    assert conv4[-3:] == ["--epochs=20", "--lr_decay_epochs=2", "--verbose=2"]
    assert resnet20[-3:] == ["--epochs=22", "--plateau_patience=3", "--verbose=2"]
