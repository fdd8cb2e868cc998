"""The settings of an export (the `ssm-export` flags), read without
TensorFlow; `ExportSettings.validate` checks the formats with the exporter,
which loads it; the export itself is `exporter.export`."""

import dataclasses

from ssm_keras import choices
from ssm_keras.errors import ExportError
from ssm_keras.settings import setting


@dataclasses.dataclass
class ExportSettings:
    """The settings of an export (the `ssm-export` flags): the source, a
    finished run (`model_dir`) or a compact file (`compact_file`), and where
    which formats go."""

    model_dir: str | None = setting(None, "Finished training run directory to export.")
    compact_file: str | None = setting(None, "Compact file (.ssm) to export instead of a run.")
    out_dir: str | None = setting(None, "Required: the folder of the exported files.")
    formats: str = setting(",".join(choices.DEFAULT_EXPORT_FORMATS),
                           f"Comma-separated subset of {','.join(choices.EXPORT_FORMATS)}.")
    prune_dead_units: bool = setting(
        True, "Remove the hidden units whose incoming or outgoing weights are all zero from "
        "the baked model (keras, saved_model and TFLite outputs); the outputs stay equal.")
    overwrite: bool = setting(False, "Replace an export already in --out_dir.")

    def validate(self):
        """Raises `ExportError` unless exactly one source and `out_dir` are
        given and the formats are known (`exporter.parse_formats`, which
        loads TensorFlow)."""
        from ssm_keras.exporting import exporter

        if (self.model_dir is None) == (self.compact_file is None):
            raise ExportError("give one source: --model_dir (a finished run) or --compact_file")
        if not self.out_dir:
            raise ExportError("give --out_dir, the folder of the exported files")
        exporter.parse_formats(self.formats)
