"""Training any model with its authors' recipe, resumable at any step, on one device or many hosts.

`train_and_evaluate(config, workdir)` is what `train.py` calls. It

- checks the config and the training data before anything expensive starts or anything is
  written (errors name the `--config.*` flag);
- claims the workdir (`drsan_jax.workdir`): one run at a time, and nothing left behind by a run
  that fails before it trains;
- builds the model from `config.model` (any family of `drsan_jax.models`), Adam with the
  learning-rate schedule and optional global-norm gradient clipping of `drsan_jax.optim`, and
  the L1 or MSE loss; with `config.ema_decay` it also keeps an exponential moving average of
  the weights, which validation uses and every checkpoint stores as `params_ema/`;
- for a multi-scale model (MDSR, LESRCNN-S), draws each step's scale uniformly as a pure function
  of (seed, step) and runs that scale's branch; each scale's step is compiled once;
- resumes from the latest checkpoint in `workdir` if there is one (else starts fresh, or from
  `config.init_from`), including the patch sampler, so that k steps + resume + (N - k) steps
  equal N steps in one go exactly;
- runs one jitted, state-donating `train_step` per step, data-parallel over a device mesh;
- stops at once, without saving, when the loss or the gradient goes NaN/inf;
- validates on `config.val_datasets` with `evaluation.evaluate`, the code behind eval.py
  (Y-channel PSNR/SSIM, "drsan" protocol);
- logs progress lines and TensorBoard scalars, and saves checkpoints (the latest few plus the
  best by validation PSNR); a save that fails stops the run, the earlier checkpoints intact.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging as std_logging
import re
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import flax.linen as nn
import tensorboardX
from absl import logging
from flax import traverse_util
from flax import struct
from flax.training import train_state

from drsan_jax import checkpoints, data, evaluation, loading, parallel, workdir as workdirs
from drsan_jax import optim
from drsan_jax.optim import SCHEDULES, create_optimizer, learning_rate_schedule
from drsan_jax.models import (
    DTYPES,
    FAMILIES,
    build_model_from_config,
    get_family,
    count_params,
    init_params,
    model_name,
    normalize_model_config,
    param_shapes,
)

# Top-level parameter names that depend on the scale (`drsan_jax.models.family`): a single-scale
# model's upsampler, a multi-scale model's per-scale branches.
UPSAMPLER = "upsampler"
SCALE_BRANCH = re.compile(r"_x[234]$")
LOSSES = ("l1", "mse")


class TrainState(train_state.TrainState):
    """Flax's train state plus the weight average (None when `config.ema_decay` is None)."""

    params_ema: Any = struct.field(default=None)

    def inference_params(self) -> Any:
        """The weights to validate and save for inference: the EMA's when it is on."""
        return self.params if self.params_ema is None else self.params_ema


