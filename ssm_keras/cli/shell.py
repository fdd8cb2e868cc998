"""The shell shared by every command of the package (`ssm-train`, `ssm-tune`,
`ssm-export`, `ssm-plots`, `ssm-evaluate`, `ssm-reproduce`, `ssm-study`,
`ssm-benchmark`, `ssm-benchmark-inference`, `ssm-check-applications`,
`ssm-initial-logits`, `ssm-make-pretrained`).

A command module defines its flags in a function (never at import time) and
does its work in a function of the parsed flags; `main` puts them together:

    def define_flags(flag_values=flags.FLAGS):
        shell.define_flags(SomeSettings, flag_values)
    def run_command(flag_values):                # raises errors.UserError
        return library_function(shell.from_flags(SomeSettings, flag_values))
    def cli():
        shell.main(define_flags, run_command)

Every command's flags come from a settings dataclass of the library
(`define_flags`, `from_flags`): one flag per field, named after it, with
the field's default and its help text (`settings.setting`). The package's
log is the command's output (`show_package_log`). Every bad input, from an
unknown flag to a `UserError` of the work, ends the command with one
`error: ...` line on stderr and exit status 1, without a traceback.
"""

import dataclasses
import logging
import os
import sys

from absl import app, flags

import ssm_keras
from ssm_keras import settings
from ssm_keras.errors import UserError

_DEFINERS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
             float: flags.DEFINE_float, str: flags.DEFINE_string}


def define_flags(cls, flag_values=flags.FLAGS):
    """Defines one absl flag per field of settings dataclass `cls` (declared
    with `settings.setting`) in `flag_values`.

    The flags belong to the module of `cls`; a command lists them in its
    `--help` with `flags.adopt_module_key_flags(that module)`.
    """
    for field in dataclasses.fields(cls):
        definer = _DEFINERS[settings.value_type(field.type)]
        definer(field.name, field.default, field.metadata["help"], flag_values=flag_values,
                module_name=cls.__module__)


def from_flags(cls, flag_values=flags.FLAGS):
    """An instance of dataclass `cls` whose fields are the parsed flags'
    values, `~` expanded in its paths (`settings.with_home_expanded`)."""
    return settings.with_home_expanded(cls(**{
        field.name: flag_values[field.name].value for field in dataclasses.fields(cls)
    }))


def define_recipe_flag(flag_values=flags.FLAGS):
    """Defines `--recipe=NAME`, read by `parse_flags` as `--flagfile=` the
    shipped `ssm_keras/recipes/NAME.flags` before every other flag."""
    flags.DEFINE_string(
        "recipe", None,
        "A shipped flagfile by name, e.g. fcn_mnist_signed (ssm_keras/recipes/<name>.flags; "
        "flags/ in a checkout), read as --flagfile= before every other flag, so flags "
        "given override it.", flag_values=flag_values)


def with_recipe(argv, flag_values):
    """`argv` with `--flagfile=<the recipe's file>` first when it (or a
    flagfile in it) sets `--recipe`; `flag_values` is left unparsed."""
    if "recipe" not in flag_values:
        return argv
    flag_values(argv)
    name = flag_values["recipe"].value
    flag_values.unparse_flags()
    return argv if name is None else [argv[0], f"--flagfile={settings.recipe_path(name)}",
                                      *argv[1:]]


def _fail(message):
    """Prints `message` as one `error: ...` line on stderr; returns exit status 1."""
    print(f"error: {' '.join(str(message).splitlines())}", file=sys.stderr)
    return 1


HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")


def asks_for_help(argv, flag_values=flags.FLAGS):
    """Whether the command line, its flagfiles read, holds one of absl's help
    flags (`--help`, `-?`, `--helpfull`, ...)."""
    arguments = flag_values.read_flags_from_files(argv[1:], force_gnu=False)
    return any(argument.startswith("-") and argument.lstrip("-") in HELP_FLAGS
               for argument in arguments)


