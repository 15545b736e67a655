"""What a compiled network needs in memory per pixel, and what the device running it has free.

The JAX half of `upscaling.memory`: `api.Upscaler` runs a picture whole when
`inference_bytes` fits in `memory_budget()`, else in tiles, and the exporter writes
`bytes_per_pixel` into an ONNX file's metadata so that the ONNX backend decides the same way.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.data.transforms import NUM_TRANSFORMS
from drsan_jax.models import padded_batches_exact, param_shapes
from drsan_jax.upscaling.memory import (
    MEMORY_FRACTION,
    host_memory_budget,
    whole_image_bytes,
)

# The side at which the compiled network's scratch memory is measured; it grows linearly with
# the number of pixels from there (every activation is a per-pixel feature map).
_PROBE_SIDE = 64


@functools.lru_cache(maxsize=None)
def bytes_per_pixel(model: nn.Module) -> float:
    """Device memory one padded LR pixel costs in a (masked, if it takes one) pass of `model`.

    Measured, not estimated: XLA's buffer assignment for the compiled network at a small size
    (scratch plus output), so it follows the model's layers and the backend's kernels.
    """
    x = jax.ShapeDtypeStruct((1, _PROBE_SIDE, _PROBE_SIDE, 3), jnp.float32)
    # The families that take no mask (whole-image statistics) run, and are measured, without.
    mask = (jax.ShapeDtypeStruct((1, _PROBE_SIDE, _PROBE_SIDE, 1), jnp.float32)
            if padded_batches_exact(model) else None)
    apply = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))
    stats = apply.lower(param_shapes(model), x, mask).compile().memory_analysis()
    used = stats.temp_size_in_bytes + stats.output_size_in_bytes
    return used / _PROBE_SIDE**2


def inference_bytes(model: nn.Module, height: int, width: int, self_ensemble: bool) -> float:
    """Memory a whole-image `inference.Predictor` call on an image of this size needs.

    Args:
      model: the network.
      height: the LR height.
      width: the LR width.
      self_ensemble: whether the 8 transformed inputs run (their outputs are all held).
    """
    calls = NUM_TRANSFORMS if self_ensemble else 1
    return whole_image_bytes(bytes_per_pixel(model), model.scale, height, width, calls)


def memory_budget(device: jax.Device | None = None) -> float:
    """Bytes inference may plan to use: `MEMORY_FRACTION` of what is free now.

    Args:
      device: where the network runs; default the first local device. Accelerators report
        their free memory; on the CPU it is the host's available memory.
    """
    device = device or jax.local_devices()[0]
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return MEMORY_FRACTION * (stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return host_memory_budget()


__all__ = ["bytes_per_pixel", "inference_bytes", "memory_budget"]
