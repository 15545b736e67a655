"""A training run's TensorBoard scalars: their tags, and reading them back without TensorFlow.

train.py writes the tags named here (`train/loss`, `train/learning_rate`, `train/grad_norm`,
`train/steps_per_sec` and `val/<set>/psnr|ssim`, `val_tag`) with `ScalarWriter` into
`workdir/events.out.tfevents.*`. Those files are TFRecord streams of `Event` protocol buffers
(tensorboardX's protobuf classes). `ScalarWriter` writes each record in the calling thread, so
that once `flush()` returns the scalars are in the file: training flushes before every checkpoint,
and a run killed just after a save never has a checkpoint ahead of its curve (tensorboardX's own
writer queues records for a thread that its `flush()` does not wait for). `read_scalars` checks
every record's CRC, so a truncated or damaged file is reported with its name rather than read
wrong. The last record of a file a killed run was writing may be cut short: that one is dropped,
as TensorBoard does.

A resumed run appends a new event file and repeats the steps after its checkpoint; for each tag
and step the value written last wins.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np
from tensorboardX.proto import event_pb2, summary_pb2

# The tags of the scalars training writes (`training.loop`) and the study scripts read.
TRAIN_LOSS = "train/loss"
TRAIN_LEARNING_RATE = "train/learning_rate"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_STEPS_PER_SEC = "train/steps_per_sec"
_VAL = "val"


def val_tag(dataset: str, metric: str = "psnr") -> str:
    """The tag of a validation score: "val/Set5/psnr" (a multi-scale run's sets: "Set5_x2")."""
    return f"{_VAL}/{dataset}/{metric}"


def val_dataset(tag: str, metric: str = "psnr") -> str | None:
    """The validation set a tag of `metric` scores ("val/Set5/psnr" -> "Set5"), else None."""
    parts = tag.split("/")
    if len(parts) == 3 and parts[0] == _VAL and parts[2] == metric:
        return parts[1]
    return None

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path: Path):
    """The payloads of one TFRecord file; a record cut short at the end ends the file."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            return
        length, length_crc = _HEADER.unpack_from(data, offset)
        if _masked_crc(data[offset:offset + 8]) != length_crc:
            raise ValueError(f"{path}: damaged event record at byte {offset} (length checksum)")
        start = offset + _HEADER.size
        end = start + length + _FOOTER.size
        if end > len(data):
            return
        payload = data[start:start + length]
        if _masked_crc(payload) != _FOOTER.unpack_from(data, start + length)[0]:
            raise ValueError(f"{path}: damaged event record at byte {offset} (data checksum)")
        yield payload
        offset = end


_WRITERS = itertools.count()  # this process's writers, so that each has its own file


def _record(payload: bytes) -> bytes:
    """One TFRecord: length, its checksum, the payload, its checksum."""
    header = struct.pack("<Q", len(payload))
    return (header + _FOOTER.pack(_masked_crc(header)) + payload
            + _FOOTER.pack(_masked_crc(payload)))


class ScalarWriter:
    """Writes scalars to a new event file in a folder, synchronously.

    Example:
      with ScalarWriter(workdir) as writer:
          writer.add_scalar(TRAIN_LOSS, 0.05, step=100)
          writer.flush()  # the record is in the file now
    """

    def __init__(self, folder: str | os.PathLike):
        """Creates `folder/events.out.tfevents.<time>.<host>.<pid>.<n>`, a new file."""
        self.path = Path(folder) / (f"events.out.tfevents.{int(time.time())}."
                                    f"{socket.gethostname()}.{os.getpid()}.{next(_WRITERS)}")
        self._file = open(self.path, "xb")  # noqa: SIM115 (closed by close())
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self._file.write(_record(event.SerializeToString()))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """Appends one scalar (buffered until `flush`)."""
        self._write(event_pb2.Event(
            wall_time=time.time(), step=int(step),
            summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
                tag=tag, simple_value=float(value))])))

    def flush(self) -> None:
        """Hands everything written so far to the operating system (it survives a kill)."""
        self._file.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def event_files(workdir: str | os.PathLike) -> list[Path]:
    """The event files of a workdir, oldest first."""
    return sorted(Path(workdir).glob("events.out.tfevents.*"),
                  key=lambda p: (p.stat().st_mtime, p.name))


def read_scalars(workdir: str | os.PathLike, tags: list[str] | None = None
                 ) -> dict[str, np.ndarray]:
    """The scalar curves of a run.

    Args:
      workdir: the training workdir (train.py's --workdir).
      tags: the tags to read (e.g. ["val/Set5/psnr"]); None reads all.

    Returns:
      {tag: float64 array of rows (step, wall_time, value)}, sorted by step; a step written
      twice (a resumed run) keeps the later value.

    Raises:
      FileNotFoundError: the workdir holds no event file.
      ValueError: a damaged record, naming the file and byte offset.
    """
    files = event_files(workdir)
    if not files:
        raise FileNotFoundError(f"{workdir} holds no TensorBoard event file "
                                f"(events.out.tfevents.*); expected a train.py --workdir")
    wanted = None if tags is None else set(tags)
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    for path in files:
        for payload in _records(path):
            event = event_pb2.Event.FromString(payload)
            if not event.HasField("summary"):
                continue
            values = [v for v in event.summary.value
                      if (wanted is None or v.tag in wanted) and v.HasField("simple_value")]
            for value in values:
                rows.setdefault(value.tag, {})[int(event.step)] = (event.wall_time,
                                                                   value.simple_value)
    return {tag: np.array([(step, *rows[tag][step]) for step in sorted(rows[tag])], np.float64)
            for tag in sorted(rows)}


__all__ = ["ScalarWriter", "TRAIN_GRAD_NORM", "TRAIN_LEARNING_RATE", "TRAIN_LOSS", "TRAIN_STEPS_PER_SEC", "event_files",
           "read_scalars", "val_dataset", "val_tag"]
