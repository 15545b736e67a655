"""The GPU check: bench.py's speed numbers and a short training run, in one command of 8 minutes.

    benchmarks/gpu_check.sh                          # into $OUT (else --out), 8 minutes in all
    python benchmarks/gpu_check.py --out runs/gpu_check --budget_min 8
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check    # tiny, on CPU, in seconds

On a machine with a GPU, within --budget_min minutes all told, it runs four stages:

1. device: asks JAX, in a child process, which backend and devices it sees. Without a GPU it
   refuses (exit status 2, one line on stderr, the JSON written all the same); --smoke runs on
   the CPU and only says so.
2. bench: `bench.py --sections train,infer --conv_impl xla --infer_scale 4` for DRSAN-32s and
   -48m in float32 and bfloat16 (--variants, --dtypes): steps/s and patches/s of the x2 train
   step (batch 16 of 48x48 LR patches), and ms per image of the x4 model at 120x80 (B100's LR
   size) beside the paper's time on a TITAN XP (`PAPER_B100_X4_MS`). `xla` is XLA's own
   convolution, cuDNN's on a GPU (what `auto` picks there too). The runs share half the budget;
   one still running when that half is spent is stopped and reported, and those after it are
   reported as not run.
3. data: prepares the training images (T91 + BSD200 under --data_dir, cached in --cache_dir) and
   measures the batches/s of the patch sampler that feeds the training.
4. train: DRSAN-32s x2 from scratch with the short-budget recipe (`train.py --config
   configs/short_budget.py`) for the time left. The recipe's cosine ends at num_train_steps, so
   the step count is chosen before it starts: (seconds left - --train_overhead_s) x
   --train_rate_factor x the slower of the measured step rate (the bench run of 32s in
   --train_dtype) and the sampler's batch rate. The overhead (train.py's start-up, compilation,
   saves and final validation) and the factor (its loop's cost around each step) are guesses
   until a GPU run has measured them (`overhead_s_measured`, `rate_factor_measured` in the
   JSON). It checkpoints every 250 steps, keeps only the latest checkpoint, and validates Set5
   and Set14 once, at the last step. Should it still run at the deadline, it is interrupted
   (SIGINT, killed 20 s later): its latest checkpoint stays valid, and `resume_command` (the
   same command) finishes the run.

Everything goes under one folder, $OUT when set, else --out: `gpu_check.json` with every number
(each bench run's whole JSON included; rewritten after each stage), the training workdir
`train/` (the final checkpoint in `train/checkpoints/<step>/`, the event files) and `logs/` (each
child's output). A stage that fails is recorded in the JSON ("error", and in "failures") and
named on stderr in one line; the stages after it still run where they can, and the exit status
is 1. A short summary is printed at the end.

--smoke: the same stages on one CPU device (JAX_PLATFORMS=cpu, DRSAN_JAX_CPU_DEVICES=1), for the
tests: one bench run, `bench.py --smoke` of 32s in bfloat16, and 4 steps of a tiny DRSAN (8
features, 1 block, 2 groups) in bfloat16 on batches of 4 8x8 patches, validated at the end like
the real run; about 45 CPU-seconds in all (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# `main` pins this process's JAX (which the checkpoint reader imports too) to the CPU before any
# backend starts: it only reads results, and the children get all of the GPU's memory.
import jax

from drsan_jax import data, events, runtime
from drsan_jax.models import DTYPES, count_params
from drsan_jax.weights import checkpoints

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench.py"
# The paper's Table IV: B100 at x4 on a TITAN XP, ms per image (docs/networks/drsan.md).
PAPER_B100_X4_MS = {"32s": 8.3, "48m": 13.3}
PAPER_SOURCE = "DRSAN paper, Table IV: B100 x4 on a TITAN XP"
VARIANTS = ("32s", "48m")
TRAIN_VARIANT = "drsan32s"  # configs/<this>.py under configs/short_budget.py, at x2
TRAIN_SCALE = 2
DEVICE_TIMEOUT_S = 120  # for JAX to list the devices, whatever the budget
BENCH_SHARE = 0.5  # of the budget, for all bench runs together
END_RESERVE_S = 30  # kept after the training's deadline: its interruption, the results
INTERRUPT_GRACE_S = 20  # from SIGINT to SIGKILL
BENCH_ITERS = ("--iters", "30", "--infer_iters", "10")  # GPU steps take milliseconds
DATA_SECONDS = 3.0  # of sampler batches timed
# --smoke: the tiny training run (tests/conftest.py's TINY_MODEL and tiny_training_config).
SMOKE_TRAIN = {"model.features": 8, "model.num_blocks": 1, "model.num_groups": 2,
               "patch_size": 8, "batch_size": 4, "warmup_steps": 1,
               "checkpoint_every_steps": 2, "log_every_steps": 2, "data_workers": 1,
               "prefetch_batches": 2}
SMOKE_STEPS = 4
SMOKE_DATA_SECONDS = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None,
                   help="output folder when $OUT is not set ($OUT wins: on a lent machine "
                        "only $OUT comes back)")
    p.add_argument("--budget_min", type=float, default=8.0,
                   help="minutes for everything, the training taking what the rest leaves")
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"),
                   help="holds train/T91, train/BSD200 and benchmark/ (Set5, Set14)")
    p.add_argument("--cache_dir", default=None,
                   help="training-image cache (default: the config's, ~/.cache/drsan_jax)")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated bench variants (default: {','.join(VARIANTS)})")
    p.add_argument("--dtypes", default=None,
                   help=f"comma-separated bench dtypes (default: {','.join(DTYPES)})")
    p.add_argument("--train_dtype", default=None, choices=DTYPES,
                   help="compute dtype of the training run (default: float32, the recipe's)")
    p.add_argument("--train_overhead_s", type=float, default=90.0,
                   help="seconds of the training's time left out of the step plan: train.py's "
                        "start-up, compilation, checkpoint saves and final validation")
    p.add_argument("--train_rate_factor", type=float, default=0.8,
                   help="the fraction of the measured rate train.py's loop is expected to reach "
                        "(it also moves each batch to the device, logs and saves)")
    p.add_argument("--max_train_steps", type=int, default=None,
                   help="train at most this many steps (default: as many as fit)")
    p.add_argument("--smoke", action="store_true",
                   help="a check that the script runs, on the CPU in seconds: bench.py --smoke "
                        "of 32s in bfloat16 only (unless --variants/--dtypes), and 4 steps of a "
                        "tiny DRSAN in bfloat16 on 8x8 patches")
    args = p.parse_args(argv)
    out = os.environ.get("OUT") or args.out
    if not out:
        p.error("no output folder: set $OUT or give --out")
    args.out = Path(out).absolute()
    for name in ("gpu_check.json", "train"):
        if (args.out / name).exists():
            p.error(f"{args.out} holds an earlier check's {name}; choose an empty folder "
                    f"(the training must start from scratch)")
    smoke = args.smoke
    args.variants = _names(args.variants or ("32s" if smoke else ",".join(VARIANTS)))
    args.dtypes = _names(args.dtypes or ("bfloat16" if smoke else ",".join(DTYPES)))
    unknown = sorted(set(args.dtypes) - set(DTYPES))
    if unknown:
        p.error(f"--dtypes: unknown {unknown}; expected some of {list(DTYPES)}")
    args.train_dtype = args.train_dtype or ("bfloat16" if smoke else "float32")
    if smoke:
        args.max_train_steps = args.max_train_steps or SMOKE_STEPS
    args.data_seconds = SMOKE_DATA_SECONDS if smoke else DATA_SECONDS
    args.budget_s = 60 * args.budget_min
    args.data_dir = Path(args.data_dir).absolute()
    return args


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def one_line(text: str) -> str:
    """The last non-empty line of a child's output (a Python error's message), shortened."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def last_json(stdout: str) -> dict:
    """The JSON object a child prints as its last line of output."""
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ValueError(f"no JSON object as its last line ({one_line(stdout)!r})") from None


