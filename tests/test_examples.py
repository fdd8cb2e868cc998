"""The example scripts of `examples/` as a user runs them."""

import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    """The module of `examples/<name>.py`."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_your_own_model_refuses_missing_data_with_one_error_line(tmp_path, capsys,
                                                                monkeypatch):
    example = load_example("your_own_model")
    out = tmp_path / "own"
    monkeypatch.setenv("SSM_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["your_own_model.py", f"--data_dir={tmp_path / 'none'}",
                                      f"--out={out}"])
    with pytest.raises(SystemExit) as stop:
        example.main()
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert errors[0].startswith("your_own_model.py: error: Cannot load the mnist data set.")
    assert f"{tmp_path / 'none'}: does not exist" in errors[0]
    assert not out.exists()
