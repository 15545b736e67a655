"""Where the DRSAN train step's time goes, by kind of work, in JAX and in the PyTorch peer.

    python benchmarks/train_profile.py --variant 32s --scale 2 --torch_python PATH

Compiles `training.train_step` as `bench.py` does (Adam, L1, batch 16 of 48x48 LR patches split
over every device), traces a few steps with `jax.profiler` and adds up the time of every HLO
instruction of the optimised program, sorted into kinds read off that program:

- `ynn_convolutions`: YNNPACK fusions holding a convolution (forward and input gradients, and
  the weight gradients when `conv_impl` is "xla");
- `xla_convolutions`: convolutions left to XLA's own emitter (none by default on a CPU);
- `matmuls`: XLA dots (with the default "im2col" they are the 3x3 weight gradients);
- `loop_fusions`: XLA's own elementwise fusions: activations, the RSA gating, the DRA sums, and
  the pads and slices that build the weight gradients' patches;
- `concatenate`: the DRAG's fusion input and the patches' concatenations;
- `collectives`: the gradient all-reduce, most of it one device waiting for the other;
- `ynn_reductions`, `layout_copies` and `other` (optimizer update, loss, ...).

The streaming loop fusions (elementwise work, broadcasts, pads: each reads its operands and
writes its output once) are also held against the memory's speed: the bytes they move, read
off the program, over their time, beside the GB/s that `x * 1.5 + y` reaches over cold arrays
on all devices at once (`stream_gbs`).

Times are per step and per device (the trace's op time over both devices, halved on 2); the
instruction times need not add up to the wall time: a device's thread also waits, outside any
instruction, for the other device and for the work it split over the shared thread pool
(`outside_instructions_ms`). With a Python that can import torch (`--torch_python`, else found
as `bench.py` finds it), the PyTorch peer's step is profiled the same way with
`torch.profiler`: its operators' self time, convolutions (forward and backward, oneDNN) against
the rest. torch's times are its calling thread's, with the intra-op threads working inside each
operator: compare the two frameworks' shares, not their milliseconds. No timing is asserted:
it prints a table (or JSON with --json), recorded by hand in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
from bench import TORCH_PEER, find_torch_python, load, train_inputs
from xla_conv_probe import CALLS, called_by, computations

from drsan_jax import runtime, training
from drsan_jax.models import build_model, conv, init_params

KINDS = ("ynn_convolutions", "xla_convolutions", "matmuls", "loop_fusions", "concatenate",
         "collectives", "ynn_reductions", "layout_copies", "other")
# name, shape (an array or a tuple of arrays), opcode
_INSTRUCTION = re.compile(r"^(?:ROOT )?%?([\w.\-]+) = (\([^()]*\)|\S+) ([\w\-]+)\(")
_CONTAINERS = ("while", "call", "conditional")
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")


def instruction_kinds(blocks: dict[str, list[str]]) -> dict[str, str]:
    """Every instruction of an optimised HLO module (outside fused bodies) -> its kind.

    Args:
      blocks: the module's computations, `xla_conv_probe.computations` of its text.

    Loops, calls and conditionals are left out: the trace times their bodies' instructions.
    """
    fused_bodies = called_by(blocks, " fusion(")
    kinds = {}
    for block, lines in blocks.items():
        if block in fused_bodies:
            continue
        for line in lines:
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            name, _, op = match.groups()
            if op not in _CONTAINERS:  # their bodies' instructions are counted themselves
                kinds[name] = _kind(op, line, blocks)
    return kinds


def _kind(op: str, line: str, blocks: dict[str, list[str]]) -> str:
    if op == "fusion":
        body = "\n".join(body_line for called in CALLS.findall(line)
                         for body_line in blocks.get(called, []))
        if '"__ynn_fusion"' in line:
            if " convolution(" in body:
                return "ynn_convolutions"
            return "ynn_reductions" if " reduce(" in body else "other"
        if " convolution(" in body:
            return "xla_convolutions"
        if " dot(" in body:
            return "matmuls"
        if re.match(r"^%?(transpose|copy|wrapped_copy|transpose_copy)", line):
            return "layout_copies"
        return "loop_fusions"
    if op == "convolution":
        return "xla_convolutions"
    if op == "dot":
        return "matmuls"
    if op == "concatenate":
        return "concatenate"
    if op.startswith(_COLLECTIVES):
        return "collectives"
    if op in ("copy", "transpose"):
        return "layout_copies"
    return "other"


_DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "u8": 1, "s8": 1, "pred": 1,
                "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"^(\w+)\[([\d,]*)\]")
_FUSION_OPERANDS = re.compile(r" fusion\(([^)]*)\)")


def _array_size(shape: str) -> tuple[int, int] | None:
    """(elements, bytes) of an array shape such as f32[8,48,48,32]{3,2,1,0}; None for tuples."""
    match = _ARRAY.match(shape)
    if not match or match.group(1) not in _DTYPE_BYTES:
        return None
    elements = 1
    for dim in filter(None, match.group(2).split(",")):
        elements *= int(dim)
    return elements, elements * _DTYPE_BYTES[match.group(1)]


def streaming_bytes(blocks: dict[str, list[str]], kinds: dict[str, str]) -> dict[str, int]:
    """Bytes each streaming loop fusion moves: its output and every operand, read once.

    Counted are the loop fusions none of whose operands is larger than the output
    (elementwise work, broadcasts of biases and scales, pads): a slice or a reduction reads
    part of its operand, or reads it in an order, that the operand's size would misstate.
    """
    definitions = [(match, line) for lines in blocks.values() for line in lines
                   if (match := _INSTRUCTION.match(line))]
    shapes = {match.group(1): match.group(2) for match, _ in definitions}
    moved = {}
    for match, line in definitions:
        name, shape, _ = match.groups()
        operands = _FUSION_OPERANDS.search(line)
        out = _array_size(shape)
        if kinds.get(name) != "loop_fusions" or not operands or out is None:
            continue
        total = out[1]
        for operand in re.findall(r"%?([\w.\-]+)", operands.group(1)):
            size = _array_size(shapes.get(operand, ""))
            if size is None or size[0] > out[0]:
                break
            total += size[1]
        else:
            moved[name] = total
    return moved


def stream_bandwidth(mesh, megabytes_per_device: int, repeats: int = 5) -> float:
    """GB/s of `x * 1.5 + y` over cold float32 arrays on every device of `mesh` at once.

    Enough distinct arrays (about `megabytes_per_device` per device and operand) that they
    cannot all stay in the caches between uses, as a train step's activations cannot.
    """
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names))
    chunk = (mesh.devices.size, 2**18)  # 1 MiB per device
    count = max(1, megabytes_per_device)
    rng = np.random.default_rng(0)
    xs = [jax.device_put(rng.random(chunk, np.float32), sharding) for _ in range(count)]
    ys = [jax.device_put(rng.random(chunk, np.float32), sharding) for _ in range(count)]
    axpy = jax.jit(lambda xs, ys: [x * 1.5 + y for x, y in zip(xs, ys)])
    jax.block_until_ready(axpy(xs, ys))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(axpy(xs, ys))
        best = min(best, time.perf_counter() - t)
    return 3 * 4 * chunk[0] * chunk[1] * count / best / 1e9


def instruction_times(trace_dir: Path, names: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Nanoseconds and executions per HLO instruction name, summed over threads and steps."""
    files = sorted(trace_dir.rglob("*.xplane.pb"))
    if not files:
        raise SystemExit(f"train_profile: jax.profiler wrote no trace under {trace_dir}")
    totals: dict[str, int] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(str(files[-1])).planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in names:
                    totals[event.name] += event.duration_ns
                    counts[event.name] += 1
    return totals, counts


