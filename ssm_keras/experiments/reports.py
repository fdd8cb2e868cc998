"""The report files of a measurement command: the JSON report (`--out`)
and, beside it, the markdown table (`.md`); checked before the measurement
(`check_out`), written after it (`write_report`). Nothing here imports
TensorFlow."""

import os

from ssm_keras import files
from ssm_keras.errors import UserError


class ReportError(UserError):
    """A bad `--out`, one that exists without `--overwrite`, or a report that
    cannot be written."""


def output_paths(out):
    """The JSON report and, beside it, the markdown table."""
    return out, os.path.splitext(out)[0] + ".md"


def check_out(out, overwrite):
    """Raises `ReportError` for an `--out` that names the table, lies in a
    folder that cannot be made (a file stands there), names a folder (or its
    table would), or exists without `--overwrite`."""
    if os.path.splitext(out)[1] == ".md":
        raise ReportError(f"--out={out}: give the JSON file's name; the table goes beside it")
    blocking = files.file_in_the_way(os.path.dirname(out) or ".")
    if blocking:
        raise ReportError(f"--out={out}: {blocking} is a file, so its folder cannot be made")
    folders = [path for path in output_paths(out) if os.path.isdir(path)]
    if folders:
        raise ReportError(f"--out={out}: {folders[0]} is a folder; name a JSON file (the table "
                          "goes beside it, .md)")
    existing = [path for path in output_paths(out) if os.path.exists(path)]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ReportError(f"{', '.join(existing)} {verb}; choose another --out or pass "
                          "--overwrite")


def write_report(out, report, text):
    """Writes `report` (JSON) to `out` and `text` beside it (`.md`), each
    through a temporary file, making their folder if missing; `ReportError`
    if a file cannot be written. Returns the two paths."""
    json_path, table_path = output_paths(out)
    try:
        files.make_parent_folder(out)
        files.write_json_atomically(json_path, report)
        files.write_atomically(table_path, text.encode("utf-8"))
    except files.FileWriteError as error:
        raise ReportError(str(error)) from None
    return json_path, table_path
