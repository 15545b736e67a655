"""Speed and memory of DRSAN training and inference, beside the PyTorch peer when it is present.

    python benchmarks/bench.py --variant 32s --scale 2 --json

Measures, for one variant and scale, on the default backend (CPU or GPU), in the model's compute
dtype (--dtype float32, the default, or bfloat16; parameters stay float32 either way):

- train: the project's own `training.train_step` (Adam, L1) on a batch of random uint8 patches
  split over `parallel.make_mesh()`: compile time, median step time after warm-up, process CPU
  seconds per step, patches/s, achieved GFLOP/s (XLA's cost analysis of the step, counted on
  the plain-convolution program so that the number does not depend on `conv_impl`) and its
  fraction of a peak measured here with large matmuls, and the step's scratch memory;
- infer: ms per image for LR sizes 120x80 (B100 at x4), 240x160, 320x180 and 512x384
  (jitted `model.apply`, compile time reported separately) of the model at --infer_scale
  (default --scale; 4 gives the paper's B100 x4 time beside an x2 train step in one run):
  `infer_median_s` and `infer_cpu_s` as `inference.Predictor` runs it, i.e. with several CPU
  devices the image's rows split over all of them (`infer_rows_split` says for which sizes,
  `infer_rows_split_max_abs_diff` gives the largest difference from one device), and
  `infer_one_device_median_s` / `infer_one_device_cpu_s` on one device;
- eval: wall time of `evaluation.evaluate` on Set5+Set14+B100, compilations included;
- data: batches/s of `data.PatchSampler` (one thread, and its prefetching iterator) against the
  train step's consumption;
- startup: two fresh processes against one new compilation cache, each timing import, model
  initialisation, and the first train step (compile included): cold, then warm;
- torch: the same network in PyTorch (`../shared/bench/torch_drsan.py`, run by a Python that can
  import torch: --torch_python, else found), eager and optionally torch.compile, timed the same
  way in the same run, right after the JAX measurements (float32 at --scale only: with another
  --dtype or --infer_scale it is skipped, with a note);
- onnx: the same network (same weights) exported to ONNX (`drsan_jax.export`, float32) and run
  in ONNX Runtime's CPU execution provider with its default threads at the infer sizes:
  `onnx_median_s` as `onnx_runtime.OnnxUpscaler` runs the file (the exported graph with
  `onnx_graph.CPU_REWRITES` applied in memory; `onnx_rewrites` counts every rewrite),
  `onnx_file_median_s` for the file's graph as exported (`onnx_graph.REWRITES`), and
  `onnx_plain_median_s` for jax2onnx's graph as written (`--onnx_rewrites none`), one session
  after another, in the same run as JAX and PyTorch (needs the [onnx] extra; float32 at
  --scale only).

The machine may be shared: the 1-minute load average is recorded next to every section, and
both frameworks' process CPU seconds per step are reported beside the wall time. Nothing here
is asserted; see benchmarks/README.md for recorded numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# Importing JAX and drsan_jax starts no backend: `runtime.configure()` in `main` still sets the
# CPU device count and the compilation cache before anything touches a device.
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from drsan_jax import data, evaluation, inference, runtime, training
from drsan_jax.models import DTYPES, build_model, conv, init_params
from drsan_jax.training import parallel

REPO = Path(__file__).resolve().parents[1]
TORCH_PEER = REPO.parent / "shared" / "bench" / "torch_drsan.py"
INFER_SIZES = ((120, 80), (240, 160), (320, 180), (512, 384))  # LR (W, H)
EVAL_DATASETS = ("Set5", "Set14", "B100")
SECTIONS = ("train", "infer", "eval", "data", "startup", "torch", "onnx")
# --smoke: a tiny DRSAN on tiny inputs, every section's code run once in seconds (for the tests;
# its numbers mean nothing).
SMOKE_MODEL = {"features": 8, "num_blocks": 1, "num_groups": 1}
SMOKE_SIZES = ((24, 16),)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="32s")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="global train batch (paper: 16)")
    p.add_argument("--patch", type=int, default=48, help="LR patch side (paper: 48)")
    p.add_argument("--conv_impl", default="auto",
                   help="auto, xla or im2col (drsan_jax.models.conv)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="the model's compute dtype (config.model.dtype); parameters, loss and "
                        "output stay float32")
    p.add_argument("--infer_scale", type=int, default=None,
                   help="scale of the model the infer section times (default --scale)")
    p.add_argument("--cpu_devices", type=int, default=None,
                   help="CPU devices (default: drsan_jax.runtime's, one per core)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10, help="timed train steps")
    p.add_argument("--infer_iters", type=int, default=5)
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"),
                   help="holds benchmark/ (eval) and train/T91 (data)")
    p.add_argument("--torch_python", default=None,
                   help="a Python that can import torch (default: searched)")
    p.add_argument("--torch_threads", type=int, default=None,
                   help="torch.set_num_threads (default: usable cores)")
    p.add_argument("--torch_compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the table goes to stderr)")
    p.add_argument("--smoke", action="store_true",
                   help="a check that the script runs, in seconds: a tiny DRSAN (features 8, "
                        "1 block, 1 group), batch 2 of 8x8 patches, one warm-up and one timed "
                        "step, one 24x16 inference size, a small matmul peak; combine with "
                        "--sections train,infer (eval and data read the real data sets)")
    args = p.parse_args(argv)
    args.model_options = {}
    args.infer_scale = args.infer_scale or args.scale
    args.infer_sizes = INFER_SIZES
    args.peak_n, args.peak_repeats = 2048, 5
    if args.smoke:
        args.model_options = dict(SMOKE_MODEL)
        args.batch, args.patch, args.warmup, args.iters, args.infer_iters = 2, 8, 1, 1, 1
        args.infer_sizes = SMOKE_SIZES
        args.peak_n, args.peak_repeats = 256, 1
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown {unknown}; expected some of {list(SECTIONS)}")
    return args


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(fn, warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of `iters` calls of fn after `warmup` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        c, t = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def default_config():
    """configs/default.py's get_config(), the recipe the optimizer is built from."""
    spec = importlib.util.spec_from_file_location("drsan_default_config",
                                                  REPO / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def measure_peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Best GFLOP/s of float32 n x n matmuls: one device, and one matmul per device at once."""
    results = {}
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    wall, _ = timed(lambda: mm(a).block_until_ready(), 1, repeats)
    results["one_device"] = 2 * n**3 / min(wall) / 1e9
    devices = jax.device_count()
    if devices > 1:
        mesh = parallel.make_mesh()
        stack = jax.device_put(jnp.stack([a] * devices),
                               NamedSharding(mesh, PartitionSpec(parallel.DATA_AXIS)))
        bmm = jax.jit(lambda s: jnp.einsum("bij,bjk->bik", s, s))
        wall, _ = timed(lambda: bmm(stack).block_until_ready(), 1, repeats)
        results["all_devices"] = devices * 2 * n**3 / min(wall) / 1e9
    results["peak"] = max(results.values())
    return results


def train_inputs(model, params, batch_size: int, patch: int, scale: int):
    """(mesh, batch, state) for timing `training.train_step`: Adam as configs/default.py sets
    it, and a batch of random uint8 patches split over `parallel.make_mesh()`."""
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    local = parallel.host_batch_size(batch_size, mesh)
    batch = parallel.shard_batch({
        "lq": rng.integers(0, 256, (local, patch, patch, 3), np.uint8),
        "gt": rng.integers(0, 256, (local, patch * scale, patch * scale, 3), np.uint8),
    }, mesh)
    state = training.create_train_state(model, training.create_optimizer(default_config()),
                                        params, mesh)
    return mesh, batch, state


def bench_train(args, model, params, out: dict) -> None:
    _, batch, state = train_inputs(model, params, args.batch, args.patch, args.scale)

    # FLOPs of the math, counted on the plain-convolution program: XLA's cost analysis counts
    # a loop body once, which would undercount the im2col kernel gradients.
    plain = model.clone(conv_impl="xla")
    flops = training.train_step.lower(state.replace(apply_fn=plain.apply),
                                      batch).cost_analysis()["flops"]

    t = time.perf_counter()
    step = training.train_step.lower(state, batch).compile()
    out["train_compile_s"] = time.perf_counter() - t
    memory = step.memory_analysis()
    if memory is not None:
        out["train_temp_mib_per_device"] = memory.temp_size_in_bytes / 2**20

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch)
        metrics["loss"].block_until_ready()

    out["train_load_before"] = load()
    wall, cpu = timed(one_step, args.warmup, args.iters)
    out["train_load_after"] = load()
    median = statistics.median(wall)
    out.update(
        train_step_median_s=median,
        train_step_min_s=min(wall),
        train_step_cpu_s=statistics.median(cpu),
        train_patches_per_s=args.batch / median,
        train_gflop_per_step=flops / 1e9,
        train_gflops=flops / median / 1e9,
    )
    peak = measure_peak_gflops(args.peak_n, args.peak_repeats)
    out["peak_gflops"] = peak["peak"]
    out["peak_gflops_detail"] = peak
    out["train_fraction_of_peak"] = out["train_gflops"] / peak["peak"]


def bench_infer(args, model, params, out: dict) -> None:
    """Seconds per image: on one device, and as `inference.Predictor` runs it.

    Both at the image's own size: without Predictor's padding to a size bucket and its mask.

    With several CPU devices Predictor splits the image's rows over all of them (XLA exchanges
    the border rows each convolution needs) when the height divides into at least
    `inference.MIN_ROWS_PER_DEVICE` rows per device; `infer_median_s` times that (the
    one-device time where it does not split), and the largest difference from the one-device
    output is recorded beside it.
    """
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    keys = ("infer_median_s", "infer_cpu_s", "infer_compile_s", "infer_one_device_median_s",
            "infer_one_device_cpu_s", "infer_rows_split")
    out.update({k: {} for k in keys})
    split = inference.Predictor(model, params).split_rows
    devices = jax.local_device_count()
    if split:
        mesh = jax.make_mesh((devices,), ("rows",), axis_types=(AxisType.Auto,),
                             devices=jax.local_devices())
        rows = NamedSharding(mesh, PartitionSpec(None, "rows"))
        split_params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        out["infer_rows_split_max_abs_diff"] = {}
    out["infer_load_before"] = load()
    for w, h in args.infer_sizes:
        key = f"{w}x{h}"
        x = jax.device_put(jax.random.uniform(jax.random.key(1), (1, h, w, 3)))
        t = time.perf_counter()
        y = forward(params, x).block_until_ready()
        out["infer_compile_s"][key] = time.perf_counter() - t
        wall, cpu = timed(lambda x=x: forward(params, x).block_until_ready(), 1,
                          args.infer_iters)
        out["infer_one_device_median_s"][key] = statistics.median(wall)
        out["infer_one_device_cpu_s"][key] = statistics.median(cpu)
        out["infer_rows_split"][key] = (
            split and h % devices == 0 and h // devices >= inference.MIN_ROWS_PER_DEVICE)
        if out["infer_rows_split"][key]:
            xs = jax.device_put(x, rows)
            diff = jnp.abs(forward(split_params, xs) - y).max()
            out["infer_rows_split_max_abs_diff"][key] = float(diff)
            wall, cpu = timed(lambda xs=xs: forward(split_params, xs).block_until_ready(), 1,
                              args.infer_iters)
        out["infer_median_s"][key] = statistics.median(wall)
        out["infer_cpu_s"][key] = statistics.median(cpu)
    out["infer_load_after"] = load()


def bench_eval(args, model, params, out: dict) -> None:
    data_dir = Path(args.data_dir) / "benchmark"
    if not data_dir.is_dir():
        out["eval_note"] = f"skipped: no benchmark data at {data_dir}"
        return
    before = inference.compiled_programs()
    out["eval_load_before"] = load()
    t = time.perf_counter()
    result = evaluation.evaluate(model, params, data_dir, list(EVAL_DATASETS), args.scale,
                                 progress=False)
    out["eval_wall_s"] = time.perf_counter() - t
    out["eval_load_after"] = load()
    out["eval_images"] = sum(d["num_images"] for d in result["datasets"].values())
    out["eval_programs_compiled"] = inference.compiled_programs() - before


def bench_data(args, out: dict) -> None:
    source = Path(args.data_dir) / "train" / "T91"
    if not source.is_dir():
        out["data_note"] = f"skipped: no training images at {source}"
        return
    config = default_config()
    t = time.perf_counter()
    dataset = data.load_training_set(str(source), args.scale, args.patch,
                                     os.path.expanduser(config.cache_dir))
    out["data_prepare_s"] = time.perf_counter() - t
    sampler = data.PatchSampler(dataset, args.batch, args.patch, seed=0)
    n = 50
    steps = iter(range(10**9))
    wall, cpu = timed(lambda: sampler.batch(next(steps)), 2, n)
    out["data_batch_one_thread_s"] = statistics.median(wall)
    out["data_batch_cpu_s"] = statistics.median(cpu)
    batches = sampler.batches(0, workers=config.data_workers, prefetch=config.prefetch_batches)
    next(batches)
    t = time.perf_counter()
    for _ in range(4 * n):
        next(batches)
    out["data_batches_per_s"] = 4 * n / (time.perf_counter() - t)
    batches.close()
    if "train_step_median_s" in out:
        out["data_speed_over_train_step"] = out["data_batches_per_s"] * out["train_step_median_s"]


_STARTUP_CHILD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from drsan_jax import runtime
    runtime.configure(batch_size={batch})
    import jax, numpy as np
    from drsan_jax.training import parallel
    from drsan_jax import training
    from drsan_jax.models import build_model, init_params
    import optax
    t1 = time.perf_counter()
    model = build_model({variant!r}, {scale}, conv_impl={conv_impl!r},
                        dtype=getattr(jax.numpy, {dtype!r}), **{options!r})
    params = init_params(model, jax.random.key(0))
    jax.block_until_ready(params)
    t2 = time.perf_counter()
    mesh = parallel.make_mesh()
    state = training.create_train_state(model, optax.adam(2e-4), params, mesh)
    rng = np.random.default_rng(0)
    local = parallel.host_batch_size({batch}, mesh)
    batch = parallel.shard_batch({{
        "lq": rng.integers(0, 256, (local, {patch}, {patch}, 3), np.uint8),
        "gt": rng.integers(0, 256, (local, {hr}, {hr}, 3), np.uint8)}}, mesh)
    state, metrics = training.train_step(state, batch)
    metrics["loss"].block_until_ready()
    t3 = time.perf_counter()
    print(json.dumps({{"import_s": t1 - t0, "init_s": t2 - t1, "first_step_s": t3 - t2}}))
""")


