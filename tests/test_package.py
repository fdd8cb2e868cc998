"""The package's house rules, read from its source, and what importing it does.

Every import goes down the levels that docs/library.md draws. The command
line sits on top: every absl import is in `ssm_keras.cli`, which no library
module imports; no module reaches into `keras.src` or `keras_tuner.src`;
library modules log instead of printing; every command has a console script
and imports no TensorFlow before it runs (its `--help` answers at once).
`import ssm_keras` changes no environment variable, import hook, excepthook
or dtype policy, and a saved supermask loads after it with plain Keras.
"""

import ast
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from support import REPO

import ssm_keras

PACKAGE = REPO / "ssm_keras"
CLI = PACKAGE / "cli"
# The top-level modules a newcomer meets first; sub-packages hold the rest.
MOST_TOP_LEVEL_MODULES = 15


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _imported(path, top_level_only=False):
    """The absolute module names `path` imports, anywhere in the file or at
    its top level only."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


# `python -m ssm_keras.train` (and tune, export): the command line's front doors.
ENTRY_POINTS = {PACKAGE / f"{name}.py" for name in ("train", "tune", "export")}


def _in_cli(path):
    """Whether `path` belongs to the command line: `ssm_keras.cli` or an entry point."""
    return CLI in path.parents or path in ENTRY_POINTS


LAYOUT = REPO / "docs" / "library.md"
# A name in the first column of the layout: `cli/`, `pretrained/make`, `paper.py`.
_LAYOUT_NAME = re.compile(r"[a-z_]+/([a-z_]+)?$|[a-z_]+\.py$")


def _layout_levels():
    """docs/library.md's layout, top level first: per level the dotted names
    of its sub-packages and modules (`ssm_keras.cli`,
    `ssm_keras.pretrained.make`, `ssm_keras.paper`)."""
    block = LAYOUT.read_text().split("## Layout", 1)[1].split("```")[1]
    levels = [[]]
    for line in block.splitlines():
        if line.strip() == "v":
            levels.append([])
        elif not line.lstrip().startswith("|"):
            for word in line.split():
                if not _LAYOUT_NAME.match(word):
                    break
                dotted = word.removesuffix("/").removesuffix(".py").replace("/", ".")
                levels[-1].append(f"ssm_keras.{dotted}")
    return levels


def _module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _place(name, levels):
    """`(level, entry)`: the layout entry that holds the module (or name in
    a module) `name`, the longest that prefixes it; None if none does."""
    holding = [(len(entry), index, entry) for index, level in enumerate(levels)
               for entry in level if name == entry or name.startswith(f"{entry}.")]
    return max(holding)[1:] if holding else None


def test_every_import_goes_down_the_levels_of_the_documented_layout():
    """Every import, at a module's top or inside a function, is of its own
    entry of docs/library.md's layout or of a level below it. Above them
    all stand the command line's front doors and the package itself, whose
    public names (loaded on first use) come from every level."""
    levels = _layout_levels()
    assert len(levels) >= 8 and levels[0] == ["ssm_keras.cli"], levels
    unplaced, upward = [], []
    for path in _modules():
        if path in ENTRY_POINTS or path == PACKAGE / "__init__.py":
            continue
        name = _module_name(path)
        place = _place(name, levels)
        if place is None:
            unplaced.append(name)
            continue
        for imported in sorted(_imported(path)):
            other = _place(imported, levels) if imported.startswith("ssm_keras.") else None
            if other and other[1] != place[1] and other[0] <= place[0]:
                upward.append(f"{name} imports {imported}")
    assert not unplaced, f"modules missing from the layout of {LAYOUT}: {unplaced}"
    assert not upward, f"imports against the layout of {LAYOUT}: {upward}"


def test_at_most_fifteen_top_level_modules():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= MOST_TOP_LEVEL_MODULES, sorted(top)


def test_absl_only_in_the_command_line_package_which_no_library_module_imports():
    for path in _modules():
        imported = _imported(path)
        if _in_cli(path):
            continue
        assert not any(name == "absl" or name.startswith("absl.") for name in imported), path
        assert not any(name.startswith("ssm_keras.cli") for name in imported), path


def test_no_private_keras_or_keras_tuner_modules():
    for path in _modules():
        private = [name for name in _imported(path)
                   if re.match(r"(keras|keras_tuner)\.src\b", name)]
        assert not private, (path, private)


def test_library_modules_log_and_only_commands_print():
    for path in _modules():
        if _in_cli(path):
            continue
        calls = [node for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
        assert not calls, f"{path.relative_to(REPO)} prints (line {calls[0].lineno if calls else ''})"


# The packages that import TensorFlow or Keras when imported.
TENSORFLOW_PACKAGES = {"tensorflow", "keras", "keras_tuner", "keras_hub", "tensorflow_datasets",
                       "tf2onnx"}
COMMANDS = sorted(path.stem for path in CLI.glob("*.py")
                  if re.search(r"^def cli\(\):", path.read_text(), re.M))


def _files_run_by_import(name):
    """The files that importing package module `name` runs: the
    `__init__.py` of every package on its way, then its own file (`name`
    may end in a name that module defines)."""
    parts = name.split(".")
    paths = []
    for end in range(1, len(parts) + 1):
        path = REPO.joinpath(*parts[:end])
        if (path / "__init__.py").is_file():
            paths.append(path / "__init__.py")
            continue
        if path.with_suffix(".py").is_file():
            paths.append(path.with_suffix(".py"))
        break
    return paths


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_tensorflow_before_it_runs(command):
    """`ssm_keras.cli.<command>` and every package file its import runs,
    directly or not, import neither TensorFlow nor Keras at top level: the
    command's `--help` and a bad flag answer at once, and TensorFlow loads
    after `ssm_keras.cli` set its options. (`ssm_keras/__init__.py` imports
    Keras only outside a command's start, inside an `if`.)"""
    seen, todo = set(), [f"ssm_keras.cli.{command}"]
    while todo:
        for path in _files_run_by_import(todo.pop()):
            if path in seen:
                continue
            seen.add(path)
            imported = _imported(path, top_level_only=True)
            heavy = {module.split(".")[0] for module in imported} & TENSORFLOW_PACKAGES
            assert not heavy, f"{path.relative_to(REPO)} imports {heavy}"
            todo.extend(module for module in imported if module.startswith("ssm_keras."))
    assert {path.name for path in seen} >= {f"{command}.py", "shell.py", "settings.py"}


def test_every_command_has_a_console_script_that_names_its_cli():
    setup = (REPO / "setup.py").read_text()
    listed = set(re.findall(r'"(\w+)"', setup.split('"console_scripts"')[1].split("]")[0]))
    assert set(COMMANDS) == listed
    assert {"train", "tune", "export"} <= set(COMMANDS)  # also python -m ssm_keras.<name>
    for name in ("train", "tune", "export"):
        assert f"from ssm_keras.cli import {name}" in (PACKAGE / f"{name}.py").read_text()


def _saved_supermask(tmp_path):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(4)(inputs)))
    masked = ssm_keras.supermask(model, "signed", seed=0)
    path = tmp_path / "masked.keras"
    masked.save(path)
    return path, masked.predict(np.eye(6, dtype="float32"), verbose=0)


