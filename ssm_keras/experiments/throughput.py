"""Training and inference throughput: masked models against plain Keras
(the measurements of `ssm_keras.cli.benchmark`; its settings are
`config.BenchmarkConfig`).

For every architecture the signed-supermask model and the plain Keras model
of the same architecture (`models.build_architecture(arch, masked=True/False)`; for
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
step costs in plain steps (the target: at most 1.05). `paired_step_time_ratio`,
the median over window pairs of masked seconds / plain seconds, is less
sensitive to a load that changes during the run.

`mask_fraction_of_plain_step` is the mask's own arithmetic in plain steps
(`arithmetic.mask_seconds_per_step` over the plain step's seconds), so
`1 + mask_fraction_of_plain_step` is the lowest `step_time_ratio` this
implementation of the mask can reach.

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

The arithmetic ceiling is `peak GFLOP/s / training GFLOP per image`
(`ssm_keras.experiments.arithmetic`), the peak measured in the same run by a matmul of
`n = --matmul_size` in each policy's compute dtype; `--peak_gflops` replaces
the measured peak of every precision. The load averages are recorded at
start and end.

Inference: images/s of the baked export (`baking.bake`, stock Keras layers)
and of the masked model, each called as a `tf.function` on the batch, median
of `--windows` windows of about `min(--window_seconds, 2)` seconds
(`measurement.images_per_second`).
"""

import dataclasses
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import ssm_keras
from ssm_keras import data, models
from ssm_keras.experiments import arithmetic, measurement
from ssm_keras.experiments.config import BenchmarkError
from ssm_keras.training import config as ssm_config
from ssm_keras.training import trainer
from ssm_keras.transforms import baking

MAX_STEPS_PER_EXECUTION = 64


# Models and data.
def default_dataset(arch):
    """MNIST shapes for the FCN, CIFAR-10 shapes for every conv net."""
    return "mnist" if arch == "fcn" else "cifar10"


def is_application(name):
    """Whether `name` is a model of `keras.applications` (e.g. `MobileNetV2`)."""
    return name[:1].isupper() and callable(getattr(keras.applications, name, None))


def train_config(arch, masked, settings, precision="float32"):
    """The `TrainConfig` of one benchmarked model (the flagfiles' recipes)
    under the dtype policy `precision`; a `keras.applications` model trains
    with the conv nets' recipe. `build` sets its steps per execution."""
    return ssm_config.TrainConfig(
        arch="conv4" if is_application(arch) else arch,
        dataset=default_dataset(arch),
        regime="mask" if masked else "weights",
        weight_init="elus" if masked else "elu",
        width=settings.width,
        batch_size=settings.batch_size,
        learning_rate=0.05 if masked else 0.01,
        jit_compile=settings.jit_compile,
        mixed_precision=precision,
    )


def check_application(name):
    """Raises `BenchmarkError` if `keras.applications.<name>` cannot be built
    for the images it is benchmarked on (e.g. InceptionV3 needs at least
    75x75 pixels) or cannot be masked (`ssm_keras.supermask` refuses, e.g.,
    the SeparableConv2D layers of NASNet)."""
    spec = data.DATASETS[default_dataset(name)]
    try:
        ssm_keras.supermask(getattr(keras.applications, name)(
            weights=None, input_shape=spec.image_shape, classes=spec.num_classes))
    except ValueError as error:
        raise BenchmarkError(f"--archs: {name} cannot be benchmarked on {spec.name} images "
                             f"of shape {spec.image_shape} ({error})") from None
    finally:
        keras.utils.clear_session()


def build_application(name, config, spec):
    """`keras.applications.<name>` with `weights=None` for images of `spec`:
    plain, or through `ssm_keras.supermask` as `config` says."""
    plain = getattr(keras.applications, name)(
        weights=None, input_shape=spec.image_shape, classes=spec.num_classes)
    if not config.masked:
        return plain
    return ssm_keras.supermask(plain, config.mask_kind, kernel_initializer=config.weight_init,
                               init_factor=config.init_factor if config.weight_init == "elus"
                               else None, seed=config.seed)


