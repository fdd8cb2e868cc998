"""The training command's shell: every bad command line or unusable input is
one `error:` line and exit status 1; a fresh process loads saved models."""

import os
import subprocess
import sys

import numpy as np
import pytest
from support import REPO, shared_data_dir, tiny_config, tiny_splits

from ssm_keras.cli import train
from ssm_keras.training import trainer


@pytest.mark.parametrize("args, message", [
    (["--arch=conv9"], "Unknown --arch='conv9'. Allowed: fcn, conv2, conv4"),
    (["--dataset=imagenet"], "Unknown --dataset='imagenet'"),
    (["--learning_rate=0"], "--learning_rate must be > 0"),
    (["--learning_rate=-0.1"], "--learning_rate must be > 0"),
    (["--batch_size=0"], "--batch_size must be > 0"),
    (["--epochs=-1"], "--epochs must be > 0"),
    (["--density=1.5"], "--density must be in (0, 1]"),
    (["--mask=bernoulli", "--signed"], "--signed needs a mask kind with a signed form"),
    (["--regime=mask_then_weights"], "--mask_from"),
    (["--regime=mask_then_weights", "--mask_from=runs/a", "--save_init_file=init.npz"],
     "--save_init_file names the initial weights and scores, and a --regime=mask_then_weights "
     "run takes them from --mask_from: leave it out. Received: --save_init_file=init.npz"),
    (["--regime=mask_then_weights", "--mask_from=runs/a", "--init_file=init.npz"],
     "--init_file names the initial weights and scores"),
    pytest.param(["--init_file=/nonexistent/init.npz", "--arch=fcn", "--dataset=mnist"],
                 "does not exist", marks=pytest.mark.slow),  # after reading MNIST
    (["--no_such_flag=1"], "error: Unknown command line flag 'no_such_flag'"),
    (["--flagfile=/nonexistent/run.flags"], "error: Unable to open flagfile: [Errno 2] No such "
                                            "file or directory: '/nonexistent/run.flags'"),
    (["--epochs=many"], "error: flag --epochs=many: invalid literal for int()"),
    (["extra"], "error: unexpected arguments: extra"),
])
def test_bad_command_lines_are_one_error_line(cli, tmp_path, args, message):
    code, err = cli(train, *args, f"--model_dir={tmp_path}/run", f"--data_dir={shared_data_dir()}")
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_unreachable_data_is_one_error_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_OFFLINE", "1")
    code, err = cli(train, "--arch=fcn", "--dataset=mnist", f"--data_dir={tmp_path}/empty",
                    f"--model_dir={tmp_path}/run")
    assert code == 1 and len(err.splitlines()) == 1
    assert "Cannot load the mnist data set" in err and str(tmp_path / "empty") in err
    assert "SSM_OFFLINE=1 is set" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fresh_process_loads_models_after_import_and_the_command_fails_cleanly(tmp_path):
    """One new process (they are slow to start): `import ssm_keras` alone makes
    a saved model loadable; then `python -m ssm_keras.train` with a bad flag
    ends with exit status 1 and one error line, no traceback."""
    model = trainer.build_model(tiny_config(tmp_path), tiny_splits().spec)
    model.save(tmp_path / "model.keras")
    images = tiny_splits().test[0][:4].astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images, verbose=0)
    script = "\n".join([
        "import runpy, sys",
        "import keras, numpy, ssm_keras",
        "print(ssm_keras.__file__, flush=True)",
        "model = keras.saving.load_model('model.keras')",
        "numpy.save('loaded.npy', model.predict(numpy.load('images.npy'), verbose=0))",
        "sys.argv = ['ssm_keras.train', '--arch=resnet21', '--model_dir=run']",
        "runpy.run_module('ssm_keras.train', run_name='__main__', alter_sys=True)",
    ])
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               cwd=tmp_path, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert completed.stdout.startswith(str(REPO / "ssm_keras")), completed.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "loaded.npy"), expected, rtol=1e-6)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith("error: Unknown --arch='resnet21'")
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()