def parse_flags(argv, flag_values=flags.FLAGS):
    """Parses the command line into `flag_values` (absl's `flags_parser`); an
    unknown or bad flag, a missing flagfile or an unknown `--recipe` ends the
    command with one `error: ...` line and exit status 1; a help flag ends
    it with exit status 0 once the help is printed (absl exits with 1).
    Returns the arguments left over."""
    try:
        return flag_values(with_recipe(argv, flag_values))
    except SystemExit as stop:
        if stop.code == 1 and asks_for_help(argv, flag_values):
            sys.exit(0)
        raise
    except settings.SettingsError as error:
        sys.exit(_fail(error))
    except flags.Error as error:
        sys.exit(_fail(str(error).removeprefix("ERROR:: ")))
    except UnicodeDecodeError as error:  # a flagfile that is not text
        sys.exit(_fail(f"a flagfile is not UTF-8 text ({error}); --flagfile names a text "
                       "file of --name=value lines."))


def run(work, argv=None, on_interrupt="interrupted"):
    """Runs `work()` as a command; returns its exit status.

    0 when it returns; 1, after one `error: ...` line on stderr, when it
    raises a `UserError` or when `argv` (the command line left after the
    flags) holds more than the program name: every input is a flag; 130,
    after the line `error: <on_interrupt>`, when Ctrl-C stops it.
    """
    try:
        if argv is not None and len(argv) > 1:
            raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
        work()
    except UserError as error:
        return _fail(error)
    except KeyboardInterrupt:
        _fail(on_interrupt)
        return 130
    return 0


def help_for_console_script(module_name, flag_values=flags.FLAGS):
    """Makes `--help` of a console script show the docstring and the key
    flags of command module `module_name`, as `python -m` does: absl shows
    those of `__main__`, which for a console script is its wrapper file."""
    if module_name == "__main__":
        return
    sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__
    for flag in flag_values.get_key_flags_for_module(module_name):
        flag_values.register_key_flag_for_module(sys.argv[0], flag)


def check_backend(load_keras):
    """Ends the command with one `error: ...` line unless Keras runs on
    TensorFlow: `KERAS_BACKEND`, and with `load_keras` the backend Keras
    loaded with (its config file may name another)."""
    try:
        ssm_keras.check_backend(os.environ.get("KERAS_BACKEND", "tensorflow"))
        if load_keras:
            import keras

            ssm_keras.check_backend(keras.backend.backend())
    except ImportError as error:
        sys.exit(_fail(error))


class CommandOutput(logging.Handler):
    """The package's log records as a command's output: information on
    stdout as it is, warnings and errors on stderr as `note: ...` lines."""

    def emit(self, record):
        message = self.format(record)
        if record.levelno >= logging.WARNING:
            print(f"note: {message}", file=sys.stderr, flush=True)
        else:
            print(message, flush=True)


def show_package_log():
    """Sends the package's log (logger `ssm_keras`, level INFO) to
    `CommandOutput`, once per process, and not on to the root logger (where
    absl's handler would show warnings a second time)."""
    logger = logging.getLogger("ssm_keras")
    if not any(isinstance(handler, CommandOutput) for handler in logger.handlers):
        logger.addHandler(CommandOutput())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(define, work, on_interrupt="interrupted"):
    """The whole command: check `KERAS_BACKEND`, `define(flags.FLAGS)`,
    parse the command line (so `--help` loads no TensorFlow), check Keras'
    backend, then `work(flags.FLAGS)`; exits with the status of `run`
    (`on_interrupt`: its line after Ctrl-C)."""
    check_backend(load_keras=False)
    show_package_log()
    define(flags.FLAGS)
    help_for_console_script(define.__module__)

    def checked_work():
        check_backend(load_keras=True)
        work(flags.FLAGS)

    app.run(lambda argv: run(checked_work, argv, on_interrupt), flags_parser=parse_flags)