def profile_jax(args) -> dict:
    model = build_model(args.variant, args.scale, conv_impl=args.conv_impl, **args.sizes)
    params = init_params(model, jax.random.key(0))
    mesh, batch, state = train_inputs(model, params, args.batch, args.patch, args.scale)
    step = training.train_step.lower(state, batch).compile()
    blocks = computations(step.as_text())
    kinds = instruction_kinds(blocks)
    moved = streaming_bytes(blocks, kinds)
    for _ in range(args.warmup):
        state, metrics = step(state, batch)
        metrics["loss"].block_until_ready()
    load_before = load()
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        t = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
            metrics["loss"].block_until_ready()
        wall = (time.perf_counter() - t) / args.steps
        jax.profiler.stop_trace()
        times, counts = instruction_times(Path(folder), set(kinds))
    devices = mesh.devices.size
    runs = 1 / (args.steps * devices)  # totals over the trace -> per step and device
    per_step_device = 1e-6 * runs  # ns -> ms
    by_kind = {kind: 0.0 for kind in KINDS}
    for name, ns in times.items():
        by_kind[kinds[name]] += ns * per_step_device
    total = sum(by_kind.values())
    top = sorted(times.items(), key=lambda item: -item[1])[:args.top]
    # The streaming passes against the memory's speed: the bytes they move over their time.
    streaming_gb = sum(moved[name] * counts[name] for name in moved) * runs / 1e9
    streaming_ms = sum(times[name] for name in moved) * per_step_device
    achieved = devices * streaming_gb / (streaming_ms / 1000) if streaming_ms else 0.0
    stream = stream_bandwidth(mesh, args.stream_mb)
    return {
        "devices": devices, "conv_impl": conv.resolve_impl(args.conv_impl), "wall_step_s": wall,
        "load_before": load_before, "load_after": load(),
        "instruction_ms": total,
        "outside_instructions_ms": max(0.0, 1000 * wall - total),
        "by_kind_ms": by_kind,
        "by_kind_share": {kind: (ms / total if total else 0.0) for kind, ms in by_kind.items()},
        "top": [{"name": name, "kind": kinds[name], "ms": ns * per_step_device}
                for name, ns in top],
        "streaming_fusions": len(moved), "streaming_gb_per_device": streaming_gb,
        "streaming_ms": streaming_ms, "streaming_gbs": achieved,
        "stream_gbs": stream, "streaming_fraction_of_stream": achieved / stream,
    }