def model_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The full model configuration (as stored in checkpoints) of a training config."""
    return normalize_model_config({**config.model.to_dict(), "scale": config.scale})


def _is_scale_dependent(name: str) -> bool:
    top = name.split("/", 1)[0]
    return top == UPSAMPLER or SCALE_BRANCH.search(top) is not None


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a ValueError naming the flag of the first invalid field, before any work starts."""

    def require(ok: bool, flag: str, expected: str) -> None:
        if not ok:
            value = config
            for part in flag.split("."):
                value = value[part]
            raise ValueError(f"--config.{flag}={value!r}: expected {expected}")

    try:
        family = get_family(config.model.family)
    except ValueError as e:
        raise ValueError(f"--config.model.family={config.model.family!r}: {e}") from None
    require(config.scale in family.scales, "scale", f"one of {family.scales}")
    for name in ("patch_size", "batch_size", "num_train_steps", "lr_decay_steps",
                 "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                 "data_workers", "prefetch_batches"):
        require(isinstance(config[name], int) and config[name] >= 1, name, "a positive integer")
    require(config.keep_checkpoints >= 1, "keep_checkpoints", "at least 1")
    require(config.keep_best_checkpoints >= 0, "keep_best_checkpoints", "0 or more")
    require(config.learning_rate > 0, "learning_rate", "a positive number")
    require(0 < config.lr_decay_rate <= 1, "lr_decay_rate", "a factor in (0, 1]")
    require(config.loss in LOSSES, "loss", f"one of {LOSSES}")
    require(config.grad_clip_norm is None or config.grad_clip_norm > 0, "grad_clip_norm",
            "a positive number, or None for no clipping")
    require(config.model.dtype in DTYPES, "model.dtype", f"one of {DTYPES}")
    require(config.lr_schedule in SCHEDULES, "lr_schedule", f"one of {SCHEDULES}")
    require(isinstance(config.warmup_steps, int) and 0 <= config.warmup_steps
            < config.num_train_steps, "warmup_steps",
            "an integer from 0 to --config.num_train_steps - 1")
    require(0 <= config.lr_end_factor <= 1, "lr_end_factor", "a factor in [0, 1]")
    require(config.ema_decay is None or 0 < config.ema_decay < 1, "ema_decay",
            "a decay in (0, 1) such as 0.999, or None for no weight average")
    try:
        cfg = model_config(config)
        build_model_from_config(cfg)
    except ValueError as e:
        raise ValueError(f"--config.model.*: {e}") from None
    data.check_training_data(config.train_data)
    if config.init_from:
        try:
            loading.check_source(config.init_from)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"--config.init_from={config.init_from!r}: {e}") from None
    for name, scale in itertools.product(_val_datasets(config), _train_scales(config)):
        try:
            data.pair_images(config.val_data, name, scale)
        except ValueError as e:
            raise ValueError(
                f"--config.val_data={config.val_data!r}, --config.val_datasets="
                f"{config.val_datasets!r}: {e} (--config.val_datasets='' turns validation off)"
            ) from None


def config_field_hint(config: ml_collections.ConfigDict, key: str) -> str | None:
    """Why a `--config.model.<field>` the config lacks may belong to another model family.

    For `cli.absl_flags_parser`: `--config.model.use_rsa=False` with configs/edsr_baseline.py
    names the families that have the field, and this config's.
    """
    field = key.removeprefix("model.")
    if field == key or "." in field:
        return None
    owners = [name for name, family in FAMILIES.items()
              if field in (*family.size_fields, *family.option_fields)]
    trains = config.model.get("family")
    if not owners or trains in owners:
        return None
    return (f"{field} is a field of the {', '.join(owners)} model famil"
            f"{'ies' if len(owners) > 1 else 'y'}; this config trains {trains}")


