"""Training and inference throughput: masked models against plain Keras.

    ssm-benchmark                                  # fcn, conv2, conv4, batch 128
    python -m ssm_keras.benchmark --archs=conv6,resnet20 --out=bench.json
    ssm-benchmark --archs=fcn --quick              # seconds (the tests use it)
    ssm-benchmark --archs=MobileNetV2              # any keras.applications model

What is measured and how is in `ssm_keras.throughput`; the machine is
recorded as `ssm_keras.measurement` describes. Writes `--out` (JSON:
machine, settings, every training window) and, beside it, the markdown table
it prints (`.md`); refuses to replace them unless given `--overwrite`.
The other measurements have commands of their own: `python -m
ssm_keras.benchmark_inference` (exported files), `python -m
ssm_keras.check_applications` (every keras.applications model) and `python
-m ssm_keras.initial_logits` (saturation at initialisation).
"""

from absl import flags

from ssm_keras import command, measurement, throughput

# The settings of `--quick`: tiny windows, a few seconds in all.
QUICK = {"windows": 2, "window_seconds": 0.2, "execution_seconds": 0.05, "window_steps": 0,
         "matmul_size": 256}


def define_flags(flag_values=flags.FLAGS):
    """Defines the `BenchmarkConfig` flags and the report flags."""
    command.define_flags(throughput.BenchmarkConfig, flag_values)
    measurement.define_report_flags(flag_values, "benchmark.json", QUICK)
    flags.adopt_module_key_flags(throughput, flag_values)
    flags.adopt_module_key_flags(measurement, flag_values)


def run_command(flag_values):
    """Benchmarks what the parsed flags say, writes the report; returns it."""
    settings = measurement.settings_from_flags(throughput.BenchmarkConfig, flag_values, QUICK)
    report = throughput.run(settings)
    machine = report["machine"]
    matmuls = ", ".join(f"{dtype} {gflops:.0f}"
                        for dtype, gflops in machine["matmul_gflops"].items())
    text = (measurement.machine_summary(machine, f"devices {', '.join(machine['devices'])}",
                                        f"matmul GFLOP/s: {matmuls}") + "\n\n"
            + throughput.format_table(report["results"]) + "\n")
    measurement.write_report(flag_values, report, text)
    return report


def cli():
    """The `ssm-benchmark` console script."""
    command.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
