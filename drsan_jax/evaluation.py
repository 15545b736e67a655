"""Benchmark evaluation: PSNR / SSIM that mean exactly what the published SR tables mean.

The benchmark folder (`HR/<name>/`, `x<s>/<name>/`) and its image pairs are `data.benchmark`'s.
Each image is super-resolved (by a model through `inference.Predictor`, or by MATLAB-bicubic
upscaling, the first row of every table), brought to 8 bits (`metrics.to_levels`), and scored by
`metrics.evaluate_pair` under one protocol (`metrics.PROTOCOLS`: the project's "drsan" and
"matlab", or an authors' own such as "lesrcnn"), or under the project's two from the one
inference pass (protocol "both"): Y channel of BT.601, `scale` pixels removed from every border,
HR cropped to the SR size. A dataset's score is the mean over its images.

Grey ground truth: under "drsan" a model's RGB output is scored as it is (grey HR counts as three
equal channels). Under "matlab", where grey images are scored on their grey levels, the RGB
output is first reduced to grey with the same BT.601 luma, (Y - 16) * 255 / 219 rounded to
8 bits, as if it had been saved as a grey image like its ground truth; comparing its Y with raw
grey levels would mix two scales.

`evaluate` is cheap to call again (training validates with it): compiled programs are shared
through `inference`, and decoded images through `data.benchmark.load_pair`'s cache.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jaxlib
import numpy as np
from tqdm import tqdm

import drsan_jax
from drsan_jax import files, inference, metrics
from drsan_jax.data.benchmark import (
    ImagePair,
    default_data_dir,
    find_datasets,
    load_pair,
    pair_images,
)
from drsan_jax.data.image_io import quantize, write_image
from drsan_jax.data.resize import bicubic_upscale
from drsan_jax.models import config_of, model_name
from drsan_jax.weights.loading import load_model

METHODS = metrics.METHODS
BOTH = metrics.BOTH
PROTOCOL_CHOICES = metrics.PROTOCOL_CHOICES


class EvaluationError(ValueError):
    """A bad evaluation request, or an image that cannot be scored, described for the user.

    Problems with the benchmark folder itself are `data.BenchmarkError`s.
    """


def evaluate(
    model: Any,
    params: Any,
    data_dir: str | os.PathLike,
    datasets: Sequence[str] | str | None,
    scale: int,
    protocol: str = "drsan",
    *,
    method: str = "model",
    self_ensemble: bool = False,
    exact_shapes: bool = False,
    save_images: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Super-resolves benchmark datasets and scores them as the published tables do.

    Args:
      model: the DRSAN (None for method="bicubic").
      params: its parameters (None for method="bicubic").
      data_dir: the benchmark folder, with HR/<name>/ and x<scale>/<name>/.
      datasets: names under data_dir/HR (a list or "Set5,Set14"); None for all of them.
      scale: the SR factor; must be the model's.
      protocol: "drsan" or "matlab" (see `drsan_jax.metrics`), or "both": each image is
        super-resolved once and scored under both protocols.
      method: "model", or "bicubic" for MATLAB-bicubic upscaling of the LR images.
      self_ensemble: average the model's outputs over the 8 flips and quarter turns.
      exact_shapes: plain whole-image inference, one compiled program per image size, instead
        of size buckets (the results agree; this is the reference to check them against).
      save_images: a folder to write the SR images to, as <folder>/x<scale>/<dataset>/<stem>.png.
      progress: show a progress bar per dataset on stderr.

    Returns:
      {"datasets": {name: {"psnr", "ssim", "num_images", "images": {stem: {"psnr", "ssim"}}}},
       "protocol", "scale", "method", "model", "self_ensemble", "exact_shapes", "checkpoint",
       "step", "data_dir", "versions"}; "model" describes the network (None for bicubic) and
      "checkpoint" / "step" are None here (`evaluate_and_report` fills them from a checkpoint).
      For protocol "both": {"protocol": "both", "results": {"drsan": ..., "matlab": ...}}, each
      inner dict exactly what a run with that one protocol returns.

    Raises:
      EvaluationError: a bad request (checked before any image is super-resolved) or an image
        too small to score.
      BenchmarkError: a missing dataset or partner image (all checked before any image is
        super-resolved) or an LR image of the wrong size.
      ImageReadError: an image cannot be read.
    """
    if protocol not in PROTOCOL_CHOICES:
        raise EvaluationError(f"unknown protocol {protocol!r}; expected one of {PROTOCOL_CHOICES}")
    protocols = metrics.PROJECT_PROTOCOLS if protocol == BOTH else (protocol,)
    if method not in METHODS:
        raise EvaluationError(f"unknown method {method!r}; expected one of {METHODS}")
    if not isinstance(scale, (int, np.integer)) or scale < 2:
        raise EvaluationError(f"scale must be an integer of at least 2, got {scale!r}")
    if method == "model":
        if model is None or params is None:
            raise EvaluationError("method 'model' needs a model and its parameters")
        if model.scale != scale:
            raise EvaluationError(
                f"scale {scale} disagrees with the model, which is x{model.scale}")
    elif self_ensemble or exact_shapes:
        raise EvaluationError("self_ensemble and exact_shapes apply to method 'model' only")
    data_dir = Path(data_dir)
    if isinstance(datasets, str):
        datasets = [d.strip() for d in datasets.split(",") if d.strip()]
    if datasets is None:
        datasets = find_datasets(data_dir)
    if not datasets:
        found = ", ".join(find_datasets(data_dir))
        raise EvaluationError(f"no datasets to evaluate (found: {found})")
    # Every dataset is checked before the first image is computed.
    pairs = {name: pair_images(data_dir, name, scale) for name in datasets}

    predictor = None
    if method == "model":
        predictor = inference.Predictor(model, params, self_ensemble=self_ensemble,
                                        exact_shapes=exact_shapes)
    scores = {p: {} for p in protocols}
    for name, dataset in pairs.items():
        by_protocol = _evaluate_dataset(name, dataset, scale, protocols, predictor, save_images,
                                        progress)
        for p in protocols:
            scores[p][name] = by_protocol[p]
    results = {
        p: {
            "datasets": scores[p],
            "protocol": p,
            "scale": int(scale),
            "method": method,
            "model": describe_model(model) if method == "model" else None,
            "self_ensemble": self_ensemble,
            # The predictor's: whole-image families always run at their own shapes.
            "exact_shapes": predictor.exact_shapes if predictor else exact_shapes,
            "checkpoint": None,
            "step": None,
            "data_dir": str(data_dir.resolve()),
            "versions": software_versions(),
        }
        for p in protocols
    }
    return {"protocol": BOTH, "results": results} if protocol == BOTH else results[protocol]


