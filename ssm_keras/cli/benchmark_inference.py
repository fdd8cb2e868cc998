"""Inference of exported models: file bytes, latency, throughput, accuracy.

    python -m ssm_keras.cli.benchmark_inference --data_dir=../shared/data \\
        --runs=runs/fcn_mnist_signed,runs/fcn_mnist_baseline
    python -m ssm_keras.cli.benchmark_inference --pretrained=fcn_mnist_signed_seed0 \\
        --data_dir=../shared/data       # a shipped entry
    python -m ssm_keras.cli.benchmark_inference --runs=RUN --data_dir=DATA --quick   # seconds

Exports every finished run of `--runs` and every shipped entry of
`--pretrained` in every format and measures each runtime on the real test
set, as `ssm_keras.experiments.inference_speed` describes. Writes `--out` (JSON: machine, settings, every measurement) and,
beside it, the markdown table it prints (`.md`); refuses to replace them,
or an export in `--work_dir`, unless given `--overwrite`.
"""

from absl import flags, logging

from ssm_keras.cli import report as reporting
from ssm_keras.cli import shell
from ssm_keras.experiments import config


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `InferenceConfig` field."""
    shell.define_flags(config.InferenceConfig, flag_values)
    flags.adopt_module_key_flags(config, flag_values)


def run_command(flag_values):
    """Measures the runs the parsed flags name, writes the report; returns it."""
    from ssm_keras.experiments import inference_speed, measurement

    logging.set_verbosity(logging.WARNING)  # writing a SavedModel logs every step
    settings = reporting.settings_from_flags(config.InferenceConfig, flag_values,
                                             config.INFERENCE_QUICK)
    report = inference_speed.run(settings)
    machine = report["machine"]
    text = (measurement.machine_summary(machine, f"TFLite threads {settings.tflite_threads}")
            + "\n\n" + inference_speed.format_table(report["models"], report["results"]) + "\n")
    reporting.write(settings.out, report, text)
    return report


def cli():
    """The `ssm-benchmark-inference` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
