"""A loaded model (`InferenceModel`) and the one way to build it from stored arrays.

Every source of weights (a training checkpoint, a compact `.npz` file, a shipped model, a
PyTorch file) ends in `assemble`: the model is rebuilt from its configuration, the stored arrays
are checked against its parameter shapes (every missing, unexpected or wrongly shaped one named)
and put on the first local device. Every way a weights source can be wrong raises a subclass of
`WeightsError` (`drsan_jax.weights.errors`), whose message starts with the source.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from drsan_jax.models import (
    Family,
    build_model_from_config,
    flatten,
    get_family,
    model_name,
    normalize_model_config,
    param_shapes,
    unflatten,
)
from drsan_jax.weights.errors import WeightsError


@dataclasses.dataclass(frozen=True)
class InferenceModel:
    """A network ready to run: `model.apply({"params": params}, lq)`.

    Attributes:
      model: the module, rebuilt from the model configuration.
      params: its parameters, on the first local device.
      scale: the upscaling factor `model` runs at.
      variant: the published variant name, or None for a custom size.
      step: the training step of the checkpoint (None if it was saved without one).
      config: the model configuration (`drsan_jax.models.schema`).
      path: what was loaded (a step folder, a shipped model's file, a weight file).
      training_config: the training config of the run, for checkpoints written by training.
      extra: notes saved with the weights (where they were converted from, ...).
      weights: which weights of a training checkpoint these are: "params" (the trained ones)
        or "params_ema" (the weight average of a run with `config.ema_decay`).
    """

    model: nn.Module
    params: Any
    scale: int
    variant: str | None
    step: int | None
    config: dict
    path: str
    training_config: dict | None = None
    extra: dict | None = None
    weights: str = "params"

    @property
    def family(self) -> Family:
        """The model's family."""
        return get_family(self.config["family"])

    @property
    def name(self) -> str:
        """The model's name, e.g. "drsan-32s" (see `models.model_name`)."""
        return model_name(self.config)

    @property
    def scales(self) -> tuple[int, ...]:
        """Every scale the parameters serve (several for a multi-scale model)."""
        return tuple(self.model.scales)

    def at_scale(self, scale: int | None) -> "InferenceModel":
        """The same model running at `scale` (None: as it is); a multi-scale model's branch.

        Raises:
          ValueError: the parameters do not serve that scale.
        """
        if scale is None or scale == self.scale:
            return self
        if scale not in self.scales:
            raise ValueError(f"{self.path} is a {self.name} x{self.scale} model; it cannot run "
                             f"at x{scale} (its scales: {list(self.scales)})")
        return dataclasses.replace(self, model=self.model.clone(scale=scale), scale=scale,
                                   config={**self.config, "scale": scale})


def shape_mismatch(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]
                   ) -> str | None:
    """How stored parameter shapes differ from a model's ({flat name: shape}), or None."""
    if expected == got:
        return None
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [f"{k} {got[k]} (expected {expected[k]})"
             for k in sorted(set(expected) & set(got)) if expected[k] != got[k]]
    return (f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}, unexpected "
            f"{unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}, wrong shapes {wrong[:3]}"
            f"{' ...' if len(wrong) > 3 else ''}")


def checked_float32(name: str, value: Any, source: str) -> np.ndarray:
    """The array as float32, or a WeightsError naming it unless it holds finite floats.

    An integer kernel would be cast silently and a NaN or an infinity runs without a word,
    both giving a black or meaningless picture: neither is a trained weight.
    """
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16"):
        raise WeightsError(f"{source}: {name} holds {array.dtype} values; weights are floating "
                           f"point numbers")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise WeightsError(f"{source}: {name} holds NaN or infinite values")
    return array


def to_params(flat: dict[str, np.ndarray], expected_shapes: Any, source: str) -> dict[str, Any]:
    """Checks flattened arrays against a model's parameter shapes; the nested float32 tree.

    Args:
      flat: {flat name: array} (`models.flatten`'s names).
      expected_shapes: the model's `param_shapes`.
      source: what the arrays came from, for the error message.

    Raises:
      WeightsError: missing, unexpected or wrongly shaped parameters, all named, or an array
        that is not finite floating point (`checked_float32`).
    """
    expected = {k: tuple(v.shape) for k, v in flatten(expected_shapes).items()}
    problem = shape_mismatch(expected, {k: tuple(v.shape) for k, v in flat.items()})
    if problem:
        raise WeightsError(f"{source}: the weights do not fit the model: {problem}")
    return unflatten({k: checked_float32(k, v, source) for k, v in flat.items()})


def assemble(model_config: dict[str, Any], flat: dict[str, np.ndarray], source: str, *,
             path: str | None = None, step: int | None = None,
             training_config: dict | None = None, extra: dict | None = None,
             weights: str = "params") -> InferenceModel:
    """The model of `model_config` with the stored arrays `flat` as its parameters.

    Args:
      model_config: a model configuration (old ones are normalised).
      flat: {flat parameter name: array}, any float dtype.
      source: what the arrays came from, for error messages.
      path: `InferenceModel.path` (default: `source`).
      step, training_config, extra, weights: as `InferenceModel`'s attributes.

    Raises:
      WeightsError: arrays that do not fit the model (see `to_params`).
      ValueError: a model configuration no family builds.
    """
    config = normalize_model_config(model_config)
    model = build_model_from_config(config)
    params = to_params(flat, param_shapes(model), source)
    return InferenceModel(
        model=model, params=jax.device_put(params, jax.local_devices()[0]),
        scale=config["scale"], variant=config["variant"],
        step=None if step is None else int(step), config=config, path=path or source,
        training_config=training_config, extra=extra, weights=weights)


__all__ = ["InferenceModel", "WeightsError", "assemble", "checked_float32", "shape_mismatch",
           "to_params"]
