"""The train step against an independent PyTorch DRSAN: same weights, same batches, same numbers.

    python benchmarks/torch_equivalence.py --torch_python /tmp/torchvenv/bin/python \
        --work_dir /work/runs/equivalence/work \
        --output /work/runs/equivalence/torch_equivalence.json

`../shared/bench/torch_drsan.py` is a PyTorch DRSAN written apart from this project, with the
same weight layout up to OIHW kernels (its depth-to-space uses TensorFlow's channel order, as
ours does). It runs in a separate Python that has torch (this project's environment has none
and needs none): a child process started with `--torch_python`, which exchanges `.npz` / `.npy`
files with this script in the work folder. The JAX side is the project's own code throughout:
`models.init_params`, `data.load_training_set` + `data.PatchSampler`, `training.create_optimizer`
from configs/default.py (Adam 0.9 / 0.999 / 1e-8 at 2e-4), `training.create_train_state` and
the jitted, data-parallel `training.train_step`, and `evaluation.evaluate`. In order:

1. forward: `init_params` (seed 0) mapped to torch's names and layouts (`to_torch`); both
   networks run the first training batch.
2. gradient: the L1 loss and every gradient on that batch (and, as a control with a gradient
   continuous in the output, MSE). The JAX gradients are the ones `train_step` itself
   computes, caught by an optimizer that stores them in its state (`recording_optimizer`)
   instead of applying them. The torch child also computes them in float64, the reference
   that says how far each float32 implementation is from the exact values, and the other JAX
   weight-gradient implementation (`conv_impl`) gives the spread between two JAX programs.
3. training: `--steps` Adam steps from the same start on the same batches (made once by the
   project's sampler from the real training data and read by both sides), every step's loss
   recorded; the parameters are compared after step 1, `--adam_check_steps` and the last.
4. evaluation: Set5 PSNR / SSIM of both final networks under the project's protocol. The
   torch-trained weights are mapped back and scored by the same `evaluation.evaluate`, so one
   evaluation code scores both.
5. noise references (`--references`): what two JAX runs differ by when only the float32
   summation order changes ("rounding": the XLA weight gradient instead of the im2col one,
   same batches) or when only the data order changes ("data_order": sampler seed + 1). The
   JAX-torch differences are read against these.

Differences are reported per parameter array and summarised by module and kind: the largest
absolute difference, relative to the array's largest value (its scale) and, after Adam steps,
relative to how far the parameters moved from the start. Why they are not zero: XLA and PyTorch
sum in different orders (conv reductions over ~10^5 terms, the all-reduce of two devices'
gradients), so float32 results differ by a few units of 1e-7 relative per operation, more where
sums cancel; Adam divides by sqrt(v) + eps, so an element whose gradient is tiny against its
rounding error can take a different step (up to the learning rate, 2e-4, in either direction),
and those differences then feed every later step.

With `--work_dir` the exchanged files stay and the run is resumable: a finished phase is not
redone, and a training run restarts from its last checkpoint (every `--checkpoint_every`
steps; resuming reproduces the uninterrupted run). Without it a temporary folder is used and
removed. The JSON report (`--output`) holds every number printed, every per-step loss and the
machine's state. The test suite checks the weight mapping
(tests/benchmarks/test_torch_equivalence.py) and that the script starts
(tests/benchmarks/test_scripts_smoke.py); the comparison itself needs torch and is recorded in
benchmarks/README.md, not asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

# Importing JAX and drsan_jax starts no backend: `runtime.configure()` in `main` still sets the
# CPU device count first.
from drsan_jax import data, evaluation, runtime, training
from drsan_jax.models import build_model_from_config, conv, init_params, param_shapes
from drsan_jax.training import parallel

REPO = Path(__file__).resolve().parents[1]
TORCH_PEER = REPO.parent / "shared" / "bench" / "torch_drsan.py"
DEFAULT_TRAIN_DATA = ",".join(str(REPO.parent / "shared" / "data" / "train" / name)
                              for name in ("T91", "BSD200"))
DEFAULT_VAL_DATA = str(REPO.parent / "shared" / "data" / "benchmark")
REFERENCES = ("rounding", "data_order")

# --- This project's parameter names <-> torch_drsan.DRSAN's --------------------------------

_DRM = {"conv_in": "drm_conv1", "prelu": "drm_act", "conv_out": "drm_conv2"}
_BLOCK = {"prelu1": "act1", "conv1": "conv1", "prelu2": "act2", "conv2": "conv2"}
_TOP = {"head": "head", "body_tail": "body_tail", "output": "tail"}
_LEAF = {"kernel": "weight", "bias": "bias", "alpha": "weight"}


def torch_name(path: str) -> str:
    """The name in torch_drsan.DRSAN's state dict of this project's parameter `path`.

    E.g. "DRAG_1/block_3/conv2/kernel" -> "groups.1.blocks.2.conv2.weight",
    "DRAG_0/DRM/prelu/alpha" -> "groups.0.drm_act.weight", "upsampler/conv_1/bias" ->
    "up.1.bias", "output/kernel" -> "tail.weight".
    """
    *modules, leaf = path.split("/")
    try:
        suffix = _LEAF[leaf]
        top = modules[0]
        if top.startswith("DRAG_"):
            group, inner = int(top[len("DRAG_"):]), modules[1]
            if inner == "DRM":
                module = _DRM[modules[2]]
            elif inner.startswith("block_"):
                module = f"blocks.{int(inner[len('block_'):]) - 1}.{_BLOCK[modules[2]]}"
            elif inner == "fusion":
                module = "fuse"
            else:
                raise KeyError(inner)
            return f"groups.{group}.{module}.{suffix}"
        if top == "upsampler":
            return f"up.{int(modules[1][len('conv_'):])}.{suffix}"
        return f"{_TOP[top]}.{suffix}"
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"{path!r} is no DRSAN parameter torch_drsan.py has") from None


def to_torch(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat DRSAN parameters ("a/b/kernel" -> HWIO) as torch_drsan's state dict (OIHW)."""
    out = {}
    for path, value in flat.items():
        value = np.asarray(value)
        out[torch_name(path)] = (np.ascontiguousarray(value.transpose(3, 2, 0, 1))
                                 if value.ndim == 4 else value)
    return out


