"""Training and inference throughput: masked models against plain Keras.

    python scripts/benchmark.py                          # fcn, conv2, conv4, batch 128
    python scripts/benchmark.py --archs=conv6,resnet20 --out=bench.json
    python scripts/benchmark.py --archs=fcn --quick      # seconds (the tests use it)
    python scripts/benchmark.py --archs=MobileNetV2      # any keras.applications model

For every architecture the signed-supermask model and the plain Keras model
of the same architecture (`models.build_model(arch, masked=True/False)`; for
a `keras.applications` model, the model with `weights=None` at CIFAR-10's
32x32 and it through `ssm_keras.supermask`) are
compiled as `ssm_keras.training` compiles them (SGD, Nesterov momentum,
decoupled weight decay, smooth exponential decay) and trained on one
synthetic batch of raw pixels held in memory (`Dataset.from_tensors(batch)
.repeat()`), so the input pipeline is not measured.

Timing: one window is `window_steps` training steps run by `model.fit`
(one epoch), timed from `on_epoch_begin` to `on_epoch_end` by a callback.
After a warm-up window per model (tracing) and one more for the masked
model (the step time that sizes the windows), the windows alternate masked,
plain, plain, masked, ... so that both see the same machine load; each
model's throughput is the median over its windows of

    images/s = window_steps * batch_size / window seconds,

and `step_time_ratio = plain images/s / masked images/s` is what a masked
step costs in plain steps (issue 6's target: at most 1.05). `paired_step_time_ratio`,
the median over window pairs of masked seconds / plain seconds, is less
sensitive to a load that changes during the run.

`mask_fraction_of_plain_step` is the mask's own arithmetic in plain steps:
the seconds per step of the fused forward `W = W0 * m(s)` and the score
gradient `dL/ds = dL/dW * W0` of every masked layer, run alone in a loop
(`mask_seconds_per_step`), over the plain step's seconds. These two
element-wise passes over each kernel are what a masked step must do on top
of a plain one, so `1 + mask_fraction_of_plain_step` is the lowest
`step_time_ratio` this implementation of the mask can reach.

`--steps_per_execution=0` (the default) picks it per architecture: the
largest power of two up to 64 whose execution of steps lasts at most
`--execution_seconds`, from the masked model's step time with one step per
execution. Small models such as the FCN are bound by the per-call overhead
of Keras and TensorFlow; many steps per call remove it. `--window_steps=0`
makes each window last about `--window_seconds`.

`--precisions` benchmarks each architecture under each Keras dtype policy
(`float32`, `mixed_bfloat16`, `mixed_float16`: variables, scores and masks
in float32, layers computing in the low precision, loss scaling for
float16) and reports each mixed policy's speed-up over float32.

The arithmetic ceiling is `peak GFLOP/s / training GFLOP per image`. A
dense or convolution layer's forward pass costs `F = 2 * prod(kernel shape)
* output positions` FLOP; training costs `3 F` per layer (forward, input
gradient, kernel gradient) except `2 F` for the first one, whose input
gradient is never computed. The peak is measured in the same run: the best
of `2 n^3 / t` over repeated `n x n` matmuls (`n = --matmul_size`) in the
policy's compute dtype (float32, bfloat16 or float16), on the device the
models train on: a large matmul is the densest arithmetic TensorFlow runs,
so its rate stands in for the processor's peak under its present load.
`--peak_gflops` replaces the measured peak of every precision. The load
averages are recorded at start and end.

Inference: images/s of the baked export (`baking.bake`, stock Keras layers)
and of the masked model, each called as a `tf.function` on the batch, median
of `--windows` windows.

Import `ssm_keras` before TensorFlow, as here, so that its CPU settings
apply. Writes `--out` (JSON: machine, settings, every training window) and,
beside it, the markdown table it prints (`.md`); refuses to replace them
unless given `--overwrite`.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ssm_keras  # noqa: E402  (first: its CPU settings precede TensorFlow)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ssm_keras import baking, choices, data, masking, models, training  # noqa: E402
from ssm_keras import config as ssm_config  # noqa: E402
from ssm_keras import layers as ssm_layers  # noqa: E402

DEFAULT_ARCHS = "fcn,conv2,conv4"
MAX_STEPS_PER_EXECUTION = 64
QUICK = {"windows": 2, "window_seconds": 0.2, "execution_seconds": 0.05, "window_steps": 0,
         "matmul_size": 256}
ENV_KEYS = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
            "OMP_NUM_THREADS", "KERAS_BACKEND")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default=DEFAULT_ARCHS,
                        help="comma-separated architectures of models.ARCHITECTURES or "
                             "keras.applications models (MobileNetV2, ...)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps_per_execution", type=int, default=0,
                        help="training steps per call into TensorFlow; 0: per architecture")
    parser.add_argument("--execution_seconds", type=float, default=0.25,
                        help="longest execution when --steps_per_execution=0")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per model")
    parser.add_argument("--window_steps", type=int, default=0,
                        help="training steps per window; 0: about --window_seconds")
    parser.add_argument("--window_seconds", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=None, help="width multiplier")
    parser.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile steps with XLA (default: as training, Keras decides: "
                             "on with a GPU or TPU, off on CPUs)")
    parser.add_argument("--precisions", default="float32",
                        help="comma-separated dtype policies of "
                             f"{', '.join(choices.PRECISIONS)}")
    parser.add_argument("--peak_gflops", type=float, default=None,
                        help="the peak GFLOP/s for the arithmetic ceiling of every precision "
                             "(default: measured in this run, by a matmul in each "
                             "precision's compute dtype)")
    parser.add_argument("--matmul_size", type=int, default=2048,
                        help="n of the n^3 matmul that measures the peak GFLOP/s")
    add_report_arguments(parser, "benchmark.json", QUICK)
    args = parse_with_quick(parser, argv, QUICK)
    args.archs = [arch.strip() for arch in args.archs.split(",") if arch.strip()]
    if not args.archs:
        parser.error("--archs is empty; give comma-separated architectures")
    args.precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    if not args.precisions:
        parser.error("--precisions is empty; give comma-separated dtype policies of "
                     f"{', '.join(choices.PRECISIONS)}")
    for precision in args.precisions:
        if precision not in choices.PRECISIONS:
            parser.error(f"--precisions: {precision!r} is not one of "
                         f"{', '.join(choices.PRECISIONS)}")
    for arch in args.archs:
        if arch not in models.ARCHITECTURES and not is_application(arch):
            parser.error(f"--archs: {arch!r} is neither an architecture of "
                         f"{', '.join(models.ARCHITECTURES)} nor a keras.applications model")
    minimum = {"batch_size": 1, "windows": 1, "steps_per_execution": 0, "window_steps": 0,
               "execution_seconds": 1e-9, "window_seconds": 1e-9, "matmul_size": 1}
    for name, lowest in minimum.items():
        if getattr(args, name) < lowest:
            parser.error(f"--{name}={getattr(args, name)}: must be at least {lowest}")
    for name in ("width", "peak_gflops"):
        if getattr(args, name) is not None and not getattr(args, name) > 0:  # NaN too
            parser.error(f"--{name}={getattr(args, name)}: must be positive")
    check_report_arguments(parser, args)
    return args


# The report files (shared with `benchmark_inference.py`).
def add_report_arguments(parser, default_out, quick):
    """`--out`, `--overwrite` and `--quick` (whose settings are `quick`)."""
    parser.add_argument("--out", default=default_out,
                        help="JSON file to write; the table goes to the same name with .md")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out (and its .md) if they exist")
    parser.add_argument("--quick", action="store_true",
                        help="tiny windows (tests): " + json.dumps(quick))


def parse_with_quick(parser, argv, quick):
    """Parses `argv`; with `--quick`, the settings of `quick` replace those given."""
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    return args


def check_report_arguments(parser, args):
    """Refuses an `--out` that names the table, lies in no folder, or exists
    without `--overwrite`."""
    if os.path.splitext(args.out)[1] == ".md":
        parser.error(f"--out={args.out}: give the JSON file's name; the table goes beside it")
    if not os.path.isdir(os.path.dirname(args.out) or "."):
        parser.error(f"--out={args.out}: no folder {os.path.dirname(args.out)}")
    existing = [path for path in output_paths(args.out) if os.path.exists(path)]
    if existing and not args.overwrite:
        parser.error(f"{', '.join(existing)} exists; choose another --out or pass --overwrite")


def output_paths(out):
    """The JSON report and, beside it, the markdown table."""
    return out, os.path.splitext(out)[0] + ".md"


def write_report(out, report, text):
    """Writes `report` to `out` and `text` beside it (`.md`), and prints `text`."""
    json_path, table_path = output_paths(out)
    with open(json_path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    with open(table_path, "w", encoding="utf-8") as file:
        file.write(text)
    print(text + f"wrote {json_path} and {table_path}")


# The machine.
# CPU features that decide which kernels TensorFlow can use: vector width,
# and the fast bfloat16 / float16 paths (AVX-512 BF16 dot products, AMX tiles).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def _first_cpuinfo_entry():
    """`/proc/cpuinfo`'s fields for the first processor ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info():
    """Model name, family/model/stepping (which name a processor generation
    when the name does not, e.g. "AMD EPYC" in a virtual machine) and the
    `CPU_FEATURES` present."""
    fields = _first_cpuinfo_entry()
    present = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": {key.replace(" ", "_"): fields.get(key) for key in
                   ("vendor_id", "cpu family", "model", "stepping")},
        "cpu_flags": [flag for flag in CPU_FEATURES if flag in present],
    }


