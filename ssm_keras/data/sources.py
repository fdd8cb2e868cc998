"""Where the arrays come from: `load_splits` and the sources it tries.

`load_splits` turns a dataset name into in-memory NumPy train, validation and
test splits. It reads, in this order, the first source that works:

1. a local copy under `data_dir` (or the `SSM_DATA_DIR` environment variable)
   or a system-wide place: the original MNIST IDX files, the CIFAR python or
   binary archives, or `train/<class>/` and `test/<class>/` image folders
   (also as a `.tar.gz`), read by `formats`;
2. `tensorflow_datasets`, when it has the data prepared or the download
   server can be reached (never downloads with the environment variable
   `SSM_OFFLINE` set to anything but `0` or empty: a machine without
   internet access is told at once instead of after a connection timeout).

Decoded image folders are cached as `.npz` files under `SSM_CACHE_DIR`
(default `~/.cache/ssm_keras`), never inside the data folder. The validation
split is held out at random from the training split.

Example:

    splits = load_splits("cifar10", data_dir="../shared/data")
"""

import contextlib
import dataclasses
import functools
import hashlib
import io
import logging
import operator
import os
import pathlib
import posixpath
import socket
import tarfile
from collections.abc import Callable

import numpy as np

from ssm_keras import files
from ssm_keras.data import formats
from ssm_keras.data.specs import DATASETS, Arrays, DataError, DatasetSpec, Splits

_Reader = Callable[
    [DatasetSpec, formats.Files, pathlib.Path], tuple[Arrays, Arrays] | None
]

_HINT = (
    "To use local files, pass --data_dir=DIR (or set SSM_DATA_DIR=DIR), where "
    "DIR holds the MNIST/Fashion-MNIST IDX .gz files, the CIFAR python or "
    "binary archives (e.g. cifar-10-python.tar.gz), or train/<class>/ and "
    "test/<class>/ folders of images, or a .tar.gz of any of these."
)
_CACHE_VERSION = "1"
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


# ----------------------------------------------------------------------------
# Local copies: folders, archives and the cache.


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where a dataset's local copy may be, and how its original files look."""

    folders: tuple[str, ...]  # Subfolders of the data folder to look in.
    archives: tuple[str, ...]  # Archive files to look for, best first.
    default_dirs: tuple[str, ...]  # System-wide places, tried after data_dir.
    read_original: _Reader
    source: str  # Source tag of the original format.
    description: str  # The files looked for, for error messages.


def _cifar_layout(number: int, read_original: _Reader) -> _Layout:
    """The local layout of CIFAR-10 or CIFAR-100."""
    return _Layout(
        folders=(
            f"cifar{number}",
            f"cifar-{number}-batches-py",
            f"cifar-{number}-python",
            f"cifar-{number}-batches-bin",
            f"cifar-{number}-binary",
        ),
        archives=(
            f"cifar-{number}-python.tar.gz",
            f"cifar-{number}-binary.tar.gz",
            f"cifar{number}-jpeg.tar.gz",
        ),
        default_dirs=(),
        read_original=read_original,
        source="cifar",
        description=(
            f"cifar-{number}-python.tar.gz, cifar-{number}-binary.tar.gz or "
            f"their extracted batches, cifar{number}-jpeg.tar.gz, or "
            "train/<class>/ and test/<class>/ image folders"
        ),
    )


_MNIST_DESCRIPTION = (
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (or uncompressed), "
    "or train/<class>/ and test/<class>/ image folders"
)

_LAYOUTS = {
    "mnist": _Layout(("mnist",), (), (), formats.read_idx, "idx", _MNIST_DESCRIPTION),
    "fashion_mnist": _Layout(
        ("fashion_mnist", "fashion-mnist"),
        (),
        ("/usr/share/datasets/fashion-mnist",),
        formats.read_idx,
        "idx",
        _MNIST_DESCRIPTION,
    ),
    "cifar10": _cifar_layout(
        10,
        functools.partial(
            formats.read_cifar,
            train=tuple(f"data_batch_{i}" for i in range(1, 6)),
            test=("test_batch",),
            label_key=b"labels",
            label_bytes=1,
        ),
    ),
    "cifar100": _cifar_layout(
        100,
        functools.partial(
            formats.read_cifar,
            train=("train",),
            test=("test",),
            label_key=b"fine_labels",
            label_bytes=2,
        ),
    ),
}


def _folder_files(folder: pathlib.Path) -> formats.Files:
    """Lists the files of a folder and of its {train,test}/<class>/ folders."""
    paths = [path for path in folder.iterdir() if path.is_file()]
    for split in ("train", "test"):
        if (folder / split).is_dir():
            paths.extend(
                path
                for class_dir in (folder / split).iterdir()
                if class_dir.is_dir()
                for path in class_dir.iterdir()
                if path.is_file()
            )
    return {path.relative_to(folder).as_posix(): path.read_bytes for path in paths}


