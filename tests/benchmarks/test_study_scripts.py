"""The scripts behind the training study's tables and figures, on a tiny run of real training.

benchmarks/recipe_study.py and benchmarks/family_plots.py turn run folders into docs/training.md's
recipe table and family figures; every number there must be the runs' own.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, tiny_training_config

from drsan_jax import evaluation, training
from drsan_jax.weights import checkpoints

pytestmark = pytest.mark.usefixtures("compilation_cache")


def _script(name):
    # benchmarks/ is a folder of scripts, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ema_run(configs_module, train_images, benchmark, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study") / "tiny_ema"
    config = tiny_training_config(configs_module, train_images, benchmark, ema_decay=0.9,
                          val_datasets="Set5", checkpoint_every_steps=3, keep_checkpoints=5,
                          lr_schedule="cosine", warmup_steps=1, learning_rate=1e-3)
    training.train_and_evaluate(config, str(workdir))
    return workdir


def test_recipe_table_reads_the_runs_own_numbers(ema_run, benchmark, capsys):
    study = _script("recipe_study")
    rows = study.study_run(ema_run, str(benchmark), ("Set5",))
    assert [row["weights"] for row in rows] == ["EMA 0.9", "trained"]
    assert rows[0]["recipe"] == "cosine 0.001 -> 0, 1 warm-up; 8px x 4"
    manager = checkpoints.TrainingCheckpoints(ema_run).manager
    assert rows[0]["psnr"]["Set5"] == {s: pytest.approx(manager.metrics(s)["psnr"], abs=1e-5)
                                       for s in (3, 6)}
    trained = evaluation.evaluate_and_report(ckpt=str(ema_run), datasets=["Set5"],
                                             data_dir=str(benchmark), ema=False, progress=False)
    assert rows[1]["psnr"]["Set5"][6] == trained["datasets"]["Set5"]["psnr"]
    assert json.loads((ema_run / "noema_6.json").read_text())["Set5"] == rows[1]["psnr"]["Set5"][6]
    lines = study.table(rows, (3, 6)).splitlines()
    assert lines[0] == "| run | recipe | weights | Set5 @3 | Set5 @6 | s/step |"
    best = max(rows, key=lambda r: r["psnr"]["Set5"][6])
    assert lines[2].startswith(f"| tiny_ema | {best['recipe']} | {best['weights']} | ")
    assert f"{best['psnr']['Set5'][6]:.2f}" in lines[2]
    with pytest.raises(ValueError, match="no validation curve for Set14"):
        study.study_run(ema_run, str(benchmark), ("Set5", "Set14"))


def test_recipe_study_command_line(ema_run, benchmark, tmp_path):
    # The script as a person runs it (the installed package, its flags); the EMA run's trained
    # weights were scored and cached by the test above, or are scored here.
    output = tmp_path / "study.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "recipe_study.py"), str(ema_run),
         "--data_dir", str(benchmark), "--datasets", "Set5", "--steps", "3,6",
         "--output", str(output)],
        cwd=REPO, env=dict(os.environ, DRSAN_JAX_CACHE_DIR="none"), capture_output=True,
        text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "| run | recipe | weights | Set5 @3 | Set5 @6 | s/step |"
    assert len(lines) == 4 and all(line.startswith("| tiny_ema | ") for line in lines[2:])
    rows = json.loads(output.read_text())
    assert sorted(row["weights"] for row in rows) == ["EMA 0.9", "trained"]
    assert all(set(row["psnr"]["Set5"]) == {"3", "6"} for row in rows)


def test_family_figures_and_table_come_from_eval_json(ema_run, benchmark, tmp_path, capsys):
    plots = _script("family_plots")
    with pytest.raises(FileNotFoundError, match="eval.json does not exist; write it with: "
                                                "python eval.py --ckpt"):
        plots.load_run(ema_run)
    evaluation.evaluate_and_report(ckpt=str(ema_run), datasets=["Set5"], data_dir=str(benchmark),
                                   output_json=str(ema_run / "eval.json"), progress=False)
    scores = json.loads((ema_run / "eval.json").read_text())["datasets"]["Set5"]
    plots.main([str(ema_run), "--output_dir", str(tmp_path)])
    for name in ("families_psnr.png", "families_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = (tmp_path / "families.md").read_text().splitlines()[2]
    assert row.startswith("| drsan (features=8 num_blocks=1 num_groups=2) | 6,357 | ")
    assert f"| 6 | {scores['psnr']:.2f} / {scores['ssim']:.4f} |" in row
    run = plots.load_run(ema_run)
    assert run["curve_steps"] == [3.0, 6.0] and run["weights"] == "params_ema"
    assert np.all(np.diff(run["curve_seconds"]) > 0)
    assert run["loss_steps"] == [1.0, 2.0, 4.0, 6.0] and all(loss > 0 for loss in run["loss"])
    assert np.all(np.diff(run["loss_seconds"]) > 0)
    assert run["loss_seconds"][-1] == pytest.approx(run["curve_seconds"][-1])
    assert plots.time_unit(600) == (60.0, "minutes") and plots.time_unit(4 * 3600)[1] == "hours"

    # families.json keeps the run: a later call without its workdir writes the same table, and
    # rows of an older table (no records, no curves) join it.
    recorded = json.loads((tmp_path / "families.json").read_text())
    assert [r["name"] for r in recorded] == [run["name"]] and "workdir" not in recorded[0]
    table = (tmp_path / "families.md").read_text()
    old = tmp_path / "old.md"
    old.write_text(table.splitlines()[0] + "\n" + table.splitlines()[1] + "\n"
                   "| lesrcnn | 626,304 | 281.3 | 6 | 31.75 / 0.9313 | - | - | 16.6 |\n")
    capsys.readouterr()
    plots.main(["--output_dir", str(tmp_path), "--import_table", str(old)])
    lines = (tmp_path / "families.md").read_text().splitlines()
    assert lines[2] == table.splitlines()[2]
    assert lines[3] == "| lesrcnn | 626,304 | 281.3 | 6 | 31.75 / 0.9313 | - | - | 16.6 |"
    assert len(json.loads((tmp_path / "families.json").read_text())) == 2
    plots.main([str(ema_run), "--output_dir", str(tmp_path)])  # replaces its own record
    assert len(json.loads((tmp_path / "families.json").read_text())) == 2


def test_the_manifest_curve_is_the_runs_validation_up_to_the_exported_step(ema_run, tmp_path):
    from drsan_jax import pretrained

    manager = checkpoints.TrainingCheckpoints(ema_run).manager
    psnr = {s: round(manager.metrics(s)["psnr"], 4) for s in (3, 6)}
    step_dirs = ema_run / "checkpoints"
    assert pretrained.validation_curve(step_dirs / "6") == {"Set5": [[3, psnr[3]], [6, psnr[6]]]}
    assert pretrained.validation_curve(step_dirs / "3") == {"Set5": [[3, psnr[3]]]}
    assert pretrained.validation_curve(tmp_path) == {}
