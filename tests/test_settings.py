"""Settings read without the shell (`ssm_keras.settings`): the same values as
the commands' flags give, from every shipped recipe; `~` expanded in paths."""

import dataclasses
import os

import pytest
from support import parsed_flags

from ssm_keras import settings
from ssm_keras.cli import shell, train
from ssm_keras.exporting.config import ExportSettings
from ssm_keras.training.config import TrainConfig


@pytest.mark.parametrize("name", settings.recipe_names())
def test_a_recipe_reads_as_the_training_command_reads_it(name):
    arguments = [f"--flagfile={settings.recipe_path(name)}", "--seed=3", "--nonesterov"]
    parsed = settings.parse(TrainConfig, arguments)
    assert parsed == shell.from_flags(TrainConfig, parsed_flags(train, *arguments))
    assert parsed.seed == 3 and parsed.nesterov is False


def test_later_arguments_override_and_flagfiles_nest(tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("# a comment\n--arch=fcn\n--epochs=7\n\n--nonesterov\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--flagfile={inner}\n--epochs=9\n")
    parsed = settings.parse(TrainConfig, [f"--flagfile={outer}", "--learning_rate=0.2"])
    assert (parsed.arch, parsed.epochs, parsed.nesterov, parsed.learning_rate) == (
        "fcn", 9, False, 0.2)
    assert parsed.weight_init == "elus"  # the default of its regime


@pytest.mark.parametrize("arguments, message", [
    (["--epochs=many"], "--epochs=many: expected an int"),
    (["--nesterov=perhaps"], "--nesterov=perhaps: expected true or false"),
    (["--no_such_setting=1"], "unknown setting --no_such_setting"),
    (["--epochs"], "--epochs needs a value: --epochs=VALUE"),
    (["epochs=3"], "'epochs=3': expected --name=value"),
    (["--flagfile=/no/such.flags"], r"--flagfile=/no/such.flags: cannot read it"),
])
def test_bad_arguments_are_one_error_naming_them(arguments, message):
    with pytest.raises(settings.SettingsError, match=message):
        settings.parse(TrainConfig, arguments)


def test_a_flagfile_that_includes_itself_is_read_once_as_absl_reads_it(tmp_path):
    loop = tmp_path / "loop.flags"
    loop.write_text(f"--epochs=5\n--flagfile={loop}\n")
    assert settings.parse(TrainConfig, [f"--flagfile={loop}"]).epochs == 5
    first, second = tmp_path / "a.flags", tmp_path / "b.flags"
    first.write_text(f"--epochs=2\n--flagfile={second}\n")
    second.write_text(f"--learning_rate=0.5\n--flagfile={first}\n")
    parsed = settings.parse(TrainConfig, [f"--flagfile={first}"])
    assert (parsed.epochs, parsed.learning_rate) == (2, 0.5)


def test_flagfiles_read_as_the_commands_read_them(tmp_path, monkeypatch):
    """`~` in a --flagfile path, and absl's words for yes and no."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "run.flags").write_text("--epochs=4\n--nesterov=f\n--signed=T\n")
    parsed = settings.parse(TrainConfig, ["--flagfile=~/run.flags"])
    assert (parsed.epochs, parsed.nesterov, parsed.signed) == (4, False, True)


def test_home_is_expanded_in_paths_and_lists_of_paths_only(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    expanded = settings.with_home_expanded(TrainConfig(model_dir="~/runs/a", arch="fcn"))
    assert expanded.model_dir == "/home/someone/runs/a" and expanded.arch == "fcn"
    export = settings.with_home_expanded(ExportSettings(
        compact_file="~/m.ssm", out_dir="~/out", formats="keras"))
    assert (export.compact_file, export.out_dir) == ("/home/someone/m.ssm", "/home/someone/out")

    @dataclasses.dataclass
    class Runs:
        runs: str = "~/a, ~/b"

    assert settings.with_home_expanded(Runs()).runs == os.path.expanduser("~/a") + "," + \
        os.path.expanduser("~/b")