def from_torch(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
               ) -> dict[str, np.ndarray]:
    """torch_drsan's state dict as flat DRSAN parameters of the given shapes (path -> shape).

    Raises:
      ValueError: a parameter is missing, left over or of the wrong shape.
    """
    names = {path: torch_name(path) for path in shapes}
    missing = sorted(set(names.values()) - set(state))
    extra = sorted(set(state) - set(names.values()))
    if missing or extra:
        raise ValueError(f"torch state dict does not fit the model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    out = {}
    for path, shape in shapes.items():
        value = np.asarray(state[names[path]])
        if value.ndim == 4:
            value = np.ascontiguousarray(value.transpose(2, 3, 1, 0))
        if value.shape != tuple(shape):
            raise ValueError(f"{names[path]} has shape {value.shape}; {path} needs {shape}")
        out[path] = value
    return out


# --- The PyTorch side: a child process in the torch venv -----------------------------------

_TORCH_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import torch
    import torch.nn.functional as F
    args = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(args["peer"]))
    import torch_drsan
    torch.set_num_threads(args["threads"])
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "numpy": np.__version__}

    def load_model(path):
        model = torch_drsan.build(args["variant"], args["scale"])
        with np.load(path) as f:
            state = {k: torch.from_numpy(f[k].copy()) for k in f.files}
        model.load_state_dict(state, strict=True)
        return model

    def nchw(x):  # (B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1], as train_step does
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous() \\
            .float() / 255.0

    def numpy_state(model):
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def save(path, arrays):
        tmp = path + ".tmp.npz"
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)

    lq = np.load(args["lq"], mmap_mode="r")
    gt = np.load(args["gt"], mmap_mode="r")
    job = args["job"]
    if job == "check":
        # The forward pass and the L1 and MSE gradients on batch 0, in float32 and, as the
        # reference both float32 implementations are measured against, in float64.
        arrays = {}
        for precision, dtype in (("32", torch.float32), ("64", torch.float64)):
            model = load_model(args["weights"]).to(dtype)
            x, y = nchw(lq[0]).to(dtype), nchw(gt[0]).to(dtype)
            with torch.no_grad():
                arrays[f"sr{precision}"] = model(x).permute(0, 2, 3, 1).numpy().copy()
            for name, loss_fn in (("l1", F.l1_loss), ("mse", F.mse_loss)):
                model.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                arrays[f"loss{precision}_{name}"] = np.float64(loss.item())
                arrays.update({f"grad{precision}_{name}/{k}": p.grad.numpy().copy()
                               for k, p in model.named_parameters()})
        save(args["out"], arrays)
    elif job == "train":
        model = load_model(args["weights"])
        opt = torch.optim.Adam(model.parameters(), lr=args["lr"], betas=(args["b1"], args["b2"]),
                               eps=args["eps"])
        start, losses, snaps = 0, [], {}
        if os.path.exists(args["checkpoint"]):
            ckpt = torch.load(args["checkpoint"], weights_only=False)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            start, losses, snaps = ckpt["step"], ckpt["losses"], ckpt["snaps"]
            print(f"torch: resuming at step {start}", file=sys.stderr, flush=True)
        meta["load_start"] = os.getloadavg()[0]
        t0, timed = time.perf_counter(), 0
        for step in range(start, args["steps"]):
            x, y = nchw(lq[step]), nchw(gt[step])
            opt.zero_grad(set_to_none=True)
            loss = F.l1_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            timed += 1
            done = step + 1
            if done in args["snap_at"]:
                snaps[done] = numpy_state(model)
            if done % args["log_every"] == 0:
                window = losses[-args["log_every"]:]
                print(f"torch step {done}/{args['steps']}: loss {np.mean(window):.5f} "
                      f"({(time.perf_counter() - t0) / timed:.2f} s/step, load "
                      f"{os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            if done % args["checkpoint_every"] == 0 and done < args["steps"]:
                tmp = args["checkpoint"] + ".tmp"
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done,
                            "losses": losses, "snaps": snaps}, tmp)
                os.replace(tmp, args["checkpoint"])
        meta["s_per_step"] = (time.perf_counter() - t0) / max(timed, 1)
        meta["steps_timed"] = timed
        meta["load_end"] = os.getloadavg()[0]
        arrays = {"losses": np.asarray(losses, np.float64)}
        for at, state in snaps.items():
            arrays.update({f"step{at}/{k}": v for k, v in state.items()})
        save(args["out"], arrays)
        if os.path.exists(args["checkpoint"]):
            os.remove(args["checkpoint"])
    else:
        raise SystemExit(f"unknown job {job!r}")
