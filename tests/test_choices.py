"""Every choice list has its implementation."""

import pathlib

import keras

from ssm_keras import choices, initializers, models
from ssm_keras.exporting import formats
from ssm_keras.training import losses

PACKAGE = pathlib.Path(models.__file__).parent


def test_every_architecture_name_has_a_builder():
    assert tuple(models.ARCHITECTURES) == choices.ARCHITECTURES


def test_every_loss_and_initializer_name_resolves():
    for name in choices.LOSSES:
        assert isinstance(losses.get(name), keras.losses.Loss)
    for name in choices.INITIALIZERS:
        assert isinstance(initializers.get(name), keras.initializers.Initializer)


def test_every_export_format_name_is_registered_and_the_defaults_match():
    assert tuple(formats.FORMATS) == choices.EXPORT_FORMATS
    assert formats.default_formats() == choices.DEFAULT_EXPORT_FORMATS