def bench_startup(args, out: dict) -> None:
    code = _STARTUP_CHILD.format(batch=args.batch, variant=args.variant, scale=args.scale,
                                 conv_impl=args.conv_impl, dtype=args.dtype,
                                 options=args.model_options,
                                 patch=args.patch,
                                 hr=args.patch * args.scale)
    cache = tempfile.mkdtemp(prefix="drsan_bench_cache_")
    env = dict(os.environ, DRSAN_JAX_CACHE_DIR=cache)
    if args.cpu_devices:
        env["DRSAN_JAX_CPU_DEVICES"] = str(args.cpu_devices)
    try:
        for run in ("cold", "warm"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, cwd=REPO)
            if proc.returncode:
                out["startup_note"] = f"child failed: {proc.stderr[-2000:]}"
                return
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["process_s"] = time.perf_counter() - t
            result["load"] = load()
            out[f"startup_{run}"] = result
    finally:
        shutil.rmtree(cache, ignore_errors=True)


_TORCH_CHILD = textwrap.dedent("""
    import json, os, resource, statistics, sys, time
    import torch
    import torch.nn.functional as F
    args = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(args["peer"]))
    import torch_drsan
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)

    def timed(fn, warmup, iters):
        for _ in range(warmup):
            fn()
        wall, cpu = [], []
        for _ in range(iters):
            c, t = time.process_time(), time.perf_counter()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return wall, cpu

    model = torch_drsan.build(args["variant"], args["scale"])
    fwd = torch.compile(model) if args["compile"] else model
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    b, p, s = args["batch"], args["patch"], args["scale"]
    lq, gt = torch.rand(b, 3, p, p), torch.rand(b, 3, p * s, p * s)

    def step():
        opt.zero_grad(set_to_none=True)
        F.l1_loss(fwd(lq), gt).backward()
        opt.step()

    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    t = time.perf_counter()
    step()
    out["train_first_step_s"] = time.perf_counter() - t
    out["train_load_before"] = os.getloadavg()[0]
    wall, cpu = timed(step, args["warmup"], args["iters"])
    out["train_load_after"] = os.getloadavg()[0]
    out["train_step_median_s"] = statistics.median(wall)
    out["train_step_cpu_s"] = statistics.median(cpu)
    model.eval()
    out["infer_median_s"], out["infer_cpu_s"] = {}, {}
    for w, h in args["sizes"]:
        x = torch.rand(1, 3, h, w)

        def infer():
            with torch.inference_mode():
                fwd(x)

        wall, cpu = timed(infer, 1, args["infer_iters"])
        out["infer_median_s"][f"{w}x{h}"] = statistics.median(wall)
        out["infer_cpu_s"][f"{w}x{h}"] = statistics.median(cpu)
    out["infer_load_after"] = os.getloadavg()[0]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")


def find_torch_python(explicit: str | None) -> str | None:
    """A Python interpreter that can import torch: --torch_python, else the first that works."""
    candidates = [explicit] if explicit else [
        sys.executable, str(REPO.parent / ".torchvenv" / "bin" / "python"),
        shutil.which("python3") or ""]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import torch"], capture_output=True).returncode == 0:
            return python
    return None


def bench_torch(args, out: dict) -> None:
    if args.dtype != "float32" or args.infer_scale != args.scale:
        out["torch_note"] = (f"skipped: the PyTorch peer times float32 at --scale only "
                             f"(--dtype {args.dtype}, --infer_scale {args.infer_scale})")
        return
    python = find_torch_python(args.torch_python)
    if not TORCH_PEER.exists() or python is None:
        out["torch_note"] = (f"skipped: peer {TORCH_PEER} "
                             f"{'found' if TORCH_PEER.exists() else 'missing'}, python with "
                             f"torch {'found' if python else 'not found'} (--torch_python)")
        return
    threads = args.torch_threads or runtime.usable_cores()
    modes = ["eager", "compile"] if args.torch_compile else ["eager"]
    for mode in modes:
        payload = dict(peer=str(TORCH_PEER), variant=args.variant, scale=args.scale,
                       batch=args.batch, patch=args.patch, threads=threads,
                       compile=mode == "compile", warmup=args.warmup, iters=args.iters,
                       infer_iters=args.infer_iters, sizes=args.infer_sizes)
        proc = subprocess.run([python, "-c", _TORCH_CHILD, json.dumps(payload)],
                              capture_output=True, text=True)
        if proc.returncode:
            out[f"torch_{mode}"] = {"error": proc.stderr[-2000:]}
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["python"] = python
        out[f"torch_{mode}"] = result


def bench_onnx(args, model, params, out: dict) -> None:
    """ONNX Runtime's ms per image of the exported network: as this package runs it, the file
    as exported, and jax2onnx's graph as written, one after another."""
    if args.dtype != "float32" or args.infer_scale != args.scale:
        out["onnx_note"] = (f"skipped: the ONNX section times float32 at --scale only "
                            f"(--dtype {args.dtype}, --infer_scale {args.infer_scale})")
        return
    try:
        import onnxruntime as ort
    except ImportError:
        out["onnx_note"] = 'skipped: onnxruntime is not installed (pip install -e ".[onnx]")'
        return
    from drsan_jax import export, onnx_graph, onnx_runtime
    from drsan_jax.models import config_of
    from drsan_jax.weights.loaded import InferenceModel

    config = config_of(model)
    inference_model = InferenceModel(model=model, params=params, scale=args.scale,
                                     variant=config["variant"], step=None, config=config,
                                     path="random init")
    out["onnx_load_before"] = load()
    cpu = ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for key, rewrites in (("onnx_file", onnx_graph.REWRITES), ("onnx_plain", ())):
            paths[key] = Path(folder) / f"{key}.onnx"
            t = time.perf_counter()
            card = export.export(inference_model, "onnx", paths[key], onnx_rewrites=rewrites)
            out[f"{key}_export_s"] = time.perf_counter() - t
            out[f"{key}_rewrites"] = card["format"]["rewrites"]
        runner = onnx_runtime.OnnxUpscaler(paths["onnx_file"], providers=cpu)
        out["onnx_rewrites"] = {**out["onnx_file_rewrites"], **runner.rewrites}
        sessions = {"onnx": runner.session}
        sessions.update({key: ort.InferenceSession(str(path), providers=cpu)
                         for key, path in paths.items()})
        for key, session in sessions.items():
            # One session at a time: ONNX Runtime's threads spin a while after each run, which
            # would slow a session taking turns with another.
            out[f"{key}_median_s"], out[f"{key}_cpu_s"] = {}, {}
            for w, h in args.infer_sizes:
                feed = {"input": np.asarray(jax.random.uniform(jax.random.key(1),
                                                               (1, h, w, 3)))}
                wall, cpu_s = timed(lambda feed=feed: session.run(None, feed), 1,
                                    args.infer_iters)
                out[f"{key}_median_s"][f"{w}x{h}"] = statistics.median(wall)
                out[f"{key}_cpu_s"][f"{w}x{h}"] = statistics.median(cpu_s)
    out["onnx_load_after"] = load()
    out["onnxruntime"] = ort.__version__


def ratios(out: dict) -> dict:
    """JAX (or ONNX Runtime) time / PyTorch time, and ONNX Runtime / JAX (below 1: faster)."""
    result = {}
    for key, seconds in out.get("onnx_median_s", {}).items():
        if key in out.get("infer_median_s", {}):
            result[f"onnx_{key}_vs_jax"] = seconds / out["infer_median_s"][key]
        result[f"onnx_{key}_vs_plain"] = seconds / out["onnx_plain_median_s"][key]
        result[f"onnx_{key}_vs_file"] = seconds / out["onnx_file_median_s"][key]
    for mode in ("eager", "compile"):
        peer = out.get(f"torch_{mode}")
        if not peer or "error" in peer:
            continue
        if "train_step_median_s" in out:
            result[f"train_vs_torch_{mode}"] = (out["train_step_median_s"]
                                                / peer["train_step_median_s"])
        for key, seconds in out.get("infer_median_s", {}).items():
            result[f"infer_{key}_vs_torch_{mode}"] = seconds / peer["infer_median_s"][key]
        for key, seconds in out.get("infer_one_device_median_s", {}).items():
            result[f"infer_one_device_{key}_vs_torch_{mode}"] = (
                seconds / peer["infer_median_s"][key])
        for key, seconds in out.get("onnx_median_s", {}).items():
            result[f"onnx_{key}_vs_torch_{mode}"] = seconds / peer["infer_median_s"][key]
    return result


def table(out: dict) -> str:
    lines = [f"DRSAN-{out['variant']} x{out['scale']} on {out['device']} "
             f"({out['devices']} device(s), conv_impl={out['conv_impl']}, {out['dtype']}), "
             f"load {out['load_start']} at start"]

    def peer(mode, key, size=None):
        entry = out.get(f"torch_{mode}") or {}
        value = entry.get(key)
        if isinstance(value, dict):
            value = value.get(size)
        return f"{value:9.3f}" if isinstance(value, (int, float)) else f"{'-':>9}"

    if "train_step_median_s" in out:
        lines += [
            f"train step (batch {out['batch']}, {out['patch']}x{out['patch']}): "
            f"compile {out['train_compile_s']:.1f} s",
            f"  {'':24}{'JAX':>9}{'torch':>10}{'compile':>10}",
            f"  {'median step (s)':24}{out['train_step_median_s']:9.3f} "
            f"{peer('eager', 'train_step_median_s')} {peer('compile', 'train_step_median_s')}",
            f"  {'CPU s per step':24}{out['train_step_cpu_s']:9.3f} "
            f"{peer('eager', 'train_step_cpu_s')} {peer('compile', 'train_step_cpu_s')}",
            f"  patches/s {out['train_patches_per_s']:.1f}; {out['train_gflops']:.1f} GFLOP/s "
            f"= {100 * out['train_fraction_of_peak']:.0f}% of a measured "
            f"{out['peak_gflops']:.0f} GFLOP/s peak; load {out['train_load_before']} -> "
            f"{out['train_load_after']}",
        ]
    if "infer_median_s" in out:
        one = out["infer_one_device_median_s"]
        label = f"inference x{out['infer_scale']} (ms/image)"
        lines.append(f"  {label:24}{'JAX':>9}{'torch':>10}{'compile':>10}"
                     f"{'JAX compile (s)':>17}{'JAX one device':>16}")
        for key, seconds in out["infer_median_s"].items():
            tm = [peer(m, "infer_median_s", key) for m in ("eager", "compile")]
            tm = [f"{1000 * float(v):9.1f}" if v.strip() != "-" else v for v in tm]
            mark = " (rows split)" if out["infer_rows_split"][key] else ""
            lines.append(f"  {key:24}{1000 * seconds:9.1f} {tm[0]} {tm[1]}"
                         f"{out['infer_compile_s'][key]:17.1f}{1000 * one[key]:16.1f}{mark}")
    if "onnx_median_s" in out:
        lines.append(f"  {'ONNX Runtime (ms/image)':24}{'as run':>10}{'file':>10}"
                     f"{'as written':>11}")
        for key, seconds in out["onnx_median_s"].items():
            lines.append(f"  {key:24}{1000 * seconds:10.1f}"
                         f"{1000 * out['onnx_file_median_s'][key]:10.1f}"
                         f"{1000 * out['onnx_plain_median_s'][key]:11.1f}")
    if "eval_wall_s" in out:
        lines.append(f"eval {'+'.join(EVAL_DATASETS)} ({out['eval_images']} images, "
                     f"{out['eval_programs_compiled']} programs compiled): "
                     f"{out['eval_wall_s']:.1f} s")
    if "data_batches_per_s" in out:
        lines.append(f"data: {out['data_batches_per_s']:.1f} batches/s prefetched, "
                     f"{out['data_batch_one_thread_s'] * 1000:.1f} ms/batch on one thread; "
                     f"{out.get('data_speed_over_train_step', float('nan')):.1f}x the train "
                     f"step's consumption")
    for run in ("cold", "warm"):
        if f"startup_{run}" in out:
            r = out[f"startup_{run}"]
            lines.append(f"startup ({run} cache): import {r['import_s']:.1f} s, init "
                         f"{r['init_s']:.1f} s, first step {r['first_step_s']:.1f} s, "
                         f"process {r['process_s']:.1f} s")
    for key, value in out.get("ratios", {}).items():
        lines.append(f"  {key}: {value:.2f}")
    lines.append(f"peak RSS {out['peak_rss_mib']:.0f} MiB; load {out['load_end']} at end")
    for key in ("eval_note", "data_note", "startup_note", "torch_note", "onnx_note"):
        if key in out:
            lines.append(f"{key}: {out[key]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    # First, before anything touches a device: the CPU device count and the compilation cache.
    settings = runtime.configure(batch_size=args.batch, cpu_devices=args.cpu_devices)
    out = {
        "variant": args.variant, "scale": args.scale, "dtype": args.dtype,
        "infer_scale": args.infer_scale, "batch": args.batch, "patch": args.patch,
        "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
        "devices": jax.device_count(), "conv_impl": conv.resolve_impl(args.conv_impl),
        "runtime": settings.__dict__, "jax": jax.__version__, "load_start": load(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model_options": args.model_options,
    }

    def make_model(scale: int):
        return build_model(args.variant, scale, conv_impl=args.conv_impl,
                           dtype=getattr(jnp, args.dtype), **args.model_options)

    model = make_model(args.scale)
    params = init_params(model, jax.random.key(0))
    if "train" in args.sections:
        bench_train(args, model, params, out)
    if "infer" in args.sections:
        infer_model, infer_params = model, params
        if args.infer_scale != args.scale:
            infer_model = make_model(args.infer_scale)
            infer_params = init_params(infer_model, jax.random.key(0))
        bench_infer(args, infer_model, infer_params, out)
    if "eval" in args.sections:
        bench_eval(args, model, params, out)
    if "data" in args.sections:
        bench_data(args, out)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "startup" in args.sections:
        bench_startup(args, out)
    if "torch" in args.sections:
        bench_torch(args, out)
    if "onnx" in args.sections:
        bench_onnx(args, model, params, out)
    out["ratios"] = ratios(out)
    out["load_end"] = load()
    print(table(out), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
