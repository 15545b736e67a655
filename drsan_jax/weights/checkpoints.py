"""Orbax checkpoints: saving and resuming training, and reading a checkpoint folder back.

This module knows only paths; names of shipped models and weight files of other formats are
resolved by `drsan_jax.weights.loading`, the one loader every entry point uses.

A training workdir holds `checkpoints/<step>/`, one Orbax composite checkpoint per saved step:

    params/      the model parameters (Orbax's standard PyTree format)
    params_ema/  with `config.ema_decay`: the weight average, which `load` returns by default
    opt_state/   the Adam state (training checkpoints only)
    meta/        JSON: {"format", "step", "model": the model configuration (enough to rebuild
                 the network without any config file; `drsan_jax.models.schema`), "config":
                 the training config, "data": the patch sampler's state, "extra": anything else}
    metrics/     written by Orbax when the step was validated: {"psnr", "ssim", "datasets"}

Orbax writes each step under a temporary name and renames it when complete, so a run killed at
any moment, even during a save, leaves the previous steps intact; the partial one is ignored and
removed when the workdir is opened again.
`save_params_for_inference` writes one such step folder with `params/` and `meta/` only; `load`
reads a step folder or a workdir.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from drsan_jax.models import (
    SEPARATOR,
    build_model_from_config,
    flatten,
    model_name,
    normalize_model_config,
    param_shapes,
)
from drsan_jax.weights.loaded import (
    InferenceModel,
    WeightsError,
    checked_float32,
    shape_mismatch,
)

CHECKPOINTS_SUBDIR = "checkpoints"
FORMAT = "drsan-jax checkpoint 1"
_ITEMS = ("params", "opt_state", "meta", "params_ema")
EMA = "params_ema"
# Room a save needs beyond its arrays: metadata, the JSON meta, Orbax's own files.
_SAVE_MARGIN = 1 << 20
# The longest reason a damaged-checkpoint message quotes.
_REASON_CHARS = 240
_EXPECTED = ("expected a training workdir (holding checkpoints/<step>/), its checkpoints/ "
             "folder, or one step folder holding params/ and meta/")


def _psnr(metrics: dict[str, Any]) -> float:
    return float(metrics["psnr"])


class CheckpointError(WeightsError):
    """A checkpoint folder whose metadata or parameters are not a drsan-jax model's."""


class DamagedCheckpointError(CheckpointError):
    """A step folder whose files are missing, cut short or unreadable."""


