"""The train state and the one jitted, state-donating train step (L1 or MSE, optional EMA)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from drsan_jax.training import optim, parallel


class TrainState(train_state.TrainState):
    """Flax's train state plus the weight average (None when `config.ema_decay` is None)."""

    params_ema: Any = struct.field(default=None)

    def inference_params(self) -> Any:
        """The weights to validate and save for inference: the EMA's when it is on."""
        return self.params if self.params_ema is None else self.params_ema


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, params: Any,
                       mesh: jax.sharding.Mesh, ema: bool = False) -> TrainState:
    """A step-0 train state, replicated on every device of the mesh.

    Args:
      model: the network.
      tx: the optimizer.
      params: initial parameters, identical on every host (host or device arrays).
      mesh: the data-parallel mesh.
      ema: whether to keep a weight average (it starts equal to `params`).
    """
    params = parallel.replicate(params, mesh)
    opt_state = jax.jit(tx.init, out_shardings=parallel.replicated(mesh))(params)
    step = parallel.replicate(np.zeros((), np.int32), mesh)
    params_ema = copy_replicated(params, mesh) if ema else None
    return TrainState(step=step, apply_fn=model.apply, params=params, tx=tx, opt_state=opt_state,
                      params_ema=params_ema)


def copy_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A replicated copy in buffers of its own (the train step donates both trees)."""
    return jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                   out_shardings=parallel.replicated(mesh))(tree)


def l1_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
    """Mean absolute error: DRSAN's, DRAN's and EDSR's training loss."""
    return jnp.mean(jnp.abs(sr - gt))


def mse_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
    """Mean squared error: LESRCNN's training loss (`nn.MSELoss` on [0, 1])."""
    return jnp.mean(jnp.square(sr - gt))


# The FFT term's weight in SAFMN's and SMFANet's recipes (`loss_weight: 0.05`).
FFT_LOSS_WEIGHT = 0.05


def fft_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
    """SAFMN's and SMFANet's frequency loss: the mean absolute difference of the real and
    imaginary parts of each channel's 2-D real FFT over (H, W), `torch.fft.rfft2` of NCHW."""
    diff = (jnp.fft.rfft2(sr.astype(jnp.float32), axes=(1, 2))
            - jnp.fft.rfft2(gt.astype(jnp.float32), axes=(1, 2)))  # (B, H, W // 2 + 1, C)
    return (jnp.mean(jnp.abs(diff.real)) + jnp.mean(jnp.abs(diff.imag))) / 2


def l1_fft_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
    """L1 + 0.05 x `fft_loss`: SAFMN's and SMFANet's training loss."""
    return l1_loss(sr, gt) + FFT_LOSS_WEIGHT * fft_loss(sr, gt)


_LOSS_FUNCTIONS = {"l1": l1_loss, "mse": mse_loss, "l1_fft": l1_fft_loss}


@functools.partial(jax.jit, donate_argnums=(0,),
                   static_argnames=("loss", "ema_decay", "teacher_weight"))
def train_step(state: TrainState, batch: dict[str, jax.Array], loss: str = "l1",
               ema_decay: float | None = None, teacher_weight: float = 0.0
               ) -> tuple[TrainState, dict]:
    """One optimizer step on the loss of a batch.

    Args:
      state: the train state (donated: its buffers are reused for the result). Its `apply_fn`
        is the model at the batch's scale (a multi-scale model's branch).
      batch: {"lq": (B, p, p, 3) uint8, "gt": (B, p*s, p*s, 3) uint8}, split over the mesh,
        and with distillation "teacher" (as "gt"): a teacher model's output on the patch.
      loss: "l1", "mse" or "l1_fft" (L1 + 0.05 x `fft_loss`).
      teacher_weight: w of the distillation loss `(1 - w) * loss(sr, gt) + w * loss(sr,
        teacher)` (`training.teacher`); 0: the batch's "teacher" is not needed.
      ema_decay: with a weight average in the state, its decay (`optim.ema_decay_at` caps it
        early in the run); the average is updated with the new parameters.

    Returns:
      (new state, {"loss", "grad_norm", "finite"}) with "finite" False if the loss or the
      gradient holds a NaN or inf.
    """
    lq = batch["lq"].astype(jnp.float32) / 255.0  # (B, p, p, 3)
    gt = batch["gt"].astype(jnp.float32) / 255.0  # (B, p*s, p*s, 3)

    if teacher_weight and "teacher" not in batch:
        raise ValueError(f"teacher_weight={teacher_weight} needs the batch's teacher outputs")
    teacher = batch["teacher"].astype(jnp.float32) / 255.0 if teacher_weight else None
    criterion = _LOSS_FUNCTIONS[loss]

    def loss_fn(params):
        sr = state.apply_fn({"params": params}, lq)
        if teacher is None:
            return criterion(sr, gt)
        return (1 - teacher_weight) * criterion(sr, gt) + teacher_weight * criterion(sr, teacher)

    value, grads = jax.value_and_grad(loss_fn)(state.params)
    grad_norm = optax.tree.norm(grads)
    state = state.apply_gradients(grads=grads)
    if state.params_ema is not None:
        if ema_decay is None:
            raise ValueError("a train state with a weight average needs its ema_decay")
        decay = optim.ema_decay_at(ema_decay, state.step)
        state = state.replace(params_ema=optim.update_ema(state.params_ema, state.params, decay))
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    return state, {"loss": value, "grad_norm": grad_norm, "finite": finite}


__all__ = ["FFT_LOSS_WEIGHT", "TrainState", "copy_replicated", "create_train_state", "fft_loss",
           "l1_fft_loss", "l1_loss", "mse_loss", "train_step"]
