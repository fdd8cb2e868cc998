"""Image classification data: local files or tensorflow_datasets to tf.data.

`load_splits` turns a dataset name into in-memory NumPy train, validation and
test splits. It reads, in this order, the first source that works:

1. a local copy under `data_dir` (or the `SSM_DATA_DIR` environment variable)
   or a system-wide place: the original MNIST IDX files, the CIFAR python or
   binary archives, or `train/<class>/` and `test/<class>/` image folders
   (also as a `.tar.gz`);
2. `tensorflow_datasets`, when it has the data prepared or the download
   server can be reached.

Decoded image folders are cached as `.npz` files under `SSM_CACHE_DIR`
(default `~/.cache/ssm_keras`), never inside the data folder.

`make_dataset` turns arrays into a batched, shuffled and augmented
`tf.data.Dataset` of float32 images with raw pixel values in [0, 255];
`make_epoch_dataset` yields one training epoch each time it is iterated,
shuffled from `(seed, epoch)`, so that a resumed run sees the batches of an
uninterrupted one.

Example:

    splits = load_splits("cifar10", data_dir="../shared/data")
    train = make_dataset(*splits.train, 128, training=True,
                         augment="crop_flip")
"""

import dataclasses
import functools
import gzip
import hashlib
import io
import math
import operator
import os
import pathlib
import pickle
import posixpath
import socket
import struct
import tarfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ssm_keras.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int


DATASETS = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10),
    "cifar100": DatasetSpec("cifar100", (32, 32, 3), 100),
}

AUGMENTATIONS = ("none", "crop_flip", "flip_translate_rotate")

Arrays = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Splits:
    """A dataset held in memory: uint8 NHWC images and int64 labels."""

    spec: DatasetSpec
    train: Arrays
    validation: Arrays
    test: Arrays
    source: str


class DataError(UserError):
    """A data set cannot be found or read; the message says why."""


# Files of one local copy: path relative to the copy's root -> its bytes.
_Files = dict[str, Callable[[], bytes]]
_Reader = Callable[[DatasetSpec, _Files, pathlib.Path], tuple[Arrays, Arrays] | None]

_HINT = (
    "To use local files, pass --data_dir=DIR (or set SSM_DATA_DIR=DIR), where "
    "DIR holds the MNIST/Fashion-MNIST IDX .gz files, the CIFAR python or "
    "binary archives (e.g. cifar-10-python.tar.gz), or train/<class>/ and "
    "test/<class>/ folders of images, or a .tar.gz of any of these."
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_VERSION = "1"
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)
_PAD = 4  # Pixels of zero padding for "crop_flip".
_MAX_TRANSLATION = 0.1  # Fraction of the image size, "flip_translate_rotate".
_MAX_ROTATION = math.radians(15.0)


# ----------------------------------------------------------------------------
# Original file formats.


