"""What importing ssm_keras costs and does: the settings without TensorFlow,
the classes of saved models registered whatever the order of the imports, one version."""

import json
import os
import subprocess
import sys

import keras
import pytest
from conftest import REPO

import ssm_keras
from ssm_keras import initializers, layers


@pytest.mark.slow
def test_config_without_tensorflow_then_classes_registered_once_tensorflow_is_imported():
    """One new process: `import ssm_keras.training.config` loads neither TensorFlow nor
    Keras; `import tensorflow` afterwards (which imports Keras itself)
    registers every class of `layers` and `initializers` that a saved model
    can name, as `import keras` before `ssm_keras` does in this process."""
    script = "\n".join([
        "import json, sys",
        "import ssm_keras.training.config",
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)",
        "import tensorflow",
        "import keras",
        "names = sorted(keras.saving.get_custom_objects())",
        "print(json.dumps({'file': ssm_keras.__file__, 'heavy': heavy, 'names': names}))",
    ])
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.splitlines()[-1])
    assert report["file"] == str(REPO / "ssm_keras" / "__init__.py")
    assert report["heavy"] == []
    saved_classes = {name for name, value in keras.saving.get_custom_objects().items()
                     if value.__module__ in (layers.__name__, initializers.__name__)}
    assert {"ssm_keras>MaskedDense", "ssm_keras>MaskedConv2D"} <= saved_classes
    assert saved_classes <= set(report["names"])


def test_setup_reads_the_version_of_the_package():
    completed = subprocess.run([sys.executable, "setup.py", "--version"], capture_output=True,
                               text=True, cwd=REPO, timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == [ssm_keras.__version__]
