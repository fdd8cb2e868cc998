"""The checks of `ssm-check-applications` (ssm_keras.experiments.applications),
run in this process on small stand-ins for keras.applications models."""

import importlib.util
import json

import keras
import pytest

from ssm_keras.experiments import applications


def tiny_net(weights=None, input_shape=None, classes=10, classifier_activation=None,
             kernel_regularizer=None):
    """A keras.applications-like builder: a small CNN with a batch norm, a
    depthwise convolution and a classifier."""
    images = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, strides=2, kernel_regularizer=kernel_regularizer)(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(classes, name="predictions")(x))


def regularized_net(**kwargs):
    return tiny_net(kernel_regularizer="l2", **kwargs)


def test_check_one_passes_a_small_application_and_records_what_it_measured(monkeypatch):
    monkeypatch.setattr(keras.applications, "TinyNet", tiny_net, raising=False)
    record = applications.check_one("TinyNet")
    assert record["status"] == "passed"
    assert record["input_size"] == 32
    assert record["masked_layers"] == record["masked_kernels"] == 3
    assert record["masked_weights"] == 3 * 3 * 3 * 4 + 3 * 3 * 4 + 4 * 10
    assert record["scores_moved"] == 3 and record["kernels_frozen"] is True
    assert record["baked_is_stock"] is True and record["compact_kernels_equal"] is True
    assert record["baked_max_abs_difference"] <= 1e-4 * record["output_scale"]
    assert record["compact_max_abs_difference"] == 0.0
    assert record["compact_bytes"] > 0 and record["seconds"] > 0
    assert record["peak_memory_mib"] > 0
    row = applications.markdown([record]).splitlines()[2]
    assert row.startswith("| TinyNet | 32 | ") and "| passed | 3 | 184 | " in row


def test_check_one_records_a_refusal_with_its_reason(monkeypatch):
    monkeypatch.setattr(keras.applications, "RegularizedNet", regularized_net, raising=False)
    record = applications.check_one("RegularizedNet")
    assert record["status"] == "refused"
    assert "it has a kernel regularizer" in record["reason"]
    assert "\n" not in record["reason"]
    row = applications.markdown([record]).splitlines()[2]
    assert row.startswith("| RegularizedNet | 32 | ") and "| refused |" in row



@pytest.mark.parametrize("name, config", [
    ("keras_hub.BertBackbone", {"vocabulary_size": 50, "num_layers": 1, "num_heads": 2,
                                "hidden_dim": 8, "intermediate_dim": 16,
                                "max_sequence_length": 8}),
    ("keras_hub.ViTBackbone", {"image_shape": (8, 8, 3), "patch_size": 4, "num_layers": 1,
                               "num_heads": 2, "hidden_dim": 8, "mlp_dim": 16}),
])
@pytest.mark.slow
def test_check_one_passes_a_keras_hub_backbone(monkeypatch, name, config):
    pytest.importorskip("keras_hub", reason="keras_hub is not installed: "
                                            "pip install 'ssm_keras[hub]'")
    monkeypatch.setitem(applications.HUB_BACKBONES, name, config)
    monkeypatch.setattr(applications, "SEQUENCE_LENGTH", 8)
    record = applications.check_one(name)
    assert record["status"] == "passed", record
    assert record["input_size"] == 8
    # 4 attention and 2 MLP kernels in the one layer, and BERT's token and
    # segment embeddings and pooler, or ViT's patch convolution and position
    # embedding (BERT's position table is a kernel-less keras_hub layer).
    kernels = {"keras_hub.BertBackbone": 6 + 3, "keras_hub.ViTBackbone": 6 + 2}[name]
    assert record["masked_kernels"] == record["scores_moved"] == kernels
    assert record["kernels_frozen"] is True and record["compact_kernels_equal"] is True
    assert record["compact_max_abs_difference"] == 0.0


def test_settings_name_the_models_they_do_not_know(tmp_path):
    settings = applications.ApplicationsSettings(out_dir=str(tmp_path),
                                                 models="ResNet50,keras_hub.GPT2Backbone")
    with pytest.raises(applications.ApplicationsError) as error:
        settings.validate()
    message = str(error.value)
    assert message.startswith("--models: keras_hub.GPT2Backbone not in keras.applications or "
                              "keras_hub.BertBackbone, keras_hub.ViTBackbone; choose from ")
    assert "ResNet50" in message.split("choose from")[1]


def test_settings_refuse_keras_hub_models_without_keras_hub(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "keras_hub" else
                        real_find_spec(name, *args))
    settings = applications.ApplicationsSettings(out_dir=str(tmp_path),
                                                 models="keras_hub.ViTBackbone,VGG16")
    with pytest.raises(applications.ApplicationsError) as error:
        settings.validate()
    assert str(error.value) == ("--models: checking keras_hub.ViTBackbone needs keras_hub, "
                                "which is not installed: pip install 'ssm_keras[hub]'")
    assert not list(tmp_path.iterdir())


def test_check_all_records_every_model_and_then_names_those_that_did_not_pass(tmp_path,
                                                                             monkeypatch):
    outcomes = {"VGG16": {"status": "error", "reason": "over 5 s", "seconds": 5.0},
                "VGG19": {"status": "refused", "reason": "it has a kernel regularizer"}}
    monkeypatch.setattr(applications, "check_in_subprocess",
                        lambda name, timeout: {"model": name, **outcomes[name]})
    settings = applications.ApplicationsSettings(out_dir=str(tmp_path), models="VGG16,VGG19")
    with pytest.raises(applications.ApplicationsError) as error:
        applications.check_all(settings)
    assert str(error.value) == (f"2 of 2 models did not pass: VGG16 (error), VGG19 (refused); "
                                f"see {tmp_path / 'applications.md'}")
    records = json.loads((tmp_path / "applications.json").read_text())
    assert [record["model"] for record in records] == ["VGG16", "VGG19"]
    assert "| VGG19 |" in (tmp_path / "applications.md").read_text()
