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
from pathlib import Path

import numpy as np

from drsan_jax import evaluation, events, files
from drsan_jax.weights import checkpoints, loading

DATASETS = ("Set5", "Set14")
COLUMNS = (500, 1000, 1500, 2000)  # the steps the table shows


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


def _noema_scores(workdir: Path, step: int, data_dir: str, datasets: tuple[str, ...]
                  ) -> dict[str, float]:
    """PSNR of a checkpoint's trained weights on the datasets (cached in the workdir)."""
    cache = workdir / f"noema_{step}.json"
    scores = json.loads(cache.read_text()) if cache.is_file() else {}
    if all(name in scores for name in datasets):
        return scores
    step_dir = workdir / checkpoints.CHECKPOINTS_SUBDIR / str(step)
    model = loading.load_model(step_dir, ema=False)
    results = evaluation.evaluate(model.model, model.params, data_dir, list(datasets),
                                  model.scale, protocol="drsan", progress=False)
    scores.update({name: results["datasets"][name]["psnr"] for name in datasets})
    files.write_json(cache, scores)
    return scores


def study_run(workdir: Path, data_dir: str, datasets: tuple[str, ...] = DATASETS
              ) -> list[dict]:
    """One or two rows (validated weights, and the trained ones of an EMA run) for a workdir."""
    latest = checkpoints.load(workdir)
    config = latest.training_config
    curves = events.read_scalars(workdir, [events.val_tag(d) for d in datasets]
                                 + [events.TRAIN_STEPS_PER_SEC])
    missing = [d for d in datasets if events.val_tag(d) not in curves]
    if missing:
        raise ValueError(f"{workdir}: no validation curve for {', '.join(missing)}; expected "
                         f"runs validated on --config.val_datasets={','.join(datasets)}")
    rate = curves[events.TRAIN_STEPS_PER_SEC][:, 2]
    base = {"run": workdir.name, "recipe": describe(config), "steps": latest.step,
            "target_steps": config["num_train_steps"],
            "seconds_per_step": float(np.median(1.0 / rate)) if len(rate) else None}
    ema = config.get("ema_decay")
    rows = [{**base, "weights": f"EMA {ema:g}" if ema else "trained",
             "psnr": {d: {int(s): float(v) for s, _, v in curves[events.val_tag(d)]}
                      for d in datasets}}]
    if ema:
        kept = sorted(int(p.name) for p in (workdir / checkpoints.CHECKPOINTS_SUBDIR).iterdir()
                      if p.name.isdigit())
        scores = {step: _noema_scores(workdir, step, data_dir, datasets) for step in kept
                  if step in rows[0]["psnr"][datasets[0]]}
        rows.append({**base, "weights": "trained",
                     "psnr": {d: {s: v[d] for s, v in scores.items()} for d in datasets}})
    return rows


def _cell(values: dict[int, float], step: int) -> str:
    return f"{values[step]:.2f}" if step in values else "-"


def table(rows: list[dict], columns: tuple[int, ...] = COLUMNS) -> str:
    """The Markdown table: the first dataset at each column's step, the others at the last;
    the best at the last step first."""
    first, *others = list(rows[0]["psnr"])
    last = columns[-1]

    def final(row):
        return row["psnr"][first].get(last, float("-inf"))

    lines = ["| run | recipe | weights | " + " | ".join(f"{first} @{c}" for c in columns)
             + "".join(f" | {d} @{last}" for d in others) + " | s/step |",
             "|---|---|---|" + "---|" * (len(columns) + len(others) + 1)]
    for row in sorted(rows, key=final, reverse=True):
        rate = row["seconds_per_step"]
        lines.append(f"| {row['run']} | {row['recipe']} | {row['weights']} | "
                     + " | ".join(_cell(row["psnr"][first], c) for c in columns)
                     + "".join(f" | {_cell(row['psnr'][d], last)}" for d in others)
                     + (f" | {rate:.2f} |" if rate else " | - |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="train.py workdirs")
    parser.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                                  / "data" / "benchmark"),
                        help="benchmark folder for scoring the trained weights of EMA runs")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="validation sets of the runs, the first one by step")
    parser.add_argument("--steps", default=",".join(map(str, COLUMNS)),
                        help="the steps the table shows")
    parser.add_argument("--output", type=Path, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    datasets = tuple(d for d in args.datasets.split(",") if d)
    rows = [row for workdir in args.workdirs
            for row in study_run(workdir, args.data_dir, datasets)]
    print(table(rows, tuple(int(s) for s in args.steps.split(","))))
    if args.output:
        files.write_json(args.output, rows)


if __name__ == "__main__":
    main()
