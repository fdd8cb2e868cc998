"""The settings of `ssm-make-pretrained`, read and checked without
TensorFlow; the work is `make.make`."""

import dataclasses
import os

from ssm_keras.errors import UserError
from ssm_keras.pretrained import catalog
from ssm_keras.settings import comma_separated, setting


class MakeError(UserError):
    """Runs that cannot be shipped as asked."""


@dataclasses.dataclass
class MakeSettings:
    """The settings of `ssm-make-pretrained`."""

    runs: str = setting("", "Required: comma-separated finished run directories.")
    recipe_flagfile: str | None = setting(
        None, "Required: the flagfile the runs were trained with.")
    out_dir: str = setting(catalog.FOLDER, "Folder of the compact files.")
    overwrite: bool = setting(False, "Replace compact files that exist.")
    data_dir: str | None = setting(
        None, "Data folder, to measure the float32 test accuracy of runs trained under a "
        "mixed-precision policy.")

    def run_dirs(self):
        """The run directories of `runs`."""
        return comma_separated(self.runs)

    def validate(self):
        """Raises `MakeError` without runs or without a readable flagfile."""
        if not self.run_dirs():
            raise MakeError("--runs is required: comma-separated finished run directories")
        if not self.recipe_flagfile or not os.path.isfile(self.recipe_flagfile):
            raise MakeError(f"--recipe_flagfile={self.recipe_flagfile}: no such file; name the "
                            "flagfile the runs were trained with")