_TORCH_CHILD = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile
    args = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(args["peer"]))
    import torch_drsan
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    model = torch_drsan.build(args["variant"], args["scale"])
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    b, p, s = args["batch"], args["patch"], args["scale"]
    lq, gt = torch.rand(b, 3, p, p), torch.rand(b, 3, p * s, p * s)

    def step():
        opt.zero_grad(set_to_none=True)
        F.l1_loss(model(lq), gt).backward()
        opt.step()

    for _ in range(args["warmup"]):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args["steps"]):
            step()
    ops = {e.key: e.self_cpu_time_total / 1000 / args["steps"] for e in prof.key_averages()}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "ops_ms": ops}))
""")
_TORCH_CONVOLUTIONS = ("aten::mkldnn_convolution", "aten::convolution_backward",
                       "aten::_convolution", "aten::convolution", "aten::conv2d",
                       "aten::thnn_conv2d", "aten::_slow_conv2d_forward",
                       "aten::_slow_conv2d_backward")


def profile_torch(args) -> dict:
    python = find_torch_python(args.torch_python)
    if args.sizes or not TORCH_PEER.exists() or python is None:
        reason = ("a --smoke model has no PyTorch peer" if args.sizes else
                  f"peer {TORCH_PEER} {'found' if TORCH_PEER.exists() else 'missing'}, python "
                  f"with torch {'found' if python else 'not found'} (--torch_python)")
        return {"note": f"skipped: {reason}"}
    payload = dict(peer=str(TORCH_PEER), variant=args.variant, scale=args.scale,
                   batch=args.batch, patch=args.patch, threads=runtime.usable_cores(),
                   warmup=args.warmup, steps=args.steps)
    proc = subprocess.run([python, "-c", _TORCH_CHILD, json.dumps(payload)],
                          capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ops = result.pop("ops_ms")
    convolutions = sum(ms for op, ms in ops.items() if op in _TORCH_CONVOLUTIONS)
    total = sum(ops.values())
    result.update(operator_ms=total, convolutions_ms=convolutions,
                  convolutions_share=convolutions / total if total else 0.0,
                  top=sorted(({"op": op, "ms": ms} for op, ms in ops.items()),
                             key=lambda row: -row["ms"])[:args.top])
    return result


def table(out: dict) -> str:
    jax_part = out["jax"]
    lines = [f"DRSAN-{out['variant']} x{out['scale']} train step, batch {out['batch']} of "
             f"{out['patch']}x{out['patch']}, {jax_part['devices']} device(s), conv_impl="
             f"{jax_part['conv_impl']}: {jax_part['wall_step_s']:.3f} s a step while traced, "
             f"load {jax_part['load_before']} -> {jax_part['load_after']}",
             f"  {'JAX, ms per step and device':34}{'ms':>9}{'share':>8}"]
    for kind in KINDS:
        lines.append(f"  {kind:34}{jax_part['by_kind_ms'][kind]:9.1f}"
                     f"{100 * jax_part['by_kind_share'][kind]:7.1f}%")
    lines.append(f"  {'(outside any instruction)':34}{jax_part['outside_instructions_ms']:9.1f}")
    lines.append(f"  streaming loop fusions: {jax_part['streaming_fusions']} of them move "
                 f"{jax_part['streaming_gb_per_device']:.2f} GB a step and device in "
                 f"{jax_part['streaming_ms']:.1f} ms: {jax_part['streaming_gbs']:.1f} GB/s "
                 f"for all devices, {100 * jax_part['streaming_fraction_of_stream']:.0f}% of "
                 f"the {jax_part['stream_gbs']:.1f} GB/s a cold x * 1.5 + y runs at")
    lines.append("  largest instructions: " + ", ".join(
        f"{row['name']} ({row['kind']}) {row['ms']:.1f} ms" for row in jax_part["top"][:5]))
    torch_part = out["torch"]
    if "operator_ms" in torch_part:
        lines.append(f"  PyTorch {torch_part['torch']} ({torch_part['threads']} threads), "
                     f"operator self time {torch_part['operator_ms']:.1f} ms a step: "
                     f"convolutions {100 * torch_part['convolutions_share']:.1f}%; largest: "
                     + ", ".join(f"{row['op']} {row['ms']:.1f} ms"
                                 for row in torch_part["top"][:5]))
    else:
        lines.append(f"  PyTorch: {torch_part.get('note') or torch_part.get('error')}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="32s")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="global train batch (paper: 16)")
    p.add_argument("--patch", type=int, default=48, help="LR patch side (paper: 48)")
    p.add_argument("--conv_impl", default="auto", help="auto, xla or im2col")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="traced steps")
    p.add_argument("--stream_mb", type=int, default=64,
                   help="MiB per device and operand of the memory-speed measurement")
    p.add_argument("--top", type=int, default=15, help="largest instructions / operators kept")
    p.add_argument("--torch_python", default=None,
                   help="a Python that can import torch (default: searched)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the table goes to stderr)")
    p.add_argument("--smoke", action="store_true",
                   help="a tiny DRSAN (features 8, 1 block, 1 group), batch 2 of 8x8, one "
                        "traced step, no PyTorch")
    args = p.parse_args(argv)
    for flag in ("batch", "patch", "steps", "top", "stream_mb"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0:
        p.error(f"--warmup must be at least 0, got {args.warmup}")
    args.sizes = {}
    if args.smoke:
        args.batch, args.patch, args.warmup, args.steps, args.stream_mb = 2, 8, 1, 1, 2
        args.sizes = {"features": 8, "num_blocks": 1, "num_groups": 1}
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    runtime.configure(batch_size=args.batch)
    out = {"variant": args.variant, "scale": args.scale, "batch": args.batch,
           "patch": args.patch, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "jax": profile_jax(args)}
    out["torch"] = profile_torch(args)
    print(table(out), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
