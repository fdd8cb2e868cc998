"""Multi-worker training is refused with the reason, before anything runs."""

import pytest

from ssm_keras import config as ssm_config
from ssm_keras import distribute


def test_multi_worker_mirrored_is_refused_with_the_keras_limitation():
    with pytest.raises(ssm_config.ConfigError, match="keras-team/keras#20585"):
        ssm_config.TrainConfig(strategy="multi_worker_mirrored").validate()


def test_strategy_factory():
    assert distribute.get_strategy("mirrored").num_replicas_in_sync == 2  # two logical CPUs
    assert distribute.get_strategy("one_device").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="strategy='horovod'"):
        distribute.get_strategy("horovod")


def test_chief_is_the_chief_or_worker_zero(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief()
    worker = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": %d}}'
    monkeypatch.setenv("TF_CONFIG", worker % 0)
    assert distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", worker % 1)
    assert not distribute.is_chief()
