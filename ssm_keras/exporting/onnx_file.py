"""ONNX files of a baked model (`pip install ssm_keras[onnx]`).

`write` converts the baked model's serving function, uint8 `images` cast to
float32 and fed to the model, with `tf2onnx` (opset 15), so that the file
takes the SavedModel's input, uint8 `images` of shape `(None, H, W, C)`, and
returns its output, float32 `probabilities`. `predictor` runs a file in ONNX
Runtime on the CPU. Both compute the float32 network of the baked model: an
export accepts the file if its probabilities differ by at most `TOLERANCE`.
"""

import numpy as np
import tensorflow as tf

from ssm_keras.errors import ExportError

REQUIRES = ("tf2onnx", "onnxruntime")
TOLERANCE = 1e-5
OPSET = 15


def write(baked, path, input_dtype=tf.uint8):
    """Writes the ONNX file of `baked` to `path`; `ExportError` if a layer
    does not convert."""
    import tf2onnx

    spec = tf.TensorSpec((None, *baked.input_shape[1:]), input_dtype, name="images")
    serve = tf.function(
        lambda images: {"probabilities": baked(tf.cast(images, tf.float32), training=False)},
        input_signature=[spec])
    try:
        tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET,
                                      output_path=str(path))
    except Exception as error:  # tf2onnx raises plain exceptions for unsupported ops
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"tf2onnx cannot convert the model to ONNX ({first_line})") from None


def predictor(path, num_threads=None):
    """`predict(uint8 images)` -> probabilities of an ONNX file in ONNX
    Runtime (CPU, `num_threads` intra-op threads, default: ONNX Runtime's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    return lambda images: session.run(["probabilities"],
                                      {"images": np.asarray(images, np.uint8)})[0]
