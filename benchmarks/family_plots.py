"""Figures of the model families trained at one budget: PSNR against size and training curves.

    python eval.py --ckpt /work/runs/families/drsan-32s --datasets Set5,Set14,B100 \
        --output_json /work/runs/families/drsan-32s/eval.json      # for each run, then
    python benchmarks/family_plots.py /work/runs/families/* --output_dir docs/figures

Each argument is a train.py workdir holding `eval.json`, written by the eval.py command above.
The model's name and scale come from its latest checkpoint, its parameters and 720p multiply-adds
from `drsan_jax.models` and `drsan_jax.summary` (the counts the tests check against the papers), its scores from
eval.json, and its curves (validation PSNR against steps, and against training seconds: the
logged steps/s integrated over the run, validation pauses and restarts left out) from its
TensorBoard event files. Writes

- `families_psnr.png`: Set5 PSNR against parameters and against multiply-adds (log axes), the
  shape of the DRSAN paper's Figure 1;
- `families_curves.png`: validation PSNR (top) and the training loss (bottom, the mean of each
  logging window) against steps and against training time;
- `families.md`: the table behind them (Set5 / Set14 / B100 PSNR and SSIM, steps, sizes),

- `families.json`: every run's record (the numbers above and its curves), so that a later
  call can add runs without the earlier workdirs: runs recorded there are kept, and a run given
  again replaces its record (same model name, scale and steps),

and prints the table. No number is typed by hand. `--import_table OLD.md` records the rows of a
table this script wrote before it kept records (scores at its two decimals, no curves: such
runs appear in the table and the size figure, not in the curves figure).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from drsan_jax import events, files, summary
from drsan_jax.models import count_params, param_shapes, scale_path
from drsan_jax.weights import checkpoints

EVAL_FILE = "eval.json"
SETS = ("Set5", "Set14", "B100")


def load_run(workdir: Path) -> dict:
    """Everything the figures need about one run."""
    scores_file = workdir / EVAL_FILE
    if not scores_file.is_file():
        raise FileNotFoundError(
            f"{scores_file} does not exist; write it with: python eval.py --ckpt {workdir} "
            f"--datasets {','.join(SETS)} --output_json {scores_file}")
    scores = json.loads(scores_file.read_text())
    latest = checkpoints.load(workdir)
    if scores.get("step") != latest.step:
        raise ValueError(f"{scores_file} scores step {scores.get('step')}, but the latest "
                         f"checkpoint of {workdir} is step {latest.step}; rerun eval.py")
    params = count_params(scale_path(param_shapes(latest.model), latest.scale))
    curves = events.read_scalars(workdir, [events.val_tag("Set5"), events.TRAIN_STEPS_PER_SEC,
                                           events.TRAIN_LOSS])
    rate = curves[events.TRAIN_STEPS_PER_SEC]
    # Seconds spent training up to each logged step: each window of steps at its logged rate.
    steps = np.concatenate([[0.0], rate[:, 0]])
    seconds = np.concatenate([[0.0], np.cumsum(np.diff(steps) / rate[:, 2])])
    val = curves[events.val_tag("Set5")]
    return {
        "workdir": str(workdir), "name": latest.name, "scale": latest.scale, "step": latest.step,
        "weights": latest.weights, "params": params, "macs": summary.conv_macs(latest.model),
        "scores": {name: scores["datasets"][name] for name in SETS if name in scores["datasets"]},
        "curve_steps": val[:, 0].tolist(), "curve_psnr": val[:, 2].tolist(),
        "curve_seconds": np.interp(val[:, 0], steps, seconds).tolist(),
        "loss_steps": curves[events.TRAIN_LOSS][:, 0].tolist(),
        "loss": curves[events.TRAIN_LOSS][:, 2].tolist(),
        "loss_seconds": np.interp(curves[events.TRAIN_LOSS][:, 0], steps, seconds).tolist(),
        "config": latest.training_config,
    }


def plot_sizes(runs: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for axis, key, label in ((axes[0], "params", "parameters"),
                             (axes[1], "macs", "multiply-adds, 1280x720 output")):
        for run in runs:
            x, y = run[key], run["scores"]["Set5"]["psnr"]
            axis.scatter(x, y, s=40)
            axis.annotate(run["name"], (x, y), textcoords="offset points", xytext=(5, 4))
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel(f"Set5 x{runs[0]['scale']} PSNR (dB)")
        axis.grid(True, which="both", alpha=0.3)
    steps = sorted({run["step"] for run in runs})
    figure.suptitle(f"Model families trained the same way for {', '.join(map(str, steps))} steps")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def time_unit(seconds: float) -> tuple[float, str]:
    """(seconds per unit, name) for a time axis that ends at `seconds`."""
    return (60.0, "minutes") if seconds < 3 * 3600 else (3600.0, "hours")


def plot_curves(runs: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    unit, unit_name = time_unit(max(max(run["loss_seconds"] + run["curve_seconds"])
                                    for run in runs))
    for run in runs:
        for row, (y, x_steps, x_seconds, marker) in enumerate((
                ("curve_psnr", "curve_steps", "curve_seconds", "."),
                ("loss", "loss_steps", "loss_seconds", None))):
            axes[row, 0].plot(run[x_steps], run[y], marker=marker, label=run["name"])
            axes[row, 1].plot(np.asarray(run[x_seconds]) / unit, run[y], marker=marker,
                              label=run["name"])
    losses = {(run["config"] or {}).get("loss", "training") for run in runs}
    loss = losses.pop() if len(losses) == 1 else "training"
    for column, label in enumerate(("training steps", f"training {unit_name} on this machine")):
        axes[0, column].set_ylabel(f"Set5 x{runs[0]['scale']} validation PSNR (dB)")
        axes[1, column].set_ylabel(f"{loss.upper()} loss (mean of each logging window)")
        axes[1, column].set_yscale("log")
        for row in range(2):
            axes[row, column].set_xlabel(label)
            axes[row, column].grid(True, which="both", alpha=0.3)
            axes[row, column].legend()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def table(runs: list[dict]) -> str:
    lines = ["| model | parameters | 720p MACs (G) | steps | "
             + " | ".join(f"{s} PSNR / SSIM" for s in SETS) + " | training minutes |",
             "|---|---|---|---|" + "---|" * (len(SETS) + 1)]
    for run in sorted(runs, key=lambda r: r["params"]):
        cells = [f"{run['scores'][s]['psnr']:.2f} / {run['scores'][s]['ssim']:.4f}"
                 if s in run["scores"] else "-" for s in SETS]
        lines.append(f"| {run['name']} | {run['params']:,} | {run['macs'] / 1e9:.1f} | "
                     f"{run['step']} | " + " | ".join(cells)
                     + f" | {record(run)['minutes']:.1f} |")
    return "\n".join(lines)


RECORD_FILE = "families.json"
RECORD_KEYS = ("name", "scale", "step", "params", "macs", "scores", "curve_steps", "curve_psnr",
               "curve_seconds", "loss_steps", "loss", "loss_seconds", "config", "minutes",
               "source")


def record(run: dict) -> dict:
    """What families.json keeps of a run (no machine paths)."""
    kept = {key: run[key] for key in RECORD_KEYS if key in run}
    if "minutes" not in kept and run.get("curve_seconds"):
        kept["minutes"] = run["curve_seconds"][-1] / 60
    return kept


def import_table(path: Path) -> list[dict]:
    """Records of the rows of a families.md that `table` wrote (see the module docstring)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    expected = ["model", "parameters", "720p MACs (G)", "steps",
                *(f"{s} PSNR / SSIM" for s in SETS), "training minutes"]
    if header != expected:
        raise SystemExit(f"family_plots.py: error: {path} is not a table of this script "
                         f"(header {header})")
    runs = []
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if set(cells[0]) <= {"-"}:
            continue
        scores = {}
        for name, cell in zip(SETS, cells[4:4 + len(SETS)]):
            if cell != "-":
                psnr, ssim = (float(v) for v in cell.split("/"))
                scores[name] = {"psnr": psnr, "ssim": ssim}
        runs.append({"name": cells[0], "scale": None, "step": int(cells[3]),
                     "params": int(cells[1].replace(",", "")), "macs": float(cells[2]) * 1e9,
                     "scores": scores, "minutes": float(cells[-1]),
                     "source": f"imported from {path.name}"})
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="*", type=Path,
                        help="train.py workdirs with eval.json")
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="where the figures, the table and families.json go")
    parser.add_argument("--import_table", type=Path, default=None,
                        help="a families.md written before families.json existed: its rows "
                             "are recorded (scale from --import_scale)")
    parser.add_argument("--import_scale", type=int, default=2,
                        help="the scale of the imported table's runs")
    args = parser.parse_args(argv)
    record_file = args.output_dir / RECORD_FILE
    recorded = json.loads(record_file.read_text()) if record_file.is_file() else []
    if args.import_table is not None:
        imported = import_table(args.import_table)
        for run in imported:
            run["scale"] = args.import_scale
        recorded += imported
    new = [record(load_run(w)) for w in args.workdirs]
    key = lambda run: (run["name"], run["scale"], run["step"])  # noqa: E731
    replaced = {key(run) for run in new}
    runs = [run for run in recorded if key(run) not in replaced] + new
    if not runs:
        raise SystemExit("family_plots.py: error: no runs: give workdirs, or an --output_dir "
                         "with families.json")
    scales = {run["scale"] for run in runs}
    if len(scales) > 1:
        raise SystemExit(f"family_plots.py: error: the runs have different scales {scales}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_sizes(runs, args.output_dir / "families_psnr.png")
    with_curves = [run for run in runs if run.get("curve_steps")]
    if with_curves:
        plot_curves(with_curves, args.output_dir / "families_curves.png")
    text = table(runs)
    files.atomic_write_bytes(args.output_dir / "families.md", (text + "\n").encode())
    files.atomic_write_bytes(record_file, (json.dumps(runs, indent=1) + "\n").encode())
    print(text)


if __name__ == "__main__":
    main()