def _train_scales(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The scales a run trains: all of a multi-scale model's, else `config.scale`."""
    return tuple(build_model_from_config(model_config(config)).scales)


def _val_datasets(config: ml_collections.ConfigDict) -> list[str]:
    return [name.strip() for name in config.val_datasets.split(",") if name.strip()]


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
    params_ema = _copy(params, mesh) if ema else None
    return TrainState(step=step, apply_fn=model.apply, params=params, tx=tx, opt_state=opt_state,
                      params_ema=params_ema)


def _copy(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A replicated copy in buffers of its own (the train step donates both trees)."""
    return jax.jit(lambda t: jax.tree.map(jnp.copy, t),
                   out_shardings=parallel.replicated(mesh))(tree)


def l1_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
    """Mean absolute error: DRSAN's, DRAN's and EDSR's training loss."""
    return jnp.mean(jnp.abs(sr - gt))


def mse_loss(sr: jax.Array, gt: jax.Array) -> jax.Array:
    """Mean squared error: LESRCNN's training loss (`nn.MSELoss` on [0, 1])."""
    return jnp.mean(jnp.square(sr - gt))


_LOSS_FUNCTIONS = {"l1": l1_loss, "mse": mse_loss}


@functools.partial(jax.jit, donate_argnums=(0,), static_argnames=("loss", "ema_decay"))
def train_step(state: TrainState, batch: dict[str, jax.Array], loss: str = "l1",
               ema_decay: float | None = None) -> tuple[TrainState, dict]:
    """One optimizer step on the loss of a batch.

    Args:
      state: the train state (donated: its buffers are reused for the result). Its `apply_fn`
        is the model at the batch's scale (a multi-scale model's branch).
      batch: {"lq": (B, p, p, 3) uint8, "gt": (B, p*s, p*s, 3) uint8}, split over the mesh.
      loss: "l1" or "mse".
      ema_decay: with a weight average in the state, its decay (`optim.ema_decay_at` caps it
        early in the run); the average is updated with the new parameters.

    Returns:
      (new state, {"loss", "grad_norm", "finite"}) with "finite" False if the loss or the
      gradient holds a NaN or inf.
    """
    lq = batch["lq"].astype(jnp.float32) / 255.0  # (B, p, p, 3)
    gt = batch["gt"].astype(jnp.float32) / 255.0  # (B, p*s, p*s, 3)

    def loss_fn(params):
        return _LOSS_FUNCTIONS[loss](state.apply_fn({"params": params}, lq), gt)

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


def params_from_checkpoint(path: str, model_cfg: dict[str, Any], params: Any
                           ) -> tuple[Any, list[str], list[str]]:
    """The `init_from` rule: copies a checkpoint's parameters into freshly initialised ones.

    Every parameter whose name and shape match is copied, as the EDSR authors start x3/x4 from
    x2. Parameters outside the scale-dependent layers (the upsampler, a multi-scale model's
    `_x<s>` branches) must all match: the source must be the same family and size with the same
    ablation switches. Scale-dependent ones that do not match keep their fresh initialisation
    (at x2 -> x4 the first upsampler conv has the same shape and is copied; at x2 -> x3 none
    is). The output convolution (c -> 3) does not depend on the scale and is copied.

    Args:
      path: anything `loading.load_model` accepts (a workdir, a shipped name, a weights file).
      model_cfg: the model configuration being trained.
      params: its fresh parameters.

    Returns:
      (params, names of copied parameters, names of re-initialised ones).
    """
    source = loading.load_model(path)
    if source.config["family"] != model_cfg["family"]:
        raise ValueError(f"--config.init_from={path!r} is a {source.name} checkpoint; it cannot "
                         f"start a {model_name(model_cfg)} model")
    src = traverse_util.flatten_dict(jax.device_get(source.params), sep="/")
    dst = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    copied, fresh, mismatched = [], [], []
    for name, value in dst.items():
        if name in src and src[name].shape == value.shape:
            dst[name] = src[name]
            copied.append(name)
        elif _is_scale_dependent(name):
            fresh.append(name)
        else:
            mismatched.append(f"{name} {value.shape} vs {getattr(src.get(name), 'shape', None)}")
    if mismatched:
        raise ValueError(
            f"--config.init_from={path!r} is a different network ({source.config}) from the "
            f"one being trained ({model_cfg}); these parameters do not match: "
            + ", ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""))
    return traverse_util.unflatten_dict(dst, sep="/"), copied, fresh


class _QuietOrbax(std_logging.Filter):
    """Drops Orbax's INFO records (several per file it writes) so progress lines stay readable.

    Also its warning at every save without validation metrics: only validated steps have them.
    """

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "/orbax/" not in record.pathname:
            return True
        return (record.levelno >= std_logging.WARNING
                and "did not provide metrics" not in record.getMessage())


def _abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"


def _describe_model(model_cfg: dict[str, Any], scales: tuple[int, ...]) -> str:
    return f"{model_name(model_cfg)} {'/'.join(f'x{s}' for s in scales)}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes training) until `config.num_train_steps`.

    Args:
      config: the training configuration (configs/default.py documents every field).
      workdir: where checkpoints (`workdir/checkpoints/<step>/`) and TensorBoard event files
        go; a workdir holding checkpoints is resumed from its latest one.

    Returns:
      The final train state.

    Raises:
      ValueError: an invalid config (naming the `--config.*` flag) or training data, before
        anything is written.
      workdir.WorkdirError: another run holds the workdir, or it is not writable.
      FloatingPointError: the loss or the gradient went NaN/inf (nothing is saved after the
        last good checkpoint).
      checkpoints.CheckpointSaveError: a checkpoint could not be written (the earlier ones
        are intact).
    """
    check_config(config)
    quiet = _QuietOrbax()
    logging.get_absl_logger().addFilter(quiet)
    try:
        # One run per workdir (process 0 holds the lock), and no empty folders left by a run
        # that fails before it trains.
        with workdirs.claim(workdir, lock=_is_process_zero()) as path:
            return _train_and_evaluate(config, path)
    finally:
        logging.get_absl_logger().removeFilter(quiet)


def _is_process_zero() -> bool:
    """Whether this is process 0, without starting JAX's backend in a single-process run.

    (Starting it logs a few lines, which would precede the one-line error of a busy workdir.)
    """
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: Path) -> TrainState:
    """`train_and_evaluate` once the config is checked."""
    mesh = parallel.make_mesh()
    host_batch = parallel.host_batch_size(config.batch_size, mesh)
    model_cfg = model_config(config)
    model = build_model_from_config(model_cfg)
    scales = tuple(model.scales)
    shapes = param_shapes(model)
    val_datasets = _val_datasets(config)
    logging.info("devices: %s; compilation cache: %s", parallel.describe_devices(mesh),
                 jax.config.jax_compilation_cache_dir or "off")
    logging.info("global batch %d (%d per device, %d per host); LR patches %dx%d, HR %s",
                 config.batch_size, config.batch_size // mesh.devices.size, host_batch,
                 config.patch_size, config.patch_size,
                 " / ".join(f"{config.patch_size * s}x{config.patch_size * s}" for s in scales))
    logging.info("model %s: %s parameters, %s compute; %s loss", _describe_model(model_cfg, scales),
                 f"{count_params(shapes):,}", model_cfg["dtype"], config.loss.upper())
    logging.info("Adam %.2e, %s schedule%s%s%s", config.learning_rate, config.lr_schedule,
                 f", {config.warmup_steps} warm-up steps" if config.warmup_steps else "",
                 f", gradient clipped to norm {config.grad_clip_norm}"
                 if config.grad_clip_norm is not None else "",
                 f"; weight average (EMA {config.ema_decay}) validated and saved as params_ema"
                 if config.ema_decay is not None else "")

    ckpts = checkpoints.TrainingCheckpoints(workdir, config.keep_checkpoints,
                                            config.keep_best_checkpoints)
    logging.info("checkpoints: %s (every %d steps, at each validation and at the end; latest "
                 "%d and best %d kept)", ckpts.directory, config.checkpoint_every_steps,
                 config.keep_checkpoints, config.keep_best_checkpoints)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_closing(ckpts))
        sampler = _make_sampler(config, scales, host_batch)
        tx = create_optimizer(config)
        state = _initial_state(config, workdir, ckpts, model, model_cfg, tx, mesh, sampler)
        writer = tensorboardX.SummaryWriter(str(workdir)) if jax.process_index() == 0 else None
        if writer is not None:
            stack.callback(writer.close)
        if val_datasets:
            logging.info("validation: %s at %s from %s every %d steps", ", ".join(val_datasets),
                         "/".join(f"x{s}" for s in scales), config.val_data,
                         config.eval_every_steps)
        logging.info("TensorBoard: tensorboard --logdir %s", workdir)
        state = _train_loop(config, state, sampler, mesh, ckpts, writer, model, model_cfg,
                            val_datasets)
    return state


@contextlib.contextmanager
def _closing(ckpts: checkpoints.TrainingCheckpoints):
    """Closes the checkpoints; after an error, without letting a second one replace it.

    A failed save also fails the close that waits for it: the first report is the one to keep.
    """
    try:
        yield ckpts
    except BaseException:
        with contextlib.suppress(checkpoints.CheckpointSaveError):
            ckpts.close()
        raise
    ckpts.close()


def _make_sampler(config: ml_collections.ConfigDict, scales: tuple[int, ...], host_batch: int
                  ) -> data.PatchSampler | data.MultiScaleSampler:
    """The patch sampler of this host: one scale's, or a multi-scale model's draw per step."""
    samplers = {}
    for scale in scales:
        dataset = data.load_training_set(
            config.train_data, scale, config.patch_size, config.cache_dir,
            jax.process_index(), jax.process_count(), config.data_workers)
        logging.info("training data: %d images on this host from %s at x%d (cache %s)",
                     len(dataset.pairs), config.train_data, scale, config.cache_dir)
        samplers[scale] = data.PatchSampler(dataset, host_batch, config.patch_size, config.seed,
                                            jax.process_index())
    if len(scales) == 1:
        return samplers[scales[0]]
    return data.MultiScaleSampler(samplers, config.seed)


def _initial_state(config, workdir, ckpts, model, model_cfg, tx, mesh, sampler) -> TrainState:
    """Restores the latest checkpoint of the workdir, or initialises (fresh or `init_from`)."""
    latest = ckpts.latest_step()
    if latest is not None:
        meta = ckpts.restore_meta(latest)
        # The compute dtype may change on resume (e.g. bfloat16 on a new GPU); the parameters
        # are float32 either way. Anything else is another network.
        saved = normalize_model_config(meta["model"])
        changed = {k: (saved.get(k), v) for k, v in model_cfg.items()
                   if saved.get(k) != v and k != "dtype"}
        if changed:
            raise ValueError(
                f"{workdir} holds checkpoints of another model (checkpoint -> config: {changed});"
                f" use a new --workdir, or the checkpoint's --config.model.* and --config.scale")
        repl = parallel.replicated(mesh)
        shapes = param_shapes(model)
        ema = config.ema_decay is not None
        stored_ema = ema and ckpts.has_params_ema(latest)
        params, opt_state, meta, params_ema = ckpts.restore(
            latest, _abstract(shapes, repl), _abstract(jax.eval_shape(tx.init, shapes), repl),
            _abstract(shapes, repl) if stored_ema else None)
        sampler.check_resume(meta["data"])
        step = parallel.replicate(np.asarray(latest, np.int32), mesh)
        logging.info("resuming from step %d (%s)", latest, ckpts.directory / str(latest))
        if ema and not stored_ema:
            logging.info("--config.ema_decay=%s: the checkpoint has no weight average; it "
                         "starts from the checkpoint's weights", config.ema_decay)
            params_ema = _copy(params, mesh)
        return TrainState(step=step, apply_fn=model.apply, params=params, tx=tx,
                          opt_state=opt_state, params_ema=params_ema)
    params = init_params(model, jax.random.key(config.seed))
    if config.init_from:
        params, copied, fresh = params_from_checkpoint(config.init_from, model_cfg, params)
        logging.info("initialised %d parameter arrays from %s; fresh: %s", len(copied),
                     config.init_from, ", ".join(fresh) or "none")
    else:
        logging.info("starting from scratch (seed %d)", config.seed)
    return create_train_state(model, tx, params, mesh, ema=config.ema_decay is not None)


def _train_loop(config, state, sampler, mesh, ckpts, writer, model, model_cfg, val_datasets):
    """Runs the steps; see `train_and_evaluate`."""
    start = int(jax.device_get(state.step))
    total = config.num_train_steps
    if start >= total:
        logging.info("already trained to step %d of --config.num_train_steps=%d", start, total)
        return state
    schedule = learning_rate_schedule(config)
    pending = collections.deque()  # (step, device metrics) not yet looked at
    window = []  # host metrics since the last progress line
    window_start, paused = time.perf_counter(), 0.0

    def last_good() -> str:
        latest = ckpts.latest_step()
        if latest is None:
            return "No checkpoint was saved yet, so rerunning starts from the beginning"
        return (f"The last good checkpoint is step {latest} in {ckpts.directory}; rerunning "
                f"resumes from it")

    def check(step: int, device_metrics: dict) -> None:
        host = jax.device_get(device_metrics)
        if not host["finite"]:
            raise FloatingPointError(
                f"training diverged at step {step}: loss {float(host['loss'])}, gradient norm "
                f"{float(host['grad_norm'])}; stopped without saving. {last_good()} "
                f"(consider a lower --config.learning_rate)")
        window.append(host)

    branches = {s: model.clone(scale=s) for s in model.scales}
    batches = sampler.batches(start, config.data_workers, config.prefetch_batches)
    with contextlib.closing(batches):
        for step in range(start + 1, total + 1):
            batch = next(batches)
            # A multi-scale batch names its scale: run that branch (compiled once per scale).
            state = state.replace(apply_fn=branches[batch.pop("scale", model.scale)].apply)
            state, step_metrics = train_step(state, parallel.shard_batch(batch, mesh),
                                             loss=config.loss, ema_decay=config.ema_decay)
            pending.append((step, step_metrics))
            # The previous step's metrics are ready by now: looking at them does not stall the
            # device, which is already running this step.
            while len(pending) > 1:
                check(*pending.popleft())
            last = step == total
            log = step % config.log_every_steps == 0 or last
            evaluate = bool(val_datasets) and (step % config.eval_every_steps == 0 or last)
            save = step % config.checkpoint_every_steps == 0 or evaluate or last
            if not (log or evaluate or save):
                continue
            while pending:
                check(*pending.popleft())
            if log:
                elapsed = time.perf_counter() - window_start - paused
                rate = len(window) / max(elapsed, 1e-9)
                loss = float(np.mean([m["loss"] for m in window]))
                grad_norm = float(np.mean([m["grad_norm"] for m in window]))
                lr = float(schedule(step - 1))
                logging.info("step %d/%d  loss %.5f  lr %.2e  %.2f steps/s  ETA %s", step, total,
                             loss, lr, rate, _format_duration((total - step) / max(rate, 1e-9)))
                if writer is not None:
                    for tag, value in (("train/loss", loss), ("train/learning_rate", lr),
                                       ("train/grad_norm", grad_norm),
                                       ("train/steps_per_sec", rate)):
                        writer.add_scalar(tag, value, step)
                    writer.flush()
                window.clear()
                window_start, paused = time.perf_counter(), 0.0
            pause_start = time.perf_counter()
            val_metrics = None
            if evaluate:
                val_metrics = _validate_and_log(config, model, state.inference_params(),
                                                val_datasets, writer, step)
            if save:
                ckpts.save(step, state.params, state.opt_state, {
                    "format": checkpoints.FORMAT, "step": step, "model": model_cfg,
                    "config": config.to_dict(), "data": sampler.state(step), "extra": {}},
                    metrics=val_metrics, params_ema=state.params_ema)
            paused += time.perf_counter() - pause_start
    ckpts.wait()
    return state


def _validate_and_log(config, model, params, val_datasets, writer, step):
    """Validates with eval.py's code, logs the scores, returns the checkpoint metrics.

    A multi-scale model is validated at each of its scales; the checkpoint's PSNR is the mean
    over datasets and scales. Every host validates on its first device (the parameters are
    replicated, so a host copy is the whole model); the scores are the same everywhere.
    """
    params = jax.device_get(params)
    rows = {}  # (dataset, scale) -> score
    for scale in model.scales:
        results = evaluation.evaluate(model.clone(scale=scale), params, config.val_data,
                                      val_datasets, scale, protocol="drsan", progress=False)
        for name, score in results["datasets"].items():
            rows[name, scale] = score
            logging.info("validation step %d: %s x%d PSNR %.3f dB, SSIM %.4f (%d images)", step,
                         name, scale, score["psnr"], score["ssim"], score["num_images"])
    single = len(model.scales) == 1
    if writer is not None:
        for (name, scale), score in rows.items():
            tag = name if single else f"{name}_x{scale}"
            writer.add_scalar(f"val/{tag}/psnr", score["psnr"], step)
            writer.add_scalar(f"val/{tag}/ssim", score["ssim"], step)
        writer.flush()
    return {
        "psnr": float(np.mean([s["psnr"] for s in rows.values()])),
        "ssim": float(np.mean([s["ssim"] for s in rows.values()])),
        "datasets": {(name if single else f"{name}_x{scale}"): {"psnr": s["psnr"],
                                                                 "ssim": s["ssim"]}
                     for (name, scale), s in rows.items()},
    }


__all__ = [
    "LOSSES",
    "TrainState",
    "UPSAMPLER",
    "check_config",
    "config_field_hint",
    "create_optimizer",
    "create_train_state",
    "l1_loss",
    "mse_loss",
    "learning_rate_schedule",
    "model_config",
    "params_from_checkpoint",
    "train_and_evaluate",
    "train_step",
]
