"""Tests of ssm_keras.data: local readers, splits, errors and tf.data pipelines."""

import functools
import gzip
import pathlib
import pickle
import sys
import tarfile
import types

import numpy as np
import pytest
import tensorflow as tf
from support import idx, write_mnist

from ssm_keras import data
from ssm_keras.data import pipeline

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Caches go to a temporary folder; no data folder comes from the env."""
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SSM_DATA_DIR", raising=False)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """tensorflow_datasets looks in an empty default folder, never downloads."""
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(
        tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"), raising=False
    )
    monkeypatch.setenv("SSM_OFFLINE", "1")


def pixels(shape, start=0):
    """Known uint8 pixel values, different for each `start` below 256."""
    return (
        ((np.arange(np.prod(shape)) * 7 + start) % 256).astype(np.uint8).reshape(shape)
    )


def write(path, content):
    """Writes bytes to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def tar_gz(archive, folder, top=""):
    """Packs the contents of `folder` (under `top`) into a .tar.gz."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"{top}{path.relative_to(folder)}", recursive=False)
    return archive


def rows(images):
    """Each image as one bytes object, sorted: a multiset of images."""
    return sorted(image.tobytes() for image in images)


# ----------------------------------------------------------------------------
# Real MNIST.


@pytest.mark.slow
def test_real_mnist_shapes_counts_and_validation_split(mnist_dir):
    splits = data.load_splits("mnist", str(mnist_dir), validation_size=5000, seed=1)
    assert splits.source == f"idx:{mnist_dir}"
    assert splits.spec == data.DATASETS["mnist"]
    for (images, labels), size in zip(
        (splits.train, splits.validation, splits.test),
        (55000, 5000, 10000),
        strict=True,
    ):
        assert images.shape == (size, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (size,) and labels.dtype == np.int64
    assert np.bincount(splits.test[1]).tolist() == MNIST_TEST_COUNTS
    train_and_validation = np.concatenate([splits.train[1], splits.validation[1]])
    assert np.bincount(train_and_validation).tolist() == MNIST_TRAIN_COUNTS

    everything = data.load_splits("mnist", str(mnist_dir), validation_size=0)
    assert len(everything.validation[0]) == 0
    assert rows(np.concatenate([splits.train[0], splits.validation[0]])) == rows(
        everything.train[0]
    )

    again = data.load_splits("mnist", str(mnist_dir), validation_size=5000, seed=1)
    np.testing.assert_array_equal(again.validation[0], splits.validation[0])
    other = data.load_splits("mnist", str(mnist_dir), validation_size=5000, seed=2)
    assert not np.array_equal(other.validation[1], splits.validation[1])


def test_max_examples_caps_every_split(mnist_dir, monkeypatch):
    monkeypatch.setenv("SSM_DATA_DIR", str(mnist_dir.parent))
    splits = data.load_splits("mnist", validation_size=100, max_examples=7)
    assert [
        len(split[0]) for split in (splits.train, splits.validation, splits.test)
    ] == [7, 7, 7]
    assert splits.source == f"idx:{mnist_dir}"


@pytest.mark.slow
def test_max_examples_takes_every_class_of_class_sorted_files(tmp_path):
    """Image folders load class by class; a capped split must not be one class."""
    write_image_folders(tmp_path, (28, 28, 1), CLASS_NAMES, per_class=(30, 20))
    full = data.load_splits("mnist", str(tmp_path), validation_size=50)
    assert np.all(np.diff(full.test[1]) >= 0)  # the files are class-sorted
    splits = data.load_splits("mnist", str(tmp_path), validation_size=50, max_examples=40)
    for split in (splits.train, splits.validation, splits.test):
        assert len(split[1]) == 40 and len(np.unique(split[1])) >= 8, split[1]
    again = data.load_splits("mnist", str(tmp_path), validation_size=50, max_examples=40)
    np.testing.assert_array_equal(again.train[0], splits.train[0])


# ----------------------------------------------------------------------------
# Original formats on tiny archives.


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_returns_exact_arrays(tmp_path, compress):
    train = pixels((4, 28, 28)), np.array([3, 0, 9, 3], np.uint8)
    test = pixels((2, 28, 28), start=5), np.array([1, 2], np.uint8)
    write_mnist(tmp_path / "fashion-mnist", train, test, compress)

    splits = data.load_splits("fashion_mnist", str(tmp_path), validation_size=0)

    assert splits.source == f"idx:{tmp_path / 'fashion-mnist'}"
    np.testing.assert_array_equal(splits.train[0], train[0][..., None])
    np.testing.assert_array_equal(splits.train[1], [3, 0, 9, 3])
    np.testing.assert_array_equal(splits.test[0], test[0][..., None])
    np.testing.assert_array_equal(splits.test[1], [1, 2])
    assert splits.train[1].dtype == np.int64


def test_validation_split_comes_from_train_only(tmp_path):
    train = pixels((6, 28, 28)), np.arange(6, dtype=np.uint8)
    test = pixels((2, 28, 28), start=3), np.array([7, 8], np.uint8)
    write_mnist(tmp_path, train, test)

    splits = data.load_splits("mnist", str(tmp_path), validation_size=2, seed=3)

    assert len(splits.validation[1]) == 2 and len(splits.train[1]) == 4
    together = np.concatenate([splits.train[1], splits.validation[1]])
    assert sorted(together.tolist()) == list(range(6))
    for images, labels in (splits.train, splits.validation):
        np.testing.assert_array_equal(images, train[0][labels][..., None])
    np.testing.assert_array_equal(splits.test[1], [7, 8])


def cifar_data(count, start):
    """Flat CIFAR rows (channel-major) and the NHWC images they hold."""
    flat = pixels((count, 3 * 32 * 32), start)
    return flat, flat.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)


def write_cifar_python(folder, name, rng):
    """Writes CIFAR python batches; returns expected (train, test) arrays."""
    is_100 = name == "cifar100"
    files = (
        (["train"], ["test"])
        if is_100
        else (
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
        )
    )
    expected = []
    for start, names in enumerate(files):
        images, labels = [], []
        for i, file_name in enumerate(names):
            flat, nhwc = cifar_data(2, start=10 * start + i)
            fine = rng.integers(0, 100 if is_100 else 10, size=2).tolist()
            batch = {b"data": flat, b"filenames": [b"a.png", b"b.png"]}
            if is_100:
                batch.update({b"fine_labels": fine, b"coarse_labels": [19, 19]})
            else:
                batch[b"labels"] = fine
            write(folder / file_name, pickle.dumps(batch, protocol=2))
            images.append(nhwc)
            labels.extend(fine)
        expected.append((np.concatenate(images), np.array(labels)))
    return expected


def write_cifar_binary(folder, name, rng):
    """Writes CIFAR binary files; returns expected (train, test) arrays."""
    is_100 = name == "cifar100"
    files = (
        (["train.bin"], ["test.bin"])
        if is_100
        else (
            [f"data_batch_{i}.bin" for i in range(1, 6)],
            ["test_batch.bin"],
        )
    )
    expected = []
    for start, names in enumerate(files):
        images, labels = [], []
        for i, file_name in enumerate(names):
            flat, nhwc = cifar_data(3, start=10 * start + i)
            fine = rng.integers(0, 100 if is_100 else 10, size=3).astype(np.uint8)
            label_bytes = [np.full(3, 19, np.uint8), fine] if is_100 else [fine]
            records = np.concatenate([np.stack(label_bytes, axis=1), flat], axis=1)
            write(folder / file_name, records.tobytes())
            images.append(nhwc)
            labels.extend(fine.tolist())
        expected.append((np.concatenate(images), np.array(labels)))
    return expected


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("writer", [write_cifar_python, write_cifar_binary])
@pytest.mark.parametrize("packed", [True, False])
def test_cifar_readers_return_exact_arrays(tmp_path, name, writer, packed):
    number = name[len("cifar") :]
    kind = "python" if writer is write_cifar_python else "binary"
    extracted = tmp_path / "src" / f"cifar-{number}-{kind}"
    expected = writer(extracted, name, np.random.default_rng(0))
    data_dir = tmp_path / "data"
    if packed:
        data_dir.mkdir()
        location = tar_gz(
            data_dir / f"cifar-{number}-{kind}.tar.gz", extracted, f"{extracted.name}/"
        )
    else:
        location = extracted
        data_dir = extracted

    splits = data.load_splits(name, str(data_dir), validation_size=0)

    assert splits.source == f"cifar:{location}"
    for (images, labels), (want_images, want_labels) in zip(
        (splits.train, splits.test), expected, strict=True
    ):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
        assert images.dtype == np.uint8 and labels.dtype == np.int64


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    for file_name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write(folder / file_name, pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(data.DataError, match="data_batch_1 is not a CIFAR python"):
        data.load_splits("cifar10", str(tmp_path), validation_size=0)


# ----------------------------------------------------------------------------
# Folders of images.


def write_image_folders(root, shape, class_names, per_class=(2, 1)):
    """Writes PNGs to {train,test}/<class>/; returns {image bytes: class}."""
    expected = {}
    start = 0
    for split, count in zip(("train", "test"), per_class, strict=True):
        for class_name in class_names:
            for i in range(count):
                start += 1
                image = pixels(shape, start)
                png = tf.io.encode_png(image).numpy()
                write(root / split / class_name / f"{i:03d}.png", png)
                expected[image.tobytes()] = (split, class_name)
    return expected


def check_images(splits, expected, class_names):
    """Every returned image is a written one, in its split, with its class."""
    index = {name: i for i, name in enumerate(sorted(class_names))}
    seen = 0
    for split, (images, labels) in (("train", splits.train), ("test", splits.test)):
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        for image, label in zip(images, labels, strict=True):
            split_written, class_name = expected[image.tobytes()]
            assert (split_written, index[class_name]) == (split, label)
            seen += 1
    assert seen == len(expected)


CLASS_NAMES = [
    "kiwi",
    "apple",
    "fig",
    "date",
    "banana",
    "lime",
    "grape",
    "cherry",
    "elder",
    "hazel",
]


def test_image_folder_reader(tmp_path):
    root = tmp_path / "digits"
    expected = write_image_folders(root, (28, 28, 1), CLASS_NAMES)

    splits = data.load_splits("mnist", str(root), validation_size=0)

    assert splits.source == f"images:{root}"
    assert splits.train[0].shape == (20, 28, 28, 1)
    assert splits.test[0].shape == (10, 28, 28, 1)
    check_images(splits, expected, CLASS_NAMES)
    assert splits.test[1].tolist() == list(range(10))  # apple=0 ... lime=9


def test_image_tar_is_found_decoded_and_cached(tmp_path):
    expected = write_image_folders(tmp_path / "src", (32, 32, 3), CLASS_NAMES)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = tar_gz(data_dir / "cifar10-jpeg.tar.gz", tmp_path / "src")

    first = data.load_splits("cifar10", str(data_dir), validation_size=0)

    assert first.source == f"images:{archive}"
    check_images(first, expected, CLASS_NAMES)
    assert [path.name for path in data_dir.iterdir()] == ["cifar10-jpeg.tar.gz"]
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 1
    second = data.load_splits("cifar10", str(archive), validation_size=0)
    for split in ("train", "test"):
        for got, want in zip(
            getattr(second, split), getattr(first, split), strict=True
        ):
            np.testing.assert_array_equal(got, want)


def test_image_folder_needs_one_folder_per_class(tmp_path):
    write_image_folders(tmp_path, (28, 28, 1), CLASS_NAMES[:3])
    with pytest.raises(
        data.DataError, match="needs 10 class folders in train/, found 3"
    ):
        data.load_splits("mnist", str(tmp_path))


def test_image_of_wrong_size_is_reported(tmp_path):
    write_image_folders(tmp_path, (28, 28, 1), CLASS_NAMES)
    write(
        tmp_path / "test" / "fig" / "big.png",
        tf.io.encode_png(pixels((30, 28, 1))).numpy(),
    )
    with pytest.raises(data.DataError, match=r"Cannot decode the image test/fig/big.png in .*test"):
        data.load_splits("mnist", str(tmp_path))


def test_undecodable_jpeg_is_named(tmp_path):
    write_image_folders(tmp_path, (28, 28, 1), CLASS_NAMES)
    write(tmp_path / "train" / "fig" / "broken.jpg", b"\xff\xd8\xff not really a JPEG")
    with pytest.raises(data.DataError, match=r"Cannot decode the image train/fig/broken.jpg in"):
        data.load_splits("mnist", str(tmp_path))


def test_idx_files_of_unknown_labels_are_either_data_set(tmp_path):
    train = pixels((4, 28, 28)), np.array([3, 0, 9, 3], np.uint8)
    test = pixels((2, 28, 28), start=5), np.array([1, 2], np.uint8)
    write_mnist(tmp_path, train, test)
    for name in ("mnist", "fashion_mnist"):
        splits = data.load_splits(name, str(tmp_path), validation_size=0)
        assert splits.train[1].tolist() == [3, 0, 9, 3] and splits.test[1].tolist() == [1, 2]


def test_real_mnist_is_not_taken_for_fashion_mnist(mnist_dir):
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte.gz is the label file of "
                                             r"mnist, not of fashion_mnist: check --data_dir, "
                                             r"or pass --dataset=mnist"):
        data.load_splits("fashion_mnist", str(mnist_dir))


def test_fashion_mnist_is_found_in_its_folder_beside_real_mnist(tmp_path, mnist_dir):
    """The MNIST files at the top of --data_dir are passed over, not an error."""
    for path in mnist_dir.iterdir():
        (tmp_path / path.name).symlink_to(path)
    train = pixels((4, 28, 28)), np.array([3, 0, 9, 3], np.uint8)
    test = pixels((2, 28, 28), start=5), np.array([1, 2], np.uint8)
    write_mnist(tmp_path / "fashion_mnist", train, test)
    splits = data.load_splits("fashion_mnist", str(tmp_path), validation_size=0)
    assert splits.train[1].tolist() == [3, 0, 9, 3] and splits.test[1].tolist() == [1, 2]
    assert splits.source.startswith("idx:") and "fashion_mnist" in splits.source


def test_a_data_file_that_cannot_be_read_is_a_data_error(tmp_path, monkeypatch):
    write_mnist(tmp_path, (pixels((4, 28, 28)), np.zeros(4, np.uint8)),
                (pixels((2, 28, 28)), np.zeros(2, np.uint8)))
    locked = tmp_path / "t10k-images-idx3-ubyte.gz"
    read_bytes = pathlib.Path.read_bytes

    def refuse_locked(path):  # as for a file without read permission (root reads them all)
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse_locked)
    with pytest.raises(data.DataError, match=f"^{locked} cannot be read: Permission denied.$"):
        data.load_splits("mnist", str(tmp_path))


# ----------------------------------------------------------------------------
# Errors and tensorflow_datasets.


def test_unknown_dataset_lists_choices():
    with pytest.raises(
        data.DataError, match="'imagenet'.*mnist, fashion_mnist, cifar10, cifar100"
    ):
        data.load_splits("imagenet")


def test_nothing_usable_names_every_place_tried(tmp_path, offline):
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(data.DataError) as error:
        data.load_splits("cifar100", str(tmp_path))
    message = str(error.value)
    assert f"{tmp_path}: no cifar100 files found" in message
    assert "tensorflow_datasets: not prepared" in message
    assert "no download: SSM_OFFLINE=1 is set" in message
    assert "--data_dir=DIR" in message and "cifar-100-python.tar.gz" in message


def test_missing_folder_and_no_data_dir(tmp_path, offline):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_splits("mnist", str(tmp_path / "absent"))
    with pytest.raises(
        data.DataError, match="no data_dir given and SSM_DATA_DIR not set"
    ):
        data.load_splits("mnist")


def test_tfds_probes_of_empty_folders_log_nothing(tmp_path, offline, caplog):
    with caplog.at_level("INFO"), pytest.raises(data.DataError):
        data.load_splits("mnist", str(tmp_path / "absent"))
    assert [record.getMessage() for record in caplog.records if record.levelname != "INFO"] == []


def test_corrupt_idx_names_the_file(tmp_path):
    write_mnist(
        tmp_path,
        (pixels((2, 28, 28)), np.zeros(2, np.uint8)),
        (pixels((1, 28, 28)), np.zeros(1, np.uint8)),
    )
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(10)))
    with pytest.raises(data.DataError, match=f"{bad}.*bad magic number"):
        data.load_splits("mnist", str(tmp_path), validation_size=0)
    bad.write_bytes(gzip.compress(idx(pixels((2, 28, 28)))[:-5]))
    with pytest.raises(data.DataError, match=f"{bad} is truncated"):
        data.load_splits("mnist", str(tmp_path), validation_size=0)
    bad.write_bytes(gzip.compress(idx(pixels((2, 28, 28))))[:-9])
    with pytest.raises(data.DataError, match=f"{bad} is not a valid gzip file"):
        data.load_splits("mnist", str(tmp_path), validation_size=0)


def test_bad_sizes_are_refused(tmp_path):
    write_mnist(
        tmp_path,
        (pixels((3, 28, 28)), np.zeros(3, np.uint8)),
        (pixels((1, 28, 28)), np.zeros(1, np.uint8)),
    )
    with pytest.raises(data.DataError, match="validation_size=3"):
        data.load_splits("mnist", str(tmp_path), validation_size=3)
    with pytest.raises(data.DataError, match="validation_size=-1"):
        data.load_splits("mnist", str(tmp_path), validation_size=-1)


def test_tfds_prepared_copy_is_read_without_download(tmp_path, monkeypatch):
    calls = []

    class Builder:
        def __init__(self, name, data_dir):
            self.data_dir = data_dir

        def is_prepared(self):
            return self.data_dir == str(tmp_path)

    def load(name, **kwargs):
        calls.append((name, kwargs))
        return [
            {"image": pixels((n, 28, 28, 1)), "label": np.arange(n) % 10}
            for n in (8, 3)
        ]

    fake = types.SimpleNamespace(builder=Builder, load=load, as_numpy=lambda x: x)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setenv("SSM_OFFLINE", "1")  # prepared data needs no network

    splits = data.load_splits("mnist", str(tmp_path), validation_size=2)

    assert splits.source == "tfds:mnist"
    assert calls == [
        (
            "mnist",
            dict(
                split=["train", "test"],
                batch_size=-1,
                data_dir=str(tmp_path),
                download=False,
            ),
        )
    ]
    assert [
        len(split[1]) for split in (splits.train, splits.validation, splits.test)
    ] == [6, 2, 3]


def test_tfds_failure_is_reported(monkeypatch, tmp_path):
    def builder(name, data_dir):
        raise RuntimeError("tfds exploded")

    fake = types.SimpleNamespace(builder=builder)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(
        data.DataError, match="tensorflow_datasets: RuntimeError: tfds exploded"
    ):
        data.load_splits("cifar10", str(tmp_path))


# ----------------------------------------------------------------------------
# make_eval_dataset and make_epoch_dataset.


def batches(dataset):
    """All batches as NumPy (images, labels) pairs."""
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def epoch_batches(images, labels, batch_size, epochs, **kwargs):
    """The batches of each epoch of `epochs`, in turn, from one epoch dataset."""
    current = {"epoch": 0}
    dataset = data.make_epoch_dataset(
        images, labels, batch_size, epoch=lambda: current["epoch"], **kwargs
    )
    result = []
    for epoch in epochs:
        current["epoch"] = epoch
        result.append(batches(dataset))
    return result


def test_evaluation_batches_are_raw_float_values_in_order():
    images = pixels((10, 6, 5, 3))
    labels = np.arange(10, dtype=np.uint8)

    dataset = data.make_eval_dataset(images, labels, 4)
    result = batches(dataset)

    assert int(dataset.cardinality()) == 3
    assert [batch[0].shape for batch in result] == [
        (4, 6, 5, 3),
        (4, 6, 5, 3),
        (2, 6, 5, 3),
    ]
    assert all(
        batch[0].dtype == np.float32 and batch[1].dtype == np.int64 for batch in result
    )
    np.testing.assert_array_equal(
        np.concatenate([b[0] for b in result]), images.astype(np.float32)
    )
    np.testing.assert_array_equal(np.concatenate([b[1] for b in result]), labels)
    again = batches(dataset)
    for (a_images, a_labels), (b_images, b_labels) in zip(result, again, strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


@pytest.mark.slow
def test_training_shuffles_each_epoch_reproducibly():
    images = pixels((32, 4, 4, 1))
    labels = np.arange(32)

    epochs = epoch_batches(images, labels, 8, [0, 1], seed=5)

    orders = [np.concatenate([b[1] for b in epoch]) for epoch in epochs]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(32))
    assert not np.array_equal(orders[0], orders[1])
    for epoch in epochs:
        for images_batch, labels_batch in epoch:
            np.testing.assert_array_equal(images_batch, images[labels_batch])
    again = epoch_batches(images, labels, 8, [0, 1], seed=5)
    for epoch, order in zip(again, orders, strict=True):
        np.testing.assert_array_equal(np.concatenate([b[1] for b in epoch]), order)
    (other,) = epoch_batches(images, labels, 8, [0], seed=6)
    assert not np.array_equal(np.concatenate([b[1] for b in other]), orders[0])


def shifted_or_flipped(original, result):
    """Whether `result` is `original` zero-padded by 4, cropped, maybe flipped."""
    height, width = original.shape[:2]
    padded = np.pad(original, [(4, 4), (4, 4), (0, 0)])
    for flip in (False, True):
        source = padded[:, ::-1] if flip else padded
        for top in range(9):
            for left in range(9):
                if np.array_equal(
                    source[top : top + height, left : left + width], result
                ):
                    return True
    return False


def test_crop_flip_is_a_shifted_or_flipped_copy():
    images = (pixels((16, 6, 6, 2)) | 1).astype(np.uint8)  # No zero pixels.
    labels = np.arange(16)

    (result,) = epoch_batches(images, labels, 16, [0], augment="crop_flip", seed=1)

    augmented, order = result[0]
    assert augmented.shape == (16, 6, 6, 2) and augmented.dtype == np.float32
    changed = 0
    for image, label in zip(augmented, order, strict=True):
        assert shifted_or_flipped(images[label].astype(np.float32), image)
        changed += not np.array_equal(image, images[label])
    assert changed >= 12


@pytest.mark.slow
def test_flip_translate_rotate_changes_images_reproducibly():
    images = pixels((8, 12, 12, 3))
    labels = np.arange(8)

    def run(seed):
        (result,) = epoch_batches(
            images, labels, 8, [0], augment="flip_translate_rotate", seed=seed
        )
        return result[0]

    augmented, order = run(seed=2)
    assert augmented.shape == (8, 12, 12, 3) and augmented.dtype == np.float32
    assert augmented.min() >= 0 and augmented.max() <= 255
    for image, label in zip(augmented, order, strict=True):
        assert not np.allclose(image, images[label])
    again, _ = run(seed=2)
    np.testing.assert_array_equal(again, augmented)
    other, _ = run(seed=3)
    assert not np.allclose(other, augmented)


@pytest.mark.slow
def test_augmented_epochs_differ_but_streams_repeat():
    images = pixels((8, 6, 6, 1))
    labels = np.arange(8)

    first, second = epoch_batches(
        images, labels, 4, [0, 1], augment="crop_flip", seed=4
    )

    assert not all(
        np.array_equal(a[0], b[0]) for a, b in zip(first, second, strict=True)
    )
    again = epoch_batches(images, labels, 4, [0, 1], augment="crop_flip", seed=4)
    for (a, _), (b, _) in zip(first + second, again[0] + again[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_augment_epochs_stops_the_augmentation_after_them():
    images = (pixels((8, 6, 6, 1)) | 1).astype(np.uint8)  # No zero pixels.
    labels = np.arange(8)

    limited = epoch_batches(images, labels, 8, [0, 1, 2, 1], augment="crop_flip", seed=5,
                            augment_epochs=2)
    every = epoch_batches(images, labels, 8, [0, 1, 2], augment="crop_flip", seed=5)

    # Epochs 0 and 1: the batches of an augmentation on every epoch.
    for (a_images, a_labels), (b_images, b_labels) in zip(limited[0] + limited[1],
                                                          every[0] + every[1], strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)
    # Epoch 2: the same order, the images as they are; epoch 1 again: augmented.
    (plain_images, plain_order), = limited[2]
    np.testing.assert_array_equal(plain_order, every[2][0][1])
    np.testing.assert_array_equal(plain_images, images[plain_order].astype(np.float32))
    (again_images, _), = limited[3]
    np.testing.assert_array_equal(again_images, every[1][0][0])
    assert not np.array_equal(again_images, images[every[1][0][1]].astype(np.float32))


def test_bad_augment_epochs_is_refused():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(data.DataError, match=f"augment_epochs={bad!r}"):
            data.make_epoch_dataset(pixels((2, 4, 4, 1)), np.arange(2), 2,
                                    augment="crop_flip", augment_epochs=bad,
                                    epoch=lambda: 0)


def test_unknown_augment_lists_choices():
    with pytest.raises(
        data.DataError, match="'mixup'.*none, crop_flip, flip_translate_rotate"
    ):
        data.make_epoch_dataset(
            pixels((2, 4, 4, 1)), np.arange(2), 2, augment="mixup", epoch=lambda: 0
        )


def test_bad_batch_size_or_labels_are_refused():
    images = pixels((3, 4, 4, 1))
    for make in (
        data.make_eval_dataset,
        functools.partial(data.make_epoch_dataset, epoch=lambda: 0),
    ):
        with pytest.raises(data.DataError, match="batch_size=0, 3 images, 3 labels"):
            make(images, np.arange(3), 0)
        with pytest.raises(data.DataError, match="batch_size=2, 3 images, 2 labels"):
            make(images, np.arange(2), 2)


@pytest.mark.slow
def test_flip_translate_rotate_geometry():
    """Rotations turn about the centre; without them, a flip or nothing."""
    seed = tf.constant([3, 4], tf.int64)
    spot = np.zeros((8, 9, 9, 1), np.float32)
    spot[:, 4, 4] = 255
    rotated = pipeline.flip_translate_rotate(spot, seed, max_translation=0.0).numpy()
    np.testing.assert_allclose(rotated[:, 4, 4, 0], 255, atol=0.01)
    assert not np.allclose(rotated, spot, atol=1.0)  # the pixels around it moved

    ramp = np.tile(pixels((1, 5, 5, 1)), (16, 1, 1, 1)).astype(np.float32)
    moved = pipeline.flip_translate_rotate(ramp, seed, max_rotation=0.0).numpy()
    assert not np.allclose(moved, ramp[0]) and not np.allclose(moved, ramp[0, :, ::-1])
    flipped = pipeline.flip_translate_rotate(ramp, seed, max_translation=0.0,
                                             max_rotation=0.0).numpy()
    kinds = [
        "same" if np.array_equal(image, ramp[0]) else "mirror"
        for image in flipped
        if np.array_equal(image, ramp[0]) or np.array_equal(image, ramp[0, :, ::-1])
    ]
    assert len(kinds) == 16 and set(kinds) == {"same", "mirror"}


def test_epoch_dataset_yields_the_epoch_it_is_asked_for():
    images = pixels((10, 6, 6, 1))
    labels = np.arange(10)
    current = {"epoch": 0}
    dataset = data.make_epoch_dataset(
        images, labels, 4, augment="crop_flip", seed=7, epoch=lambda: current["epoch"]
    )
    assert int(dataset.cardinality()) == 3
    epochs = []
    for epoch in (0, 1, 2, 1):
        current["epoch"] = epoch
        epochs.append(batches(dataset))
    assert [len(batch[1]) for batch in epochs[0]] == [4, 4, 2]
    orders = [np.concatenate([batch[1] for batch in epoch]) for epoch in epochs]
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert not np.array_equal(orders[0], orders[1])
    # The same epoch again (a resumed run): the same batches and augmentation.
    for (a_images, a_labels), (b_images, b_labels) in zip(epochs[1], epochs[3], strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def test_cache_folder_that_is_a_file_is_skipped(tmp_path, monkeypatch):
    expected = write_image_folders(tmp_path / "src", (32, 32, 3), CLASS_NAMES)
    archive = tar_gz(tmp_path / "cifar10-jpeg.tar.gz", tmp_path / "src")
    (tmp_path / "not a folder").write_text("x")
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path / "not a folder"))
    splits = data.load_splits("cifar10", str(archive), validation_size=0)
    check_images(splits, expected, CLASS_NAMES)
    assert (tmp_path / "not a folder").read_text() == "x"