class Check:
    """The results so far, the clock, and the JSON file they are written to."""

    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.deadline = self.start + args.budget_s
        # --smoke: one CPU device, as on a machine with one GPU (and quicker to compile).
        self.env_set = {"JAX_PLATFORMS": "cpu", runtime.CPU_DEVICES_ENV: "1"} if args.smoke else {}
        self.env = dict(os.environ, **self.env_set)
        self.logs = args.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.path = args.out / "gpu_check.json"
        now = datetime.datetime.now(datetime.timezone.utc)
        self.result = {
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started_utc": now.isoformat(timespec="seconds"),
            "smoke": args.smoke, "budget_s": args.budget_s, "out": str(args.out),
            "paper": {"source": PAPER_SOURCE, "b100_x4_ms": PAPER_B100_X4_MS},
            "failures": [], "stage_s": {},
        }

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fail(self, stage: str, entry: dict, reason: str) -> None:
        entry["error"] = reason
        self.result["failures"].append(f"{stage}: {reason}")
        print(f"gpu_check: {stage} failed: {reason}", file=sys.stderr, flush=True)

    def stage(self, name: str, fn):
        """Runs fn(self), records its seconds under "stage_s" and saves; returns what fn does."""
        t = time.monotonic()
        try:
            return fn(self)
        finally:
            self.result["stage_s"][name] = time.monotonic() - t
            self.save()

    def save(self) -> None:
        self.result["elapsed_s"] = time.monotonic() - self.start
        self.path.write_text(json.dumps(self.result, indent=1) + "\n")

    def run(self, name: str, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Runs a child from the repository root; its output goes to logs/<name>.log as well.

        Raises:
          subprocess.TimeoutExpired: it ran past `timeout` (it is killed).
        """
        log = self.logs / f"{name}.log"
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True,
                                  timeout=max(timeout, 1), check=False)
        except subprocess.TimeoutExpired as e:
            log.write_text(f"$ {shlex.join(cmd)}\n(timed out)\n{_text(e.stdout)}{_text(e.stderr)}")
            raise
        log.write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")
        return proc


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


_DEVICE_CHILD = """
import json, jax
devices = jax.devices()
print(json.dumps({"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
                  "devices": len(devices), "jax": jax.__version__}))
"""


def check_device(check: Check) -> bool:
    """Stage 1; False: nothing else can run (no GPU outside --smoke, or JAX failed)."""
    entry = check.result["device"] = {}
    try:
        proc = check.run("device", [sys.executable, "-c", _DEVICE_CHILD], DEVICE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        check.fail("device", entry, f"JAX did not list its devices in {DEVICE_TIMEOUT_S} s")
        return False
    if proc.returncode:
        check.fail("device", entry, f"JAX could not start: {one_line(proc.stderr)}")
        return False
    try:
        entry.update(last_json(proc.stdout))
    except ValueError as e:
        check.fail("device", entry, f"the device listing printed {e}")
        return False
    entry["gpu_found"] = entry["backend"] == "gpu"
    if entry["gpu_found"]:
        return True
    found = (f"JAX's backend is {entry['backend']} ({entry['devices']} device(s) of kind "
             f"{entry['device_kind']})")
    if check.args.smoke:
        entry["note"] = f"no GPU found: {found}; --smoke runs on the CPU"
        print(f"gpu_check: {entry['note']}", file=sys.stderr, flush=True)
        return True
    check.fail("device", entry, f"no GPU found: {found}; this check needs one (--smoke runs a "
                                f"tiny version on the CPU)")
    return False


def bench_runs(check: Check) -> None:
    """Stage 2: one bench.py run per variant and dtype, all within BENCH_SHARE of the budget."""
    args = check.args
    stop = check.start + BENCH_SHARE * args.budget_s
    runs = check.result["bench"] = []
    for variant in args.variants:
        for dtype in args.dtypes:
            name = f"bench_{variant}_{dtype}"
            entry = {"variant": variant, "dtype": dtype}
            runs.append(entry)
            left = stop - time.monotonic()
            if left < 1:
                check.fail(name, entry, f"not run: the bench share of the budget "
                                        f"({BENCH_SHARE * args.budget_s:.0f} s) was spent")
                continue
            cmd = [sys.executable, str(BENCH), "--variant", variant, "--scale", str(TRAIN_SCALE),
                   "--infer_scale", "4", "--dtype", dtype, "--conv_impl", "xla",
                   "--sections", "train,infer", "--json",
                   *(["--smoke"] if args.smoke else BENCH_ITERS)]
            entry["command"] = shlex.join(cmd[1:])
            try:
                proc = check.run(name, cmd, left)
            except subprocess.TimeoutExpired:
                check.fail(name, entry, f"stopped after {left:.0f} s, when the bench share of "
                                        f"the budget ran out")
                continue
            if proc.returncode:
                check.fail(name, entry, f"bench.py exited {proc.returncode}: "
                                        f"{one_line(proc.stderr)}")
                continue
            try:
                bench = last_json(proc.stdout)
            except ValueError as e:
                check.fail(name, entry, f"bench.py printed {e}")
                continue
            entry.update(summarize_bench(variant, bench))
            check.save()


def summarize_bench(variant: str, bench: dict) -> dict:
    """The numbers the check is about, from one bench.py JSON (kept whole under "bench")."""
    size, seconds = next(iter(bench["infer_median_s"].items()))  # bench's first: 120x80
    ms = 1000 * seconds
    paper = PAPER_B100_X4_MS.get(variant)
    return {
        "device": bench["device"], "conv_impl": bench["conv_impl"],
        "train_steps_per_s": 1 / bench["train_step_median_s"],
        "train_patches_per_s": bench["train_patches_per_s"],
        "train_compile_s": bench["train_compile_s"],
        "x4_lr_size": size, "x4_ms": ms, "paper_b100_x4_ms": paper,
        "x4_ms_over_paper": ms / paper if paper else None,
        "bench": bench,
    }


def train_config(args, steps: int | None = None):
    """configs/short_budget.py for DRSAN-32s x2 with this check's data and settings.

    Returns:
      (config, overrides): the config, and the fields set on it as train.py's --config.* flags.
    """
    if str(REPO) not in sys.path:  # configs/ imports as it does for train.py at the root
        sys.path.insert(0, str(REPO))
    from configs import short_budget

    config = short_budget.get_config(TRAIN_VARIANT)
    overrides = {
        "scale": TRAIN_SCALE, "model.dtype": args.train_dtype,
        "train_data": ",".join(str(args.data_dir / "train" / s) for s in ("T91", "BSD200")),
        "val_data": str(args.data_dir / "benchmark"), "keep_checkpoints": 1,
        **({"cache_dir": str(Path(args.cache_dir).absolute())} if args.cache_dir else {}),
        **(SMOKE_TRAIN if args.smoke else {}),
    }
    if steps is not None:
        overrides.update(num_train_steps=steps, eval_every_steps=steps)  # validated at the end
    config.update_from_flattened_dict(overrides)
    return config, overrides


def prepare_data(check: Check) -> None:
    """Stage 3: the training images prepared (cached), and the sampler's batches/s."""
    entry = check.result["data"] = {}
    config, _ = train_config(check.args)
    t = time.perf_counter()
    try:
        dataset = data.load_training_set(config.train_data, config.scale, config.patch_size,
                                         os.path.expanduser(config.cache_dir),
                                         workers=os.cpu_count() or 2)
    except (OSError, ValueError) as e:
        check.fail("data", entry, f"{type(e).__name__}: {e}")
        return
    entry.update(prepare_s=time.perf_counter() - t, images=len(dataset.pairs),
                 batch=config.batch_size, patch=config.patch_size,
                 workers=config.data_workers, prefetch=config.prefetch_batches)
    sampler = data.PatchSampler(dataset, config.batch_size, config.patch_size, config.seed)
    batches = sampler.batches(0, config.data_workers, config.prefetch_batches)
    with contextlib.closing(batches):
        next(batches)
        count, t = 0, time.perf_counter()
        while time.perf_counter() - t < check.args.data_seconds:
            next(batches)
            count += 1
    entry["batches_per_s"] = count / (time.perf_counter() - t)


def plan_steps(check: Check, entry: dict) -> int | None:
    """The training's num_train_steps from the measured rates and the time left, or None."""
    args = check.args
    step_rate = next((r.get("train_steps_per_s") for r in check.result["bench"]
                      if r["variant"] == "32s" and r["dtype"] == args.train_dtype), None)
    if step_rate is None:
        check.fail("train", entry, f"not run: no measured step rate to plan from (the bench run "
                                   f"of 32s in {args.train_dtype} is missing or failed)")
        return None
    data_rate = check.result["data"].get("batches_per_s")
    if data_rate is None:
        check.fail("train", entry, "not run: the training data could not be prepared")
        return None
    seconds = check.left() - END_RESERVE_S - args.train_overhead_s
    measured = min(step_rate, data_rate)
    rate = args.train_rate_factor * measured
    planned = math.floor(max(seconds, 0) * rate)
    entry.update(measured_rate_steps_per_s=measured, planned_from="bench steps/s"
                 if step_rate <= data_rate else "sampler batches/s",
                 planned_rate_steps_per_s=rate, planned_seconds=seconds, planned_steps=planned)
    steps = min(planned, args.max_train_steps or planned)
    warmup = train_config(args)[0].warmup_steps
    if steps <= warmup:
        check.fail("train", entry, f"not run: {steps} steps planned ({planned} fit in "
                                   f"{seconds:.0f} s at {rate:.2f} steps/s, --max_train_steps "
                                   f"{args.max_train_steps}), not more than the recipe's "
                                   f"{warmup} warm-up steps")
        return None
    return steps


def train(check: Check) -> None:
    """Stage 4: train.py with the short-budget recipe, interrupted at the deadline if need be."""
    entry = check.result["train"] = {}
    steps = plan_steps(check, entry)
    if steps is None:
        return
    workdir = check.args.out / "train"
    _, overrides = train_config(check.args, steps)
    cmd = [sys.executable, "train.py", "--config", "configs/short_budget.py",
           "--workdir", str(workdir), *(f"--config.{k}={v}" for k, v in overrides.items())]
    env = "".join(f"{k}={shlex.quote(v)} " for k, v in check.env_set.items())
    entry.update(num_train_steps=steps, workdir=str(workdir),
                 resume_command=f"cd {shlex.quote(str(REPO))} && {env}{shlex.join(cmd)}")
    check.save()
    t = time.perf_counter()
    with open(check.logs / "train.log", "w") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=check.env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=max(check.left() - END_RESERVE_S, 1))
        except subprocess.TimeoutExpired:
            entry["interrupted"] = True
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    entry.update(wall_s=time.perf_counter() - t, returncode=rc)
    entry.update(training_results(workdir, steps, train_config(check.args)[0].batch_size))
    if entry.get("completed") and "steps_per_s" in entry:
        # What --train_overhead_s and --train_rate_factor should have been.
        entry["overhead_s_measured"] = entry["wall_s"] - steps / entry["steps_per_s"]
        entry["rate_factor_measured"] = entry["steps_per_s"] / entry["measured_rate_steps_per_s"]
    if "checkpoint_error" in entry:
        check.fail("train", entry, f"the final checkpoint {entry['checkpoint']} does not load: "
                                   f"{entry['checkpoint_error']}")
    elif entry.get("interrupted"):
        check.fail("train", entry, f"interrupted at the deadline at checkpoint step "
                                   f"{entry.get('final_step')} of {steps}; resume_command "
                                   f"finishes it (a larger --train_overhead_s or a smaller "
                                   f"--train_rate_factor plans fewer steps)")
    elif rc:
        check.fail("train", entry, f"train.py exited {rc}: "
                                   f"{one_line((check.logs / 'train.log').read_text())}")