""")


def run_torch(args, job: str, out: Path, **extra) -> dict[str, np.ndarray]:
    """Runs one torch job (unless `out` already exists) and returns its arrays."""
    if not out.exists():
        payload = dict(peer=str(TORCH_PEER), variant=args.variant, scale=args.scale,
                       threads=args.torch_threads, job=job, out=str(out), **extra)
        proc = subprocess.run([args.torch_python, "-c", _TORCH_CHILD, json.dumps(payload)])
        if proc.returncode:
            raise RuntimeError(f"the torch child ({job}) failed with status {proc.returncode}")
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


# --- Comparisons -----------------------------------------------------------------------------

def module_group(path: str) -> str:
    """The top-level module of a parameter: head, DRAG_<k>, body_tail, upsampler, output."""
    return path.split("/", 1)[0]


def kind_group(path: str) -> str:
    """What a parameter is: DRM (any of it), conv kernel, conv bias or PReLU slope."""
    if "/DRM/" in path:
        return "DRM"
    return {"kernel": "kernels", "bias": "biases", "alpha": "PReLU slopes"}[path.rsplit("/", 1)[1]]


def compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
            start: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per-array and grouped differences of `ours` from `theirs` (the reference scale).

    Per array: max_abs = max |ours - theirs|; rel_scale = max_abs / max |theirs|; rel_l2 =
    ||ours - theirs|| / ||theirs||; with `start`, rel_moved = max_abs / max |theirs - start|
    (the difference against how far the parameters moved). Groups take the maximum of each
    over their arrays; "overall" over all arrays, and "global_rel_scale" is the largest
    difference of all against the largest value of all.
    """
    arrays = {}
    for path in sorted(theirs):
        a, b = np.asarray(ours[path], np.float64), np.asarray(theirs[path], np.float64)
        diff = np.abs(a - b)
        row = {"max_abs": float(diff.max()), "scale": float(np.abs(b).max()),
               "rel_l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))}
        row["rel_scale"] = row["max_abs"] / max(row["scale"], 1e-30)
        if start is not None:
            row["moved"] = float(np.abs(b - start[path]).max())
            row["rel_moved"] = row["max_abs"] / max(row["moved"], 1e-30)
        arrays[path] = row

    def summarise(grouping: Callable[[str], str]) -> dict[str, dict[str, float]]:
        groups: dict[str, dict[str, float]] = {}
        for path, row in arrays.items():
            g = groups.setdefault(grouping(path), {})
            for key, value in row.items():
                g[key] = max(g.get(key, 0.0), value)
        return groups

    overall = summarise(lambda _: "overall")["overall"]
    worst = sorted(arrays, key=lambda p: arrays[p]["rel_scale"], reverse=True)[:5]
    return {
        "overall": overall,
        "global_rel_scale": overall["max_abs"] / max(row["scale"] for row in arrays.values()),
        "by_module": summarise(module_group),
        "by_kind": summarise(kind_group),
        "worst_arrays": {p: arrays[p] for p in worst},
        "arrays": arrays,
    }


def print_comparison(title: str, result: dict[str, Any]) -> None:
    moved = "rel_moved" in result["overall"]
    header = f"  {'group':14}{'max abs':>11}{'rel scale':>11}{'rel L2':>11}"
    header += f"{'rel moved':>11}" if moved else ""
    print(f"{title}\n{header}")

    def line(name, row):
        text = f"  {name:14}{row['max_abs']:11.2e}{row['rel_scale']:11.2e}{row['rel_l2']:11.2e}"
        return text + (f"{row['rel_moved']:11.2e}" if moved else "")

    for name, row in {**result["by_module"], **result["by_kind"]}.items():
        print(line(name, row))
    print(line("overall", result["overall"]))
    print(f"  global: max abs diff / max abs value over all arrays = "
          f"{result['global_rel_scale']:.2e}; worst arrays (rel scale): "
          + ", ".join(f"{p} {r['rel_scale']:.1e}" for p, r in result["worst_arrays"].items()))
    sys.stdout.flush()


def print_side_by_side(title: str, results: dict[str, dict[str, Any]]) -> None:
    """The rel scale of several comparisons, one column each, by module, kind and overall."""
    labels = list(results)
    print(f"{title}\n  {'group':14}" + "".join(f"{label:>20}" for label in labels))
    first = results[labels[0]]
    for group in [*first["by_module"], *first["by_kind"], "overall"]:
        cells = []
        for label in labels:
            r = results[label]
            row = r["overall"] if group == "overall" else {**r["by_module"], **r["by_kind"]}[group]
            cells.append(f"{row['rel_scale']:20.2e}")
        print(f"  {group:14}" + "".join(cells))
    sys.stdout.flush()


def window_means(losses: np.ndarray, window: int) -> np.ndarray:
    """Mean loss of steps 1..w, w+1..2w, ...: the logged loss curve."""
    n = len(losses) // window * window
    return np.asarray(losses[:n]).reshape(-1, window).mean(axis=1)


def curve_difference(a: np.ndarray, b: np.ndarray, window: int) -> dict[str, float]:
    """How far the per-step loss curve `a` is from the reference `b`, step by step and as logged."""
    a, b = np.asarray(a), np.asarray(b)
    wa, wb = window_means(a, window), window_means(b, window)
    rel = np.abs(a - b) / np.abs(b)
    out = {
        "max_abs_per_step": float(np.abs(a - b).max()),
        "mean_abs_per_step": float(np.abs(a - b).mean()),
        "max_rel_per_step": float(rel.max()),
        "max_abs_window": float(np.abs(wa - wb).max()),
        "mean_abs_window": float(np.abs(wa - wb).mean()),
        "max_rel_window": float((np.abs(wa - wb) / np.abs(wb)).max()),
        "mean_last_100": float(a[-100:].mean()),
        "mean_last_100_reference": float(b[-100:].mean()),
    }
    for step in (1, 10, 50, 100, 200, 500):
        if step <= len(a):
            out[f"rel_step_{step}"] = float(rel[step - 1])
    return out


def l1_sign_flips(sr_jax: np.ndarray, sr_torch: np.ndarray, sr64: np.ndarray, gt: np.ndarray
                  ) -> dict[str, int]:
    """How many outputs take another L1 gradient sign(sr - gt) than in the other computation.

    L1's gradient is discontinuous where an output equals its 8-bit target; an output within
    the forward difference (~1e-7) of its target could fall on opposite sides of it in two
    implementations and flip its gradient by 2 / N.
    """
    target = gt.astype(np.float32) / np.float32(255.0)
    s_jax = np.sign(sr_jax.astype(np.float32) - target)
    s_torch = np.sign(sr_torch.astype(np.float32) - target)
    s64 = np.sign(sr64 - gt.astype(np.float64) / 255.0)
    result = {"outputs": int(s_jax.size), "jax_vs_torch": int((s_jax != s_torch).sum()),
              "jax_vs_float64": int((s_jax != s64).sum()),
              "torch_vs_float64": int((s_torch != s64).sum())}
    print(f"L1 gradient signs differing, of {result['outputs']} outputs: JAX-torch "
          f"{result['jax_vs_torch']}, JAX-float64 {result['jax_vs_float64']}, torch-float64 "
          f"{result['torch_vs_float64']}", flush=True)
    return result


def explain_first_step(params0, jax_grads, torch_grads, jax_params, torch_params, lr: float,
                       eps: float) -> dict[str, Any]:
    """Whether the step-1 parameter differences are Adam's reading of the gradient differences.

    Adam's first step is -lr * g / (|g| + eps) (m_hat = g, v_hat = g^2), about -lr * sign(g):
    an element whose gradient is near 0, or within its rounding error of 0, can step by a
    different amount or the other way. The step each side's gradient calls for is computed here
    in float64; what is left of the actual difference after that is float32 rounding of p + step.
    """

    def first_step(g):
        g = np.asarray(g, np.float64)
        return -lr * g / (np.abs(g) + eps)

    worst_path, worst_index, worst, unexplained = None, None, -1.0, 0.0
    for path in params0:
        actual = (np.asarray(jax_params[path], np.float64) - torch_params[path])
        predicted = first_step(jax_grads[path]) - first_step(torch_grads[path])
        unexplained = max(unexplained, float(np.abs(actual - predicted).max()))
        index = np.unravel_index(np.argmax(np.abs(actual)), actual.shape)
        if abs(actual[index]) > worst:
            worst_path, worst_index, worst = path, index, float(abs(actual[index]))
    g_max = float(np.abs(torch_grads[worst_path]).max())
    result = {
        "max_abs_difference": worst,
        "max_abs_unexplained": unexplained,
        "worst": {"path": worst_path, "index": [int(i) for i in worst_index],
                  "grad_jax": float(jax_grads[worst_path][worst_index]),
                  "grad_torch": float(torch_grads[worst_path][worst_index]),
                  "array_max_abs_grad": g_max},
    }
    w = result["worst"]
    print(f"step 1 explained: predicted from each side's gradient by Adam's first step "
          f"-lr*g/(|g|+eps), the parameter differences are left with max |actual - predicted| = "
          f"{unexplained:.1e} (float32 rounding of p + step), of a largest difference "
          f"{worst:.1e} at {worst_path}{list(w['index'])}, whose gradient is {w['grad_jax']:.2e} "
          f"(JAX) / {w['grad_torch']:.2e} (torch) against the array's largest {g_max:.2e}",
          flush=True)
    return result


# --- The JAX side ----------------------------------------------------------------------------

def recording_optimizer():
    """An optax transformation that applies nothing and keeps the last gradient as its state.

    With it, `training.train_step` leaves the parameters as they are and hands back, in
    `state.opt_state`, exactly the gradient it computed.
    """
    def init(params):
        return jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params=None):
        del state, params
        return jax.tree.map(jnp.zeros_like, grads), grads

    return optax.GradientTransformation(init, update)


