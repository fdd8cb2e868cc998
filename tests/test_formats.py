"""The runtime formats (TFLite, ONNX): each file of a trained FCN scores its
accuracy on real MNIST; the registry of export formats."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from support import TFLITE_ACCURACY_TOLERANCE

from ssm_keras.exporting import exporter, formats, tflite


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
    path = out_dir / tflite.OUTPUTS[kind]
    probabilities = tflite.predictor(path)(images)
    correct = int(np.sum(np.argmax(probabilities, axis=1) == labels))
    recorded = round(results["test_accuracy"] * len(labels))  # float32 in results.json
    assert 0.5 < recorded / len(labels) < 0.99  # trained, not perfect
    assert abs(correct - recorded) <= TFLITE_ACCURACY_TOLERANCE[kind] * len(labels), (correct, recorded)
    assert summary["max_difference"][kind] <= tflite.TOLERANCE[kind]
    assert summary["bytes"][tflite.OUTPUTS[kind]] == path.stat().st_size
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
    assert json.loads((out_dir / "export.json").read_text())["tolerance"] == tflite.TOLERANCE


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


needs_onnx = pytest.mark.skipif(
    not formats.FORMATS["onnx"].available(),
    reason="the onnx format needs tf2onnx and onnxruntime: pip install 'ssm_keras[onnx]'")


@pytest.mark.slow
@needs_onnx
def test_onnx_file_takes_uint8_images_and_scores_the_trained_accuracy(trained_fcn, tmp_path):
    import onnxruntime

    run, results, images, labels = trained_fcn
    summary = exporter.export_run(str(run), str(tmp_path), ("onnx",))
    path = tmp_path / "model.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert (image_input.name, image_input.type) == ("images", "tensor(uint8)")
    assert [output.name for output in session.get_outputs()] == ["probabilities"]
    correct = int(np.sum(np.argmax(formats.FORMATS["onnx"].load(path, None)(images), axis=1)
                         == labels))
    assert correct == round(results["test_accuracy"] * len(labels))  # the same float32 network
    assert summary["max_difference"]["onnx"] <= formats.FORMATS["onnx"].tolerance == 1e-5
    assert summary["bytes"]["model.onnx"] == path.stat().st_size


def test_a_format_is_one_registry_entry_and_names_are_unique(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))
    written = []
    formats.register(formats.ExportFormat(
        name="metadata_json", output="metadata.json",
        write=lambda job, path: written.append(path) or (tmp_path / path).write_text("{}")))
    assert "metadata_json" in exporter.outputs() and "metadata.json" in exporter.known_outputs()
    assert formats.check_formats(["metadata_json"]) == ("metadata_json",)
    with pytest.raises(ValueError, match="'keras' is registered already"):
        formats.register(formats.ExportFormat(name="keras", output="x", write=print))


def test_a_format_whose_packages_are_missing_is_refused_with_the_extra(monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "onnx", formats.dataclasses.replace(
        formats.FORMATS["onnx"], requires=("no_such_module_for_onnx",)))
    with pytest.raises(formats.ExportError, match=r"--formats=onnx needs no_such_module_for_onnx:"
                       r" pip install 'ssm_keras\[onnx\]'"):
        formats.check_formats(["keras", "onnx"])


def _constant_format(load):
    return formats.ExportFormat(name="fake", output="fake.bin", write=print,
                                runtime="Fake Runtime", load=load, tolerance=1e-5)


def test_agreement_is_relative_for_outputs_beyond_one_and_a_runtime_error_is_an_export_error():
    images = formats.check_images((3,), count=4)
    logits = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    logits.layers[0].kernel.assign(np.array([[2.0, 1e-3]] * 3, np.float32))
    expected = np.asarray(logits(images.astype(np.float32)))
    assert expected[:, 0].min() > 100 and np.abs(expected[:, 1]).max() < 1

    def agreement(predicted):
        fake = _constant_format(lambda path, threads: lambda x: predicted)
        return formats.check_agreement(fake, "fake.bin", images, expected)

    # Round-off on a large logit is within 1e-5 of its size; the same on a small one is not.
    round_off = expected + np.array([0.5e-5, 0.0], np.float32) * expected
    assert 0 < agreement(round_off) <= 0.5e-5 * expected[:, 0].max() * 1.01
    for name, predicted, message in [
            ("a small output off", expected + np.array([0.0, 2e-5], np.float32),
             r"differ by up to 2e-05 on 4 check images, 2 times the tolerance 1e-05"),
            ("another shape", expected[:, :1], r"have shape \(4, 1\), the baked model's \(4, 2\)"),
            ("infinite", np.where(expected > 100, np.inf, expected), "is finite")]:
        with pytest.raises(formats.ExportError, match=message):
            agreement(predicted.astype(np.float32))

    known = dataclasses.replace(_constant_format(lambda path, threads: lambda x: expected[:, :1]),
                                known_errors="it is known to miscompute narrow layers")
    with pytest.raises(formats.ExportError, match=(
            r"^the fake file disagrees with the baked model \(it is known to miscompute narrow "
            r"layers\): its outputs have shape")):
        formats.check_agreement(known, "fake.bin", images, expected)

    def broken(path, threads):
        raise RuntimeError("No Op registered for\n StatefulPartitionedCall")

    with pytest.raises(formats.ExportError, match=(
            r"^Fake Runtime cannot run the fake file written for this model \(RuntimeError: No "
            r"Op registered for StatefulPartitionedCall\); nothing was exported$")):
        formats.check_agreement(_constant_format(broken), "fake.bin", images, expected)

    def buggy(path, threads):
        return lambda x: x.no_such_attribute  # an error of the code, not of the file

    with pytest.raises(AttributeError):
        formats.check_agreement(_constant_format(buggy), "fake.bin", images, expected)


@pytest.mark.parametrize("build, problem", [
    (lambda: keras.Model([a := keras.Input((4,)), b := keras.Input((4,))],
                         keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))),
     "2 inputs"),
    (lambda: keras.Model(x := keras.Input((4,)), [keras.layers.Dense(2)(x),
                                                  keras.layers.Dense(3)(x)]),
     "2 outputs"),
    (lambda: keras.Sequential([keras.Input((None, 8)), keras.layers.LSTM(4)]),
     r"an input of shape \(None, None, 8\), with sizes left open"),
    (lambda: keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
                               keras.layers.Flatten(), keras.layers.Dense(2)]),
     r"an input of dtype int32, not pixels \(float or uint8\)"),
])
def test_the_export_refuses_what_its_formats_do_not_describe_and_says_what_to_do(build, problem):
    with pytest.raises(formats.ExportError, match=(
            f"the export writes models of one input of raw pixels of a known shape and one "
            f"output; model '.*' has {problem}. Serve it as ssm_keras.bake")):
        formats.check_exportable(build())
    for dtype in ("float32", "uint8"):
        formats.check_exportable(keras.Sequential([
            keras.Input((28, 28, 1), dtype=dtype), keras.layers.Flatten(),
            keras.layers.Dense(10)]))
