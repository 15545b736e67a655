"""Training any model with its authors' recipe, resumable at any step, on one device or many hosts.

`train_and_evaluate(config, workdir)` is what `train.py` calls. It

- checks the config and the training data before anything expensive starts or anything is
  written (`training.config`: errors name the `--config.*` flag);
- claims the workdir (`training.workdir`): one run at a time, and nothing left behind by a
  run that fails before it trains;
- builds the model from `config.model` (any family of `drsan_jax.models`), Adam with the
  learning-rate schedule and optional global-norm gradient clipping of `training.optim`, and
  the L1 or MSE loss; with `config.ema_decay` it also keeps an exponential moving average of
  the weights, which validation uses and every checkpoint stores as `params_ema/`;
- for a multi-scale model (MDSR, LESRCNN-S), draws each step's scale uniformly as a pure function
  of (seed, step) and runs that scale's branch; each scale's step is compiled once;
- resumes from the latest checkpoint in `workdir` if there is one (else starts fresh, or from
  `config.init_from`, `training.warm_start`), including the patch sampler, so that k steps +
  resume + (N - k) steps equal N steps in one go exactly;
- runs one jitted, state-donating `training.step.train_step` per step, data-parallel over a
  device mesh;
- stops at once, without saving, when the loss or the gradient goes NaN/inf;
- on SIGTERM or a first Ctrl-C, finishes the step, saves it and raises `TrainingStopped`
  (`training.stopping`; several hosts agree on the step through JAX's preemption service);
- validates on `config.val_datasets` with `evaluation.evaluate`, the code behind eval.py
  (Y-channel PSNR/SSIM, "drsan" protocol);
- logs progress lines and TensorBoard scalars, and saves checkpoints (the latest few plus the
  best by validation PSNR); a save that fails stops the run, the earlier checkpoints intact.
"""

from __future__ import annotations

import collections
import contextlib
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from drsan_jax import data, evaluation, events, logs
from drsan_jax.models import (
    build_model_from_config,
    count_params,
    init_params,
    model_name,
    normalize_model_config,
    param_shapes,
)
from drsan_jax.training import parallel
from drsan_jax.training import workdir as workdirs
from drsan_jax.training.config import check_config, model_config, small_patch_warning
from drsan_jax.training.config import val_datasets as configured_val_datasets
from drsan_jax.training.optim import create_optimizer, learning_rate_schedule
from drsan_jax.training.step import (
    TrainState,
    copy_replicated,
    create_train_state,
    train_step,
)
from drsan_jax.training.stopping import StopRequests, TrainingStopped
from drsan_jax.training.teacher import with_teacher_outputs
from drsan_jax.training.warm_start import params_from_checkpoint
from drsan_jax.weights import checkpoints


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