def flat(tree) -> dict[str, np.ndarray]:
    """A parameter tree, fetched to the host, as {"a/b/kernel": NumPy array}."""
    return {k: np.asarray(v) for k, v in
            traverse_util.flatten_dict(jax.device_get(tree), sep="/").items()}


def flat_shapes(tree) -> dict[str, Any]:
    """A parameter tree (of arrays or shapes) as {"a/b/kernel": leaf}."""
    return traverse_util.flatten_dict(tree, sep="/")


def unflat(flat_params: dict[str, np.ndarray]):
    return traverse_util.unflatten_dict(flat_params, sep="/")


def run_jax(name: str, model, params0, tx, batch_of: Callable[[int], dict], mesh, args,
            work: Path) -> dict[str, Any]:
    """`args.steps` project train steps, resumable; per-step losses and parameter snapshots."""
    final = work / f"{name}.npz"
    if final.exists():
        with np.load(final) as f:
            return _read_run(f)
    checkpoint = work / f"{name}_ckpt.npz"
    state = training.create_train_state(model, tx, params0, mesh)
    p_leaves, p_def = jax.tree.flatten(state.params)
    o_leaves, o_def = jax.tree.flatten(state.opt_state)
    start, losses, snaps = 0, [], {}
    if checkpoint.exists():
        with np.load(checkpoint) as f:
            start, losses = int(f["step"]), list(f["losses"])
            params = jax.tree.unflatten(p_def, [f[f"p/{i}"] for i in range(len(p_leaves))])
            opt = jax.tree.unflatten(o_def, [f[f"o/{i}"] for i in range(len(o_leaves))])
            snaps = _snapshots(f)
        state = state.replace(step=parallel.replicate(np.asarray(start, np.int32), mesh),
                              params=parallel.replicate(params, mesh),
                              opt_state=parallel.replicate(opt, mesh))
        log(f"{name}: resuming at step {start}")
    load_start, t0, timed = os.getloadavg()[0], time.perf_counter(), 0
    for step in range(start, args.steps):
        state, metrics = training.train_step(state, parallel.shard_batch(batch_of(step), mesh))
        losses.append(float(metrics["loss"]))
        timed += 1
        done = step + 1
        if done in args.snap_at:
            snaps[done] = flat(state.params)
        if done % args.log_every == 0:
            log(f"{name} step {done}/{args.steps}: loss {np.mean(losses[-args.log_every:]):.5f} "
                f"({(time.perf_counter() - t0) / timed:.2f} s/step, load "
                f"{os.getloadavg()[0]:.2f})")
        if done % args.checkpoint_every == 0 and done < args.steps:
            arrays = {"step": np.asarray(done), "losses": np.asarray(losses)}
            arrays.update({f"p/{i}": np.asarray(v) for i, v in
                           enumerate(jax.tree.leaves(jax.device_get(state.params)))})
            arrays.update({f"o/{i}": np.asarray(v) for i, v in
                           enumerate(jax.tree.leaves(jax.device_get(state.opt_state)))})
            arrays.update(_snapshot_arrays(snaps))
            _savez(checkpoint, arrays)
    meta = {"s_per_step": (time.perf_counter() - t0) / max(timed, 1), "steps_timed": timed,
            "load_start": load_start, "load_end": os.getloadavg()[0]}
    _savez(final, {"losses": np.asarray(losses, np.float64), "meta": np.array(json.dumps(meta)),
                   **_snapshot_arrays(snaps)})
    checkpoint.unlink(missing_ok=True)
    with np.load(final) as f:
        return _read_run(f)