def _gunzip_if_needed(data: bytes, name: str) -> bytes:
    """Returns `data`, decompressed if it starts with the gzip magic number."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, ValueError) as err:
        raise DataError(f"{name} is not a valid gzip file: {err}") from err


def _parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parses an IDX file of unsigned bytes with `ndim` dimensions."""
    data = _gunzip_if_needed(data, name)
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes((0, 0, 8, ndim)):
        raise DataError(
            f"{name} is not an IDX file of {ndim}-d unsigned bytes "
            f"(bad magic number {data[:4].hex()})."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + math.prod(dims):
        raise DataError(
            f"{name} is truncated or corrupt: its header says {dims} but it "
            f"holds {len(data) - header} bytes of data."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


# SHA-256 of the decompressed label files of the original MNIST and
# Fashion-MNIST: IDX files of the same shapes, told apart by their labels.
_KNOWN_IDX_LABELS = {
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5": "mnist",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2": "mnist",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9": "fashion_mnist",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34": "fashion_mnist",
}


def _check_idx_identity(spec: DatasetSpec, labels: np.ndarray, where: str) -> None:
    """Raises DataError if `labels` are those of another known data set."""
    content = bytes((0, 0, 8, 1)) + struct.pack(">I", len(labels)) + labels.tobytes()
    known = _KNOWN_IDX_LABELS.get(hashlib.sha256(content).hexdigest())
    if known is not None and known != spec.name:
        raise DataError(
            f"{where} is the label file of {known}, not of {spec.name}: check "
            f"--data_dir, or pass --dataset={known}."
        )


def _read_idx(spec: DatasetSpec, files: _Files, root: pathlib.Path):
    """Reads the four MNIST-style IDX files (gzipped or not); None if absent."""
    names = (
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    )
    keys = {}
    for name in sum(names, ()):
        keys[name] = next((k for k in (name + ".gz", name) if k in files), None)
    if None in keys.values():
        return None
    splits = []
    for image_name, label_name in names:
        image_path = str(root / keys[image_name])
        images = _parse_idx(files[keys[image_name]](), image_path, 3)
        label_path = str(root / keys[label_name])
        labels = _parse_idx(files[keys[label_name]](), label_path, 1)
        _check_idx_identity(spec, labels, label_path)
        splits.append(_checked(spec, images[..., None], labels, image_path))
    return tuple(splits)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only, never arbitrary code."""

    _NUMPY = {"_reconstruct", "_frombuffer", "ndarray", "dtype", "scalar"}

    def find_class(self, module, name):
        is_numpy = module.split(".")[0] == "numpy" and name in self._NUMPY
        if is_numpy or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _parse_cifar_pickle(data: bytes, name: str, label_key: bytes) -> Arrays:
    """Parses one batch of the CIFAR python archives."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        pixels = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[label_key], np.int64)
        images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{name} is not a CIFAR python batch: {err!r}") from err
    return images, labels


def _parse_cifar_binary(data: bytes, name: str, label_bytes: int) -> Arrays:
    """Parses one CIFAR binary file: records of label bytes then pixels.

    The last label byte is the one returned (the fine label of CIFAR-100).
    """
    record = label_bytes + 3 * 32 * 32
    if not data or len(data) % record:
        raise DataError(
            f"{name} is not a CIFAR binary file: {len(data)} bytes is not a "
            f"multiple of the {record}-byte record size."
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, record)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images.copy(), records[:, label_bytes - 1].astype(np.int64)


def _read_cifar(spec, files, root, *, train, test, label_key, label_bytes):
    """Reads CIFAR python batches or binary files; None if neither is there.

    `train` and `test` name the python batches; the binary files have the
    same names with a `.bin` suffix.
    """
    if all(name in files for name in train + test):
        parse = functools.partial(_parse_cifar_pickle, label_key=label_key)
        suffix = ""
    elif all(name + ".bin" in files for name in train + test):
        parse = functools.partial(_parse_cifar_binary, label_bytes=label_bytes)
        suffix = ".bin"
    else:
        return None
    splits = []
    for names in (train, test):
        parts = [
            parse(files[name + suffix](), str(root / (name + suffix))) for name in names
        ]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        where = str(root / (names[0] + suffix))
        splits.append(_checked(spec, images, labels, where))
    return tuple(splits)


def _checked(spec: DatasetSpec, images, labels, where: str) -> Arrays:
    """Checks shapes and label range of one split read from `where`."""
    if images.shape[1:] != spec.image_shape or len(images) != len(labels):
        raise DataError(
            f"{where}: expected {spec.name} images of shape {spec.image_shape} "
            f"with one label each, got images {images.shape} and labels "
            f"{labels.shape}."
        )
    labels = labels.astype(np.int64, copy=False)
    if labels.size and not 0 <= labels.min() <= labels.max() < spec.num_classes:
        raise DataError(
            f"{where}: labels must be in [0, {spec.num_classes}), got "
            f"[{labels.min()}, {labels.max()}]."
        )
    return images.astype(np.uint8, copy=False), labels


# ----------------------------------------------------------------------------
# Folders of images.


def _image_keys(files: _Files) -> dict[str, list[tuple[str, str]]] | None:
    """Finds `{split}/{class}/{image}` files as {split: [(class, key)]}.

    Returns None unless both train/ and test/ hold images.
    """
    splits = {"train": [], "test": []}
    for key in sorted(files):
        parts = key.split("/")
        if (
            len(parts) == 3
            and parts[0] in splits
            and parts[2].lower().endswith(_IMAGE_SUFFIXES)
        ):
            splits[parts[0]].append((parts[1], key))
    return splits if splits["train"] and splits["test"] else None


def _decode_image(blob, shape):
    image = tf.io.decode_jpeg(  # Also decodes PNG.
        blob, channels=shape[-1], dct_method="INTEGER_ACCURATE"
    )
    return tf.ensure_shape(image, shape)


def _first_bad_image(blobs: list[bytes], names: list[str], shape) -> str:
    """The name of the first image that does not decode to `shape`."""
    for blob, name in zip(blobs, names):
        try:
            _decode_image(blob, shape)
        except (tf.errors.InvalidArgumentError, ValueError):
            return name
    return "one of them"


def _decode_images(blobs: list[bytes], names: list[str], shape, origin) -> np.ndarray:
    """Decodes JPEG or PNG images of one shape in parallel batches; a
    DataError names the first file that fails."""

    def decode_batch(batch):
        def decode(blob):
            return _decode_image(blob, shape)

        return tf.map_fn(
            decode, batch, fn_output_signature=tf.TensorSpec(shape, tf.uint8)
        )

    batches = (
        tf.data.Dataset.from_tensor_slices(blobs)
        .batch(1024)
        .map(decode_batch, num_parallel_calls=tf.data.AUTOTUNE)
    )
    try:
        return np.concatenate([batch.numpy() for batch in batches])
    except tf.errors.InvalidArgumentError as err:
        raise DataError(
            f"Cannot decode the image {_first_bad_image(blobs, names, shape)} in "
            f"{origin}: every image must be a JPEG or PNG of shape {shape}. "
            f"TensorFlow said: {err.message.splitlines()[0]}"
        ) from err


def _read_images(spec, files, root) -> tuple[Arrays, Arrays] | None:
    """Reads train/<class>/ and test/<class>/ image folders; None if absent.

    The class index is the position of the folder name in the sorted train
    class names.
    """
    keys = _image_keys(files)
    if keys is None:
        return None
    classes = sorted({name for name, _ in keys["train"]})
    unknown = sorted({name for name, _ in keys["test"]} - set(classes))
    if len(classes) != spec.num_classes or unknown:
        raise DataError(
            f"{root}: {spec.name} needs {spec.num_classes} class folders in "
            f"train/, found {len(classes)} ({', '.join(classes[:12])}); test/ "
            f"folders missing from train/: {unknown or 'none'}."
        )
    index = {name: i for i, name in enumerate(classes)}
    splits = []
    for split in ("train", "test"):
        blobs = [files[key]() for _, key in keys[split]]
        names = [key for _, key in keys[split]]
        images = _decode_images(blobs, names, spec.image_shape, root / split)
        labels = np.array([index[name] for name, _ in keys[split]], np.int64)
        splits.append((images, labels))
    return tuple(splits)


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
    "mnist": _Layout(("mnist",), (), (), _read_idx, "idx", _MNIST_DESCRIPTION),
    "fashion_mnist": _Layout(
        ("fashion_mnist", "fashion-mnist"),
        (),
        ("/usr/share/datasets/fashion-mnist",),
        _read_idx,
        "idx",
        _MNIST_DESCRIPTION,
    ),
    "cifar10": _cifar_layout(
        10,
        functools.partial(
            _read_cifar,
            train=tuple(f"data_batch_{i}" for i in range(1, 6)),
            test=("test_batch",),
            label_key=b"labels",
            label_bytes=1,
        ),
    ),
    "cifar100": _cifar_layout(
        100,
        functools.partial(
            _read_cifar,
            train=("train",),
            test=("test",),
            label_key=b"fine_labels",
            label_bytes=2,
        ),
    ),
}


def _folder_files(folder: pathlib.Path) -> _Files:
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


def _archive_files(path: pathlib.Path) -> _Files:
    """Reads the files of a (gzipped) tar, without a common top folder."""
    data = _gunzip_if_needed(path.read_bytes(), str(path))
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
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            np.savez(file, **arrays)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)


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
    splits = _read_images(spec, files, path)
    if splits is None:
        return None
    _save_cache(cache, splits)
    return splits, f"images:{path}"


