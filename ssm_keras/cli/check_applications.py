"""Checks every image model of `keras.applications` through `ssm_keras.supermask`.

    python -m ssm_keras.check_applications --out=applications            # all
    python -m ssm_keras.check_applications --out=applications --models=MobileNetV2,ResNet50

Each model is checked in a process of its own as `ssm_keras.applications_check`
describes; after each, `--out/applications.json` and `applications.md` hold
the records so far (replacing those of an earlier check only with
`--overwrite`).
"""

import json
import os

from absl import flags

from ssm_keras import applications_check, command
from ssm_keras.errors import UserError


def define_flags(flag_values=flags.FLAGS):
    """Defines `--out`, `--models`, `--timeout` and `--overwrite`."""
    flags.DEFINE_string("out", None, "Required: folder for applications.json and .md.",
                        flag_values=flag_values)
    flags.DEFINE_list("models", [], "Comma-separated model names (default: all).",
                      flag_values=flag_values)
    flags.DEFINE_float("timeout", 1800, "Seconds per model (> 0).", flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Replace the applications.json and .md in --out.",
                      flag_values=flag_values)


def run_command(flag_values):
    """Checks the models one by one, writing the records after each; returns them."""
    out, timeout = flag_values["out"].value, flag_values["timeout"].value
    if not out:
        raise UserError("--out is required: the folder for applications.json and .md")
    known = applications_check.application_names()
    names = flag_values["models"].value or known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"--models: {', '.join(unknown)} not in keras.applications; choose "
                        f"from {', '.join(known)}")
    if not timeout > 0:
        raise UserError(f"--timeout={timeout}: give the seconds per model, > 0")
    reports = [os.path.join(out, name) for name in ("applications.json", "applications.md")]
    existing = [path for path in reports if os.path.exists(path)]
    if existing and not flag_values["overwrite"].value:
        raise UserError(f"{', '.join(existing)} exists; choose another --out or pass "
                        "--overwrite")
    command.make_folder("out", out)
    records = []
    for name in names:
        record = applications_check.check_in_subprocess(name, timeout)
        records.append(record)
        print(f"{name}: {record['status']} {record.get('reason', '')}", flush=True)
        with open(reports[0], "w", encoding="utf-8") as file:
            json.dump(records, file, indent=1)
        with open(reports[1], "w", encoding="utf-8") as file:
            file.write(applications_check.markdown(records))
    return records


if __name__ == "__main__":
    command.main(define_flags, run_command)
