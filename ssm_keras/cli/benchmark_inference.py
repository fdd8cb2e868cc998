"""Inference of exported models: file bytes, latency, throughput, accuracy.

    python -m ssm_keras.benchmark_inference --data_dir=../shared/data \\
        --runs=runs/fcn_mnist_signed,runs/fcn_mnist_baseline
    python -m ssm_keras.benchmark_inference --pretrained=fcn_mnist_signed_seed0 \\
        --data_dir=../shared/data       # a shipped entry
    python -m ssm_keras.benchmark_inference --runs=RUN --data_dir=DATA --quick   # seconds

Exports every finished run of `--runs` and every shipped entry of
`--pretrained` in every format and measures each runtime on the real test
set, as `ssm_keras.inference_speed` describes. Writes `--out` (JSON: machine, settings, every measurement) and,
beside it, the markdown table it prints (`.md`); refuses to replace them,
or an export in `--work_dir`, unless given `--overwrite`.
"""

from absl import flags
from absl import logging

from ssm_keras import command, inference_speed, measurement

# The settings of `--quick`: one short window per format.
QUICK = {"windows": 1, "seconds": 0.05}


def define_flags(flag_values=flags.FLAGS):
    """Defines the `InferenceConfig` flags and the report flags."""
    command.define_flags(inference_speed.InferenceConfig, flag_values)
    measurement.define_report_flags(flag_values, "benchmark_inference.json", QUICK,
                                    " and the exports in --work_dir")
    flags.adopt_module_key_flags(inference_speed, flag_values)
    flags.adopt_module_key_flags(measurement, flag_values)


def run_command(flag_values):
    """Measures the runs the parsed flags name, writes the report; returns it."""
    logging.set_verbosity(logging.WARNING)  # writing a SavedModel logs every step
    settings = measurement.settings_from_flags(inference_speed.InferenceConfig, flag_values,
                                               QUICK)
    report = inference_speed.run(settings, flag_values["overwrite"].value)
    machine = report["machine"]
    text = (measurement.machine_summary(machine, f"TFLite threads {settings.tflite_threads}")
            + "\n\n" + inference_speed.format_table(report["models"], report["results"]) + "\n")
    measurement.write_report(flag_values, report, text)
    return report


if __name__ == "__main__":
    command.main(define_flags, run_command)
