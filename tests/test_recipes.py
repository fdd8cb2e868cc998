"""The shipped recipes (ssm_keras/recipes/*.flags, flags/ in a checkout):
found through the package, read by `--recipe` as by `--flagfile`, and each
parses and starts training (one step, tiny data).

To keep the suite fast, the images are as small as each architecture allows
(8x8 for residual nets, 16x16 for Conv-8) and the Wide ResNet's widening
factor is 2 instead of 10; the step runs eagerly (tracing the graph of a
110-layer net takes longer than the step). Every other flag is the
flagfile's own.
"""

import dataclasses
import importlib.resources
import pathlib
import sys
import types

import numpy as np
import pytest
from absl import app, flags
from support import REPO, assert_one_error_line, parsed_flags

from ssm_keras import data, settings
from ssm_keras.cli import shell, train, tune
from ssm_keras.training import config as ssm_config
from ssm_keras.training import trainer

RECIPES = importlib.resources.files("ssm_keras") / "recipes"
FLAGFILES = sorted(pathlib.Path(settings.recipes_dir()).glob("*.flags"))
# mask_then_weights needs the trained mask of its companion run first.
FLAGFILES.sort(key=lambda path: "mask_then_weights" in path.name)


SMALLEST_SIDE = {"fcn": 28, "conv2": 8, "conv4": 8, "conv6": 8, "conv8": 16}


def random_splits(dataset, arch, size=8):
    full = data.DATASETS[dataset]
    side = SMALLEST_SIDE.get(arch, 8)
    spec = data.DatasetSpec(full.name, (side, side, full.image_shape[2]), full.num_classes)
    rng = np.random.default_rng(0)

    def make():
        images = rng.integers(0, 256, (size, *spec.image_shape), dtype=np.uint8)
        return images, rng.integers(0, spec.num_classes, size).astype(np.int64)

    return data.Splits(spec, make(), make(), make(), source="random")


def parse(path, *overrides):
    return shell.from_flags(ssm_config.TrainConfig,
                              parsed_flags(train, f"--flagfile={path}", *overrides))


def test_recipes_are_package_data_that_flags_links_to():
    shipped = sorted(entry.name for entry in RECIPES.iterdir() if entry.name.endswith(".flags"))
    assert shipped == sorted(path.name for path in FLAGFILES)
    assert settings.recipe_names() == [name.removesuffix(".flags") for name in shipped]
    assert "recipes/*.flags" in (REPO / "setup.py").read_text()  # package_data
    for name in shipped:  # a checkout's flags/NAME.flags is the shipped file
        assert (REPO / "flags" / name).read_text() == RECIPES.joinpath(name).read_text()


@pytest.mark.parametrize("name", ["fcn_mnist_signed", "conv4_cifar10_signed_paper",
                                  "wrn28_cifar10_mask"])
def test_recipe_flag_reads_the_shipped_flagfile_first(name):
    by_recipe = shell.from_flags(ssm_config.TrainConfig,
                                   parsed_flags(train, f"--recipe={name}"))
    assert by_recipe == parse(REPO / "flags" / f"{name}.flags")
    assert by_recipe != ssm_config.TrainConfig()
    # Flags given override the recipe wherever they stand, as after --flagfile.
    overridden = dataclasses.replace(by_recipe, epochs=1, seed=7)
    for argv in (["--epochs=1", f"--recipe={name}", "--seed=7"],
                 [f"--recipe={name}", "--seed=7", "--epochs=1"]):
        assert shell.from_flags(ssm_config.TrainConfig, parsed_flags(train, *argv)) == overridden


def test_tune_reads_a_recipe_as_train_does():
    searched = parsed_flags(tune, "--recipe=fcn_mnist_signed", "--tuner=hyperband")
    assert shell.from_flags(ssm_config.TrainConfig, searched) == parse(
        REPO / "flags" / "fcn_mnist_signed.flags")
    assert searched["tuner"].value == "hyperband"


def test_console_script_help_lists_the_commands_doc_and_flags(monkeypatch):
    """A console script's `__main__` is its wrapper file: `--help` shows the
    command module's docstring and key flags all the same."""
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ssm-train"])
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert "--recipe" not in flag_values.main_module_help()
    shell.help_for_console_script(train.__name__, flag_values)
    assert sys.modules["__main__"].__doc__ == train.__doc__
    listed = flag_values.main_module_help()
    assert all(f"--{name}:" in listed for name in ("recipe", "arch", "epochs", "data_dir"))


