"""The settings of the experiment commands whose work runs on TensorFlow:
`ssm-evaluate` (`EvaluateSettings`; the work is `evaluation`),
`ssm-benchmark` (`BenchmarkConfig`; `throughput`), `ssm-benchmark-inference`
(`InferenceConfig`; `inference_speed`) and `ssm-initial-logits`
(`InitialLogitsSettings`; `initial_logits`).

Nothing here imports TensorFlow, so a command defines and parses its flags,
and answers `--help`, before TensorFlow loads. Only
`BenchmarkConfig.validate` loads it, to check the `keras.applications`
models of `--archs` (`throughput`).
"""

import dataclasses
import json
import math
import os

from ssm_keras import choices, data, files, pretrained
from ssm_keras.errors import UserError
from ssm_keras.experiments import reports
from ssm_keras.settings import comma_separated, setting
from ssm_keras.training import config as ssm_config
from ssm_keras.training import run_dir


# What the settings of the measurements share.
def _out_setting(default):
    """The `out` setting of a measurement: its JSON report (`default`)."""
    return setting(
        default, "JSON file to write (its folder is made if missing); the table goes to "
        "the same name with .md.")


def _overwrite_setting(also_replaced=""):
    """The `overwrite` setting of a measurement: replace its report files
    (and `also_replaced`)."""
    return setting(False, f"Replace --out (and its .md){also_replaced} if they exist.")


def _quick_setting(quick):
    """The `quick` setting of a measurement: the settings `quick` for those
    not given (for tests)."""
    return setting(
        False, "Tiny windows (tests), for the settings not given: " + json.dumps(quick))


def _check_lowest(settings, error, lowest):
    """Raises `error` naming the first setting of `lowest` (`{name: lowest
    value}`) that is below its lowest value or not finite (NaN or infinite
    seconds would size no window)."""
    for name, least in lowest.items():
        value = getattr(settings, name)
        if not (math.isfinite(value) and value >= least):
            raise error(f"--{name}={value}: must be a finite number, at least {least}")


# ssm-evaluate.
class EvaluationError(UserError):
    """A data set that does not fit the model."""


@dataclasses.dataclass
class EvaluateSettings:
    """The settings of `ssm-evaluate`: one model, a shipped entry or a run,
    and the data it is evaluated on."""

    pretrained: str | None = setting(
        None, "Name of a shipped pretrained model (ssm_keras.pretrained.names()).")
    model_dir: str | None = setting(None, "Finished training run directory.")
    data_dir: str | None = setting(None, "Local copy of the data sets.")
    dataset: str | None = setting(
        None, f"Data set to evaluate on: {', '.join(data.DATASETS)} (default: the one the "
        "model was trained on).")
    batch_size: int = setting(128, "Images per batch.")

    def validate(self):
        """Raises `EvaluationError` unless exactly one model is named and
        the batch size is positive."""
        if (self.pretrained is None) == (self.model_dir is None):
            raise EvaluationError("give one model: --pretrained (a shipped entry) or "
                                  "--model_dir (a finished run)")
        if self.batch_size < 1:
            raise EvaluationError(f"--batch_size={self.batch_size}: must be at least 1")


# ssm-benchmark.
DEFAULT_ARCHS = "fcn,conv2,conv4"

# The settings of `quick`: tiny windows, a few seconds in all.
BENCHMARK_QUICK = {"windows": 2, "window_seconds": 0.2, "execution_seconds": 0.05,
                   "window_steps": 0, "matmul_size": 256}


class BenchmarkError(UserError):
    """A bad setting of `ssm_keras.cli.benchmark`."""


