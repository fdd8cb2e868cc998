"""Files written whole or not at all: the temporary file, its flush to the disk,
the rename, and what is left when the writer fails."""

import os

import pytest

from ssm_keras import files


def test_save_atomically_renames_the_written_temporary_file_onto_the_path(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"old")
    written = []

    def save(temporary):
        written.append(temporary)
        with open(temporary, "wb") as file:
            file.write(b"new")

    files.save_atomically(str(path), save, suffix=".npz")
    assert written == [str(tmp_path / f".weights.npz.tmp-{os.getpid()}.npz")]
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["weights.npz"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     ValueError("not serialisable"), KeyboardInterrupt()])
def test_a_writer_that_fails_leaves_no_temporary_and_the_old_file_whole(tmp_path, failure):
    path = tmp_path / "model.keras"
    path.write_bytes(b"old")

    def save(temporary):
        with open(temporary, "wb") as file:
            file.write(b"partial")
        raise failure

    with pytest.raises(type(failure)) as info:
        files.save_atomically(str(path), save, suffix=".keras")
    assert info.value is failure
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.keras"]


def test_write_atomically_reports_the_path_and_the_reason(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(files.FileWriteError) as info:
        files.write_atomically(str(folder), b"bytes")
    assert str(info.value) == f"cannot write {folder}: Is a directory"
    assert os.listdir(tmp_path) == ["folder"] and os.listdir(folder) == []


def test_a_link_is_written_where_it_points_and_permissions_are_kept(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    files.write_text_atomically(str(link), "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "results.json"]


def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "model.ssm"
    path.write_bytes(b"kept")
    path.chmod(0o444)
    with pytest.raises(files.FileWriteError) as info:
        files.write_atomically(str(path), b"new")
    assert str(info.value) == f"cannot write {path}: it is read-only, and is not replaced"
    assert path.read_bytes() == b"kept" and os.listdir(tmp_path) == ["model.ssm"]
