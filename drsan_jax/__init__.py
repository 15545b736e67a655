"""drsan-jax: DRSAN lightweight single-image super-resolution in JAX/Flax.

The model lives in `drsan_jax.models`; the names most users need are re-exported here:

    import jax, drsan_jax
    model = drsan_jax.build_model("32s", scale=2)
    params = drsan_jax.init_params(model, jax.random.key(0))
    sr = model.apply({"params": params}, lq)   # lq: (B, H, W, 3) in [0, 1]

and a trained one, with no JAX needed (`drsan_jax.api`):

    upscaler = drsan_jax.load("runs/drsan32s_x2")  # a workdir or a checkpoint step folder
    sr = upscaler.upscale(image_uint8)
    info = upscaler.inspect(image_uint8)           # DRA coefficients, RSA maps
"""

from drsan_jax.api import Inspection, Upscaler, load
from drsan_jax.models import (
    DRSAN,
    SCALES,
    VARIANTS,
    build_model,
    count_params,
    init_params,
)

__version__ = "0.1.0"

__all__ = [
    "DRSAN",
    "Inspection",
    "SCALES",
    "Upscaler",
    "VARIANTS",
    "build_model",
    "count_params",
    "init_params",
    "load",
]
