"""TensorFlow Lite files of a baked model, and the check that they agree with it.

Each of `KINDS` is converted by TensorFlow's own converter from the
SavedModel that `exporting.save_saved_model` writes, so each has its `serve`
signature (uint8 `images` in, float32 `probabilities` out):

| kind             | converter setting                  | weights stored as                   |
| ---------------- | ---------------------------------- | ----------------------------------- |
| `tflite`         | none                               | float32, dense                      |
| `tflite_dynamic` | `Optimize.DEFAULT` (dynamic range) | int8 with a float scale per channel |
| `tflite_sparse`  | `Optimize.EXPERIMENTAL_SPARSITY`   | float32, sparse (non-zeros + index) |

`check_agreement` runs a file in the TFLite interpreter and refuses it unless

    max |p_tflite - p_keras| <= TOLERANCE[kind]

(float32 round-off for the float formats; `tflite_dynamic` also quantises
each layer's input activations to int8 on the fly). What the formats store
and how far they differ, measured: docs/export.md.
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
    """A `tf.lite.Interpreter` of a file, its tensors allocated.

    `tf.lite.Interpreter` warns that it moves to the `ai_edge_litert`
    package; it still ships with TensorFlow, and the warning is not shown.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lite = tf.lite.Interpreter(model_path=str(model_path), num_threads=num_threads)
    lite.allocate_tensors()
    return lite


def predict(model_path, images, batch_size=256, num_threads=None):
    """The `probabilities` of a TFLite file for uint8 `images`, in batches."""
    runner = interpreter(model_path, num_threads).get_signature_runner(SIGNATURE)
    images = np.asarray(images, np.uint8)
    return np.concatenate([
        runner(images=images[start:start + batch_size])["probabilities"]
        for start in range(0, len(images), batch_size)
    ])


def check_images(input_shape, count=64, seed=0):
    """`count` uint8 images of `input_shape`, uniform in [0, 255], fixed by `seed`."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *input_shape)).astype(np.uint8)


def check_agreement(model_path, baked, kind, images):
    """The largest `|p_tflite - p_keras|` over `images`.

    Raises:
        TFLiteError: it exceeds `TOLERANCE[kind]`.
    """
    expected = np.asarray(baked(images.astype(np.float32), training=False))
    difference = float(np.max(np.abs(predict(model_path, images) - expected)))
    if not difference <= TOLERANCE[kind]:  # also refuses NaN
        raise TFLiteError(
            f"the {kind} file disagrees with the baked model: its probabilities differ by up "
            f"to {difference:.3g} on {len(images)} check images, more than the tolerance "
            f"{TOLERANCE[kind]:g}; nothing was exported"
        )
    return difference
