"""Where each convolution of a training step lands in XLA:CPU: YNNPACK, XLA's own loops, matmuls.

    python benchmarks/xla_conv_probe.py                       # DRSAN-32s x2, both conv_impls
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=... python benchmarks/xla_conv_probe.py

A flag that names a library says nothing about what the compiler does with it: this compiles
the gradient of the L1 loss of one model (the work of `training.train_step` without Adam) for
each `conv_impl` and reads XLA's optimised HLO. It prints, per implementation, how many
convolutions and dots run inside YNNPACK fusions (`__ynn_fusion`), how many are left to XLA's
own emitter, and how many layout copies (transpose / copy fusions) surround them, so that a
flag's effect can be told from the HLO before it is timed (`bench.py` times it). No timing,
no assertions: it prints numbers (or JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import jax
import jax.numpy as jnp

from drsan_jax.models import build_model, init_params
from drsan_jax.models.conv import IMPLS

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) [^\n]*\{$")
CALLS = re.compile(r"calls=%?([\w.\-]+)")


def computations(text: str) -> dict[str, list[str]]:
    """The optimised HLO module's computations: name -> instruction lines."""
    blocks: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        match = _COMPUTATION.match(line.strip()) if not line.startswith(" ") else None
        if match:
            name = match.group(1)
            blocks[name] = []
        elif name is not None and line.strip() not in ("", "}"):
            blocks[name].append(line.strip())
    return blocks


def called_by(blocks: dict[str, list[str]], marker: str) -> set[str]:
    """Names of the computations that instructions whose line holds `marker` call."""
    return {called for lines in blocks.values() for line in lines if marker in line
            for called in CALLS.findall(line)}


def census(text: str) -> dict[str, int]:
    """Counts convolutions, dots and layout copies by where they run, from optimised HLO."""
    blocks = computations(text)
    ynn_bodies = called_by(blocks, '"__ynn_fusion"')
    counts = {"ynn_fusions": 0, "convolutions_in_ynn": 0, "convolutions_in_xla": 0,
              "dots_in_ynn": 0, "dots_in_xla": 0, "layout_copies": 0}
    for name, lines in blocks.items():
        where = "ynn" if name in ynn_bodies else "xla"
        for line in lines:
            if '"__ynn_fusion"' in line:
                counts["ynn_fusions"] += 1
            if " convolution(" in line:
                counts[f"convolutions_in_{where}"] += 1
            if " dot(" in line:
                counts[f"dots_in_{where}"] += 1
            if where == "xla" and re.search(r"= \S+ fusion\(", line) and re.search(
                    r"^%?(transpose|copy|wrapped_copy|transpose_copy)\w*", line):
                counts["layout_copies"] += 1
    return counts


def probe(model_name: str, scale: int, impl: str, batch: int, patch: int,
          **sizes: int) -> dict[str, int]:
    """The census of one model's L1-loss gradient, compiled for one device."""
    model = build_model(model_name, scale, conv_impl=impl, **sizes)
    params = init_params(model, jax.random.key(0))
    lq = jnp.zeros((batch, patch, patch, 3), jnp.float32)
    gt = jnp.zeros((batch, patch * scale, patch * scale, 3), jnp.float32)

    def loss(p, lq, gt):
        return jnp.mean(jnp.abs(model.apply({"params": p}, lq) - gt))

    text = jax.jit(jax.grad(loss)).lower(params, lq, gt).compile().as_text()
    return census(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="32s")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="per-device batch")
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--impls", default="xla,im2col",
                        help=f"comma-separated, of {', '.join(i for i in IMPLS if i != 'auto')}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny DRSAN on tiny patches, for the tests")
    args = parser.parse_args(argv)
    model, batch, patch = args.model, args.batch, args.patch
    sizes = {}
    if args.smoke:
        model, batch, patch = "32s", 2, 8
        sizes = {"features": 8, "num_blocks": 1, "num_groups": 1}
    rows = {impl: probe(model, args.scale, impl, batch, patch, **sizes)
            for impl in args.impls.split(",")}
    result = {"model": model, "scale": args.scale, "batch": batch, "patch": patch,
              "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "impls": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{model} x{args.scale}, batch {batch} of {patch}x{patch}, jax {jax.__version__}, "
          f"XLA_FLAGS={result['xla_flags'] or '(none)'}", file=sys.stderr)
    keys = list(next(iter(rows.values())))
    print(f"{'conv_impl':<10}" + "".join(f"{k:>21}" for k in keys))
    for impl, counts in rows.items():
        print(f"{impl:<10}" + "".join(f"{counts[k]:>21}" for k in keys))


if __name__ == "__main__":
    main()
