"""Parameter counts and multiply-adds of every model, as the papers report them.

    python -m drsan_jax.summary                       # every (model, scale) pair
    python -m drsan_jax.summary --model drsan-48m --scale 4
    python -m drsan_jax.summary --model mdsr --json

Multiply-adds are convolution MACs for one 1280x720 HR output, the unit of the DRSAN and DRAN
tables. They are counted from the convolutions the model actually runs at that scale
(intercepted while tracing shapes, so nothing is computed or compiled; one trace per model
and scale, two for a multi-scale one), which keeps the count true under the ablation switches and counts one
branch of a multi-scale model. `params` counts the
parameters that run at that scale; `params_total` the whole model (more for MDSR and
LESRCNN-S, which hold every scale's branch).

Tracing all 57 pairs takes about 30 s on 2 cores, so the counts are kept on disk
(`drsan_jax.source_cache`, under `~/.cache/drsan_jax/summary`) until the model code or the JAX
or Flax version changes; a run that finds them answers in about 3 s (`--no_cache` traces again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drsan_jax import cli
from drsan_jax.source_cache import SourceCache, source_key

if TYPE_CHECKING:
    import flax.linen as nn

# Flax, JAX and the model zoo are imported by the functions that trace, so that --help answers
# at once.

HR_SIZE_720P = (720, 1280)  # (H, W) of the HR output behind the paper's MAC figures.


def _trace(model: nn.Module, hr_size: tuple[int, int]) -> tuple[Any, float]:
    """(parameter shapes, convolution MACs for one HR output of `hr_size`), by tracing.

    Tracing (`jax.eval_shape`) gives shapes only: nothing is computed or compiled. Every
    convolution called is counted from its input and output shapes. For a single-scale model
    one trace of its initialisation, which runs the forward pass, gives both; a multi-scale
    model builds (and runs) every scale's branch there, so its forward pass at `model.scale` is
    traced again for the count.

    The LR input of a 1280x720 output at x3 is not a whole number of pixels (426.67 x 240), so
    MACs are counted per LR pixel on a small traced input and scaled by (H*W) / scale**2. Its
    side, 16, is the coarsest pooling factor of the zoo (SAFMN's NTIRE 2023 variant), so a
    branch at 1/k of the area counts exactly 1/k, the papers' convention; grouped convolutions
    count their kh*kw*cin/groups multiply-adds per output.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from drsan_jax.models.conv import Conv
    from drsan_jax.models.depthwise import DepthwiseConv

    lq_side = 16
    macs = 0

    def count(next_fun, args, kwargs, context):
        nonlocal macs
        module = context.module
        out = next_fun(*args, **kwargs)
        if isinstance(module, (Conv, nn.Conv, DepthwiseConv)) \
                and context.method_name == "__call__":
            kh, kw = module.kernel_size
            groups = (module.groups if isinstance(module, DepthwiseConv)
                      else getattr(module, "feature_group_count", 1))
            macs += (math.prod(out.shape[:-1]) * kh * kw * args[0].shape[-1] * module.features
                     // groups)
        return out

    x = jax.ShapeDtypeStruct((1, lq_side, lq_side, 3), jnp.float32)
    single = len(model.scales) == 1
    with nn.intercept_methods(count) if single else contextlib.nullcontext():
        shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    if not single:
        with nn.intercept_methods(count):
            jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes, x)
    lq_pixels = hr_size[0] * hr_size[1] / model.scale**2
    return shapes, macs / lq_side**2 * lq_pixels


def conv_macs(model: nn.Module, hr_size: tuple[int, int] = HR_SIZE_720P) -> float:
    """Convolution multiply-adds of `model` for one HR output of `hr_size` (H, W)."""
    return _trace(model, hr_size)[1]


def summarize(name: str, scale: int) -> dict[str, Any]:
    """Parameter counts and 720p MACs of one published model at one scale."""
    from drsan_jax.models import build_model, count_params, resolve, scale_path

    family, variant = resolve(name)
    model = build_model(name, scale)
    shapes, macs = _trace(model, HR_SIZE_720P)
    return {
        "model": family.model_name(variant),
        "scale": scale,
        "params": count_params(scale_path(shapes, scale)),
        "params_total": count_params(shapes),
        "macs": macs,
    }


def _sources() -> list[Path]:
    """The files whose code decides the counts: the model zoo and this module."""
    import drsan_jax.models

    return [*Path(drsan_jax.models.__file__).parent.rglob("*.py"), Path(__file__)]


def summarize_all(pairs: list[tuple[str, int]],
                  cache: SourceCache | None = None) -> list[dict[str, Any]]:
    """`summarize` of every (name, scale) pair, read from `cache` where it holds them."""
    from drsan_jax.models import resolve

    def key(name: str, scale: int) -> str:
        family, variant = resolve(name)
        return f"{family.model_name(variant)} x{scale}"

    found = {key(*p): cache.get(key(*p)) for p in pairs} if cache is not None else {}
    missing = [p for p in pairs if found.get(key(*p)) is None]
    if missing:
        where = (f"; kept in {cache.path} for the next run"
                 if cache is not None and cache.path is not None else "")
        print(f"tracing {len(missing)} model/scale pair(s) to count parameters and "
              f"multiply-adds (about half a second each{where})", file=sys.stderr, flush=True)
        traced = {key(*p): summarize(*p) for p in missing}
        if cache is not None:
            cache.put(traced)
        found.update(traced)
    return [found[key(*p)] for p in pairs]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Human-readable table in the paper's units (parameters in K and M, MACs in G)."""
    lines = [f"{'model':<15}{'scale':>6}{'params':>12}{'params (M)':>12}{'MACs (G)':>10}"
             f"{'whole model':>13}"]
    for row in rows:
        whole = f"{row['params_total']:>13,}" if row["params_total"] != row["params"] else ""
        lines.append(
            f"{row['model']:<15}{'x' + str(row['scale']):>6}{row['params']:>12,}"
            f"{row['params'] / 1e6:>12.3f}{row['macs'] / 1e9:>10.1f}{whole}"
        )
    lines.append("params: the parameters that run at that scale; whole model: all of a "
                 "multi-scale model's branches.")
    lines.append("MACs: convolution multiply-adds for one 1280x720 HR output.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (2: a bad --model or --scale)."""
    parser = cli.ArgumentParser(
        prog="python -m drsan_jax.summary",
        description="Parameter counts and multiply-adds (1280x720 HR output) of every model.",
    )
    parser.add_argument("--model", "--variant", dest="model", metavar="NAME",
                        help="one model (default: all; the full table's first column names "
                             "them); the DRSAN short names (32s, ...) work too")
    parser.add_argument("--scale", type=int, help="one scale, 2, 3 or 4 (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    parser.add_argument("--no_cache", action="store_true",
                        help="trace every model again instead of reading the counts kept from "
                             "an earlier run (they are kept until the model code or the JAX or "
                             "Flax version changes; DRSAN_JAX_CACHE_DIR=none also turns this off)")
    args = parser.parse_args(argv)
    return cli.run(parser.prog, args.verbose, lambda: _summarize(args))


def _summarize(args: argparse.Namespace) -> None:
    from drsan_jax.models import MODEL_NAMES, SCALES, resolve

    if args.scale is not None and args.scale not in SCALES:
        raise cli.UsageError(f"--scale {args.scale}: expected one of "
                             f"{', '.join(map(str, SCALES))}")
    if args.model is not None:
        try:
            resolve(args.model)
        except ValueError as e:
            raise cli.UsageError(f"--model: {e}") from e
    names = [args.model] if args.model else list(MODEL_NAMES)
    scales = [args.scale] if args.scale else list(SCALES)
    rows = summarize_all([(n, s) for n in names for s in scales],
                         None if args.no_cache else SourceCache("summary", source_key(
                             _sources(), ("jax", "flax"))))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))


if __name__ == "__main__":
    sys.exit(main())
