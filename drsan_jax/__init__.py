"""drsan-jax: DRSAN lightweight single-image super-resolution in JAX/Flax.

The model lives in `drsan_jax.models`; the names most users need are re-exported here:

    import jax, drsan_jax
    model = drsan_jax.build_model("32s", scale=2)
    params = drsan_jax.init_params(model, jax.random.key(0))
    sr = model.apply({"params": params}, lq)   # lq: (B, H, W, 3) in [0, 1]
"""

from drsan_jax.models import (
    DRSAN,
    SCALES,
    VARIANTS,
    build_model,
    count_params,
    init_params,
)

__version__ = "0.1.0"

__all__ = ["DRSAN", "SCALES", "VARIANTS", "build_model", "count_params", "init_params"]