def matmul_gflops(size=2048, dtype="float32", repeats=5):
    """GFLOP/s of a `size`^3 matmul in `dtype`, best of `repeats`: `2 n^3 / t`."""
    a = tf.cast(tf.random.stateless_normal((size, size), seed=(0, 0)), dtype)
    product = tf.function(lambda x: tf.matmul(x, x))
    product(a).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def machine_info():
    """CPU, cores, load, TensorFlow and Keras versions, devices, settings."""
    return {
        **cpu_info(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [device.name for device in tf.config.list_logical_devices()],
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "environment": {key: os.environ.get(key) for key in ENV_KEYS},
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


# Models and data.
def default_dataset(arch):
    """MNIST shapes for the FCN, CIFAR-10 shapes for every conv net."""
    return "mnist" if arch == "fcn" else "cifar10"


def is_application(name):
    """Whether `name` is a model of `keras.applications` (e.g. `MobileNetV2`)."""
    return name[:1].isupper() and callable(getattr(keras.applications, name, None))


def train_config(arch, masked, args, precision="float32"):
    """The `TrainConfig` of one benchmarked model (the flagfiles' recipes)
    under the dtype policy `precision`; a `keras.applications` model trains
    with the conv nets' recipe."""
    return ssm_config.TrainConfig(
        arch="conv4" if is_application(arch) else arch,
        dataset=default_dataset(arch),
        regime="mask" if masked else "weights",
        weight_init="elus" if masked else "elu",
        width=args.width,
        batch_size=args.batch_size,
        learning_rate=0.05 if masked else 0.01,
        jit_compile=args.jit_compile,
        steps_per_execution=max(args.steps_per_execution, 1),
        mixed_precision=precision,
    )


def build_application(name, config, spec):
    """`keras.applications.<name>` with `weights=None` for images of `spec`:
    plain, or through `ssm_keras.supermask` as `config` says."""
    plain = getattr(keras.applications, name)(
        weights=None, input_shape=spec.image_shape, classes=spec.num_classes)
    if not config.masked:
        return plain
    return ssm_keras.supermask(plain, config.mask_kind, kernel_initializer=config.weight_init,
                               init_factor=config.init_factor, seed=config.seed)


def build(arch, config, steps_per_execution):
    """The compiled model of `arch` and `config` with `steps_per_execution`
    steps per call, built and compiled under `config.mixed_precision` (as in
    training: the policy is global while Keras builds and compiles)."""
    spec = data.DATASETS[config.dataset]
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    try:
        if is_application(arch):
            model = build_application(arch, config, spec)
        else:
            model = training.build_model(config, spec)
        config.steps_per_execution = steps_per_execution
        training.compile_model(model, config, steps_per_epoch=1000)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def synthetic_batch(spec, batch_size, seed=0):
    """Raw-pixel float32 images (integers in [0, 255]) and int64 labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, *spec.image_shape)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, batch_size).astype(np.int64)
    return images, labels


def training_gflop_per_image(model):
    """Training GFLOP per image of the dense and convolution layers:
    `sum(3 F) - F_first`, where `F = 2 * prod(kernel shape) * prod(output
    shape[1:-1])` is a layer's forward FLOP and the first layer computes no
    input gradient.
    """
    kernel_layers = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                     keras.layers.DepthwiseConv2D, ssm_layers.MaskedLayer)
    forward = [
        2 * math.prod(layer.kernel.shape) * math.prod(layer.output.shape[1:-1])
        for layer in ssm_layers.find_layers(model, kernel_layers)
    ]
    return (3 * sum(forward) - forward[0]) / 1e9


def compute_dtype(precision):
    """The dtype layers compute in under the policy `precision`."""
    return keras.DTypePolicy(precision).compute_dtype


def measured_peaks(args):
    """`{compute dtype: GFLOP/s}` of the matmul in each precision's compute dtype."""
    dtypes = sorted({compute_dtype(precision) for precision in args.precisions})
    return {dtype: matmul_gflops(args.matmul_size, dtype) for dtype in dtypes}


def peak_for(precision, peaks, args):
    """The peak GFLOP/s of `precision`'s ceiling and where it came from."""
    if args.peak_gflops is not None:
        return args.peak_gflops, "--peak_gflops"
    dtype = compute_dtype(precision)
    return peaks[dtype], f"measured: {dtype} {args.matmul_size}^3 matmul"


# Timing.
class WindowTimer(keras.callbacks.Callback):
    """Seconds from the start to the end of each epoch (a timing window)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train_window(model, dataset, steps):
    """Seconds of `steps` training steps of `model` (one `fit` epoch)."""
    timer = WindowTimer()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer],
              shuffle=False)
    return timer.seconds[0]


def choose_steps_per_execution(step_seconds, execution_seconds):
    """The largest power of two `k <= 64` with `k * step_seconds <= execution_seconds`."""
    k = 1
    while 2 * k <= MAX_STEPS_PER_EXECUTION and 2 * k * step_seconds <= execution_seconds:
        k *= 2
    return k


def window_steps_for(step_seconds, steps_per_execution, window_seconds):
    """A multiple of `steps_per_execution` that lasts about `window_seconds`."""
    executions = round(window_seconds / (step_seconds * steps_per_execution))
    return steps_per_execution * max(1, executions)


def median_images_per_second(seconds, steps, batch_size):
    """The median over windows of `steps * batch_size / seconds`."""
    return statistics.median(steps * batch_size / s for s in seconds)


def measure_training(arch, args, batch, precision):
    """Interleaved training windows of the masked and the plain model."""
    configs = {name: train_config(arch, name == "masked", args, precision)
               for name in ("masked", "plain")}
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    spe = args.steps_per_execution
    if spe == 0:
        probe = build(arch, configs["masked"], 1)
        train_window(probe, dataset, 2)  # traces
        spe = choose_steps_per_execution(train_window(probe, dataset, 3) / 3,
                                         args.execution_seconds)
    trained = {name: build(arch, config, spe) for name, config in configs.items()}
    for model in trained.values():
        train_window(model, dataset, spe)  # traces
    step_seconds = train_window(trained["masked"], dataset, 2 * spe) / (2 * spe)
    steps = args.window_steps or window_steps_for(step_seconds, spe, args.window_seconds)
    seconds = {name: [] for name in trained}
    for window in range(args.windows):
        order = ("masked", "plain") if window % 2 == 0 else ("plain", "masked")
        for name in order:
            seconds[name].append(train_window(trained[name], dataset, steps))
    speed = {name: median_images_per_second(s, steps, args.batch_size)
             for name, s in seconds.items()}
    return trained, {
        "steps_per_execution": spe,
        "jit_compile": bool(trained["masked"].jit_compile),
        "window_steps": steps,
        "masked": {"images_per_s": speed["masked"], "window_seconds": seconds["masked"]},
        "plain": {"images_per_s": speed["plain"], "window_seconds": seconds["plain"]},
        "step_time_ratio": speed["plain"] / speed["masked"],
        "paired_step_time_ratio": statistics.median(
            masked / plain for masked, plain in zip(seconds["masked"], seconds["plain"])),
    }


def _mask_loop(layers, dtype, iterations, with_mask):
    """A `tf.function` running `iterations` times, for every layer, the
    forward `W = W0 * m(s)` and backward `dL/ds = dL/dW * W0` of the fused
    threshold mask (`with_mask`), or only what the loop itself costs: shifting
    the scores by the iteration (so that nothing is hoisted out of the loop)
    and summing `W0` and `dL/dW` (the reductions that consume the results)."""
    tensors = [(tf.cast(layer.kernel.value, dtype),
                tf.convert_to_tensor(layer.scores.value), layer.threshold.value,
                tf.ones(layer.kernel.shape, dtype), layer.mask_kind) for layer in layers]

    def iteration(shift):
        total = tf.constant(0.0)
        for kernel, scores, threshold, upstream, kind in tensors:
            scores = scores + shift
            if not with_mask:
                total += tf.reduce_sum(tf.cast(kernel, tf.float32) + scores)
                total += tf.reduce_sum(tf.cast(upstream, tf.float32))
                continue
            with tf.GradientTape() as tape:
                tape.watch(scores)
                masked = masking.threshold_masked_kernel(kind, kernel, scores, threshold,
                                                         frozen_kernel=True)
            score_gradient = tape.gradient(masked, scores, output_gradients=upstream)
            total += tf.reduce_sum(tf.cast(masked, tf.float32) + score_gradient)
        return total

    @tf.function
    def loop():
        total = tf.constant(0.0)
        for step in tf.range(iterations):
            total += iteration(tf.cast(step, tf.float32) * 1e-12)
        return total

    return loop


def mask_seconds_per_step(model, precision, iterations=200, repeats=3):
    """Seconds per training step of the mask's own arithmetic in `model`: the
    fused forward and the score gradient of every masked layer (the two
    element-wise passes over its kernel that a plain step does not make),
    timed in a loop of `iterations` and less the loop's own cost; best of
    `repeats`. None for masks without a fused threshold kernel."""
    layers = ssm_layers.masked_layers(model)
    if not all(layer.mask_kind in choices.THRESHOLD_KINDS for layer in layers):
        return None
    dtype = compute_dtype(precision)
    seconds = {}
    for with_mask in (True, False):
        loop = _mask_loop(layers, dtype, iterations, with_mask)
        loop().numpy()  # traces
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            loop().numpy()
            best = min(best, time.perf_counter() - start)
        seconds[with_mask] = best / iterations
    return max(0.0, seconds[True] - seconds[False])


def measure_inference(model, images, windows, window_seconds):
    """Median images/s of `model(images)` as a `tf.function`, after warm-up."""
    images = tf.constant(images)
    infer = tf.function(lambda x: model(x, training=False))
    infer(images).numpy()  # traces
    start = time.perf_counter()
    infer(images).numpy()
    calls = max(1, round(window_seconds / (time.perf_counter() - start)))
    seconds = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(calls):
            outputs = infer(images)
        outputs.numpy()
        seconds.append(time.perf_counter() - start)
    return median_images_per_second(seconds, calls, len(images))


def benchmark_arch(arch, args, precision, peaks):
    """Training and inference throughput of one architecture under the dtype
    policy `precision`; `peaks` as `measured_peaks` returns them."""
    spec = data.DATASETS[default_dataset(arch)]
    batch = synthetic_batch(spec, args.batch_size)
    trained, train = measure_training(arch, args, batch, precision)
    gflop = training_gflop_per_image(trained["plain"])
    peak, peak_source = peak_for(precision, peaks, args)
    ceiling = peak / gflop
    masked = trained["masked"]
    plain_step = args.batch_size / train["plain"]["images_per_s"]
    mask_seconds = mask_seconds_per_step(masked, precision)
    inference_seconds = min(args.window_seconds, 2.0)
    return {
        "arch": arch,
        "precision": precision,
        "data": f"synthetic, {spec.name} shapes",
        "input_shape": list(spec.image_shape),
        "batch_size": args.batch_size,
        "masked_weights": models.masked_weight_count(masked),
        "training": train,
        "mask_seconds_per_step": mask_seconds,
        "mask_fraction_of_plain_step": mask_seconds and mask_seconds / plain_step,
        "training_gflop_per_image": gflop,
        "peak_gflops": peak,
        "peak_source": peak_source,
        "ceiling_images_per_s": ceiling,
        "masked_fraction_of_ceiling": train["masked"]["images_per_s"] / ceiling,
        "plain_fraction_of_ceiling": train["plain"]["images_per_s"] / ceiling,
        "inference": {
            "baked_images_per_s": measure_inference(
                baking.bake(masked), batch[0], args.windows, inference_seconds),
            "masked_images_per_s": measure_inference(
                masked, batch[0], args.windows, inference_seconds),
        },
    }


def add_speedups(records):
    """Adds to each mixed-precision record its `speedup_over_float32`: its
    masked and plain training images/s over those of the float32 record of
    the same architecture (when one was measured)."""
    float32 = {record["arch"]: record["training"] for record in records
               if record["precision"] == "float32"}
    for record in records:
        reference = float32.get(record["arch"])
        if record["precision"] != "float32" and reference:
            record["speedup_over_float32"] = {
                name: record["training"][name]["images_per_s"] / reference[name]["images_per_s"]
                for name in ("masked", "plain")
            }


def _percent_cell(fraction):
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def _speedup_cell(record):
    speedup = record.get("speedup_over_float32")
    return f"{speedup['masked']:.2f}, {speedup['plain']:.2f}" if speedup else "-"


def format_table(records):
    """The markdown table of `benchmark_arch` records."""
    lines = [
        "| arch | precision | batch | steps/exec | XLA | masked train img/s | plain train img/s "
        "| masked/plain step time (paired) | mask arithmetic, % of plain step "
        "| speed-up over float32 (masked, plain) "
        "| peak GFLOP/s | ceiling img/s | masked, plain % of ceiling "
        "| baked inference img/s | masked inference img/s |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    for record in records:
        train = record["training"]
        lines.append(
            f"| {record['arch']} | {record['precision']} | {record['batch_size']} "
            f"| {train['steps_per_execution']} | {'yes' if train['jit_compile'] else 'no'} "
            f"| {train['masked']['images_per_s']:,.0f} | {train['plain']['images_per_s']:,.0f} "
            f"| {train['step_time_ratio']:.3f} ({train['paired_step_time_ratio']:.3f}) "
            f"| {_percent_cell(record['mask_fraction_of_plain_step'])} "
            f"| {_speedup_cell(record)} | {record['peak_gflops']:,.0f} "
            f"| {record['ceiling_images_per_s']:,.0f} "
            f"| {100 * record['masked_fraction_of_ceiling']:.0f}%, "
            f"{100 * record['plain_fraction_of_ceiling']:.0f}% "
            f"| {record['inference']['baked_images_per_s']:,.0f} "
            f"| {record['inference']['masked_images_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def run(args):
    """Benchmarks every architecture of `args.archs` under every precision of
    `args.precisions`; returns the JSON dict."""
    machine = machine_info()
    peaks = measured_peaks(args)
    machine["matmul_gflops"] = peaks
    settings = {key: value for key, value in vars(args).items() if key != "out"}
    records = []
    for arch in args.archs:
        for precision in args.precisions:
            keras.utils.clear_session()
            records.append(benchmark_arch(arch, args, precision, peaks))
    add_speedups(records)
    machine["load_average_end"] = list(os.getloadavg())
    return {"machine": machine, "settings": settings, "results": records}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    machine = report["machine"]
    cpu_id = machine["cpu_id"]
    matmuls = ", ".join(f"{dtype} {gflops:.0f}" for dtype, gflops in machine["matmul_gflops"].items())
    text = (f"{machine['cpu']} (family {cpu_id['cpu_family']}, model {cpu_id['model']}; "
            f"{' '.join(machine['cpu_flags'])}), {machine['cores']} cores, "
            f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
            f"devices {', '.join(machine['devices'])}, matmul GFLOP/s: {matmuls}, load average "
            f"{machine['load_average'][0]:.2f} -> {machine['load_average_end'][0]:.2f}\n\n"
            + format_table(report["results"]) + "\n")
    write_report(args.out, report, text)
    return report


if __name__ == "__main__":
    main()