def training_results(workdir: Path, steps: int, batch: int) -> dict:
    """Steps/s, loss and validation PSNR from the run's event files; its final checkpoint."""
    out = {}
    with contextlib.suppress(FileNotFoundError):
        scalars = events.read_scalars(workdir)
        rates = scalars.get(events.TRAIN_STEPS_PER_SEC)
        if rates is not None:
            # The first step (its compilation included) is logged without a rate.
            out["steps_per_s"] = statistics.median(rates[:, 2])
            out["patches_per_s"] = batch * out["steps_per_s"]
        if events.TRAIN_LOSS in scalars:
            out["final_loss"] = float(scalars[events.TRAIN_LOSS][-1, 2])
        out["val_psnr"] = {events.val_dataset(tag): float(rows[-1, 2])
                           for tag, rows in scalars.items() if events.val_dataset(tag)}
    try:
        step_dir = checkpoints.find_step_dir(workdir)
    except FileNotFoundError:
        return out
    out["checkpoint"] = str(step_dir)
    try:  # loaded as eval.py and the upscaler load it: the checkpoint is whole
        loaded = checkpoints.load(step_dir)
    except (OSError, checkpoints.CheckpointError) as e:
        out["checkpoint_error"] = f"{type(e).__name__}: {e}"
        return out
    out.update(final_step=loaded.step, completed=loaded.step == steps,
               checkpoint_weights=loaded.weights, checkpoint_params=count_params(loaded.params))
    return out