def _snapshot_arrays(snaps: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"step{at}/{k}": v for at, params in snaps.items() for k, v in params.items()}


def _snapshots(arrays) -> dict[int, dict[str, np.ndarray]]:
    """{step: {name: array}} from the "step<n>/<name>" entries of an .npz file or a dict."""
    snaps: dict[int, dict[str, np.ndarray]] = {}
    for key in list(arrays.keys()):
        if key.startswith("step") and "/" in key:
            at, name = key.split("/", 1)
            snaps.setdefault(int(at[len("step"):]), {})[name] = arrays[key]
    return snaps


def _read_run(f) -> dict[str, Any]:
    return {"losses": np.asarray(f["losses"]), "snaps": _snapshots(f),
            "meta": json.loads(str(f["meta"]))}


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_state() -> dict[str, Any]:
    """What the numbers were measured on, for the report."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load": list(os.getloadavg()),
            "platform": platform.platform(), "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# --- Main ------------------------------------------------------------------------------------

def _bench_script():
    """benchmarks/bench.py (a script beside this one, not a package module), for its torch
    finder and configs/default.py."""
    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="32s")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampler seed")
    p.add_argument("--steps", type=int, default=500, help="training steps on both sides")
    p.add_argument("--adam_check_steps", type=int, default=50,
                   help="the step after which parameters are compared closely")
    p.add_argument("--log_every", type=int, default=10, help="loss curve window (steps)")
    p.add_argument("--checkpoint_every", type=int, default=50)
    p.add_argument("--references", default=",".join(REFERENCES),
                   help=f"noise reference JAX runs, a subset of {','.join(REFERENCES)} or ''")
    p.add_argument("--train_data", default=DEFAULT_TRAIN_DATA)
    p.add_argument("--val_data", default=DEFAULT_VAL_DATA)
    p.add_argument("--val_dataset", default="Set5")
    p.add_argument("--cache_dir", default=None, help="training-set cache (default: config's)")
    p.add_argument("--torch_python", default=None,
                   help="a Python that can import torch (default: searched as bench.py does)")
    p.add_argument("--torch_threads", type=int, default=None,
                   help="torch.set_num_threads (default: usable cores)")
    p.add_argument("--work_dir", default=None,
                   help="exchange folder, kept and resumable (default: a temporary one)")
    p.add_argument("--output", default=None, help="write the JSON report here")
    args = p.parse_args(argv)
    args.references = [r.strip() for r in args.references.split(",") if r.strip()]
    unknown = sorted(set(args.references) - set(REFERENCES))
    if unknown:
        p.error(f"--references: unknown {unknown}; expected some of {list(REFERENCES)}")
    if not 1 <= args.adam_check_steps <= args.steps:
        p.error("--adam_check_steps must be between 1 and --steps")
    args.snap_at = sorted({1, args.adam_check_steps, args.steps})
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    bench = _bench_script()
    args.torch_python = bench.find_torch_python(args.torch_python)
    if args.torch_python is None or not TORCH_PEER.exists():
        raise SystemExit(f"needs {TORCH_PEER} and a Python with torch (--torch_python)")
    config = bench.default_config()
    config.model.variant = args.variant
    config.scale = args.scale
    config.seed = args.seed

    # Before anything touches a device: the CPU device count for the train batch.
    settings = runtime.configure(batch_size=config.batch_size)
    args.torch_threads = args.torch_threads or runtime.usable_cores()

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="drsan_eq_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine_start": machine_state(), "runtime": settings.__dict__,
        "versions": {"jax": jax.__version__, "flax": flax.__version__,
                     "optax": optax.__version__, "numpy": np.__version__},
        "devices": jax.device_count(), "torch_threads": args.torch_threads,
        "variant": args.variant, "scale": args.scale, "seed": args.seed, "steps": args.steps,
        "batch_size": config.batch_size, "patch_size": config.patch_size,
        "adam": {"learning_rate": config.learning_rate, "b1": config.adam_b1,
                 "b2": config.adam_b2, "eps": config.adam_eps},
        "train_data": args.train_data, "work_dir": str(work),
    }

    def write_report():
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(args.output + ".tmp")
            tmp.write_text(json.dumps(report, indent=1))
            os.replace(tmp, args.output)

    model = build_model_from_config(training.model_config(config))
    shapes = {k: tuple(v.shape) for k, v in flat_shapes(param_shapes(model)).items()}
    params0 = flat(init_params(model, jax.random.key(args.seed)))
    weights = work / "init_torch.npz"
    if not weights.exists():
        _savez(weights, to_torch(params0))

    # The batches, made once by the project's sampler and read by both sides.
    dataset = data.load_training_set(args.train_data, args.scale, config.patch_size,
                                     args.cache_dir or config.cache_dir)
    sampler = data.PatchSampler(dataset, config.batch_size, config.patch_size, args.seed)
    lq_path, gt_path, about = work / "lq.npy", work / "gt.npy", work / "batches.json"
    describe = {"steps": args.steps, **sampler.state(0)}
    if not (about.exists() and json.loads(about.read_text()) == describe):
        log(f"writing {args.steps} batches from {len(dataset.pairs)} training images")
        batches = [sampler.batch(step) for step in range(args.steps)]
        np.save(lq_path, np.stack([b["lq"] for b in batches]))
        np.save(gt_path, np.stack([b["gt"] for b in batches]))
        about.write_text(json.dumps(describe))
    lq_all, gt_all = np.load(lq_path, mmap_mode="r"), np.load(gt_path, mmap_mode="r")
    report["batches"] = {"images": len(dataset.pairs), "fingerprint": dataset.fingerprint,
                         "lq_shape": list(lq_all.shape), "gt_shape": list(gt_all.shape)}

    def stored_batch(step):
        return {"lq": np.asarray(lq_all[step]), "gt": np.asarray(gt_all[step])}

    exchange = dict(lq=str(lq_path), gt=str(gt_path), weights=str(weights))
    mesh = parallel.make_mesh()

    # 1 + 2: the forward pass and the gradients on batch 0.
    log("torch: forward and gradients on batch 0 (float32 and float64)")
    peer = run_torch(args, "check", work / "torch_check.npz", **exchange)
    report["torch_versions"] = json.loads(str(peer["meta"]))
    batch0 = stored_batch(0)
    sr = np.asarray(jax.jit(model.apply)({"params": unflat(params0)},
                                         batch0["lq"].astype(np.float32) / 255.0))
    report["forward"] = {
        "output_max_abs": float(np.abs(peer["sr64"]).max()),
        "jax_vs_torch": float(np.abs(sr.astype(np.float64) - peer["sr32"]).max()),
        "jax_vs_float64": float(np.abs(sr - peer["sr64"]).max()),
        "torch_vs_float64": float(np.abs(peer["sr32"] - peer["sr64"]).max()),
    }
    f = report["forward"]
    print(f"forward, batch 0 ({batch0['lq'].shape[0]} patches, outputs up to "
          f"{f['output_max_abs']:.2f}): max |JAX - torch| = {f['jax_vs_torch']:.2e}; against "
          f"torch in float64: JAX {f['jax_vs_float64']:.2e}, torch {f['torch_vs_float64']:.2e}",
          flush=True)

    # The gradients `train_step` computes, for the training loss (L1) and, as a control whose
    # gradient is continuous in the output, MSE; each against torch in float32 and float64.
    def peer_grads(prefix):
        return from_torch({k.split("/", 1)[1]: v for k, v in peer.items()
                           if k.startswith(prefix + "/")}, shapes)

    def train_step_gradient(network, loss):
        state = training.create_train_state(network, recording_optimizer(), unflat(params0),
                                            mesh)
        state, metrics = training.train_step(state, parallel.shard_batch(batch0, mesh), loss=loss)
        return float(metrics["loss"]), flat(state.opt_state)

    # The same network with the other weight-gradient implementation: the same math, summed in
    # another order (the "rounding" reference).
    ours = conv.resolve_impl(model.conv_impl)
    other_impl = "xla" if ours != "xla" else "im2col"
    rounding_model = model.clone(conv_impl=other_impl)
    for loss in ("l1", "mse"):
        jax_loss, grads = train_step_gradient(model, loss)
        torch_loss, exact = float(peer[f"loss32_{loss}"]), float(peer[f"loss64_{loss}"])
        grads32, grads64 = peer_grads(f"grad32_{loss}"), peer_grads(f"grad64_{loss}")
        report[f"loss_step0_{loss}"] = {
            "jax": jax_loss, "torch": torch_loss, "float64": exact,
            "rel_jax_vs_torch": abs(jax_loss - torch_loss) / abs(torch_loss),
            "rel_jax_vs_float64": abs(jax_loss - exact) / abs(exact),
            "rel_torch_vs_float64": abs(torch_loss - exact) / abs(exact)}
        r = report[f"loss_step0_{loss}"]
        print(f"{loss.upper()} loss, batch 0: JAX {jax_loss:.9f}, torch {torch_loss:.9f}, float64 "
              f"{exact:.9f}; relative differences JAX-torch {r['rel_jax_vs_torch']:.1e}, "
              f"JAX-float64 {r['rel_jax_vs_float64']:.1e}, torch-float64 "
              f"{r['rel_torch_vs_float64']:.1e}")
        report[f"gradients_{loss}"] = {"jax_vs_torch": compare(grads, grads32),
                                       "jax_vs_float64": compare(grads, grads64),
                                       "torch_vs_float64": compare(grads32, grads64)}
        if "rounding" in args.references:
            _, grads_other = train_step_gradient(rounding_model, loss)
            report[f"gradients_{loss}"][f"jax_{other_impl}_vs_float64"] = compare(grads_other,
                                                                                grads64)
            report[f"gradients_{loss}"][f"jax_vs_jax_{other_impl}"] = compare(grads, grads_other)
        print_comparison(f"{loss.upper()} gradients on batch 0, JAX against torch (rel scale = "
                         f"max abs diff / max |grad| of the array)",
                         report[f"gradients_{loss}"]["jax_vs_torch"])
        print_side_by_side(f"{loss.upper()} gradients on batch 0, rel scale against torch in "
                           f"float64, and between the two JAX weight gradients ({ours}, "
                           f"{other_impl})",
                           {k: v for k, v in report[f"gradients_{loss}"].items()
                            if k != "jax_vs_torch"})
        if loss == "l1":
            jax_grads, torch_grads = grads, grads32
    report["l1_sign_flips"] = l1_sign_flips(sr, peer["sr32"], peer["sr64"], batch0["gt"])
    write_report()

    # 3: training, both sides, the same batches.
    tx = training.create_optimizer(config)
    runs = {"jax": run_jax("jax", model, unflat(params0), tx, stored_batch, mesh, args, work)}
    log("torch: training")
    peer = run_torch(args, "train", work / "torch_train.npz", **exchange, steps=args.steps,
                     snap_at=args.snap_at, log_every=args.log_every,
                     checkpoint_every=args.checkpoint_every,
                     checkpoint=str(work / "torch_ckpt.pt"), lr=config.learning_rate,
                     b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
    runs["torch"] = {"losses": peer["losses"], "meta": json.loads(str(peer["meta"])),
                     "snaps": {at: from_torch(state_at, shapes)
                               for at, state_at in _snapshots(peer).items()}}
    report["params"] = {}
    for at in args.snap_at:
        result = compare(runs["jax"]["snaps"][at], runs["torch"]["snaps"][at], start=params0)
        report["params"][f"step_{at}"] = result
        print_comparison(f"parameters after {at} Adam step(s) (rel moved = max abs diff / max "
                         f"|p_t - p_0| of the array)", result)
    report["step_1_explained"] = explain_first_step(
        params0, jax_grads, torch_grads, runs["jax"]["snaps"][1], runs["torch"]["snaps"][1],
        config.learning_rate, config.adam_eps)
    write_report()

    # 5: the noise references, JAX against JAX.
    if "rounding" in args.references:
        runs["jax_rounding"] = run_jax("jax_rounding", rounding_model, unflat(params0), tx,
                                       stored_batch, mesh, args, work)
        report["params_rounding"] = {
            f"step_{at}": compare(runs["jax_rounding"]["snaps"][at], runs["jax"]["snaps"][at],
                                  start=params0)
            for at in args.snap_at}
        for at in args.snap_at:
            print_comparison(f"JAX (conv_impl={rounding_model.conv_impl}) against JAX "
                             f"({ours}), parameters after {at} step(s)",
                             report["params_rounding"][f"step_{at}"])
    if "data_order" in args.references:
        other = data.PatchSampler(dataset, config.batch_size, config.patch_size, args.seed + 1)
        runs["jax_data_order"] = run_jax("jax_data_order", model, unflat(params0), tx,
                                         other.batch, mesh, args, work)
    write_report()

    # The loss curves.
    report["train_meta"] = {name: run["meta"] for name, run in runs.items()}
    report["losses"] = {name: run["losses"].tolist() for name, run in runs.items()}
    report["loss_curves"] = {name: window_means(run["losses"], args.log_every).tolist()
                             for name, run in runs.items()}
    report["curve_differences"] = {
        f"{name}_vs_jax": curve_difference(runs[name]["losses"], runs["jax"]["losses"],
                                           args.log_every)
        for name in runs if name != "jax"}
    names = list(runs)
    print(f"loss curves, mean of each {args.log_every} steps:")
    print(f"  {'steps':>9}" + "".join(f"{n:>16}" for n in names) + f"{'torch - jax':>14}")
    curves = report["loss_curves"]
    for i in range(len(curves["jax"])):
        lo, hi = i * args.log_every + 1, (i + 1) * args.log_every
        print(f"  {f'{lo}-{hi}':>9}" + "".join(f"{curves[n][i]:16.6f}" for n in names)
              + f"{curves['torch'][i] - curves['jax'][i]:14.2e}")
    for name, diff in report["curve_differences"].items():
        print(f"  {name}: per step max |dL| {diff['max_abs_per_step']:.2e} (max rel "
              f"{diff['max_rel_per_step']:.2e}), {args.log_every}-step means max |dL| "
              f"{diff['max_abs_window']:.2e} (max rel {diff['max_rel_window']:.2e}); relative "
              f"per-step difference at steps 1/10/50/100/200/500: "
              + "/".join(f"{diff.get(f'rel_step_{s}', float('nan')):.1e}"
                         for s in (1, 10, 50, 100, 200, 500)))
    sys.stdout.flush()

    # 4: Set5 under the project's protocol, every final network scored by the same code.
    report["evaluation"] = {}
    for name, run in runs.items():
        scores = evaluation.evaluate(model, unflat(run["snaps"][args.steps]), args.val_data,
                                     [args.val_dataset], args.scale, progress=False)
        score = scores["datasets"][args.val_dataset]
        report["evaluation"][name] = {"psnr": score["psnr"], "ssim": score["ssim"]}
        print(f"{args.val_dataset} x{args.scale} after {args.steps} steps, {name}: PSNR "
              f"{score['psnr']:.4f} dB, SSIM {score['ssim']:.5f}", flush=True)
    ev = report["evaluation"]
    ev["psnr_minus_jax"] = {name: ev[name]["psnr"] - ev["jax"]["psnr"] for name in runs
                            if name != "jax"}
    report["machine_end"] = machine_state()
    write_report()
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
