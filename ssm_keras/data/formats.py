"""Parsers of the original file formats, from bytes to NumPy arrays.

The MNIST-style IDX files (gzipped or not), the CIFAR python batches and
binary files, and `train/<class>/` and `test/<class>/` folders of JPEG or
PNG images. Each reader takes the files of one local copy and returns
`(train, test)` uint8 NHWC images and int64 labels, or None when its files
are not there; a file that is there but unreadable raises a `DataError`
naming it.
"""

import functools
import gzip
import hashlib
import io
import math
import pathlib
import pickle
import struct
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ssm_keras.data.specs import Arrays, DataError, DatasetSpec

# Files of one local copy: path relative to the copy's root -> its bytes.
Files = dict[str, Callable[[], bytes]]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ----------------------------------------------------------------------------
# Original file formats.


def gunzip_if_needed(data: bytes, name: str) -> bytes:
    """Returns `data`, decompressed if it starts with the gzip magic number."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, ValueError) as err:
        raise DataError(f"{name} is not a valid gzip file: {err}") from err


def _parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parses an IDX file of unsigned bytes with `ndim` dimensions."""
    data = gunzip_if_needed(data, name)
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


class OtherDataSet(DataError):
    """The files are those of another known data set (told by checksums)."""


def _check_idx_identity(spec: DatasetSpec, labels: np.ndarray, where: str) -> None:
    """Raises OtherDataSet if `labels` are those of another known data set."""
    content = bytes((0, 0, 8, 1)) + struct.pack(">I", len(labels)) + labels.tobytes()
    known = _KNOWN_IDX_LABELS.get(hashlib.sha256(content).hexdigest())
    if known is not None and known != spec.name:
        raise OtherDataSet(
            f"{where} is the label file of {known}, not of {spec.name}: check "
            f"--data_dir, or pass --dataset={known}."
        )


def read_idx(spec: DatasetSpec, files: Files, root: pathlib.Path):
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
        splits.append(checked(spec, images[..., None], labels, image_path))
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


def read_cifar(spec, files, root, *, train, test, label_key, label_bytes):
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
        splits.append(checked(spec, images, labels, where))
    return tuple(splits)


def checked(spec: DatasetSpec, images, labels, where: str) -> Arrays:
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


def _image_keys(files: Files) -> dict[str, list[tuple[str, str]]] | None:
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


def read_images(spec, files, root) -> tuple[Arrays, Arrays] | None:
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
