"""The base of every error a user can fix by changing an input.

Each module raises its own subclass (`config.ConfigError`,
`data.DataError`, `init_file.InitFileError`, `run_dir.RunDirError`,
`callbacks.Diverged`, `baking.ExportError`, `plots.PlotError`,
`tuning.TuneError`); every command (`ssm_keras.command.run`) prints any of
them as one `error: ...` line and exits with status 1, without a traceback.
Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A bad setting, file or folder; the message says what and what to do."""
