"""What the measurement commands (`benchmark`, `benchmark_inference`) share:
`--quick` and the report they print and write."""

import dataclasses

from ssm_keras.cli import shell
from ssm_keras.experiments import reports


def settings_from_flags(cls, flag_values, quick):
    """The `cls` settings of the parsed flags, with `--quick` those of
    `quick` for the flags not given, validated (`validate()`, which checks
    `--out` too)."""
    settings = shell.from_flags(cls, flag_values)
    if settings.quick:
        settings = dataclasses.replace(settings, **{
            name: value for name, value in quick.items() if not flag_values[name].present})
    settings.validate()
    return settings


def write(out, report, text):
    """Prints `text` (the measurements are not lost if a file cannot be
    written), then writes `report` to `out` and `text` beside it."""
    print(text)
    json_path, table_path = reports.write_report(out, report, text)
    print(f"wrote {json_path} and {table_path}")
