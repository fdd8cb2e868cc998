"""TFLite exports: each format of a trained FCN scores its accuracy on real MNIST."""

import json

import keras
import numpy as np
import pytest
from conftest import TFLITE_ACCURACY_TOLERANCE

from ssm_keras.exporting import exporter, tflite


@pytest.fixture(scope="module")
def tflite_export(trained_fcn, tmp_path_factory):
    run, results, images, labels = trained_fcn
    out_dir = tmp_path_factory.mktemp("tflite")
    summary = exporter.export_run(str(run), str(out_dir), ("keras", *tflite.KINDS))
    return out_dir, summary


@pytest.mark.slow
@pytest.mark.parametrize("kind", tflite.KINDS)
def test_each_tflite_format_scores_the_trained_accuracy(kind, trained_fcn, tflite_export):
    _, results, images, labels = trained_fcn
    out_dir, summary = tflite_export
    path = out_dir / exporter.OUTPUTS[kind]
    probabilities = tflite.predict(path, images)
    correct = int(np.sum(np.argmax(probabilities, axis=1) == labels))
    recorded = round(results["test_accuracy"] * len(labels))  # float32 in results.json
    assert 0.5 < recorded / len(labels) < 0.99  # trained, not perfect
    assert abs(correct - recorded) <= TFLITE_ACCURACY_TOLERANCE[kind] * len(labels), (correct, recorded)
    assert summary["tflite_max_difference"][kind] <= tflite.TOLERANCE[kind]
    assert summary["bytes"][exporter.OUTPUTS[kind]] == path.stat().st_size
    runner = tflite.interpreter(path).get_signature_runner(tflite.SIGNATURE)
    (image_input,) = runner.get_input_details().values()
    assert image_input["dtype"] == np.uint8
    assert list(image_input["shape_signature"]) == [-1, 28, 28, 1]


@pytest.mark.slow
def test_quantised_and_sparse_files_are_smaller(tflite_export):
    out_dir, summary = tflite_export
    sizes = summary["bytes"]
    assert sizes["model_dynamic.tflite"] < sizes["model.tflite"] / 3  # int8 against float32
    assert sizes["model_sparse.tflite"] < sizes["model.tflite"] / 3  # about 1% non-zeros
    assert json.loads((out_dir / "export.json").read_text())["tflite_tolerance"] == tflite.TOLERANCE


@pytest.mark.slow
def test_dynamic_range_weights_are_the_signed_constants_exactly(tflite_export):
    """Its int8 weights are `{-127, 0, 127}` times `c / 127`: lossless; the
    file differs from the float model only by its 8-bit activations."""
    out_dir, _ = tflite_export
    baked = keras.saving.load_model(out_dir / "model.keras")
    constants = {float(np.max(np.abs(layer.kernel.numpy()))) for layer in baked.layers
                 if isinstance(layer, keras.layers.Dense)}
    lite = tflite.interpreter(out_dir / "model_dynamic.tflite")
    quantised = [tensor for tensor in lite.get_tensor_details() if tensor["dtype"] == np.int8]
    assert len(quantised) >= 2  # dense_1, dense_2 (TFLite keeps tensors under 1,024 in float)
    for tensor in quantised:
        assert set(np.unique(lite.get_tensor(tensor["index"]))) <= {-127, 0, 127}
        scales = tensor["quantization_parameters"]["scales"].astype(np.float32)
        assert {float(value) for value in np.float32(127) * scales} <= constants
