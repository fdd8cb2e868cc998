"""The checks of `ssm-check-applications` (ssm_keras.experiments.applications),
run in this process on small stand-ins for keras.applications models."""

import keras

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

