"""The choice lists of the package's settings, each defined once.

The modules that implement a choice (`masking`, `layers`, `losses`,
`models`, `initializers`, `training`) and the settings that check the
flags (`training.config` and the other `config` modules) take the names
from here; this module imports nothing, so a command lists and checks its
choices without TensorFlow. Tests check that every implementation covers
its list. The export formats are registered by name in
`exporting.formats`; `EXPORT_FORMATS` repeats the built-in ones for the
help of `--formats`, and a test checks that the two agree. (Data sets and
augmentations are listed in `data.specs`.)
"""

# Mask kinds (`masking`): threshold masks compare |s| (or s) with tau, top-k
# masks keep a fixed fraction of each layer.
MASK_KINDS = ("signed", "binary", "bernoulli", "topk", "signed_topk")
THRESHOLD_KINDS = ("signed", "binary")
TOPK_KINDS = ("topk", "signed_topk")


def all_hidden_by_zero_scores(kind):
    """Why scores that start at zero cannot train a threshold mask of `kind`:
    the refusal of `--score_init=zeros` and of `score_initializer="zeros"`."""
    return (f"hides every weight of a {kind} mask (its threshold, tau_fraction * max|s|, "
            "is 0) and no gradient reaches the scores of a net without weights")


# The settings that shape a mask's start, and the mask kinds that use each.
MASK_SHAPE_USERS = {"tau_fraction": THRESHOLD_KINDS, "density": TOPK_KINDS}
# How a `bernoulli` mask evaluates: its rounded mean, or a fresh sample.
BERNOULLI_EVAL_MODES = ("expected", "sample")
# The initialiser of the scores of each mask kind (`layers`), unless `--score_init` names one.
DEFAULT_SCORE_INITIALIZERS = {
    "signed": "glorot_uniform",
    "binary": "glorot_uniform",
    "bernoulli": "zeros",
    "topk": "he_uniform",
    "signed_topk": "he_uniform",
}

# What trains: the mask, the weights (a plain model), or the weights under a
# frozen mask. A masked layer has the regimes but `weights`.
REGIMES = ("mask", "weights", "mask_then_weights")
MASKED_REGIMES = tuple(regime for regime in REGIMES if regime != "weights")

ARCHITECTURES = ("fcn", "conv2", "conv4", "conv6", "conv8", "resnet20", "resnet32",
                 "resnet44", "resnet56", "resnet110", "wrn28")
ACTIVATIONS = ("elu", "relu", "gelu", "swish", "tanh", "sigmoid")
# The project's own weight initialisers; any Keras initialiser name works too.
INITIALIZERS = ("elus", "elu", "signed_kaiming_constant")

LOSSES = ("crossentropy", "clipped_crossentropy")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("exponential", "constant", "cosine", "plateau")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# The export formats (`exporting.formats.FORMATS`), and those written when none are named.
EXPORT_FORMATS = ("keras", "saved_model", "compact", "tflite", "tflite_dynamic", "tflite_sparse",
                  "onnx")
DEFAULT_EXPORT_FORMATS = ("keras", "saved_model", "compact")
