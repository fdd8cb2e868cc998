"""Init files: the start of a run written and read again, and every file
that cannot be written or read refused with a clear error, nothing lost."""

import keras
import numpy as np
import pytest
from support import tiny_config, tiny_splits

from ssm_keras import layers
from ssm_keras.training import init_file, trainer


class _KilledBeforeTheFirstCheckpoint(Exception):
    pass


class _KillAtTheStart(keras.callbacks.Callback):
    """Stops the run before its first epoch ends."""

    def on_train_begin(self, logs=None):
        raise _KilledBeforeTheFirstCheckpoint


@pytest.fixture(scope="module")
def saved_init(tmp_path_factory):
    """A 1-epoch run of seed 1 that wrote its init file, killed once after
    writing it and resumed: `(init file, run folder, its bytes after the kill)`."""
    folder = tmp_path_factory.mktemp("init")
    init = folder / "inits" / "init.npz"
    config = tiny_config(folder, epochs=1, seed=1, save_init_file=str(init))
    with pytest.raises(_KilledBeforeTheFirstCheckpoint):
        trainer.run(config, splits=tiny_splits(), callbacks=[_KillAtTheStart()])
    assert (folder / "run" / "flags.json").exists()
    assert not (folder / "run" / "checkpoint").exists()
    written = init.read_bytes()
    assert trainer.run(config, splits=tiny_splits())["epochs"] == 1  # the same command goes on
    return init, folder / "run", written


@pytest.mark.slow
def test_a_run_killed_after_writing_its_init_file_resumes_and_keeps_it(saved_init, tmp_path):
    init, _, written = saved_init
    assert init.read_bytes() == written
    # Another start (seed) is refused, and the file kept.
    with pytest.raises(init_file.InitFileError, match="already exists; it is not overwritten"):
        trainer.run(tiny_config(tmp_path / "other", seed=5, save_init_file=str(init)),
                     splits=tiny_splits())
    assert init.read_bytes() == written
    assert sorted(path.name for path in init.parent.iterdir()) == ["init.npz"]
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_init_file_reproduces_the_start(saved_init, tmp_path):
    init, run_a, _ = saved_init
    trainer.run(tiny_config(tmp_path / "b", epochs=1, seed=2, init_file=str(init)),
                 splits=tiny_splits())
    model_a = keras.saving.load_model(run_a / "model.keras")
    model_b = keras.saving.load_model(tmp_path / "b" / "run" / "model.keras")
    for la, lb in zip(layers.masked_layers(model_a), layers.masked_layers(model_b)):
        np.testing.assert_array_equal(la.kernel_variable().numpy(), lb.kernel_variable().numpy())
        # The thresholds are the file's (drawn from seed 0's scores), not seed 2's.
        assert float(la.threshold_variable().numpy()) == float(lb.threshold_variable().numpy())
    assert sum(layer.mask_counts()["remaining"] for layer in layers.masked_layers(model_b)) > 0


@pytest.mark.slow
def test_bad_init_files_are_refused(saved_init, tmp_path):
    init = saved_init[0]
    splits = tiny_splits()
    arrays = dict(np.load(init))
    kernel = "dense_1/kernel"
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    files = {corrupt: "not a readable ssm_keras init file"}
    for name, content, message in [
        ("nan.npz", {key: value if key == "__meta__" else np.full_like(value, np.nan)
                     for key, value in arrays.items()}, "holds NaN or infinite values"),
        ("list.npz", {**arrays, "__meta__": np.array("[1, 2]")}, "malformed metadata"),
        ("noarch.npz", {**arrays, "__meta__": np.array('{"format": "ssm_keras.init"}')},
         "malformed metadata"),
        ("text.npz", {**arrays, kernel: np.full(arrays[kernel].shape, "w")},
         f"'{kernel}' holds <U1 values"),
        ("int.npz", {**arrays, kernel: arrays[kernel].astype(np.int8)},
         f"'{kernel}' holds int8 values"),
        ("complex.npz", {**arrays, kernel: arrays[kernel].astype(np.complex64)},
         f"'{kernel}' holds complex64 values"),
    ]:
        np.savez(tmp_path / name, **content)
        files[tmp_path / name] = message
    for path, message in files.items():
        with pytest.raises(init_file.InitFileError, match=message):
            trainer.run(tiny_config(tmp_path / f"run-{path.name}", init_file=str(path)),
                         splits=splits)
        assert not (tmp_path / f"run-{path.name}").exists()
    with pytest.raises(init_file.InitFileError, match="written for arch='fcn', not arch='conv2'"):
        trainer.run(tiny_config(tmp_path / "conv2", arch="conv2", init_file=str(init)),
                     splits=tiny_splits(shape=(8, 8, 3)))


@pytest.mark.slow
def test_settings_the_init_file_replaces_must_be_those_that_drew_it(saved_init, tmp_path):
    init = saved_init[0]
    meta, _ = init_file.read_init(init)
    assert meta["settings"] == {"weight_init": "elus", "init_factor": 3.0, "score_init": None,
                                "tau_fraction": 0.4}
    for overrides, named in [(dict(tau_fraction=0.1), "--tau_fraction=0.4, .* not from "
                                                      "--tau_fraction=0.1: pass"),
                             (dict(init_factor=6.0, score_init="ones"),
                              "--init_factor=3.0, --score_init=None, .* not from "
                              "--init_factor=6.0, --score_init=ones: pass"),
                             (dict(regime="weights", weight_init="glorot_uniform"),
                              "--weight_init=elus, .* not from --weight_init=glorot_uniform")]:
        with pytest.raises(init_file.InitFileError, match=named):
            trainer.run(tiny_config(tmp_path / "other", init_file=str(init), **overrides),
                        splits=tiny_splits())
        assert not (tmp_path / "other").exists()
    # A baseline from a supermask's file with its regime's default
    # --weight_init=elu: the file's elus kernels, as documented.
    results = trainer.run(tiny_config(tmp_path / "baseline", regime="weights", epochs=1,
                                      init_file=str(init)), splits=tiny_splits())
    assert results["epochs"] == 1


@pytest.mark.slow
def test_init_files_that_cannot_be_written(tmp_path, monkeypatch):
    splits = tiny_splits()
    (tmp_path / "file").write_text("x")
    with pytest.raises(init_file.InitFileError, match="--save_init_file=.*file/init.npz cannot "
                                                      "be written: File exists"):
        trainer.run(tiny_config(tmp_path / "a", save_init_file=str(tmp_path / "file" / "init.npz")),
                     splits=splits)

    def full_disk(file, **arrays):
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(init_file.InitFileError, match="cannot be written: No space left on device"):
        trainer.run(tiny_config(tmp_path / "b", save_init_file=str(tmp_path / "full.npz")),
                     splits=splits)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]  # no run, no partial file
