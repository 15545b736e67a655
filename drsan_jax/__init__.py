"""drsan-jax: DRSAN lightweight single-image super-resolution in JAX/Flax."""
