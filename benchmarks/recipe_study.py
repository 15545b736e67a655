"""The short-budget recipe table: validation PSNR of several training runs at equal steps.

    python benchmarks/recipe_study.py /work/runs/recipe/A_step1e-3 /work/runs/recipe/B_cosine2e-3 \
        --output /work/runs/recipe/study.json > table.md

Each argument is a train.py workdir. Its recipe (schedule, peak rate, warm-up, clipping, patch
and batch size, weight average) is read from the config saved in its latest checkpoint, its
Set5 / Set14 PSNR at every validation step from its TensorBoard event files
(`drsan_jax.events`), and its speed from the logged steps/s. A run trained with a weight average
validates the average; for it, the trained weights of each kept checkpoint are scored too
(`eval.py --noema`, the same code), so that the table shows what the average adds. Those scores
are cached next to the checkpoints (`<workdir>/noema_<step>.json`) and reused.

Prints a Markdown table (one row per run and weights, best final Set5 first) on stdout; with
--output, writes every number to JSON. No number in the table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drsan_jax import checkpoints, evaluation, events, files  # noqa: E402

DATASETS = ("Set5", "Set14")
COLUMNS = (500, 1000, 1500, 2000)


def describe(config: dict) -> str:
    """The recipe of a run in a few words, from its saved training config."""
    schedule = config.get("lr_schedule", "staircase")
    lr = config["learning_rate"]
    if schedule == "staircase":
        if config["lr_decay_steps"] >= config["num_train_steps"]:
            text = f"constant {lr:g}"
        else:
            text = f"{lr:g}, x{config['lr_decay_rate']:g} every {config['lr_decay_steps']}"
    else:
        end = config.get("lr_end_factor", 0.0)
        text = f"cosine {lr:g} -> {lr * end:g}"
    if config.get("warmup_steps"):
        text += f", {config['warmup_steps']} warm-up"
    if config.get("grad_clip_norm") is not None:
        text += f", clip {config['grad_clip_norm']:g}"
    text += f"; {config['patch_size']}px x {config['batch_size']}"
    return text


def _noema_scores(workdir: Path, step: int, data_dir: str) -> dict[str, float]:
    """Set5/Set14 PSNR of a checkpoint's trained weights (cached in the workdir)."""
    cache = workdir / f"noema_{step}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    step_dir = workdir / checkpoints.CHECKPOINTS_SUBDIR / str(step)
    results = evaluation.evaluate_and_report(ckpt=str(step_dir), datasets=list(DATASETS),
                                             data_dir=data_dir, ema=False, progress=False)
    scores = {name: results["datasets"][name]["psnr"] for name in DATASETS}
    files.write_json(cache, scores)
    return scores


def study_run(workdir: Path, data_dir: str) -> list[dict]:
    """One or two rows (validated weights, and the trained ones of an EMA run) for a workdir."""
    latest = checkpoints.load(workdir)
    config = latest.training_config
    curves = events.read_scalars(workdir, [f"val/{d}/psnr" for d in DATASETS]
                                 + ["train/steps_per_sec"])
    missing = [d for d in DATASETS if f"val/{d}/psnr" not in curves]
    if missing:
        raise ValueError(f"{workdir}: no validation curve for {', '.join(missing)}; expected "
                         f"runs validated on --config.val_datasets=Set5,Set14")
    rate = curves["train/steps_per_sec"][:, 2]
    base = {"run": workdir.name, "recipe": describe(config), "steps": latest.step,
            "target_steps": config["num_train_steps"],
            "seconds_per_step": float(np.median(1.0 / rate)) if len(rate) else None}
    ema = config.get("ema_decay")
    rows = [{**base, "weights": f"EMA {ema:g}" if ema else "trained",
             "psnr": {d: {int(s): float(v) for s, _, v in curves[f"val/{d}/psnr"]}
                      for d in DATASETS}}]
    if ema:
        kept = sorted(int(p.name) for p in (workdir / checkpoints.CHECKPOINTS_SUBDIR).iterdir()
                      if p.name.isdigit())
        scores = {step: _noema_scores(workdir, step, data_dir) for step in kept
                  if step in rows[0]["psnr"]["Set5"]}
        rows.append({**base, "weights": "trained",
                     "psnr": {d: {s: v[d] for s, v in scores.items()} for d in DATASETS}})
    return rows


def _cell(values: dict[int, float], step: int) -> str:
    return f"{values[step]:.2f}" if step in values else "-"


def table(rows: list[dict]) -> str:
    """The Markdown table, best final Set5 first."""
    def final(row):
        values = row["psnr"]["Set5"]
        return (max(values), values[max(values)]) if values else (0, 0.0)

    lines = ["| run | recipe | weights | " + " | ".join(f"Set5 @{c}" for c in COLUMNS)
             + " | Set14 @2000 | s/step |",
             "|---|---|---|" + "---|" * (len(COLUMNS) + 2)]
    for row in sorted(rows, key=final, reverse=True):
        rate = row["seconds_per_step"]
        lines.append(f"| {row['run']} | {row['recipe']} | {row['weights']} | "
                     + " | ".join(_cell(row["psnr"]["Set5"], c) for c in COLUMNS)
                     + f" | {_cell(row['psnr']['Set14'], 2000)} | "
                     + (f"{rate:.2f} |" if rate else "- |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="train.py workdirs")
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                                  / "data" / "benchmark"),
                        help="benchmark folder for scoring the trained weights of EMA runs")
    parser.add_argument("--output", type=Path, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    rows = [row for workdir in args.workdirs for row in study_run(workdir, args.data_dir)]
    print(table(rows))
    if args.output:
        files.write_json(args.output, rows)


if __name__ == "__main__":
    main()