@dataclasses.dataclass
class BenchmarkConfig:
    """The settings of a throughput benchmark; the field names are the
    `ssm_keras.cli.benchmark` flags."""

    archs: str = setting(
        DEFAULT_ARCHS,
        "Comma-separated architectures of models.ARCHITECTURES or keras.applications "
        "models (MobileNetV2, ...).")
    batch_size: int = setting(128, "Images per training step.")
    steps_per_execution: int = setting(
        0, "Training steps per call into TensorFlow; 0: per architecture.")
    execution_seconds: float = setting(
        0.25, "Longest execution when --steps_per_execution=0.")
    windows: int = setting(5, "Timed windows per model.")
    window_steps: int = setting(
        0, "Training steps per window; 0: about --window_seconds.")
    window_seconds: float = setting(5.0, "Seconds of a window when --window_steps=0.")
    width: int | None = setting(
        None, "Width multiplier of the architectures of models.ARCHITECTURES.")
    jit_compile: bool | None = setting(
        None, "Compile steps with XLA (default: as trainer, Keras decides: on with a GPU or "
        "TPU, off on CPUs).")
    precisions: str = setting(
        "float32", f"Comma-separated dtype policies of {', '.join(choices.PRECISIONS)}.")
    peak_gflops: float | None = setting(
        None, "The peak GFLOP/s for the arithmetic ceiling of every precision (default: "
        "measured in this run, by a matmul in each precision's compute dtype).")
    matmul_size: int = setting(
        2048, "n of the n^3 matmul that measures the peak GFLOP/s.")
    out: str = _out_setting("benchmark.json")
    overwrite: bool = _overwrite_setting()
    quick: bool = _quick_setting(BENCHMARK_QUICK)

    def arch_names(self):
        """The architectures of `--archs`."""
        return comma_separated(self.archs)

    def precision_names(self):
        """The dtype policies of `--precisions`."""
        return comma_separated(self.precisions)

    def validate(self):
        """Raises `BenchmarkError` on the first bad setting, naming its value
        (`throughput` checks the `keras.applications` models)."""
        from ssm_keras.experiments.throughput import check_application, is_application

        if not self.arch_names():
            raise BenchmarkError("--archs is empty; give comma-separated architectures")
        if not self.precision_names():
            raise BenchmarkError("--precisions is empty; give comma-separated dtype policies "
                                 f"of {', '.join(choices.PRECISIONS)}")
        for precision in self.precision_names():
            if precision not in choices.PRECISIONS:
                raise BenchmarkError(f"--precisions: {precision!r} is not one of "
                                     f"{', '.join(choices.PRECISIONS)}")
        for arch in self.arch_names():
            if arch not in choices.ARCHITECTURES and not is_application(arch):
                raise BenchmarkError(
                    f"--archs: {arch!r} is neither an architecture of "
                    f"{', '.join(choices.ARCHITECTURES)} nor a keras.applications model")
        _check_lowest(self, BenchmarkError, {
            "batch_size": 1, "windows": 1, "steps_per_execution": 0, "window_steps": 0,
            "execution_seconds": 1e-9, "window_seconds": 1e-9, "matmul_size": 1})
        for name in ("width", "peak_gflops"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:  # NaN too
                raise BenchmarkError(f"--{name}={getattr(self, name)}: must be positive")
        applications = [arch for arch in self.arch_names() if is_application(arch)]
        if self.width is not None and applications:
            raise BenchmarkError(f"--width={self.width}: the keras.applications models of "
                                 f"--archs ({', '.join(applications)}) have no width "
                                 "multiplier; benchmark them without --width")
        for arch in applications:
            check_application(arch)
        reports.check_out(self.out, self.overwrite)


# ssm-benchmark-inference.
# The settings of `quick`: one short window per format.
INFERENCE_QUICK = {"windows": 1, "seconds": 0.05}


class InferenceBenchmarkError(UserError):
    """A bad setting of `ssm_keras.cli.benchmark_inference`."""


@dataclasses.dataclass
class InferenceConfig:
    """The settings of an inference benchmark; the field names are the
    `ssm_keras.cli.benchmark_inference` flags."""

    runs: str | None = setting(None, "Comma-separated finished run directories.")
    pretrained: str | None = setting(
        None, "Comma-separated shipped entries (ssm_keras.pretrained.names()).")
    data_dir: str | None = setting(None, "Local copy of the data sets.")
    work_dir: str | None = setting(
        None, "Folder for the exports, kept, each in <work_dir>/<model name> (default: a "
        "temporary folder, removed at the end); an export there is replaced only with "
        "--overwrite.")
    prune_dead_units: bool = setting(
        True, "Remove dead units from the baked model (as export).")
    windows: int = setting(5, "Throughput windows per format.")
    seconds: float = setting(
        2.0, "Length of each latency measurement and throughput window.")
    tflite_threads: int = setting(os.cpu_count(), "Threads of the TFLite interpreter.")
    out: str = _out_setting("benchmark_inference.json")
    overwrite: bool = _overwrite_setting(" and the exports in --work_dir")
    quick: bool = _quick_setting(INFERENCE_QUICK)

    def run_dirs(self):
        """The run directories of `--runs`."""
        return comma_separated(self.runs)

    def entry_names(self):
        """The shipped entries of `--pretrained`."""
        return comma_separated(self.pretrained)

    def validate(self):
        """Raises `InferenceBenchmarkError` on the first bad setting."""
        if not self.run_dirs() and not self.entry_names():
            raise InferenceBenchmarkError(
                "give --runs (comma-separated finished run directories), --pretrained "
                "(comma-separated shipped entries) or both")
        _check_lowest(self, InferenceBenchmarkError,
                      {"windows": 1, "seconds": 1e-9, "tflite_threads": 1})
        for flag, items in (("runs", [os.path.realpath(path) for path in self.run_dirs()]),
                            ("pretrained", self.entry_names())):
            twice = sorted({item for item in items if items.count(item) > 1})
            if twice:
                raise InferenceBenchmarkError(f"--{flag}: {', '.join(twice)} given more than "
                                              "once; name each once")
        for path in self.run_dirs():
            try:
                run_dir.read_results(path)
            except run_dir.RunDirError as error:
                raise InferenceBenchmarkError(f"--runs: {error}") from None
        for name in self.entry_names():
            try:
                pretrained.path(name)
            except pretrained.PretrainedError as error:
                raise InferenceBenchmarkError(f"--pretrained: {error}") from None
        reports.check_out(self.out, self.overwrite)


# ssm-initial-logits.
class InitialLogitsError(UserError):
    """A bad setting of `ssm-initial-logits`."""


@dataclasses.dataclass
class InitialLogitsSettings:
    """The settings of `ssm-initial-logits`: what to build, on which images,
    and the JSON file to write."""

    archs: str = setting("conv2,conv4,conv6,conv8", "Comma-separated architectures.")
    init_factors: str = setting("6,3", "Comma-separated elus init factors (> 0).")
    seeds: str = setting("0", "Comma-separated seeds (>= 0).")
    examples: int = setting(500, "Training images classified (> 0).")
    dataset: str = setting("cifar10", "The data set.")
    data_dir: str | None = setting(None, "Local copy of the data sets.")
    out: str = setting("initial_logits.json",
                       "JSON file to write (never replaced; its folder is made if missing).")

    def grid(self):
        """`(archs, init factors, seeds)`; `InitialLogitsError` on the first
        bad setting."""
        try:
            factors = [float(value) for value in comma_separated(self.init_factors)]
            seeds = [int(value) for value in comma_separated(self.seeds)]
        except ValueError as error:
            raise InitialLogitsError(
                f"--init_factors and --seeds take comma-separated numbers ({error})") from None
        if not all(factor > 0 for factor in factors):  # NaN too
            raise InitialLogitsError(f"--init_factors must be > 0. Received: {factors}")
        archs = comma_separated(self.archs)
        for name, values in (("archs", archs), ("init_factors", factors), ("seeds", seeds)):
            if not values:
                raise InitialLogitsError(
                    f"--{name} is empty; give at least one, separated by commas. Received: "
                    f"--{name}={getattr(self, name)!r}")
        for arch in archs:
            for factor in factors:
                for seed in seeds:  # each a valid run, e.g. --seed in [0, 2**63)
                    ssm_config.TrainConfig(arch=arch, dataset=self.dataset, init_factor=factor,
                                           seed=seed).validate()
        return archs, factors, seeds

    def validate(self):
        """Raises `InitialLogitsError` (or `ConfigError`) on the first bad setting."""
        self.grid()
        blocking = files.file_in_the_way(os.path.dirname(self.out) or ".")
        if blocking:
            raise InitialLogitsError(f"--out={self.out}: {blocking} is a file, so its folder "
                                     "cannot be made")
        if self.examples < 1:
            raise InitialLogitsError(f"--examples must be > 0. Received: --examples={self.examples}")
        if os.path.exists(self.out):
            raise InitialLogitsError(f"--out={self.out} exists; it is not overwritten")
