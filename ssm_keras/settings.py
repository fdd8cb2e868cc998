"""Settings as dataclasses, the shipped recipes, and flagfiles read without a shell.

Every job of the package takes its settings as a dataclass whose fields are
declared with `setting(default, help)`; the command-line programs
(`ssm_keras.cli`) make one flag per field, and the library reads the same
settings from argument lists and flagfiles:

    config = settings.parse(TrainConfig, ["--flagfile=flags/conv4_cifar10_signed.flags",
                                          "--epochs=20"])

A flagfile holds one `--name=value` per line (`--name` / `--noname` for a
yes-or-no setting); `#` starts a comment line; `--flagfile=PATH` reads
another (a relative path from the working folder), as the commands read it.
Nothing here imports TensorFlow.
"""

import dataclasses
import importlib.resources
import os
import typing

from ssm_keras.errors import UserError

RECIPE_SUFFIX = ".flags"
# The settings, of any command, whose values are paths, and those that are
# comma-separated lists of paths: `~` in them means the home folder.
PATH_SETTINGS = ("model_dir", "data_dir", "init_file", "save_init_file", "mask_from",
                 "start_from", "compact_file", "out_dir", "out", "flags_dir", "work_dir",
                 "recipe_flagfile")
PATH_LIST_SETTINGS = ("runs",)


class SettingsError(UserError):
    """An argument that names no setting, a value of the wrong type, an
    unreadable flagfile or an unknown recipe."""


def setting(default, help):  # noqa: A002  (the word absl uses)
    """A dataclass field that is a setting (and a command's flag) with this help text."""
    return dataclasses.field(default=default, metadata={"help": help})


def value_type(annotation):
    """`int` for `int | None`: the type of a setting's values."""
    options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return options[0] if options else annotation


def comma_separated(text):
    """The items of a comma-separated value, stripped, blanks (and a None
    value) giving none: `" a, ,b"` -> `["a", "b"]`."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def with_home_expanded(settings):
    """The dataclass `settings` with `~` expanded in its paths (`PATH_SETTINGS`,
    `PATH_LIST_SETTINGS`), as a shell expands it at the start of a word but
    not after `--flag=`."""
    names = {field.name for field in dataclasses.fields(settings)}
    expanded = {name: os.path.expanduser(getattr(settings, name))
                for name in PATH_SETTINGS if name in names and getattr(settings, name)}
    expanded.update({name: ",".join(os.path.expanduser(path)
                                    for path in comma_separated(getattr(settings, name)))
                     for name in PATH_LIST_SETTINGS if name in names and getattr(settings, name)})
    return dataclasses.replace(settings, **expanded)


# The shipped recipes.
def recipes_dir():
    """The folder of the shipped recipes, `ssm_keras/recipes/` (package data;
    `flags/` of a checkout links to it)."""
    return os.fspath(importlib.resources.files("ssm_keras") / "recipes")


def recipe_names():
    """The names of the shipped recipes: the stems of `ssm_keras/recipes/*.flags`."""
    return sorted(name.removesuffix(RECIPE_SUFFIX) for name in os.listdir(recipes_dir())
                  if name.endswith(RECIPE_SUFFIX))


def recipe_path(name):
    """The path of the shipped flagfile of recipe `name`; `SettingsError`,
    listing the names there are, if it ships none."""
    if name not in recipe_names():
        raise SettingsError(f"--recipe={name}: no such recipe; choose one of "
                            f"{', '.join(recipe_names())}")
    return os.path.join(recipes_dir(), name + RECIPE_SUFFIX)


# Argument lists and flagfiles.
def expand_flagfiles(arguments, including=()):
    """`arguments` with every `--flagfile=PATH` replaced by the lines of
    that file, recursively, as absl reads them: `~` expanded, and a file
    that includes itself, directly or through others (`including`: the
    files being expanded), read once. `SettingsError` for a file that
    cannot be read."""
    expanded = []
    for argument in arguments:
        if not argument.startswith("--flagfile="):
            expanded.append(argument)
            continue
        path = argument.removeprefix("--flagfile=")
        real = os.path.realpath(os.path.expanduser(path))
        if real in including:
            continue  # absl warns and goes on
        try:
            with open(real, encoding="utf-8") as file:
                lines = [line.strip() for line in file]
        except OSError as error:
            raise SettingsError(f"--flagfile={path}: cannot read it ({error.strerror})") from None
        except UnicodeDecodeError as error:
            raise SettingsError(f"--flagfile={path} is not UTF-8 text ({error})") from None
        expanded += expand_flagfiles(
            [line for line in lines if line and not line.startswith(("#", "//"))],
            (*including, real))
    return expanded


# The words absl takes for a yes-or-no flag's value (any case).
_TRUE, _FALSE = ("true", "t", "1"), ("false", "f", "0")


def _parse_value(name, kind, text):
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"--{name}={text}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise SettingsError(f"--{name}={text}: expected {'an' if kind is int else 'a'} "
                            f"{kind.__name__}") from None


def parse(cls, arguments):
    """The dataclass `cls` with the settings of `arguments` (`--name=value`,
    `--name` / `--noname` for yes-or-no settings, `--flagfile=PATH`; a later
    one overrides an earlier one) and the defaults for the rest; not
    validated. `SettingsError` for anything else."""
    fields = {field.name: value_type(field.type) for field in dataclasses.fields(cls)}
    values = {}
    for argument in expand_flagfiles(arguments):
        name, has_value, text = argument.removeprefix("--").partition("=")
        if not argument.startswith("--"):
            raise SettingsError(f"{argument!r}: expected --name=value")
        if has_value and name in fields:
            values[name] = _parse_value(name, fields[name], text)
        elif not has_value and fields.get(name) is bool:
            values[name] = True
        elif not has_value and fields.get(name.removeprefix("no")) is bool:
            values[name.removeprefix("no")] = False
        elif name in fields:
            raise SettingsError(f"--{name} needs a value: --{name}=VALUE")
        else:
            raise SettingsError(f"unknown setting --{name}")
    return cls(**values)