def _archive_files(path: pathlib.Path) -> formats.Files:
    """Reads the files of a (gzipped) tar, without a common top folder."""
    data = formats.gunzip_if_needed(path.read_bytes(), str(path))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            members = [member for member in archive if member.isfile()]
    except tarfile.TarError as err:
        raise DataError(
            f"{path} is not a readable .tar or .tar.gz archive ({err})."
        ) from err
    files = {}
    for member in members:
        start, end = member.offset_data, member.offset_data + member.size
        name = posixpath.normpath(member.name).lstrip("/")
        files[name] = functools.partial(operator.getitem, data, slice(start, end))
    tops = {name.split("/")[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        files = {name.split("/", 1)[1]: read for name, read in files.items()}
    return files


def _cache_dir() -> pathlib.Path:
    """The folder of decoded-image caches."""
    default = pathlib.Path.home() / ".cache" / "ssm_keras"
    return pathlib.Path(os.environ.get("SSM_CACHE_DIR") or default).expanduser()


def _cache_path(spec: DatasetSpec, paths: list[pathlib.Path]) -> pathlib.Path:
    """The cache file for `spec` decoded from `paths` in their current state."""
    key = hashlib.sha256(f"{_CACHE_VERSION}|{spec}".encode())
    for path in paths:
        stat = path.stat()
        key.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return _cache_dir() / f"{spec.name}-{key.hexdigest()[:24]}.npz"


def _load_cache(path: pathlib.Path) -> tuple[Arrays, Arrays] | None:
    """Loads cached train and test arrays; None if absent or unreadable."""
    try:
        with np.load(path) as cached:
            return tuple(
                (cached[f"{split}_images"], cached[f"{split}_labels"])
                for split in ("train", "test")
            )
    except (OSError, KeyError, ValueError):
        return None


def _save_cache(path: pathlib.Path, splits: tuple[Arrays, Arrays]) -> None:
    """Writes the cache atomically; a cache that cannot be written is skipped."""
    arrays = {}
    for split, (images, labels) in zip(("train", "test"), splits, strict=True):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels

    def write(temporary):
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)

    with contextlib.suppress(OSError):  # e.g. SSM_CACHE_DIR is a file
        path.parent.mkdir(parents=True, exist_ok=True)
        files.save_atomically(path, write)


def _read_local(spec: DatasetSpec, path: pathlib.Path):
    """Reads `spec` from a folder or archive at `path`.

    Returns ((train, test), source), or None if `path` holds no copy.
    Decoded images are cached, keyed by the size and time of each file.
    """
    if path.is_file():
        files, members = None, [path]
    elif path.is_dir():
        files = _folder_files(path)
        members = [path / name for name in files]
    else:
        return None
    cache = _cache_path(spec, members)
    cached = _load_cache(cache)
    if cached is not None:
        return cached, f"images:{path}"
    if files is None:
        files = _archive_files(path)
    layout = _LAYOUTS[spec.name]
    splits = layout.read_original(spec, files, path)
    if splits is not None:
        return splits, f"{layout.source}:{path}"
    splits = formats.read_images(spec, files, path)
    if splits is None:
        return None
    _save_cache(cache, splits)
    return splits, f"images:{path}"


def _find_local(spec: DatasetSpec, root: pathlib.Path, tried: list[str]):
    """Looks for `spec` in `root`, its subfolders and archives; a copy of
    another data set (MNIST beside Fashion-MNIST's folder) is passed over.

    Raises:
        DataError: a file or folder there cannot be read.
    """
    if not root.exists():
        tried.append(f"{root}: does not exist")
        return None
    layout = _LAYOUTS[spec.name]
    others = []
    for name in ("",) + layout.folders + layout.archives:
        path = root / name if name else root
        try:
            found = _read_local(spec, path)
        except formats.OtherDataSet as error:
            others.append(str(error))
            continue
        except OSError as error:
            raise DataError(
                f"{error.filename or path} cannot be read: {error.strerror or error}."
            ) from None
        if found is not None:
            return found
    tried.extend(others or [f"{root}: no {spec.name} files found"])
    return None


# ----------------------------------------------------------------------------
# tensorflow_datasets.


def _why_offline() -> str | None:
    """Why tfds may not download: `SSM_OFFLINE` is set, or its download
    server cannot be reached; None if it may."""
    offline = os.environ.get("SSM_OFFLINE", "")
    if offline not in ("", "0"):
        return f"SSM_OFFLINE={offline} is set"
    try:
        socket.create_connection(_DOWNLOAD_HOST, timeout=3).close()
    except OSError as err:
        return f"cannot reach {_DOWNLOAD_HOST[0]}:{_DOWNLOAD_HOST[1]} ({err})"
    return None


@contextlib.contextmanager
def _absl_errors_only():
    """Only errors from absl's logger (Python's logger `absl`) inside:
    tensorflow_datasets warns of every folder it probes that holds no
    prepared copy, which the error says anyway."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_tfds(spec: DatasetSpec, data_dir: str | None, tried: list[str]):
    """Loads `spec` with tensorflow_datasets, prepared or downloaded.

    Prepared data is read from `data_dir` or the tfds default folder; a
    download goes to the tfds default folder ($TFDS_DATA_DIR or
    ~/tensorflow_datasets), never to `data_dir`.
    """
    try:
        import tensorflow_datasets as tfds

        with _absl_errors_only():
            prepared = [
                folder
                for folder in dict.fromkeys([data_dir, None])
                if tfds.builder(spec.name, data_dir=folder).is_prepared()
            ]
        if not prepared:
            offline = _why_offline()
            if offline:
                where = f"{data_dir} or " if data_dir else ""
                tried.append(
                    f"tensorflow_datasets: not prepared in {where}the tfds default "
                    f"folder, and no download: {offline}"
                )
                return None
        arrays = tfds.as_numpy(
            tfds.load(
                spec.name,
                split=["train", "test"],
                batch_size=-1,
                data_dir=prepared[0] if prepared else None,
                download=not prepared,
            )
        )
    except Exception as err:  # tfds fails in many ways, e.g. when offline.
        tried.append(f"tensorflow_datasets: {type(err).__name__}: {err}")
        return None
    splits = tuple(
        formats.checked(spec, split["image"], split["label"], f"tfds:{spec.name}")
        for split in arrays
    )
    return splits, f"tfds:{spec.name}"


# ----------------------------------------------------------------------------
# Public functions.


def _split_off(train: Arrays, validation_size: int, seed: int):
    """Holds out `validation_size` random training examples, order kept."""
    images, labels = train
    if validation_size >= len(images):
        raise DataError(
            f"validation_size must be smaller than the {len(images)} training "
            f"examples. Received: validation_size={validation_size}"
        )
    order = np.random.default_rng(seed).permutation(len(images))
    held_out = np.sort(order[:validation_size])
    kept = np.sort(order[validation_size:])
    return (
        (np.take(images, kept, axis=0), labels[kept]),
        (np.take(images, held_out, axis=0), labels[held_out]),
    )


def _load(spec: DatasetSpec, data_dir: str | None):
    """Returns ((train, test), source) from the first source that works."""
    tried = []
    layout = _LAYOUTS[spec.name]
    root = data_dir or os.environ.get("SSM_DATA_DIR")
    if root:
        root = os.path.expanduser(root)
    else:
        tried.append("local files: no data_dir given and SSM_DATA_DIR not set")
    for folder in ([root] if root else []) + list(layout.default_dirs):
        found = _find_local(spec, pathlib.Path(folder), tried)
        if found is not None:
            return found
    found = _load_tfds(spec, root, tried)
    if found is not None:
        return found
    raise DataError(
        f"Cannot load the {spec.name} data set. Tried:\n"
        + "".join(f"  - {reason}\n" for reason in tried)
        + f"In each folder and its subfolders {', '.join(layout.folders)}, "
        f"looked for {layout.description}.\n{_HINT}"
    )


def load_splits(
    name: str,
    data_dir: str | None = None,
    validation_size: int = 5000,
    seed: int = 0,
    max_examples: int | None = None,
) -> Splits:
    """Loads a data set into memory as train, validation and test splits.

    Args:
        name: a key of `DATASETS`.
        data_dir: a folder (or archive) with a local copy; defaults to the
            `SSM_DATA_DIR` environment variable. Also searched for prepared
            tensorflow_datasets data.
        validation_size: number of training examples held out, chosen at
            random with `seed`; 0 for none.
        seed: seed of the validation split.
        max_examples: if set, each split keeps at most this many examples,
            a random subset chosen with `seed` in the split's order (so a
            capped copy of class-sorted files still holds every class), for
            tests and smoke runs.

    Returns:
        `Splits` with uint8 NHWC images and int64 labels.

    Raises:
        DataError: if the arguments are invalid or no source has the data.
    """
    if name not in DATASETS:
        raise DataError(
            f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}."
        )
    if validation_size < 0:
        raise DataError(
            f"validation_size must be >= 0. Received: validation_size={validation_size}"
        )
    if max_examples is not None and max_examples < 0:
        raise DataError(
            f"max_examples must be >= 0 or None. Received: max_examples={max_examples}"
        )
    spec = DATASETS[name]
    (train, test), source = _load(spec, data_dir)
    train, validation = _split_off(train, validation_size, seed)
    return Splits(
        spec=spec,
        train=_random_subset(train, max_examples, seed),
        validation=_random_subset(validation, max_examples, seed),
        test=_random_subset(test, max_examples, seed),
        source=source,
    )


def _random_subset(arrays: Arrays, size: int | None, seed: int) -> Arrays:
    """At most `size` examples of `arrays`, chosen at random with `seed`,
    order kept; all of them if `size` is None or not smaller."""
    images, labels = arrays
    if size is None or size >= len(images):
        return arrays
    chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[:size])
    return np.take(images, chosen, axis=0), labels[chosen]
