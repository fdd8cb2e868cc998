"""TensorFlow Lite files of a baked model, and the check that they agree with it.

Each of `KINDS` is converted by TensorFlow's own converter from the
SavedModel that `formats.save_saved_model` writes, so each has its `serve`
signature (uint8 `images` in, float32 `probabilities` out):

| kind             | converter setting                  | weights stored as                   |
| ---------------- | ---------------------------------- | ----------------------------------- |
| `tflite`         | none                               | float32, dense                      |
| `tflite_dynamic` | `Optimize.DEFAULT` (dynamic range) | int8 with a float scale per channel |
| `tflite_sparse`  | `Optimize.EXPERIMENTAL_SPARSITY`   | float32, sparse (non-zeros + index) |

Every export runs each file (`predictor`) and refuses it unless

    max |p_tflite - p_keras| <= TOLERANCE[kind]

(float32 round-off for the float formats; `tflite_dynamic` also quantises
each layer's input activations to int8 on the fly; `formats.check_agreement`).
What the formats store and how far they differ, measured: docs/export.md.
"""

import warnings

import numpy as np
import tensorflow as tf

from ssm_keras.errors import ExportError

SIGNATURE = "serve"
KINDS = ("tflite", "tflite_dynamic", "tflite_sparse")
_OPTIMIZATIONS = {
    "tflite": [],
    "tflite_dynamic": [tf.lite.Optimize.DEFAULT],
    "tflite_sparse": [tf.lite.Optimize.EXPERIMENTAL_SPARSITY],
}
TOLERANCE = {"tflite": 1e-5, "tflite_dynamic": 0.1, "tflite_sparse": 1e-5}
OUTPUTS = {"tflite": "model.tflite", "tflite_dynamic": "model_dynamic.tflite",
           "tflite_sparse": "model_sparse.tflite"}
RUNTIMES = {"tflite": "TFLite float32", "tflite_dynamic": "TFLite dynamic-range int8",
            "tflite_sparse": "TFLite sparse"}
# Measured with TensorFlow 2.21 and LiteRT: a sparse fully-connected layer
# of 1 or 2 inputs gave probabilities off by up to 0.9, of 3 by 0.018, of
# 4 and more within round-off. Removing dead units can leave one that narrow.
KNOWN_ERRORS = {"tflite_sparse": (
    "TFLite's sparse kernels compute a dense layer of fewer than 4 inputs wrongly; where dead-unit "
    "removal left one, --noprune_dead_units keeps its units, and --formats=tflite stores it "
    "dense")}


class TFLiteError(ExportError):
    """A model that does not convert, or a TFLite file that disagrees with it."""


def convert(saved_model_dir, kind):
    """The bytes of a `kind` TFLite file of the SavedModel's `serve` signature.

    Raises:
        TFLiteError: the converter fails (e.g. an op TFLite lacks).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[SIGNATURE]
    )
    converter.optimizations = _OPTIMIZATIONS[kind]
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError and plain Exception
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TFLiteError(f"the TFLite converter cannot make {kind} ({first_line})") from None


def interpreter(model_path, num_threads=None):
    """An interpreter of a TFLite file, its tensors allocated: LiteRT's
    (`ai_edge_litert`, `pip install ssm_keras[litert]`), TensorFlow Lite's
    successor, where it is installed; else `tf.lite.Interpreter`, which
    still ships with TensorFlow (its warning that it moves to LiteRT is not
    shown). Both compute the same probabilities on the project's files."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            lite = tf.lite.Interpreter(model_path=str(model_path), num_threads=num_threads)
    else:
        lite = Interpreter(model_path=str(model_path), num_threads=num_threads)
    lite.allocate_tensors()
    return lite


def predictor(model_path, num_threads=None):
    """`predict(uint8 images)` -> probabilities of a TFLite file: calls of one
    interpreter, its input resized whenever the batch size changes."""
    lite = interpreter(model_path, num_threads)
    (image_input,), (output,) = lite.get_input_details(), lite.get_output_details()
    shape = [tuple(image_input["shape"])]

    def predict(images):
        images = np.asarray(images, np.uint8)
        if images.shape != shape[0]:
            lite.resize_tensor_input(image_input["index"], images.shape)
            lite.allocate_tensors()
            shape[0] = images.shape
        lite.set_tensor(image_input["index"], images)
        lite.invoke()
        return lite.get_tensor(output["index"])

    return predict