def _next_log_step(step: int, every: int, total: int) -> int:
    return min((step // every + 1) * every, total)


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
      TrainingStopped: SIGTERM or Ctrl-C; the step finished last was saved.
    """
    check_config(config)
    # One run per workdir (process 0 holds the lock), and no empty folders left by a run that
    # fails before it trains.
    with logs.quiet_library_logs(), workdirs.claim(workdir, lock=_is_process_zero()) as path:
        return _train_and_evaluate(config, path)


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
    val_datasets = configured_val_datasets(config)
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
    if (warning := small_patch_warning(config)) is not None:
        logging.warning("%s", warning)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_closing(ckpts))
        sampler = _make_sampler(config, scales, host_batch)
        tx = create_optimizer(config)
        state = _initial_state(config, workdir, ckpts, model, model_cfg, tx, mesh, sampler)
        writer = events.ScalarWriter(workdir) if jax.process_index() == 0 else None
        if writer is not None:
            stack.callback(writer.close)
        if val_datasets:
            logging.info("validation: %s at %s from %s every %d steps", ", ".join(val_datasets),
                         "/".join(f"x{s}" for s in scales), config.val_data,
                         config.eval_every_steps)
        logging.info("TensorBoard (pip install -e \".[tensorboard]\"): tensorboard --logdir %s",
                     workdir)
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
        if config.teacher:
            dataset = with_teacher_outputs(dataset, config.teacher, config.cache_dir)
            logging.info("distillation: loss = %g x %s(SR, HR) + %g x %s(SR, %s)",
                         1 - config.teacher_weight, config.loss, config.teacher_weight,
                         config.loss, config.teacher)
        samplers[scale] = data.PatchSampler(dataset, host_batch, config.patch_size, config.seed,
                                            jax.process_index())
    if len(scales) == 1:
        return samplers[scales[0]]
    return data.MultiScaleSampler(samplers, config.seed)


def _initial_state(config, workdir, ckpts, model, model_cfg, tx, mesh, sampler) -> TrainState:
    """Restores the newest intact checkpoint of the workdir, or initialises (fresh or `init_from`).

    A damaged checkpoint (files missing or cut short) is renamed to `<step>.damaged`, with a
    warning naming it, and the one before it is tried.
    """
    for step in reversed(ckpts.steps()):
        try:
            return _resume(step, config, workdir, ckpts, model, model_cfg, tx, mesh, sampler)
        except checkpoints.DamagedCheckpointError as error:
            moved = ckpts.set_aside(step)
            logging.warning("%s: moved to %s; resuming from the checkpoint before it", error,
                            moved.name)
    params = init_params(model, jax.random.key(config.seed))
    if ckpts.directory.is_dir() and any(ckpts.directory.glob("*.damaged*")):
        logging.warning("no intact checkpoint in %s: starting again", ckpts.directory)
    if config.init_from:
        params, copied, fresh = params_from_checkpoint(config.init_from, model_cfg, params)
        logging.info("initialised %d parameter arrays from %s; fresh: %s", len(copied),
                     config.init_from, ", ".join(fresh) or "none")
    else:
        logging.info("starting from scratch (seed %d)", config.seed)
    return create_train_state(model, tx, params, mesh, ema=config.ema_decay is not None)


def _resume(latest, config, workdir, ckpts, model, model_cfg, tx, mesh, sampler) -> TrainState:
    """The train state of a saved step.

    Raises:
      checkpoints.DamagedCheckpointError: the step cannot be read.
      ValueError: it holds another model than the config's.
    """
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
        params_ema = copy_replicated(params, mesh)
    return TrainState(step=step, apply_fn=model.apply, params=params, tx=tx,
                      opt_state=opt_state, params_ema=params_ema)


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
    logging.info("compiling the train step%s and running step %d (the first progress line can "
                 "take a minute on a CPU)",
                 " (each scale's when first drawn)" if len(branches) > 1 else "", start + 1)
    batches = sampler.batches(start, config.data_workers, config.prefetch_batches)
    teacher_weight = float(config.teacher_weight) if config.teacher else 0.0
    with contextlib.closing(batches), StopRequests() as stop:
        for step in range(start + 1, total + 1):
            batch = next(batches)
            # A multi-scale batch names its scale: run that branch (compiled once per scale).
            state = state.replace(apply_fn=branches[batch.pop("scale", model.scale)].apply)
            state, step_metrics = train_step(state, parallel.shard_batch(batch, mesh),
                                             loss=config.loss, ema_decay=config.ema_decay,
                                             teacher_weight=teacher_weight)
            pending.append((step, step_metrics))
            # The previous step's metrics are ready by now: looking at them does not stall the
            # device, which is already running this step.
            while len(pending) > 1:
                check(*pending.popleft())
            last = step == total
            stopping = stop.requested(step) and not last
            # The first step is logged as soon as it is done: it includes the compilation.
            first = step == start + 1
            log = step % config.log_every_steps == 0 or last or stopping or first
            evaluate = bool(val_datasets) and (step % config.eval_every_steps == 0 or last)
            save = step % config.checkpoint_every_steps == 0 or evaluate or last or stopping
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
                if first and not last:
                    logging.info("step %d/%d  loss %.5f  lr %.2e  compiled and ran in %.1f s; "
                                 "the next progress line at step %d", step, total, loss, lr,
                                 elapsed, _next_log_step(step, config.log_every_steps, total))
                else:
                    logging.info("step %d/%d  loss %.5f  lr %.2e  %.2f steps/s  ETA %s", step,
                                 total, loss, lr, rate,
                                 _format_duration((total - step) / max(rate, 1e-9)))
                if writer is not None:
                    scalars = [(events.TRAIN_LOSS, loss), (events.TRAIN_LEARNING_RATE, lr),
                               (events.TRAIN_GRAD_NORM, grad_norm)]
                    if not first:  # the compilation is not a step rate
                        scalars.append((events.TRAIN_STEPS_PER_SEC, rate))
                    for tag, value in scalars:
                        writer.add_scalar(tag, value, step)
                window.clear()
                window_start, paused = time.perf_counter(), 0.0
            pause_start = time.perf_counter()
            val_metrics = None
            if evaluate:
                val_metrics = _validate_and_log(config, model, state.inference_params(),
                                                val_datasets, writer, step)
            if save:
                # The curve reaches the file before its checkpoint can: a run killed after the
                # save never resumes past scalars it did not write.
                if writer is not None:
                    writer.flush()
                ckpts.save(step, state.params, state.opt_state, {
                    "format": checkpoints.FORMAT, "step": step, "model": model_cfg,
                    "config": config.to_dict(), "data": sampler.state(step), "extra": {}},
                    metrics=val_metrics, params_ema=state.params_ema)
            paused += time.perf_counter() - pause_start
            if stopping:
                ckpts.wait()
                raise TrainingStopped(
                    f"stopped by {stop.signal_name} after step {step} of {total}: checkpoint "
                    f"saved to {ckpts.directory / str(step)}; rerun the same command to resume",
                    stop.signal_number)
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
            writer.add_scalar(events.val_tag(tag, "psnr"), score["psnr"], step)
            writer.add_scalar(events.val_tag(tag, "ssim"), score["ssim"], step)
        writer.flush()
    return {
        "psnr": float(np.mean([s["psnr"] for s in rows.values()])),
        "ssim": float(np.mean([s["ssim"] for s in rows.values()])),
        "datasets": {(name if single else f"{name}_x{scale}"): {"psnr": s["psnr"],
                                                                 "ssim": s["ssim"]}
                     for (name, scale), s in rows.items()},
    }


__all__ = ["train_and_evaluate"]
