"""The base of every error a user can fix by changing an input.

Each module raises its own subclass, defined next to the code that raises it
(`config.ConfigError`, `run_dir.RunDirError`, `plotting.PlotError`, ...);
`ExportError`, shared by the modules that bake, prune, convert and store
models, is here. Every command (`ssm_keras.cli.shell.run`) prints any of them
as one `error: ...` line and exits with status 1, without a traceback. Any
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A bad setting, file or folder; the message says what and what to do."""


class ExportError(UserError):
    """A model, run directory or file that cannot be exported or loaded.

    The message is one line that says what is wrong and what to do.
    """