def _find_local(spec: DatasetSpec, root: pathlib.Path, tried: list[str]):
    """Looks for `spec` in `root`, its subfolders and archives."""
    if not root.exists():
        tried.append(f"{root}: does not exist")
        return None
    layout = _LAYOUTS[spec.name]
    for name in ("",) + layout.folders + layout.archives:
        found = _read_local(spec, root / name if name else root)
        if found is not None:
            return found
    tried.append(f"{root}: no {spec.name} files found")
    return None


# ----------------------------------------------------------------------------
# tensorflow_datasets.


def _why_offline() -> str | None:
    """Returns why the tfds download server is unreachable, None if it is."""
    try:
        socket.create_connection(_DOWNLOAD_HOST, timeout=3).close()
    except OSError as err:
        return f"cannot reach {_DOWNLOAD_HOST[0]}:{_DOWNLOAD_HOST[1]} ({err})"
    return None


def _load_tfds(spec: DatasetSpec, data_dir: str | None, tried: list[str]):
    """Loads `spec` with tensorflow_datasets, prepared or downloaded.

    Prepared data is read from `data_dir` or the tfds default folder; a
    download goes to the tfds default folder ($TFDS_DATA_DIR or
    ~/tensorflow_datasets), never to `data_dir`.
    """
    try:
        import tensorflow_datasets as tfds

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
        _checked(spec, split["image"], split["label"], f"tfds:{spec.name}")
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


