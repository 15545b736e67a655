"""The project's PNG codec, for what Pillow cannot do: 16-bit colour, and writing by rows.

Pillow truncates 16-bit RGB, RGBA and grey + alpha PNGs to 8 bits when it decodes them, so
`read_16bit_colour` decodes those (non-interlaced) at their full depth. `write` encodes any 8-
or 16-bit grey, RGB or RGBA image that arrives in bands of rows through one zlib stream, so a
picture of hundreds of megapixels is never whole in memory. Both follow the PNG specification
(chunks with CRCs, the five row filters of its section 9).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types (PNG spec, IHDR) -> samples per pixel, for those Pillow truncates at 16 bit.
_COLOUR_CHANNELS = {2: 3, 4: 2, 6: 4}
# Samples per pixel -> the PNG colour type that `write` writes them as.
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}
# Rows filtered at a time by `write`: its scratch is a few times this many rows.
_FILTER_ROWS = 16
# Compressed bytes gathered into one IDAT chunk.
_CHUNK_BYTES = 1 << 22


def is_16bit_colour(path: Path) -> bool:
    """Whether a file is a PNG whose IHDR announces 16-bit RGB, RGBA or grey + alpha."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = head[24], head[25]
    return bit_depth == 16 and colour_type in _COLOUR_CHANNELS


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) as a PNG's IHDR states them, read from its first 24 bytes."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError("not a PNG (no IHDR chunk at its start)")
    return struct.unpack(">II", head[16:24])


def read_16bit_colour(path: Path) -> np.ndarray:
    """Decodes a non-interlaced 16-bit colour PNG to HxWxC uint16 (C = 2, 3 or 4).

    The caller checks the size IHDR claims (`header_size`) first: the image data is inflated
    to that size and no further, so a file whose data inflates to more is refused without
    the memory it asks for.
    """
    data = path.read_bytes()
    pos, header, idat = len(SIGNATURE), None, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"PNG chunk {kind!r} is corrupt (CRC mismatch)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("PNG ends before its IEND chunk (truncated file)")
    width, height, _, colour_type, _, _, interlace = header
    if interlace:
        raise ValueError("interlaced 16-bit colour PNGs are not supported")
    channels = _COLOUR_CHANNELS[colour_type]
    bytes_per_pixel = 2 * channels
    expected = height * (1 + width * bytes_per_pixel)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(b"".join(idat), expected)
    if len(raw) != expected or inflater.unconsumed_tail:
        raise ValueError("PNG image data does not match the size in its header")
    raw = np.frombuffer(raw, np.uint8)
    rows = raw.reshape(height, 1 + width * bytes_per_pixel)
    filtered = rows[:, 1:].reshape(height, width, bytes_per_pixel)
    pixels = _unfilter(rows[:, 0], filtered)
    return pixels.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _unfilter(filter_types: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    """Undoes PNG's per-row filters (PNG spec section 9) for HxWxB bytes.

    Every filter predicts a pixel from its left, upper and upper-left neighbours only, so all
    pixels on one anti-diagonal (row + column constant) can be decoded together: H + W - 1
    vectorised steps instead of H * W scalar ones.
    """
    if filter_types.max(initial=0) > 4:
        raise ValueError(f"PNG uses unknown row filter {int(filter_types.max())}")
    height, width, _ = filtered.shape
    # Decoded pixels with a zero row above and a zero column to the left, as the spec assumes.
    out = np.zeros((height + 1, width + 1, filtered.shape[2]), np.int32)
    for diagonal in range(height + width - 1):
        r = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        c = diagonal - r
        left, up, up_left = out[r + 1, c], out[r, c + 1], out[r, c]
        estimate = left + up - up_left
        d_left, d_up, d_up_left = (np.abs(estimate - v) for v in (left, up, up_left))
        paeth = np.where(
            (d_left <= d_up) & (d_left <= d_up_left), left, np.where(d_up <= d_up_left, up, up_left)
        )
        predictions = np.stack([np.zeros_like(left), left, up, (left + up) // 2, paeth])
        chosen = predictions[filter_types[r], np.arange(r.size)]
        out[r + 1, c + 1] = (filtered[r, c] + chosen) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def write(path: Path, shape: tuple[int, ...], dtype: np.dtype,
               bands: Iterable[np.ndarray]) -> None:
    """Encodes an 8- or 16-bit grey, RGB or RGBA image given in bands of rows as a PNG.

    Each row takes the filter with the least sum of absolute (signed) filtered bytes, libpng's
    heuristic, and the rows go through one zlib stream as they come, so only a band and its
    filtered copy are ever in memory.
    """
    height, width = shape[:2]
    channels = 1 if len(shape) == 2 else shape[2]
    depth = 8 * np.dtype(dtype).itemsize
    bpp = channels * depth // 8  # bytes per pixel, the distance of the "left" neighbour

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, depth, _COLOUR_TYPES[channels], 0, 0, 0)
    compressor = zlib.compressobj(6)
    with open(path, "wb") as f:
        f.write(SIGNATURE + chunk(b"IHDR", header))
        pending, above = [], np.zeros(width * bpp, np.uint8)
        for band in bands:
            raw = band.astype(f">u{depth // 8}", copy=False).view(np.uint8)
            raw = raw.reshape(len(band), width * bpp)
            for start in range(0, len(raw), _FILTER_ROWS):
                rows = raw[start:start + _FILTER_ROWS]
                pending.append(compressor.compress(_filter(rows, above, bpp).tobytes()))
                above = rows[-1].copy()  # not a view: the band can go once it is written
                if sum(map(len, pending)) >= _CHUNK_BYTES:
                    f.write(chunk(b"IDAT", b"".join(pending)))
                    pending = []
        pending.append(compressor.flush())
        f.write(chunk(b"IDAT", b"".join(pending)) + chunk(b"IEND", b""))


def _filter(rows: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """PNG's per-row filters (spec section 9) on (h, n) bytes, the row above the first given.

    Returns:
      (h, 1 + n) uint8: each row's filter type, then its filtered bytes; of the five filters
      the one whose bytes, read as signed, have the least sum of magnitudes (ties: the lowest).
    """
    x = rows.astype(np.int16)
    up = np.concatenate([above[None].astype(np.int16), x[:-1]])
    left, up_left = np.zeros_like(x), np.zeros_like(x)
    left[:, bpp:], up_left[:, bpp:] = x[:, :-bpp], up[:, :-bpp]
    p = left + up - up_left
    d_left, d_up, d_up_left = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((d_left <= d_up) & (d_left <= d_up_left), left,
                     np.where(d_up <= d_up_left, up, up_left))
    predictions = (0, left, up, (left + up) >> 1, paeth)
    filtered = np.stack([(x - prediction).astype(np.uint8) for prediction in predictions])
    cost = np.abs(filtered.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)  # (5, h)
    choice = np.argmin(cost, axis=0)
    out = np.empty((len(rows), 1 + rows.shape[1]), np.uint8)
    out[:, 0] = choice
    out[:, 1:] = filtered[choice, np.arange(len(rows))]
    return out


__all__ = ["SIGNATURE", "header_size", "is_16bit_colour", "read_16bit_colour", "write"]
