"""Training and inference throughput: masked models against plain Keras.

    ssm-benchmark                                  # fcn, conv2, conv4, batch 128
    python -m ssm_keras.cli.benchmark --archs=conv6,resnet20 --out=bench.json
    ssm-benchmark --archs=fcn --quick              # seconds (the tests use it)
    ssm-benchmark --archs=MobileNetV2              # any keras.applications model

What is measured and how is in `ssm_keras.experiments.throughput`; the machine is
recorded as `ssm_keras.experiments.measurement` describes. Writes `--out` (JSON:
machine, settings, every training window) and, beside it, the markdown table
it prints (`.md`); refuses to replace them unless given `--overwrite`.
The other measurements have commands of their own: `python -m
ssm_keras.cli.benchmark_inference` (exported files), `python -m
ssm_keras.cli.check_applications` (every keras.applications model) and `python
-m ssm_keras.cli.initial_logits` (saturation at initialisation).
"""

from absl import flags

from ssm_keras.cli import report as reporting
from ssm_keras.cli import shell
from ssm_keras.experiments import config


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `BenchmarkConfig` field."""
    shell.define_flags(config.BenchmarkConfig, flag_values)
    flags.adopt_module_key_flags(config, flag_values)


def run_command(flag_values):
    """Benchmarks what the parsed flags say, writes the report; returns it."""
    from ssm_keras.experiments import measurement, throughput

    settings = reporting.settings_from_flags(config.BenchmarkConfig, flag_values,
                                             config.BENCHMARK_QUICK)
    report = throughput.run(settings)
    machine = report["machine"]
    matmuls = ", ".join(f"{dtype} {gflops:.0f}"
                        for dtype, gflops in machine["matmul_gflops"].items())
    text = (measurement.machine_summary(machine, f"devices {', '.join(machine['devices'])}",
                                        f"matmul GFLOP/s: {matmuls}") + "\n\n"
            + throughput.format_table(report["results"]) + "\n")
    reporting.write(settings.out, report, text)
    return report


def cli():
    """The `ssm-benchmark` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