def _crop_flip(images, seed):
    """Pads by `_PAD` zeros, crops back at random and flips half the images.

    A batch at a time: one gather per axis with per-image offsets.
    """
    shape = tf.shape(images)
    size, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [_PAD, _PAD], [_PAD, _PAD], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    top = tf.random.stateless_uniform(
        [size, 1], seeds[0], maxval=2 * _PAD + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [size, 1], seeds[1], maxval=2 * _PAD + 1, dtype=tf.int32
    )
    flip = tf.random.stateless_uniform([size, 1], seeds[2]) < 0.5
    columns = tf.range(width)[tf.newaxis]
    columns = left + tf.where(flip, width - 1 - columns, columns)
    rows = top + tf.range(height)[tf.newaxis]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def _flip_translate_rotate(images, seed):
    """Randomly flips, translates (up to 10%) and rotates (up to 15 degrees).

    Bilinear interpolation, reflecting at the borders; a batch at a time.
    """
    shape = tf.shape(images)
    size = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    sign = tf.where(tf.random.stateless_uniform([size], seeds[0]) < 0.5, -1.0, 1.0)
    shift_x = width * tf.random.stateless_uniform(
        [size], seeds[1], -_MAX_TRANSLATION, _MAX_TRANSLATION
    )
    shift_y = height * tf.random.stateless_uniform(
        [size], seeds[2], -_MAX_TRANSLATION, _MAX_TRANSLATION
    )
    angle = tf.random.stateless_uniform([size], seeds[3], -_MAX_ROTATION, _MAX_ROTATION)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) -> input pixel: undo the shift, the rotation about
    # the centre (cx, cy), then the flip.
    x0 = shift_x + (width - 1) / 2
    y0 = shift_y + (height - 1) / 2
    zeros = tf.zeros_like(angle)
    transforms = tf.stack(
        [
            sign * cos,
            sign * sin,
            sign * (-cos * x0 - sin * y0) + (width - 1) / 2,
            -sin,
            cos,
            sin * x0 - cos * y0 + (height - 1) / 2,
            zeros,
            zeros,
        ],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _to_float(images, labels):
    """Casts a batch to float32 images and int64 labels."""
    return tf.cast(images, tf.float32), tf.cast(labels, tf.int64)


_AUGMENT_FUNCTIONS = {
    "crop_flip": _crop_flip,
    "flip_translate_rotate": _flip_translate_rotate,
}


def _check_pipeline_args(images, labels, batch_size: int, augment: str) -> None:
    """Raises DataError for an unknown augment or inconsistent arrays."""
    if augment not in AUGMENTATIONS:
        raise DataError(
            f"Unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}."
        )
    if batch_size < 1 or len(images) != len(labels):
        raise DataError(
            f"Need batch_size >= 1 and one label per image. Received: "
            f"batch_size={batch_size}, {len(images)} images, {len(labels)} labels"
        )


def _shuffled_batches(images, labels, batch_size, epoch_seeds, augment, drop_remainder):
    """Shuffled, augmented float32 batches of one epoch per element of `epoch_seeds`.

    Each epoch's order and augmentation depend only on its seed (an int64
    pair), so equal seeds give equal epochs.
    """
    with tf.device("/cpu:0"):  # tf.data runs on the host.
        images, labels = tf.constant(images), tf.constant(labels)
    count = len(labels)
    augment_batch = _AUGMENT_FUNCTIONS.get(augment)

    def epoch(epoch_seed):
        order = tf.random.experimental.stateless_shuffle(tf.range(count), epoch_seed)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(
            batch_size, drop_remainder=drop_remainder
        )
        return batches.enumerate().map(
            lambda step, indices: (
                indices,
                tf.random.experimental.stateless_fold_in(epoch_seed, step),
            )
        )

    def gather(indices, batch_seed):
        batch = _to_float(tf.gather(images, indices), tf.gather(labels, indices))
        if augment_batch is None:
            return batch
        return augment_batch(batch[0], batch_seed), batch[1]

    return (
        epoch_seeds.flat_map(epoch)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    augment: str = "none",
    seed: int = 0,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Makes a batched `tf.data.Dataset` of (float32 images, int64 labels).

    Images keep their raw pixel values in [0, 255]: the model standardises
    them. When `training`, each iteration over the dataset is a new shuffle
    of all examples, augmented a batch at a time; the same `seed` gives the
    same sequence of epochs.

    Args:
        images: uint8 array of shape (N, H, W, C).
        labels: integer array of shape (N,).
        batch_size: examples per batch.
        training: shuffle and augment when True.
        augment: one of `AUGMENTATIONS`; used only when `training`.
        seed: seed of the shuffle and the augmentation.
        drop_remainder: drop the last, smaller batch.

    Returns:
        A dataset of `(images, labels)` batches.
    """
    _check_pipeline_args(images, labels, batch_size, augment)
    if training:
        epoch_seeds = (
            tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            .take(1)
            .map(lambda value: tf.stack([value, seed]))
        )
        return _shuffled_batches(
            images, labels, batch_size, epoch_seeds, augment, drop_remainder
        )
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size, drop_remainder=drop_remainder)
        .map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def make_epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    augment: str = "none",
    seed: int = 0,
    epoch: Callable[[], int],
) -> tf.data.Dataset:
    """Makes a dataset that is, each time it is iterated, one training epoch.

    For `model.fit(dataset, epochs=..., initial_epoch=..., steps_per_epoch=None)`
    with a callback that keeps `epoch()` at the epoch being trained (see
    `callbacks.EpochNumber`): Keras iterates the dataset anew at the start of
    every epoch, and each iteration yields the `ceil(N / batch_size)` batches
    of epoch `epoch()`, shuffled and augmented from `(seed, epoch())` alone.
    So every epoch trains exactly its own batches whatever
    `steps_per_execution` (an execution ends early where the epoch's data
    ends), and a run resumed at epoch `e` sees the batches of an
    uninterrupted one.

    Args:
        images: uint8 array of shape (N, H, W, C).
        labels: integer array of shape (N,).
        batch_size: examples per batch; every epoch has ceil(N / batch_size).
        augment: one of `AUGMENTATIONS`.
        seed: seed of the shuffles and the augmentation.
        epoch: returns the (0-based) epoch to yield, read when an iteration
            starts.

    Returns:
        A finite dataset of `(float32 images, int64 labels)` batches, whose
        cardinality is the number of batches of one epoch.
    """
    _check_pipeline_args(images, labels, batch_size, augment)
    epoch_seeds = tf.data.Dataset.from_generator(
        lambda: iter([np.array([seed, epoch()], np.int64)]),
        output_signature=tf.TensorSpec((2,), tf.int64),
    )
    batches = _shuffled_batches(images, labels, batch_size, epoch_seeds, augment, False)
    # Several workers each make the same epoch in memory and keep their part
    # of every batch: DATA sharding (AUTO would try FILE sharding on the
    # generator's single source and fail).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.apply(
        tf.data.experimental.assert_cardinality(math.ceil(len(labels) / batch_size))
    ).with_options(options)
