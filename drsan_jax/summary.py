"""Parameter counts and multiply-adds of the DRSAN variants, as the paper reports them.

    python -m drsan_jax.summary                       # all 15 (variant, scale) pairs
    python -m drsan_jax.summary --variant 48m --scale 4
    python -m drsan_jax.summary --json

Multiply-adds are convolution MACs for one 1280x720 HR output, the unit of the paper's tables.
They are counted from the convolutions the model actually runs (intercepted while tracing shapes,
so nothing is computed), which keeps the count true under the ablation switches.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from drsan_jax.conv import Conv
from drsan_jax.models import DRSAN, SCALES, VARIANTS, build_model, count_params, param_shapes

HR_SIZE_720P = (720, 1280)  # (H, W) of the HR output behind the paper's MAC figures.


def conv_macs(model: DRSAN, hr_size: tuple[int, int] = HR_SIZE_720P) -> float:
    """Convolution multiply-adds of `model` for one HR output of `hr_size` (H, W).

    The LR input of a 1280x720 output at x3 is not a whole number of pixels (426.67 x 240), so
    MACs are counted per LR pixel on a small traced input and scaled by (H*W) / scale**2.
    """
    lq_side = 8
    macs = 0

    def count(next_fun, args, kwargs, context):
        nonlocal macs
        module = context.module
        if isinstance(module, (Conv, nn.Conv)) and context.method_name == "__call__":
            x = args[0]
            out = next_fun(*args, **kwargs)
            kh, kw = module.kernel_size
            macs += math.prod(out.shape[:-1]) * kh * kw * x.shape[-1] * module.features
            return out
        return next_fun(*args, **kwargs)

    x = jax.ShapeDtypeStruct((1, lq_side, lq_side, 3), jnp.float32)
    with nn.intercept_methods(count):
        jax.eval_shape(model.init, jax.random.key(0), x)
    lq_pixels = hr_size[0] * hr_size[1] / model.scale**2
    return macs / lq_side**2 * lq_pixels


def summarize(variant: str, scale: int) -> dict[str, Any]:
    """Parameter count and 720p MACs of one published variant at one scale."""
    model = build_model(variant, scale)
    return {
        "variant": variant,
        "scale": scale,
        "params": count_params(param_shapes(model)),
        "macs": conv_macs(model),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """Human-readable table in the paper's units (parameters in K and M, MACs in G)."""
    lines = [f"{'model':<8}{'scale':>6}{'params':>12}{'params (M)':>12}{'MACs (G)':>11}"]
    for row in rows:
        lines.append(
            f"{row['variant']:<8}{'x' + str(row['scale']):>6}{row['params']:>12,}"
            f"{row['params'] / 1e6:>12.3f}{row['macs'] / 1e9:>11.1f}"
        )
    lines.append("MACs: convolution multiply-adds for one 1280x720 HR output.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drsan_jax.summary",
        description="Parameter counts and multiply-adds (1280x720 HR output) of DRSAN variants.",
    )
    parser.add_argument("--variant", choices=list(VARIANTS), help="one variant (default: all)")
    parser.add_argument("--scale", type=int, choices=list(SCALES), help="one scale (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    args = parser.parse_args(argv)

    variants = [args.variant] if args.variant else list(VARIANTS)
    scales = [args.scale] if args.scale else list(SCALES)
    rows = [summarize(v, s) for v in variants for s in scales]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
