"""ONNX Runtime (CPU) against JAX: ms per image of an exported model, and the exported files' sizes.

    python benchmarks/export_bench.py          # 32s (shipped x2), 48s and LESRCNN (random weights)
    python benchmarks/export_bench.py --models 32s,edsr-baseline --sizes 120x80,320x180

For each model the network is exported to ONNX (float32 and float16) and StableHLO in a
temporary folder (`drsan_jax.export.export`), and a single image of each LR size (W x H) is
super-resolved, median over repeats after one warm-up call:

- jax: `inference.Predictor`, the path `drsan_jax.load(...).upscale` takes (padded to a size
  bucket, rows split over the CPU devices `runtime.configure` makes, one per core); its compile
  time is the warm-up and is reported apart;
- onnxruntime: `InferenceSession.run` on the float32 file with the CPU execution provider and
  ONNX Runtime's default threads (one per physical core), the exact image size, the session
  `onnx_runtime.OnnxUpscaler` opens (the graph with `onnx_graph.CPU_REWRITES` applied).

Only DRSAN-32s ships trained weights; the others run with random ones (`init_params`), which
cost the same.
The 1-minute load average is printed with each row, since the machine may be shared. Nothing is
asserted; benchmarks/README.md keeps the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

# Importing JAX and drsan_jax starts no backend: `runtime.configure()` in `main` still makes the
# CPU devices first. onnxruntime is imported in `main`, so that --help works without it.
from drsan_jax import export, models, onnx_runtime, runtime
from drsan_jax.inference import Predictor
from drsan_jax.weights import loading, shipped
from drsan_jax.weights.loaded import InferenceModel

SIZES = ((120, 80), (320, 180), (512, 384), (1280, 720))  # LR (W, H)
# --smoke: a DRSAN-32s cut down to this (random weights), one tiny size, one repeat.
SMOKE_MODEL = {"features": 8, "num_blocks": 1, "num_groups": 1}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", "--variants", dest="models", default="32s,48s,lesrcnn",
                   help="comma-separated model names (drsan_jax.models.MODEL_NAMES, or 32s ...)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES),
                   help="comma-separated LR WxH")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per size (after warm-up)")
    p.add_argument("--smoke", action="store_true",
                   help="a check that the script runs, in seconds: a tiny DRSAN (32s with "
                        "features 8, 1 block, 1 group; random weights) instead of --models, "
                        "one 24x16 image, one repeat")
    args = p.parse_args(argv)
    args.model_options = {}
    if args.smoke:
        args.models, args.sizes, args.repeats = "32s", "24x16", 1
        args.model_options = dict(SMOKE_MODEL)
    return args


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_model(variant: str, scale: int, options: dict | None = None):
    """The shipped weights when they exist, else random ones (same cost per image).

    `options` (build_model overrides) always means random weights.
    """
    name = f"{variant}-x{scale}"
    if not options and shipped.is_model_name(name) and name in shipped.available():
        return loading.load_model(name), "shipped"
    model = models.build_model(variant, scale, **(options or {}))
    params = models.init_params(model, jax.random.key(0))
    config = models.config_of(model)
    return InferenceModel(model=model, params=params, scale=scale,
                          variant=config["variant"], step=None, config=config,
                          path="random init"), "random"


def main(argv=None) -> int:
    args = parse_args(argv)
    runtime.configure()  # first: one CPU device per core, as `python -m drsan_jax.upscale` runs
    import onnxruntime as ort

    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes.split(",")]
    print(f"jax {jax.__version__} on {jax.device_count()} {jax.default_backend()} device(s), "
          f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs", flush=True)
    rng = np.random.default_rng(0)
    for variant in args.models.split(","):
        inference_model, weights = load_model(variant, args.scale, args.model_options)
        with tempfile.TemporaryDirectory() as folder:
            files = {
                "onnx fp32": Path(folder) / "m32.onnx",
                "onnx fp16": Path(folder) / "m16.onnx",
                "stablehlo fp32": Path(folder) / "m32.stablehlo",
            }
            for label, path in files.items():
                fmt, precision = label.split()
                start = time.perf_counter()
                export.export(inference_model, fmt, path, precision=precision)
                print(f"{variant} x{args.scale} ({weights} weights): {label} "
                      f"{path.stat().st_size / 1e6:.2f} MB, exported in "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
            session = onnx_runtime.OnnxUpscaler(files["onnx fp32"],
                                                providers=["CPUExecutionProvider"]).session
            predictor = Predictor(inference_model.model, inference_model.params)
            print("| model | LR (W x H) | JAX ms | JAX compile s | ORT ms | JAX / ORT | load |")
            for width, height in sizes:
                lq = rng.random((height, width, 3), np.float32)
                start = time.perf_counter()
                predictor(lq)
                compile_s = time.perf_counter() - start
                jax_s = median_seconds(lambda: predictor(lq), args.repeats)
                feed = {"input": lq[None]}
                session.run(None, feed)
                ort_s = median_seconds(lambda: session.run(None, feed), args.repeats)
                print(f"| {variant} | {width}x{height} | {jax_s * 1e3:.0f} | {compile_s:.1f} | "
                      f"{ort_s * 1e3:.0f} | {jax_s / ort_s:.2f} | {os.getloadavg()[0]:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
