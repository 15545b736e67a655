"""How much memory an upscaling call may plan to use, and what a whole picture needs.

Both backends decide the same way whether a picture runs whole or in tiles: the network's
memory per padded LR pixel (measured by XLA for the JAX backend, `device_memory.bytes_per_pixel`;
written into an exported ONNX file's metadata by the exporter) times the picture's padded
pixels, plus the float32 copies of the HR output the process holds, against `MEMORY_FRACTION`
of the memory that is free. Nothing here imports JAX.
"""

from __future__ import annotations

import math
import os

from drsan_jax.upscaling.shapes import bucket_shape

# Share of the free memory one inference call may plan to use: the rest is for the process's
# own arrays (input, output, the tile strips) and for whatever else runs on the machine.
MEMORY_FRACTION = 0.5


def whole_image_bytes(bytes_per_pixel: float, scale: int, height: int, width: int,
                      calls: int = 1) -> float:
    """Memory a whole-picture call on an LR picture of this size needs.

    Args:
      bytes_per_pixel: the network's scratch and output memory per padded LR pixel.
      scale: the upscaling factor.
      height: the LR height.
      width: the LR width.
      calls: network runs whose outputs are all held (8 for the self-ensemble).

    Returns:
      Bytes: the network's share at the padded (bucket) size, plus the host's float32 copies
      of the HR output (the result and its sum over the calls).
    """
    padded = math.prod(bucket_shape(height, width))
    host = 2 * 3 * 4 * scale**2 * height * width
    return padded * bytes_per_pixel * calls + host


def host_memory_budget() -> float:
    """Bytes inference on the host's memory may plan to use: `MEMORY_FRACTION` of what is free."""
    return MEMORY_FRACTION * _host_available_bytes()


def _host_available_bytes() -> int:
    """MemAvailable on Linux (free memory plus reclaimable cache); else half the physical RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


__all__ = ["MEMORY_FRACTION", "host_memory_budget", "whole_image_bytes"]
