"""The optimizer side of training: learning-rate schedules, Adam, and the weight average (EMA).

- `learning_rate_schedule(config)`: the paper's staircase exponential decay (the default), or a
  cosine decay over the run (`config.lr_schedule="cosine"`), either after an optional linear
  warm-up (`config.warmup_steps`).
- `create_optimizer(config)`: Adam with that schedule, after global-norm clipping if
  `config.grad_clip_norm` is set.
- `ema_decay_at` / `update_ema`: the exponential moving average of the weights that
  `config.ema_decay` turns on (BasicSR's `params_ema`). It is kept in each checkpoint beside the
  trained weights and is what validation, eval.py, upscaling and export use.

Fields a config may lack (older configs, hand-made ones in tests) take the paper's behaviour:
no warm-up, the staircase schedule, no clipping, no EMA.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ("staircase", "cosine")
# The EMA's decay is capped by (1 + t) / (10 + t) after t updates, so that the average of a
# short run is not dominated by its first, untrained weights (0.5 after 8 steps, 0.99 after
# 890, 0.999 after 8,990).
EMA_WARMUP = 10.0


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning rate before optimizer update `step` (0-based).

    staircase (the paper's 2e-4, 0.85, 2e5): learning_rate * lr_decay_rate ** floor(t /
      lr_decay_steps).
    cosine: learning_rate * (f + (1 - f) * (1 + cos(pi * t / T)) / 2), with
      f = lr_end_factor and T = num_train_steps - warmup_steps: from learning_rate down to
      learning_rate * lr_end_factor at the last step. (T depends on num_train_steps: a run
      resumed with a larger one continues on the longer curve.)

    Here t = step - warmup_steps; during the warm-up (step < warmup_steps) the rate rises
    linearly, learning_rate * (step + 1) / warmup_steps, so that no step has a zero rate.
    """
    peak = config.learning_rate
    warmup = int(config.get("warmup_steps", 0) or 0)
    kind = config.get("lr_schedule", "staircase")
    if kind == "staircase":
        main = optax.exponential_decay(init_value=peak, transition_steps=config.lr_decay_steps,
                                       decay_rate=config.lr_decay_rate, staircase=True)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(
            init_value=peak, decay_steps=max(config.num_train_steps - warmup, 1),
            alpha=config.get("lr_end_factor", 0.0))
    else:
        raise ValueError(f"--config.lr_schedule={kind!r}: expected one of {SCHEDULES}")
    if warmup == 0:
        return main

    def schedule(step):
        rising = peak * (jnp.asarray(step, jnp.float32) + 1.0) / warmup
        return jnp.where(step < warmup, rising, main(jnp.maximum(step - warmup, 0)))

    return schedule


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam(b1, b2, eps) with `learning_rate_schedule`, after global-norm clipping if asked."""
    adam = optax.adam(learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2,
                      eps=config.adam_eps)
    if config.get("grad_clip_norm") is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adam)


def ema_decay_at(decay: float, updates: jax.Array) -> jax.Array:
    """The decay used at the `updates`-th update (1-based): min(decay, (1 + t) / (10 + t))."""
    t = jnp.asarray(updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (EMA_WARMUP + t))


def update_ema(ema: Any, params: Any, decay: jax.Array) -> Any:
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf (float32)."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


__all__ = [
    "EMA_WARMUP",
    "SCHEDULES",
    "create_optimizer",
    "ema_decay_at",
    "learning_rate_schedule",
    "update_ema",
]
