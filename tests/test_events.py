"""Tests for drsan_jax.events: training curves read back from the event files train.py writes."""

import time

import numpy as np
import pytest
import tensorboardX

from drsan_jax import events


def _write(folder, rows, suffix=""):
    """Event files as runs before ScalarWriter wrote them (tensorboardX's asynchronous writer)."""
    writer = tensorboardX.SummaryWriter(str(folder), filename_suffix=suffix)
    for tag, step, value in rows:
        writer.add_scalar(tag, value, step)
    writer.close()


def test_scalar_writer_records_are_tensorboardx_records_and_readable_once_flushed(tmp_path):
    writer = events.ScalarWriter(tmp_path)
    writer.add_scalar("train/loss", 0.25, step=7)
    writer.add_scalar("val/Set5/psnr", 31.5, step=7)
    writer.flush()
    # Read while the file is still open, as after a kill: flushed means in the file.
    curves = events.read_scalars(tmp_path)
    assert curves["train/loss"][0, 0] == 7 and curves["train/loss"][0, 2] == 0.25
    assert curves["val/Set5/psnr"][0, 2] == 31.5
    writer.close()
    # The framing is TFRecord's as tensorboardX writes it, byte for byte.
    reference = tmp_path / "reference"
    record_writer = tensorboardX.record_writer.RecordWriter(str(reference))
    record_writer.write(b"payload")
    record_writer.close()
    assert events._record(b"payload") == reference.read_bytes()
    # A second writer in the same folder starts its own file.
    with events.ScalarWriter(tmp_path) as second:
        second.add_scalar("train/loss", 0.125, step=8)
    assert second.path != writer.path
    np.testing.assert_array_equal(events.read_scalars(tmp_path)["train/loss"][:, 0], [7, 8])


def test_a_resumed_run_reads_as_one_curve_with_the_later_values(tmp_path):
    _write(tmp_path, [("train/loss", s, 1.0 / s) for s in (1, 2, 3)]
           + [("val/Set5/psnr", 3, 30.0)])
    time.sleep(0.01)  # the second file is newer
    _write(tmp_path, [("train/loss", s, 2.0 / s) for s in (3, 4)], suffix=".resumed")
    curves = events.read_scalars(tmp_path)
    assert sorted(curves) == ["train/loss", "val/Set5/psnr"]
    loss = curves["train/loss"]
    np.testing.assert_array_equal(loss[:, 0], [1, 2, 3, 4])
    np.testing.assert_allclose(loss[:, 2], [1.0, 0.5, 2 / 3, 0.5], rtol=1e-6)
    assert np.all(np.diff(loss[:, 1]) >= 0)  # wall times
    only = events.read_scalars(tmp_path, ["val/Set5/psnr"])
    assert list(only) == ["val/Set5/psnr"] and only["val/Set5/psnr"][0, 2] == 30.0


def test_damage_is_reported_with_the_file_and_a_cut_record_is_dropped(tmp_path):
    _write(tmp_path, [("train/loss", s, float(s)) for s in (1, 2, 3)])
    (path,) = events.event_files(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # a run killed while writing its last record
    np.testing.assert_array_equal(events.read_scalars(tmp_path)["train/loss"][:, 0], [1, 2])
    damaged = bytearray(data)
    damaged[-10] ^= 0xFF  # inside the last record's payload
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=f"{path}: damaged event record at byte"):
        events.read_scalars(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no TensorBoard event file"):
        events.read_scalars(tmp_path / "nothing")


def test_tensorboard_reads_the_scalar_writer_files(tmp_path):
    # TensorBoard's own reader (the `tensorboard` extra, in `dev`), not ours: the files are
    # what `tensorboard --logdir <workdir>` shows.
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    with events.ScalarWriter(tmp_path) as writer:
        for step in (1, 2, 3):
            writer.add_scalar(events.TRAIN_LOSS, 1.0 / step, step)
        writer.add_scalar(events.val_tag("Set5"), 31.25, 3)
    reader = accumulator.EventAccumulator(str(tmp_path))
    reader.Reload()
    assert set(reader.Tags()["scalars"]) == {events.TRAIN_LOSS, "val/Set5/psnr"}
    loss = reader.Scalars(events.TRAIN_LOSS)
    assert [e.step for e in loss] == [1, 2, 3]
    np.testing.assert_allclose([e.value for e in loss], [1.0, 0.5, 1 / 3], rtol=1e-6)
    assert reader.Scalars("val/Set5/psnr")[0].value == 31.25
