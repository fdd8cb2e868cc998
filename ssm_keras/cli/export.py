"""The `ssm-export` command: exports a finished run or a compact file.

    python -m ssm_keras.export --model_dir=RUN_DIR --out_dir=OUT_DIR \\
        [--formats=keras,saved_model,compact,tflite,tflite_dynamic,tflite_sparse] \\
        [--overwrite] [--noprune_dead_units]
    python -m ssm_keras.export --compact_file=model.ssm --out_dir=OUT_DIR ...

writes the formats into `OUT_DIR` (`ssm_keras.exporting`; docs/export.md)
and prints their sizes.
"""

from absl import flags, logging

from ssm_keras.cli import shell
from ssm_keras.exporting import config


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per `ExportSettings` field in `flag_values`."""
    shell.define_flags(config.ExportSettings, flag_values)
    flags.adopt_module_key_flags(config, flag_values)


def _report(summary):
    """The size report of an export's `summary` (`exporter.export`)."""
    from ssm_keras.exporting import exporter
    from ssm_keras.transforms import dead_units

    lines = [f"{name}: {size:,} bytes" for name, size in summary["bytes"].items()]
    if summary["masked_weights"]:  # a baseline (weights trained) has no masked kernels
        lines.append(
            f"float32 kernels: {summary['float32_kernel_bytes']:,} bytes "
            f"({summary['remaining_weights']:,} of {summary['masked_weights']:,} "
            "masked weights remain)"
        )
    lines += [
        f"model.ssm is {ratio:g}x smaller than {name}" if ratio >= 1
        else f"model.ssm is {1 / ratio:.2f}x larger than {name}"
        for name, ratio in summary.get("compact_ratio", {}).items()
    ]
    lines += [
        f"{exporter.outputs()[name]} agrees with the baked model: probabilities differ by at "
        f"most {difference:.2g} (tolerance {summary['tolerance'][name]:g})"
        for name, difference in summary.get("max_difference", {}).items()
    ]
    if "dead_units" in summary:
        lines += dead_units.format_report(summary["dead_units"])
    return "\n".join(lines)


def run_command(flag_values):
    """Runs the export the parsed flags describe and prints a size report."""
    from ssm_keras.exporting import exporter

    logging.set_verbosity(logging.WARNING)  # writing a SavedModel logs every step
    summary = exporter.export(shell.from_flags(config.ExportSettings, flag_values))
    print(_report(summary))


def cli():
    """The `ssm-export` console script."""
    shell.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
