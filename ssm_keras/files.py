"""Files written so that a kill or a full disk never leaves a damaged one.

Every single file the package writes goes through `save_atomically`: the
file is written whole to a temporary file beside the destination, flushed
to the disk (`fsync`), and then replaces the destination in one rename.
Whatever was there before stays whole until that rename, and what replaces
it is on the disk before it does (so a machine that stops at once leaves
the old file or the new one, not an empty one). An export's folder of
files is staged and renamed into place instead (`ssm_keras.exporting.staging`).
"""

import contextlib
import errno
import json
import math
import os
import stat

import numpy as np

from ssm_keras.errors import UserError


class FileWriteError(UserError):
    """A file or folder that cannot be written; nothing half-written is left."""


def plain_json(value):
    """`value` with NumPy scalars and arrays as Python numbers and lists,
    and every non-finite float (NaN, infinities) replaced by None."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(item) for item in value]
    return value


def save_atomically(path, save, suffix=""):
    """Writes the file `path` in one rename: `save(temporary)` writes it
    whole to the hidden file `.<name>.tmp-<pid><suffix>` beside `path`
    (`suffix`: an ending the writer insists on, as Keras does on `.keras`),
    which is flushed to the disk and renamed to `path`.

    A `path` that is a symbolic link is written where the link points (the
    link stays). A file that is there already keeps its permissions, and
    one that nobody may write (`chmod a-w`) is not replaced:
    `PermissionError`.

    Whatever `save` or the rename raises is raised again once the temporary
    file is removed, for the caller to report in its own words; `path` is
    then as it was.
    """
    path = os.path.realpath(path)
    mode = _mode_of_existing(path)
    if mode is not None and not mode & _WRITABLE:
        raise PermissionError(errno.EACCES, "it is read-only, and is not replaced", path)
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")
    try:
        save(temporary)
        if mode is not None:
            os.chmod(temporary, mode)
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove_quietly(temporary)
        raise


_WRITABLE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def _mode_of_existing(path):
    """The permission bits of the file `path`, None if there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else None


def write_atomically(path, data):
    """Writes bytes to `path` as `save_atomically` does; `FileWriteError`
    (no file left behind, the old one untouched) if it cannot."""

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(data)

    try:
        save_atomically(path, write)
    except OSError as error:
        raise FileWriteError(f"cannot write {path}: {error.strerror or error}") from None


def write_text_atomically(path, text):
    """`write_atomically` of `text` in UTF-8."""
    write_atomically(path, text.encode("utf-8"))


def write_json_atomically(path, value):
    """Writes `value` as standard JSON (NaN and infinities as null) to
    `path`, as `write_atomically` does."""
    write_text_atomically(path, json.dumps(plain_json(value), indent=2, allow_nan=False))


def remove_quietly(path):
    """Removes the file `path` if it can."""
    with contextlib.suppress(OSError):
        os.remove(path)


def first_missing_folder(folder):
    """The first of `folder` and its parents that `os.makedirs(folder)`
    would create (an absolute path), or None if `folder` exists."""
    missing = None
    candidate = os.path.abspath(folder)
    while not os.path.exists(candidate):
        missing, candidate = candidate, os.path.dirname(candidate)
    return missing


def remove_created_folders(folder, created):
    """Removes `folder` and its parents up to `created` (from
    `first_missing_folder`, None: none) while they are empty."""
    if created is None:
        return
    folder = os.path.abspath(folder)
    with contextlib.suppress(OSError):  # a folder no longer empty stays
        while True:
            os.rmdir(folder)
            if folder == created:
                break
            folder = os.path.dirname(folder)


def inside(path, folder):
    """Whether `path` is `folder` or lies in it (`~` expanded, links resolved)."""
    path, folder = (os.path.realpath(os.path.expanduser(name)) for name in (path, folder))
    return os.path.commonpath([path, folder]) == folder


def file_in_the_way(folder):
    """The nearest of `folder` and its parents that exists, if it is not a
    folder (then `folder` cannot be made); None otherwise."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return None if os.path.isdir(existing) else existing


def make_parent_folder(path):
    """Makes the folder that will hold the file `path` (and its parents);
    `FileWriteError` when it cannot be made, e.g. a file stands there."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as error:
        raise FileWriteError(f"cannot make the folder of {path} ({error.strerror}: "
                             f"{error.filename})") from None


def make_folder(setting, path):
    """Makes the folder `path` that setting `--setting` names (and its
    parents); `FileWriteError` naming the setting when it cannot be made,
    e.g. a file stands there."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise FileWriteError(f"--{setting}={path}: cannot make this folder ({error.strerror}: "
                             f"{error.filename}); name a folder") from None
