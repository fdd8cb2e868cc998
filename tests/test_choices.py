"""Every choice list has its implementation, and checking settings needs no TensorFlow."""

import ast
import pathlib

import keras

from ssm_keras import choices, initializers, models
from ssm_keras.training import losses

PACKAGE = pathlib.Path(models.__file__).parent


def test_every_architecture_name_has_a_builder():
    assert tuple(models.ARCHITECTURES) == choices.ARCHITECTURES


def test_every_loss_and_initializer_name_resolves():
    for name in choices.LOSSES:
        assert isinstance(losses.get(name), keras.losses.Loss)
    for name in choices.INITIALIZERS:
        assert isinstance(initializers.get(name), keras.initializers.Initializer)


def _imports(path):
    """The absolute module names `path` imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_path(name):
    """The file of package module `name`; None for anything else, packages included."""
    path = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
    return path if name.startswith("ssm_keras.") and path.is_file() else None


def test_the_training_command_imports_no_tensorflow_before_it_runs():
    """`ssm_keras.cli.train` and every package module it imports, directly or
    not, at top level: the command sets TensorFlow's options first."""
    seen, todo = set(), ["ssm_keras.cli.train"]
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        imported = _imports(path)
        assert not {module.split(".")[0] for module in imported} & {"tensorflow", "keras"}, (
            f"{path.name} imports TensorFlow or Keras")
        todo.extend(module for module in imported if module.startswith("ssm_keras."))
    assert {path.name for path in seen} >= {"config.py", "choices.py", "shell.py", "train.py"}
