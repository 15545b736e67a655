"""Tests for drsan_jax.files: whole files or none, and file versions."""

import json
import os

import numpy as np
import pytest

from drsan_jax import files


def test_atomic_write_replaces_the_file_through_a_hidden_temporary(tmp_path):
    path = tmp_path / "sub" / "cache.npy"
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert not path.exists()  # nothing at the destination until the write is done
        np.save(tmp, np.arange(3))  # np.save keeps a name that ends in .npy

    assert files.atomic_write(path, write) == path
    (tmp,) = seen
    assert tmp.parent == path.parent and tmp.name.startswith(".") and tmp.suffix == ".npy"
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    assert os.listdir(path.parent) == ["cache.npy"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, error):
    path = tmp_path / "results.json"
    files.write_json(path, {"psnr": 30.0})

    def write(tmp):
        tmp.write_text('{"psn')
        raise error

    with pytest.raises(type(error)):
        files.atomic_write(path, write)
    assert json.loads(path.read_text()) == {"psnr": 30.0}
    assert os.listdir(tmp_path) == ["results.json"]


def test_write_json_is_indented_and_ends_in_a_newline(tmp_path):
    text = files.write_json(tmp_path / "a.json", {"a": [1, 2]}).read_text()
    assert text == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    assert files.write_json(tmp_path / "b.json", [1], indent=None).read_text() == "[1]\n"


def test_file_key_changes_when_the_file_does(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    key = files.file_key(path)
    assert str(path.resolve()) in key and key == files.file_key(tmp_path / "." / "a.png")
    path.write_bytes(b"three")
    assert files.file_key(path) != key


def test_an_error_about_the_temporary_names_the_file_asked_for(tmp_path):
    path = tmp_path / "results.json"

    def write(tmp):
        raise PermissionError(13, "Permission denied", str(tmp))

    with pytest.raises(PermissionError) as error:
        files.atomic_write(path, write)
    assert str(error.value) == f"[Errno 13] Permission denied: '{path}'"
    assert list(tmp_path.iterdir()) == []


def test_files_written_together_appear_together_or_not_at_all(tmp_path):
    # The exporter writes a model and its card this way: a failure on the second (its folder
    # cannot be made: a file stands in the way) must not leave the first behind.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    model, card = tmp_path / "m.onnx", blocker / "m.onnx.json"
    with pytest.raises(OSError):
        files.atomic_write_files({model: b"model", card: b"card"})
    assert sorted(tmp_path.iterdir()) == [blocker]
    files.atomic_write_files({model: b"model", tmp_path / "m.onnx.json": b"card"})
    assert model.read_bytes() == b"model" and (tmp_path / "m.onnx.json").read_bytes() == b"card"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "m.onnx", "m.onnx.json"]


def test_a_check_that_fails_leaves_the_old_file(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"old")
    seen = []

    def refuse(tmp):
        seen.append(tmp.read_bytes())
        raise ValueError("does not reproduce its checkpoint")

    with pytest.raises(ValueError, match="reproduce"):
        files.atomic_write(path, lambda tmp: tmp.write_bytes(b"new"), check=refuse)
    assert seen == [b"new"] and path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.npz"]
