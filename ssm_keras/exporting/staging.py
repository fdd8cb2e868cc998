"""Replaces a folder's outputs together, so that a kill leaves each one whole.

A writer fills a staging folder `.export-*` inside the destination (made
with a `STAGING` file in it), then `mark_ready` writes `READY` (the names
of its outputs) into it. `finish` moves each listed output over the old
one by a rename, deletes the old outputs not listed, and removes the
staging folder. A staging folder that a killed writer left behind is
finished by `recover` if it holds `READY`, else deleted (a `.export-*`
folder with neither `READY` nor `STAGING` in it, and not empty, is not a
staging folder and stays); until then every output in the destination is
a complete file or folder, old or new.
"""

import ctypes
import json
import os
import shutil
import tempfile

from ssm_keras.errors import ExportError

PREFIX = ".export-"
STAGING = "STAGING"
READY = "READY"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_LIBC = ctypes.CDLL(None, use_errno=True)


def new_staging_folder(out_dir):
    """Creates `out_dir` if missing and a staging folder in it, marked by
    an empty `STAGING` file; its path."""
    os.makedirs(out_dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=PREFIX, dir=out_dir)
    try:
        open(os.path.join(folder, STAGING), "w").close()
    except OSError:
        os.rmdir(folder)
        raise
    return folder


def is_ready(staging):
    """Whether `staging` was completed by `mark_ready`."""
    return os.path.isfile(os.path.join(staging, READY))


def mark_ready(staging, names):
    """Marks `staging` complete: its outputs are `names`."""
    with open(os.path.join(staging, READY), "w", encoding="utf-8") as file:
        json.dump(list(names), file)


def existing(out_dir, names):
    """Those of `names` present in `out_dir` (none if it is no folder)."""
    if not os.path.isdir(out_dir):
        return []
    return [name for name in names if os.path.lexists(os.path.join(out_dir, name))]


def remove(path):
    """Deletes a file, link or folder if present."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _exchange(first, second):
    """Swaps two paths in one step (Linux `renameat2`); False if not available."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                       _RENAME_EXCHANGE)
    return result == 0


def move_in(new, old):
    """Puts `new` where `old` is, replacing it; `old` never misses for
    files, nor for folders where `renameat2` can exchange them."""
    if os.path.isdir(new) and os.path.isdir(old) and not os.path.islink(old):
        if _exchange(new, old):
            shutil.rmtree(new)  # now the old folder
            return
        aside = new + ".old"
        os.rename(old, aside)  # a moment without `old`; `recover` would finish it
        os.rename(new, old)
        shutil.rmtree(aside)
    else:
        os.replace(new, old)


def finish(staging, out_dir, known):
    """Moves a ready staging folder's outputs into `out_dir`, deletes the
    outputs among `known` (every name an output may have) that it does not
    list, then the staging folder."""
    with open(os.path.join(staging, READY), encoding="utf-8") as file:
        names = json.load(file)
    for name in names:
        if os.path.lexists(os.path.join(staging, name)):
            move_in(os.path.join(staging, name), os.path.join(out_dir, name))
    for name in existing(out_dir, known):
        if name not in names:
            remove(os.path.join(out_dir, name))
    shutil.rmtree(staging)


def leftovers(out_dir):
    """The staging folders in `out_dir`, sorted: `.export-*` folders that
    hold `READY` or `STAGING`, or nothing (a writer killed as it made one)."""
    if not os.path.isdir(out_dir):
        return []
    paths = (os.path.join(out_dir, name) for name in sorted(os.listdir(out_dir))
             if name.startswith(PREFIX))
    return [path for path in paths if os.path.isdir(path) and not os.path.islink(path) and (
        not os.listdir(path) or any(os.path.lexists(os.path.join(path, mark))
                                    for mark in (READY, STAGING)))]


def recover(out_dir, known):
    """Finishes the ready staging folders a killed writer left in `out_dir`
    (see `finish`) and deletes the others.

    Raises:
        ExportError: `out_dir` cannot be listed, a staging folder cannot be
            finished or deleted, or its `READY` is not a JSON list of names.
    """
    try:
        found = leftovers(out_dir)
    except OSError as error:
        raise ExportError(f"cannot look into {error.filename or out_dir}: "
                          f"{error.strerror or error}") from None
    for staging in found:
        try:
            if is_ready(staging):
                finish(staging, out_dir, known)
            else:
                shutil.rmtree(staging)
        except (OSError, ValueError) as error:
            raise ExportError(f"cannot clean up {staging}, left by an earlier export "
                              f"({error}); remove it by hand") from None