def damaged(step_dir: str | os.PathLike, error: BaseException) -> DamagedCheckpointError:
    """The one-line error for a step folder Orbax or TensorStore could not read.

    Their messages run to kilobytes (a TensorStore spec, source locations); the innermost
    cause's first line says what is wrong ("Error reading ... Truncated Zstd-compressed
    stream").
    """
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = re.split(r" \[(?:source locations|tensorstore_spec)=", lines[0])[0] if lines \
        else type(cause).__name__
    if len(reason) > _REASON_CHARS:
        reason = reason[:_REASON_CHARS] + "..."
    return DamagedCheckpointError(f"checkpoint {step_dir} is damaged ({reason})")


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (a full disk, a permission lost mid-run).

    Orbax writes each step under a temporary name, so the steps saved before are intact.
    """


class TrainingCheckpoints:
    """The checkpoints of one training workdir: the latest few plus the best validated ones."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, keep_best: int = 1):
        """Opens (creating if needed) `workdir/checkpoints` and removes unfinished saves.

        Args:
          workdir: the training workdir.
          keep: how many of the latest checkpoints to keep.
          keep_best: how many of the checkpoints with the highest validation PSNR to keep
            besides them.
        """
        self.directory = Path(workdir).absolute() / CHECKPOINTS_SUBDIR
        _remove_unfinished_saves(self.directory)
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(get_metric_fn=_psnr, reverse=False, n=keep_best,
                                      keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=_psnr,  # also what makes Orbax store the metrics with each step
            best_mode="max",
            # Training goes on while the arrays (already copied to host) are written.
            enable_async_checkpointing=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The validated checkpoint with the highest PSNR, or None."""
        return self.manager.best_step()

    def save(self, step: int, params: Any, opt_state: Any, meta: dict[str, Any],
             metrics: dict[str, Any] | None = None, params_ema: Any = None) -> None:
        """Starts saving a step in the background (the device arrays are copied first).

        Args:
          step: the number of training steps done.
          params: the parameter tree.
          opt_state: the optimizer state.
          meta: JSON-serialisable metadata (see the module docstring).
          metrics: validation results, {"psnr": ...} at least, if this step was validated.
          params_ema: the weight average, if training keeps one.
        """
        self._check_room(step, (params, opt_state, params_ema))
        items = {"params": ocp.args.StandardSave(params),
                 "opt_state": ocp.args.StandardSave(opt_state),
                 "meta": ocp.args.JsonSave(meta)}
        if params_ema is not None:
            items[EMA] = ocp.args.StandardSave(params_ema)
        # A background save that failed since the last call raises here.
        with self._reporting_save_errors():
            self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                              force=True)

    def has_params_ema(self, step: int) -> bool:
        """Whether a saved step holds a weight average."""
        return (self.directory / str(step) / EMA).is_dir()

    def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any,
                abstract_params_ema: Any = None) -> tuple[Any, Any, dict[str, Any], Any]:
        """Reads a step back with the shardings of the abstract trees.

        Args:
          step: the step to restore.
          abstract_params: `jax.ShapeDtypeStruct`s (with shardings) of the parameters.
          abstract_opt_state: the same for the optimizer state.
          abstract_params_ema: the same for the weight average, to read it too (the step
            must hold one: `has_params_ema`).

        Returns:
          (params, opt_state, meta, params_ema or None).
        """
        items = {"params": ocp.args.StandardRestore(abstract_params),
                 "opt_state": ocp.args.StandardRestore(abstract_opt_state),
                 "meta": ocp.args.JsonRestore()}
        if abstract_params_ema is not None:
            items[EMA] = ocp.args.StandardRestore(abstract_params_ema)
        restored = self._restore(step, items)
        params_ema = restored[EMA] if abstract_params_ema is not None else None
        return restored.params, restored.opt_state, restored.meta, params_ema

    def restore_meta(self, step: int) -> dict[str, Any]:
        """Reads only the JSON metadata of a step."""
        meta = self._restore(step, {"meta": ocp.args.JsonRestore()}).meta
        if not isinstance(meta, dict) or "model" not in meta or "data" not in meta:
            raise DamagedCheckpointError(f"checkpoint {self.directory / str(step)} is damaged "
                                         f"(its meta/ is not a training checkpoint's)")
        return meta

    def _restore(self, step: int, items: dict[str, Any]) -> Any:
        """Orbax's restore; any failure to read is a `DamagedCheckpointError`."""
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001 - Orbax raises Exception, OSError, ValueError...
            raise damaged(self.directory / str(step), error) from error

    def steps(self) -> list[int]:
        """The saved steps, oldest first."""
        return list(self.manager.all_steps())

    def set_aside(self, step: int) -> Path:
        """Renames a damaged step folder to `<step>.damaged` (kept, no longer a checkpoint).

        Returns:
          The new path. A later save of the same step can then be written.
        """
        source = self.directory / str(step)
        target = source.with_name(f"{step}.damaged")
        n = 1
        while target.exists():
            n += 1
            target = source.with_name(f"{step}.damaged-{n}")
        if jax.process_index() == 0:
            source.rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"drsan_jax: checkpoint {step} set aside")
        self.manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until the background saves are on disk.

        Raises:
          CheckpointSaveError: a save failed.
        """
        with self._reporting_save_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Finishes the background saves and releases the manager.

        Raises:
          CheckpointSaveError: a save failed.
        """
        with self._reporting_save_errors():
            self.manager.close()

    def _check_room(self, step: int, trees: Any) -> None:
        """Raises CheckpointSaveError before a save that cannot succeed.

        A folder that is no longer writable, or a disk without room for the arrays, is found
        here rather than by Orbax's background threads: when those fail to create the step's
        folder, the others wait minutes for it before the process can end.
        """
        problem = None
        if not os.access(self.directory, os.W_OK):
            problem = "the folder is no longer writable"
        else:
            needed = sum(leaf.nbytes for leaf in jax.tree.leaves(trees)) + _SAVE_MARGIN
            free = shutil.disk_usage(self.directory).free
            if free < needed:
                problem = (f"{free / 1e6:.1f} MB free on its disk, and a checkpoint needs about "
                           f"{needed / 1e6:.1f} MB")
        if problem:
            raise CheckpointSaveError(self._save_failure(f"step {step}", problem))

    def _save_failure(self, what: str, reason: str) -> str:
        latest = _finished_steps(self.directory)
        kept = (f"the last complete checkpoint is step {latest[-1]}, and rerunning resumes from "
                f"it" if latest else "no checkpoint was completed yet")
        return f"cannot save {what} to {self.directory} ({reason}); training stopped; {kept}"

    @contextlib.contextmanager
    def _reporting_save_errors(self):
        """Turns the error of a failed save into one `CheckpointSaveError` naming the folder.

        Orbax and TensorStore report a failed write as an OSError or a ValueError (TensorStore's
        status errors), often from the background thread at the next call, so the step it was
        saving is not known here.
        """
        try:
            yield
        except (OSError, ValueError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointSaveError(self._save_failure("a checkpoint", reason)) from e


def _finished_steps(directory: Path) -> list[int]:
    """The complete checkpoints in a checkpoints folder, by step."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir()
                  if p.name.isdigit() and _is_step_dir(p))


def _remove_unfinished_saves(directory: Path) -> None:
    """Deletes the temporary folders of saves that a stopped run left unfinished.

    Orbax's own `cleanup_tmp_directories` runs in a background thread that its saves do not
    wait for, so a save soon after opening could race with it; this runs to the end first.
    """
    if jax.process_index() == 0 and directory.is_dir():
        for path in directory.iterdir():
            if ocp.path.step.TMP_DIR_SUFFIX in path.name:
                logging.warning("removing %s, left by a run stopped during a save", path)
                shutil.rmtree(path)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("drsan_jax.weights.checkpoints: unfinished saves removed")


def save_params_for_inference(
    path: str | os.PathLike,
    model_config: dict[str, Any],
    params: Any,
    step: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes a checkpoint that `load` reads, without any training state.

    It is one step folder of the training layout with `params/` and `meta/` only.

    Args:
      path: the folder to create; it must not exist yet.
      model_config: the model configuration (partial is fine: see `normalize_model_config`).
      params: the parameter tree of that model.
      step: the training step the parameters come from, if any.
      extra: JSON-serialisable notes (e.g. where the weights were converted from).

    Returns:
      The absolute path written.
    """
    path = Path(path).absolute()
    if path.exists():
        raise FileExistsError(f"cannot save the checkpoint to {path}: it already exists")
    meta = {"format": FORMAT, "step": step, "model": normalize_model_config(model_config),
            "extra": extra or {}}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))
    return path