@pytest.mark.slow
def test_import_changes_nothing_in_the_process_and_a_saved_supermask_loads(tmp_path):
    """A new process: the environment, `sys.meta_path`, the excepthook and
    Keras' dtype policy (set to mixed_bfloat16 first) are the same after
    `import ssm_keras`; then plain Keras loads a saved supermask."""
    path, expected = _saved_supermask(tmp_path)
    script = "\n".join([
        "import json, os, sys",
        "import keras, numpy as np",
        "keras.mixed_precision.set_global_policy('mixed_bfloat16')",
        "before = (dict(os.environ), list(sys.meta_path), sys.excepthook,",
        "          keras.mixed_precision.global_policy().name)",
        "import ssm_keras",
        "after = (dict(os.environ), list(sys.meta_path), sys.excepthook,",
        "         keras.mixed_precision.global_policy().name)",
        "keras.mixed_precision.set_global_policy('float32')",
        f"model = keras.saving.load_model({str(path)!r})",
        "outputs = model.predict(np.eye(6, dtype='float32'), verbose=0)",
        "print(json.dumps({'same': before == after, 'outputs': outputs.tolist(),",
        "                  'layers': [type(layer).__name__ for layer in model.layers]}))",
    ])
    environment = {key: value for key, value in os.environ.items()
                   if key != "TF_ENABLE_ONEDNN_OPTS"}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=180, env={**environment, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.splitlines()[-1])
    assert report["same"]
    assert report["layers"][1:] == ["MaskedDense", "MaskedDense"]
    np.testing.assert_array_equal(np.array(report["outputs"], np.float32), expected)


@pytest.mark.slow
@pytest.mark.parametrize("command, listed", [
    ("train", ("--arch", "--mask", "--target_remaining", "--recipe", "--model_dir")),
    ("tune", ("--tuner", "--objective", "--recipe", "--out_dir")),
    ("export", ("--model_dir", "--compact_file", "--formats", "--out_dir")),
])
def test_python_m_ssm_keras_help_lists_its_flags_without_tensorflow(command, listed):
    """`python -m ssm_keras.<command> --help` lists the command's flags, and
    no TensorFlow or Keras module is imported (`-X importtime` names each)."""
    completed = subprocess.run([sys.executable, "-X", "importtime", "-m", f"ssm_keras.{command}",
                                "--help"], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    for flag in listed:
        assert flag in completed.stdout
    imported = {line.rpartition("|")[2].strip().split(".")[0]
                for line in completed.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & TENSORFLOW_PACKAGES


def test_setup_reads_the_version_of_the_package():
    completed = subprocess.run([sys.executable, "setup.py", "--version"], capture_output=True,
                               text=True, cwd=REPO, timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == [ssm_keras.__version__]