def build(arch, config, steps_per_execution):
    """The compiled model of `arch` and `config` with `steps_per_execution`
    steps per call, built and compiled under `config.mixed_precision` (as in
    training: the policy is global while Keras builds and compiles)."""
    config = dataclasses.replace(config, steps_per_execution=steps_per_execution)
    spec = data.DATASETS[config.dataset]
    with trainer.global_dtype_policy(config.mixed_precision):
        if is_application(arch):
            model = build_application(arch, config, spec)
        else:
            model = trainer.build_model(config, spec)
        trainer.compile_model(model, config, steps_per_epoch=1000)
    return model


def synthetic_batch(spec, batch_size, seed=0):
    """Raw-pixel float32 images (integers in [0, 255]) and int64 labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, *spec.image_shape)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, batch_size).astype(np.int64)
    return images, labels


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


def measure_training(arch, settings, batch, precision):
    """Interleaved training windows of the masked and the plain model."""
    configs = {name: train_config(arch, name == "masked", settings, precision)
               for name in ("masked", "plain")}
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    spe = settings.steps_per_execution
    if spe == 0:
        probe = build(arch, configs["masked"], 1)
        train_window(probe, dataset, 2)  # traces
        spe = choose_steps_per_execution(train_window(probe, dataset, 3) / 3,
                                         settings.execution_seconds)
    trained = {name: build(arch, config, spe) for name, config in configs.items()}
    for model in trained.values():
        train_window(model, dataset, spe)  # traces
    step_seconds = train_window(trained["masked"], dataset, 2 * spe) / (2 * spe)
    steps = settings.window_steps or window_steps_for(step_seconds, spe, settings.window_seconds)
    seconds = {name: [] for name in trained}
    for window in range(settings.windows):
        order = ("masked", "plain") if window % 2 == 0 else ("plain", "masked")
        for name in order:
            seconds[name].append(train_window(trained[name], dataset, steps))
    speed = {name: median_images_per_second(s, steps, settings.batch_size)
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


def measure_inference(model, images, windows, window_seconds):
    """Median images/s of `model(images)` as a `tf.function`, after warm-up
    (`measurement.images_per_second`)."""
    infer = tf.function(lambda x: model(x, training=False))
    return measurement.images_per_second(lambda batch: infer(batch).numpy(),
                                         tf.constant(images), windows, window_seconds)


def benchmark_arch(arch, settings, precision, peaks):
    """Training and inference throughput of one architecture under the dtype
    policy `precision`; `peaks` as `arithmetic.measured_peaks` returns them."""
    spec = data.DATASETS[default_dataset(arch)]
    batch = synthetic_batch(spec, settings.batch_size)
    trained, train = measure_training(arch, settings, batch, precision)
    gflop = arithmetic.training_gflop_per_image(trained["plain"])
    peak, peak_source = arithmetic.peak_for(precision, peaks, settings.peak_gflops,
                                            settings.matmul_size)
    ceiling = peak / gflop
    masked = trained["masked"]
    plain_step = settings.batch_size / train["plain"]["images_per_s"]
    mask_seconds = arithmetic.mask_seconds_per_step(masked, precision)
    inference_seconds = min(settings.window_seconds, 2.0)
    return {
        "arch": arch,
        "precision": precision,
        "data": f"synthetic, {spec.name} shapes",
        "input_shape": list(spec.image_shape),
        "batch_size": settings.batch_size,
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
                baking.bake(masked), batch[0], settings.windows, inference_seconds),
            "masked_images_per_s": measure_inference(
                masked, batch[0], settings.windows, inference_seconds),
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


def run(settings):
    """Benchmarks every architecture of `settings.archs` under every precision of
    `settings.precisions`; returns the JSON dict."""
    machine = measurement.machine_info()
    peaks = arithmetic.measured_peaks(settings.precision_names(), settings.matmul_size)
    machine["matmul_gflops"] = peaks
    recorded = {**dataclasses.asdict(settings), "archs": settings.arch_names(),
                "precisions": settings.precision_names()}
    records = []
    for arch in settings.arch_names():
        for precision in settings.precision_names():
            keras.utils.clear_session()
            records.append(benchmark_arch(arch, settings, precision, peaks))
    add_speedups(records)
    return {"machine": measurement.finish_machine_info(machine), "settings": recorded,
            "results": records}