def summary(result: dict) -> str:
    """A few lines for a person; the JSON holds the rest."""
    device = result.get("device", {})
    lines = [f"GPU check{' (--smoke)' if result['smoke'] else ''} on "
             f"{device.get('device_kind', '?')} ({device.get('backend', '?')}, "
             f"{device.get('devices', '?')} device(s), jax {device.get('jax', '?')}): "
             f"{result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s budget"]
    if result.get("bench"):
        lines.append(f"  {'model':6}{'dtype':10}{'steps/s':>9}{'patches/s':>11}"
                     f"{'x4 ms':>9}{'paper ms':>10}{'ratio':>7}   (x2 train; x4 at LR size)")
    for run in result.get("bench", []):
        if "error" in run:
            lines.append(f"  {run['variant']:6}{run['dtype']:10}  failed: {run['error']}")
            continue
        paper = run["paper_b100_x4_ms"]
        lines.append(f"  {run['variant']:6}{run['dtype']:10}{run['train_steps_per_s']:9.2f}"
                     f"{run['train_patches_per_s']:11.1f}{run['x4_ms']:9.2f}"
                     f"{paper if paper else '-':>10}"
                     f"{run['x4_ms_over_paper'] or float('nan'):7.2f}   {run['x4_lr_size']}")
    data_entry = result.get("data", {})
    if "batches_per_s" in data_entry:
        lines.append(f"data: {data_entry['images']} images prepared in "
                     f"{data_entry['prepare_s']:.1f} s; sampler {data_entry['batches_per_s']:.1f}"
                     f" batches/s")
    run = result.get("train", {})
    if "final_step" in run:
        psnr = ", ".join(f"{k} {v:.2f} dB" for k, v in run.get("val_psnr", {}).items())
        lines.append(f"train: DRSAN-32s x2, short-budget recipe, step {run['final_step']} of "
                     f"{run['num_train_steps']} in {run['wall_s']:.0f} s "
                     f"({run.get('steps_per_s', float('nan')):.2f} steps/s logged, "
                     f"{run['planned_rate_steps_per_s']:.2f} planned)"
                     f"{'; ' + psnr if psnr else ''}")
        lines.append(f"  checkpoint {run['checkpoint']}")
    lines += [f"FAILED {line}" for line in result["failures"]] or ["no stage failed"]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    # This process only reads results: its JAX stays off the GPU (see the imports).
    jax.config.update("jax_platforms", "cpu")
    check = Check(args)
    print(f"gpu_check: writing to {args.out}, budget {args.budget_s:.0f} s", file=sys.stderr,
          flush=True)
    if not check.stage("device", check_device):
        return 2 if "gpu_found" in check.result["device"] else 1
    for name, stage in (("bench", bench_runs), ("data", prepare_data), ("train", train)):
        check.stage(name, stage)
    print(summary(check.result))
    print(f"wrote {check.path}")
    return 1 if check.result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