def find_step_dir(path: str | os.PathLike, which: str = "latest") -> Path:
    """Resolves a workdir, a checkpoints folder or a step folder to one step folder.

    Args:
      path: a training workdir, its `checkpoints/` folder, or a step folder.
      which: for a workdir or checkpoints folder, "latest" (the highest step) or "best" (the
        highest validation PSNR among validated steps). Ignored for a step folder.

    Returns:
      The step folder.

    Raises:
      FileNotFoundError: the path does not exist or holds no complete checkpoint.
      ValueError: an unknown `which`, or "best" when no checkpoint was validated.
    """
    if which not in ("latest", "best"):
        raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist; {_EXPECTED}")
    if _is_step_dir(path):
        return path
    root = path / CHECKPOINTS_SUBDIR if (path / CHECKPOINTS_SUBDIR).is_dir() else path
    steps = sorted(
        int(p.name) for p in root.iterdir()
        if p.is_dir() and p.name.isdigit() and _is_step_dir(p)
    ) if root.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"{path} holds no complete checkpoint; {_EXPECTED}")
    if which == "latest":
        return root / str(steps[-1])
    best = _best_step(root)
    if best is None:
        raise ValueError(f"no checkpoint in {root} was validated, so none is 'best'; "
                         f"use which='latest' (steps: {steps})")
    return root / str(best)


def _best_step(root: Path) -> int | None:
    """The step with the highest saved validation PSNR under a checkpoints folder, or None."""
    options = ocp.CheckpointManagerOptions(read_only=True, best_fn=_psnr, best_mode="max",
                                           create=False)
    with ocp.CheckpointManager(root, options=options) as manager:
        return manager.best_step()


def _params_metadata(item_dir: Path) -> Any:
    """The shapes and dtypes stored in a step's params/ (or params_ema/), without the arrays."""
    handler = ocp.StandardCheckpointHandler()
    try:
        return handler.metadata(item_dir)
    finally:
        handler.close()