def _evaluate_dataset(
    name: str,
    pairs: list[ImagePair],
    scale: int,
    protocols: Sequence[str],
    predictor: inference.Predictor | None,
    save_images: str | os.PathLike | None,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Scores one dataset under each protocol, super-resolving every image once.

    `predictor` None means bicubic upscaling. Returns {protocol: {"psnr", "ssim", "num_images",
    "images"}}.
    """
    loaded = [load_pair(pair, scale) for pair in pairs]
    if predictor is None:
        outputs = ((i, bicubic_upscale(lq, scale)) for i, (lq, _) in enumerate(loaded))
    else:
        outputs = predictor.predict_iter([lq for lq, _ in loaded])  # float SR, quantized below
    scores = {p: {} for p in protocols}
    with tqdm(total=len(pairs), desc=f"{name} x{scale}", unit="image", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for i, sr in outputs:
            pair, gt = pairs[i], loaded[i][1]
            if save_images is not None:
                write_image(Path(save_images) / f"x{scale}" / name / f"{pair.stem}.png",
                            sr if sr.dtype == np.uint8 else quantize(sr))
            for protocol in protocols:
                levels = sr if sr.dtype == np.uint8 else metrics.to_levels(sr, protocol)
                try:
                    psnr, ssim = metrics.evaluate_pair(_as_scored(levels, gt, protocol), gt,
                                                       scale, protocol)
                except ValueError as e:
                    raise EvaluationError(f"cannot score {pair.gt_path}: {e}") from e
                scores[protocol][pair.stem] = {"psnr": psnr, "ssim": ssim}
            bar.update()
    return {protocol: _summarize(pairs, scores[protocol]) for protocol in protocols}


def _summarize(pairs: list[ImagePair], scores: dict[str, dict[str, float]]) -> dict[str, Any]:
    """A dataset's result: mean PSNR / SSIM and the per-image scores, in file order."""
    images = {pair.stem: scores[pair.stem] for pair in pairs}  # file order, not bucket order
    return {
        "psnr": float(np.mean([s["psnr"] for s in images.values()])),
        "ssim": float(np.mean([s["ssim"] for s in images.values()])),
        "num_images": len(images),
        "images": images,
    }


def _as_scored(sr: np.ndarray, gt: np.ndarray, protocol: str) -> np.ndarray:
    """Gives the SR image the ground truth's channel layout (see the module docstring)."""
    if gt.ndim == 2 and sr.ndim == 3 and protocol == "matlab":
        luma = (metrics.rgb_to_y(sr, round_to_uint8=False) - 16.0) * (255.0 / 219.0)
        return np.clip(np.floor(luma + 0.5), 0, 255).astype(np.uint8)
    if gt.ndim == 3 and sr.ndim == 2:
        return np.repeat(sr[..., None], 3, axis=2)
    return sr


def describe_model(model: Any) -> dict[str, Any]:
    """The model's name and configuration (`models.config_of`), JSON-safe.

    A module of no registered family (an experiment of one's own) is described by its class.
    """
    try:
        config = config_of(model)
    except ValueError:
        return {"name": type(model).__name__}
    return {"name": model_name(config), **config}


def software_versions() -> dict[str, str]:
    """The versions that produced a result: Python, drsan-jax, JAX, jaxlib, Flax, NumPy."""
    return {
        "python": platform.python_version(),
        "drsan_jax": drsan_jax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "backend": jax.default_backend(),
    }


def format_table(results: dict[str, Any], per_image: bool = False) -> str:
    """The results of `evaluate` as a text table: mean PSNR / SSIM per dataset.

    Args:
      results: what `evaluate` returns.
      per_image: list every image's scores under its dataset first.

    Returns:
      A header naming what was evaluated and how, then one row per dataset; for protocol
      "both", the table of each protocol, one after the other.
    """
    if results["protocol"] == BOTH:
        return "\n\n".join(format_table(r, per_image) for r in results["results"].values())
    scale, protocol = results["scale"], results["protocol"]
    channel = "RGB" if protocol == "ntire" else "Y (BT.601)"
    lines = [f"{_method_name(results)} x{scale}, protocol {protocol}: PSNR (dB) / SSIM on "
             f"{channel}, {scale}-pixel border removed"]
    if per_image:
        for name, dataset in results["datasets"].items():
            lines.append(f"{name:<24}{'PSNR':>10}{'SSIM':>9}")
            lines.extend(f"  {stem:<22}{s['psnr']:>10.3f}{s['ssim']:>9.4f}"
                         for stem, s in dataset["images"].items())
    lines.append(f"{'dataset':<16}{'images':>8}{'PSNR':>10}{'SSIM':>9}")
    lines.extend(f"{name:<16}{d['num_images']:>8}{d['psnr']:>10.3f}{d['ssim']:>9.4f}"
                 for name, d in results["datasets"].items())
    return "\n".join(lines)


def _method_name(results: dict[str, Any]) -> str:
    """'bicubic', or 'DRSAN 32s (step 1000) + self-ensemble' and the like."""
    if results["method"] == "bicubic":
        return "bicubic"
    name = (results["model"] or {}).get("name", "model")
    if results.get("step") is not None:
        name += f" (step {results['step']})"
    if results.get("self_ensemble"):
        name += " + self-ensemble"
    return name


def evaluate_and_report(
    *,
    ckpt: str | os.PathLike | None = None,
    method: str = "model",
    datasets: Sequence[str] | str | None = None,
    scale: int | None = None,
    data_dir: str | os.PathLike | None = None,
    repo_root: str | os.PathLike = ".",
    protocol: str = "drsan",
    per_image: bool = False,
    output_json: str | os.PathLike | None = None,
    save_images: str | os.PathLike | None = None,
    self_ensemble: bool = False,
    exact_shapes: bool = False,
    progress: bool = True,
    ema: bool = True,
) -> dict[str, Any]:
    """What `python eval.py` does: load, evaluate, print the table, write the JSON.

    Args:
      ckpt: the checkpoint, shipped name or weights file (`loading.load_model`); required for
        method "model".
      method: "model" or "bicubic".
      datasets: dataset names; None for every dataset under data_dir/HR.
      scale: the SR factor. With a checkpoint it is optional and must be one the model has
        (a multi-scale model runs that scale's branch); "bicubic" needs it.
      data_dir: the benchmark folder; None for `default_data_dir(repo_root)`.
      repo_root: the checkout (where eval.py lives), to find the default benchmark folder.
      protocol, self_ensemble, exact_shapes, save_images, progress: as in `evaluate`.
      per_image: print every image's scores too.
      output_json: write the results there, as indented JSON (folders made as needed).
      ema: of a checkpoint trained with a weight average, score the average (default) or the
        trained weights (`loading.load_model`).

    Returns:
      The results of `evaluate`, with "checkpoint", "step", "weights" ("params" or
      "params_ema") and the variant from the checkpoint
      (for protocol "both", in each of the inner results).
    """
    if method == "model" and ckpt is None:
        raise EvaluationError("--ckpt is required to evaluate a model (or use --method bicubic)")
    if method == "bicubic":
        if ckpt is not None:
            raise EvaluationError("--ckpt is not used with --method bicubic; drop one of them")
        if scale is None:
            raise EvaluationError("--method bicubic needs --scale")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(repo_root)
    if not data_dir.is_dir():
        raise EvaluationError(f"--data_dir {data_dir} is not a folder")
    loaded = None
    if method == "model":
        loaded = load_model(ckpt, ema=ema)
        if scale is not None and scale not in loaded.scales:
            raise EvaluationError(
                f"--scale {scale} disagrees with the checkpoint {loaded.path}, which is a "
                f"x{loaded.scale} model; drop --scale or pass a x{scale} checkpoint"
            )
        loaded = loaded.at_scale(scale)
        scale = loaded.scale
    start = time.perf_counter()
    results = evaluate(
        loaded.model if loaded else None, loaded.params if loaded else None, data_dir, datasets,
        scale, protocol, method=method, self_ensemble=self_ensemble, exact_shapes=exact_shapes,
        save_images=save_images, progress=progress)
    if loaded is not None:
        for single in results["results"].values() if protocol == BOTH else [results]:
            single["checkpoint"] = loaded.path
            single["step"] = loaded.step
            single["weights"] = loaded.weights
    print(format_table(results, per_image))
    print(f"evaluated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if output_json is not None:
        files.write_json(output_json, results)
    return results


__all__ = [
    "BOTH",
    "EvaluationError",
    "METHODS",
    "PROTOCOL_CHOICES",
    "describe_model",
    "evaluate",
    "evaluate_and_report",
    "format_table",
    "software_versions",
]
