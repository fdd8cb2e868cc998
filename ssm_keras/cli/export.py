"""The `ssm-export` command: exports a finished run or a compact file.

    python -m ssm_keras.export --model_dir=RUN_DIR --out=OUT_DIR \\
        [--formats=keras,saved_model,compact,tflite,tflite_dynamic,tflite_sparse] \\
        [--overwrite] [--noprune_dead_units]
    python -m ssm_keras.export --compact_file=model.ssm --out=OUT_DIR ...

writes the formats into `OUT_DIR` (`ssm_keras.exporting`; docs/export.md)
and prints their sizes.
"""

from absl import flags
from absl import logging

from ssm_keras import command, exporting, pruning


def define_flags(flag_values=flags.FLAGS):
    """Defines the command's flags in `flag_values`."""
    flags.DEFINE_string(
        "model_dir", None, "Finished training run directory to export.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "compact_file", None, "Compact file (.ssm) to export instead of a run.",
        flag_values=flag_values,
    )
    flags.DEFINE_string("out", None, "Output directory.", flag_values=flag_values)
    flags.DEFINE_string(
        "formats", ",".join(exporting.DEFAULT_FORMATS),
        f"Comma-separated subset of {','.join(exporting.FORMATS)}.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "prune_dead_units", True,
        "Remove the hidden units whose incoming or outgoing weights are all zero from the "
        "baked model (keras, saved_model and TFLite outputs); the outputs stay equal.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "overwrite", False, "Replace an export already in --out.", flag_values=flag_values
    )
    flags.mark_flag_as_required("out", flag_values=flag_values)
    flags.mark_flags_as_mutual_exclusive(
        ["model_dir", "compact_file"], required=True, flag_values=flag_values
    )


def _report(summary):
    lines = [f"{name}: {size:,} bytes" for name, size in summary["bytes"].items()]
    if summary["masked_weights"]:  # a baseline (weights trained) has no masked kernels
        lines.append(
            f"float32 kernels: {summary['float32_kernel_bytes']:,} bytes "
            f"({summary['remaining_weights']:,} of {summary['masked_weights']:,} "
            "masked weights remain)"
        )
    lines += [
        f"model.ssm is {ratio}x smaller than {name}"
        for name, ratio in summary.get("compact_ratio", {}).items()
    ]
    lines += [
        f"{exporting.OUTPUTS[kind]} agrees with the baked model: probabilities differ by at most "
        f"{difference:.2g} (tolerance {summary['tflite_tolerance'][kind]:g})"
        for kind, difference in summary.get("tflite_max_difference", {}).items()
    ]
    if "dead_units" in summary:
        lines += pruning.format_report(summary["dead_units"])
    return "\n".join(lines)


def run_command(flag_values):
    """Runs the export the parsed flags describe and prints a size report."""
    logging.set_verbosity(logging.WARNING)  # writing a SavedModel logs every step
    formats = exporting.parse_formats(flag_values.formats)
    if flag_values.model_dir is not None:
        summary = exporting.export_run(flag_values.model_dir, flag_values.out, formats,
                                       flag_values.overwrite, flag_values.prune_dead_units)
    else:
        summary = exporting.export_compact(flag_values.compact_file, flag_values.out, formats,
                                           flag_values.overwrite, flag_values.prune_dead_units)
    print(_report(summary))


def cli():
    """The `ssm-export` console script."""
    command.main(define_flags, run_command)


if __name__ == "__main__":
    cli()