def _flat_name(key_path: tuple[Any, ...]) -> str:
    """"DRAG_0/DRM/conv_in/kernel" from a JAX key path of dictionary keys."""
    return SEPARATOR.join(str(getattr(k, "key", k)) for k in key_path)


def _is_step_dir(path: Path) -> bool:
    """A complete (renamed after writing) step folder with parameters and metadata."""
    return ((path / "params").is_dir() and (path / "meta").is_dir()
            and ocp.path.step.is_path_finalized(path))


def load(path: str | os.PathLike, which: str = "latest", ema: bool = True) -> InferenceModel:
    """Loads a checkpoint written by training or by `save_params_for_inference`.

    Args:
      path: a training workdir (`--workdir` of train.py), its `checkpoints/` folder, or one
        step folder.
      which: for a workdir, "latest" (default: the most trained) or "best" (the highest
        validation PSNR, see `find_step_dir`).
      ema: of a checkpoint trained with a weight average (`config.ema_decay`), load the average
        (`params_ema/`, what validation scored), else the trained weights (`params/`).

    Returns:
      The rebuilt model and its parameters, on the first local device. For a workdir and
      "latest", a damaged newest step (files missing or cut short) is skipped with a warning
      naming it, and the newest intact one is loaded.

    Raises:
      FileNotFoundError: no checkpoint there.
      DamagedCheckpointError: the step folder given (or every step of the workdir, or its best
        one) is damaged.
      CheckpointError: a checkpoint whose metadata is not drsan-jax's.
    """
    step_dir = find_step_dir(path, which)
    if step_dir == Path(path).absolute() or which != "latest":
        return _load_step(step_dir, ema)
    steps = sorted(_finished_steps(step_dir.parent), reverse=True)
    problems = []
    for step in steps:
        try:
            return _load_step(step_dir.parent / str(step), ema)
        except DamagedCheckpointError as error:
            problems.append(str(error))
            if step != steps[-1]:
                logging.warning("%s; loading the checkpoint before it", error)
    raise DamagedCheckpointError(f"every checkpoint in {step_dir.parent} is damaged: "
                                 f"{problems[0]}; ...")


@contextlib.contextmanager
def _reading(step_dir: Path):
    """Turns any failure of Orbax to read a step folder into a `DamagedCheckpointError`."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - Orbax raises Exception, OSError, ValueError...
        raise damaged(step_dir, error) from error


def _load_step(step_dir: Path, ema: bool) -> InferenceModel:
    """`load` of one step folder."""
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        with _reading(step_dir):
            meta = checkpointer.restore(
                step_dir, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or "model" not in meta:
            raise CheckpointError(f"{step_dir}/meta is not drsan-jax checkpoint metadata")
        config = normalize_model_config(meta["model"])
        model = build_model_from_config(config)
        shapes = param_shapes(model)
        # Checked before restoring: Orbax, asked for arrays of other shapes, fails one read and
        # abandons the others' coroutines, which Python then reports as unraisable exceptions.
        item = EMA if ema and (step_dir / EMA).is_dir() else "params"
        with _reading(step_dir):
            stored = _params_metadata(step_dir / item)
        problem = shape_mismatch(
            {k: tuple(v.shape) for k, v in flatten(shapes).items()},
            {_flat_name(k): tuple(v.shape)
             for k, v in jax.tree_util.tree_flatten_with_path(getattr(stored, "tree", stored))[0]})
        if problem:
            raise CheckpointError(f"{step_dir}: its parameters do not fit the model its meta/ "
                                  f"describes, {model_name(config)} x{config['scale']}: {problem}")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
        with _reading(step_dir):
            params = checkpointer.restore(step_dir, args=ocp.args.Composite(
                **{item: ocp.args.StandardRestore(abstract)}))[item]
    for name, value in flatten(params).items():
        checked_float32(name, value, f"{step_dir}/{item}")
    step = meta.get("step")
    return InferenceModel(
        model=model, params=params, scale=config["scale"], variant=config["variant"],
        step=None if step is None else int(step), config=config, path=str(step_dir),
        training_config=meta.get("config"), extra=meta.get("extra"), weights=item)


__all__ = [
    "CHECKPOINTS_SUBDIR",
    "CheckpointError",
    "CheckpointSaveError",
    "DamagedCheckpointError",
    "FORMAT",
    "TrainingCheckpoints",
    "damaged",
    "find_step_dir",
    "load",
    "save_params_for_inference",
]
