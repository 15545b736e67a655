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

The re-exports are resolved on first use (PEP 562), so that importing a submodule that does not
need JAX, such as `drsan_jax.onnx_runtime` (exported models on ONNX Runtime), does not import it.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS = {
    "Inspection": "drsan_jax.api",
    "Upscaler": "drsan_jax.api",
    "load": "drsan_jax.api",
    "DRSAN": "drsan_jax.models",
    "SCALES": "drsan_jax.models",
    "VARIANTS": "drsan_jax.models",
    "build_model": "drsan_jax.models",
    "count_params": "drsan_jax.models",
    "init_params": "drsan_jax.models",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'drsan_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