def test_unknown_recipe_is_one_error_line_listing_the_recipes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parsed_flags(train, "--recipe=fcn_mnist_signd")
    assert exit_info.value.code == 1
    assert_one_error_line(capsys.readouterr(), "--recipe=fcn_mnist_signd: no such recipe; "
                          f"choose one of {', '.join(settings.recipe_names())}")


def test_all_experiments_have_flagfiles():
    names = {path.stem for path in FLAGFILES}
    for model in ("fcn_mnist", "conv2_cifar10", "conv4_cifar10", "conv6_cifar10", "conv8_cifar10",
                  "resnet20_cifar10", "resnet20x2_cifar10", "resnet20x3_cifar10",
                  "resnet56_cifar100", "resnet110_cifar100"):
        assert {f"{model}_signed", f"{model}_baseline"} <= names
    assert {"wrn28_cifar10_weights", "wrn28_cifar10_mask",
            "wrn28_cifar10_mask_then_weights"} <= names
    for path in FLAGFILES:
        assert f"# Run: python -m ssm_keras.train --flagfile=flags/{path.name}" in path.read_text()


def test_flags_after_the_flagfile_override_it():
    config = parse(REPO / "flags" / "conv2_cifar10_signed.flags", "--learning_rate=0.5",
                   "--seed=7")
    assert config.learning_rate == 0.5 and config.seed == 7
    assert config.arch == "conv2" and config.weight_decay == 0.0005


def training_overrides(path, runs):
    """The flags that make the recipe at `path` a short run into `runs`."""
    # A steered recipe steers from its second epoch: it trains two.
    epochs = 2 if "--target_remaining" in path.read_text() else 1
    overrides = [f"--epochs={epochs}", f"--model_dir={runs / path.stem}", "--verbose=0",
                 "--run_eagerly"]
    if path.stem.startswith("wrn28"):
        overrides.append("--width=2")
    if "mask_then_weights" in path.stem:
        overrides.append(f"--mask_from={runs / 'wrn28_cifar10_mask'}")
    return overrides


def kinds_of_training(flagfiles):
    """One flagfile of each kind of training, the shallowest: architecture
    family (fcn, conv, resnet, wrn), data set, regime, and whether it steers
    the sparsity. The others differ from it in numbers (a depth, a width, a
    schedule) that `validate` checks."""
    kinds = {}
    for path in flagfiles:
        config = parse(path)
        family = config.arch.rstrip("0123456789")
        depth = int(config.arch[len(family):] or 0)
        kind = (family, config.dataset, config.regime, config.target_remaining is not None)
        if kind not in kinds or depth < kinds[kind][0]:
            kinds[kind] = (depth, path)
    return sorted(path for _, path in kinds.values())


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda path: path.stem)
def test_every_flagfile_validates_as_a_short_run(path, tmp_path):
    parse(path, *training_overrides(path, tmp_path)).validate()


@pytest.mark.slow
@pytest.mark.parametrize("path", kinds_of_training(FLAGFILES), ids=lambda path: path.stem)
def test_flagfile_starts_training(path, tmp_path_factory):
    runs = tmp_path_factory.getbasetemp() / "flagfile_runs"
    config = parse(path, *training_overrides(path, runs))
    config.validate()
    epochs = config.epochs
    results = trainer.run(config, splits=random_splits(config.dataset, config.arch))
    assert results["epochs"] == epochs and results["arch"] == config.arch
    expected_layers = results["layers"]
    assert expected_layers and 0 < results["remaining_weights"] <= results["masked_weights"]
    assert (pathlib.Path(config.model_dir) / "model.keras").is_file()
    if config.regime == "weights":
        assert results["remaining_percent"] == 100.0


@pytest.mark.parametrize("help_flag", ["--help", "-?", "--helpfull"])
def test_help_prints_the_flags_and_exits_with_status_0(help_flag, capsys):
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    for flag in (app.HelpFlag(), app.HelpshortFlag(), app.HelpfullFlag()):
        flags.DEFINE_flag(flag, flag_values)
    with pytest.raises(SystemExit) as exit_info:
        shell.parse_flags(["ssm-train", help_flag], flag_values)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip()  # absl printed its usage text


def test_help_in_a_flagfile_exits_with_status_0(tmp_path, capsys):
    flagfile = tmp_path / "asks.flags"
    flagfile.write_text("--arch=fcn\n--help\n")
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flags.DEFINE_flag(app.HelpFlag(), flag_values)
    with pytest.raises(SystemExit) as exit_info:
        shell.parse_flags(["ssm-train", f"--flagfile={flagfile}"], flag_values)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip()


def test_a_bad_flag_beside_help_still_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parsed_flags(train, "--epochs=many", "--help")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: ")
