"""Every script in benchmarks/ runs, in a tiny mode of its own command line, as a subprocess.

The benchmarks assert nothing and their numbers are recorded by hand in benchmarks/README.md, so
nothing else would notice a refactor that breaks one. Each test here runs the script the way a
person does (`python benchmarks/<script> ...` from the repository root, importing the installed
package) on tiny inputs, and checks that it finishes and prints what it should: the structure of
the output, never a timing. recipe_study.py and family_plots.py need a training run: they are run
on one in test_study_scripts.py; torch_equivalence.py needs torch for everything past its
arguments (its weight mapping is tested in test_torch_equivalence.py).
"""

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, lr_crop, make_benchmark

from drsan_jax.data import read_image, write_image

BENCHMARKS = REPO / "benchmarks"
TIMEOUT_S = 300
LINES = re.MULTILINE  # ^ and $ at every line of the output


def run_script(name: str, *args: str, expect_rc: int = 0,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python benchmarks/<name> <args>` from the repository root; its exit code checked.

    A .sh script runs with bash, and PYTHON set to this interpreter; env adds variables.
    """
    # No persistent compilation cache written from tests (the scripts call runtime.configure()).
    env = dict(os.environ, DRSAN_JAX_CACHE_DIR="none", PYTHON=sys.executable, **(env or {}))
    runner = ["bash"] if name.endswith(".sh") else [sys.executable]
    proc = subprocess.run([*runner, str(BENCHMARKS / name), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == expect_rc, (
        f"{name} {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
        f"\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_benchmark(benchmark_dir, tmp_path_factory):
    """A Set5 of two small real x2 pairs: LR 48x64 (bigger than one 32-pixel tile) and HR."""
    hr, lq = {}, {}
    for name in ("baby.png", "bird.png"):
        lq[name] = lr_crop(benchmark_dir, f"Set5/{name}", 2, (48, 64))
        hr[name] = read_image(benchmark_dir / "HR" / "Set5" / name)[:96, :128]
    return make_benchmark(tmp_path_factory.mktemp("tiny_benchmark"), {"Set5": hr},
                          {2: {"Set5": lq}})


@pytest.mark.slow
def test_bench_smoke():
    proc = run_script("bench.py", "--smoke", "--sections", "train,infer,torch,onnx",
                      "--torch_python", "/nonexistent/python", "--json")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model_options"] == {"features": 8, "num_blocks": 1, "num_groups": 1}
    assert (out["batch"], out["patch"]) == (2, 8)
    assert (out["dtype"], out["infer_scale"]) == ("float32", 2)  # the defaults
    for key in ("train_compile_s", "train_step_median_s", "train_step_cpu_s",
                "train_patches_per_s", "train_gflop_per_step", "train_gflops", "peak_gflops",
                "train_fraction_of_peak", "peak_rss_mib", "load_end", "devices", "conv_impl"):
        assert key in out, key
    for key in ("infer_median_s", "infer_cpu_s", "infer_compile_s", "infer_one_device_median_s",
                "infer_one_device_cpu_s", "infer_rows_split"):
        assert list(out[key]) == ["24x16"], key
    assert out["torch_note"].startswith("skipped: ")
    for key in ("onnx_median_s", "onnx_cpu_s", "onnx_file_median_s", "onnx_file_cpu_s",
                "onnx_plain_median_s", "onnx_plain_cpu_s"):
        assert list(out[key]) == ["24x16"], key
    # On a CPU the DRA sum is traced as multiply-adds already: only the PReLUs are rewritten,
    # in the file, then for the CPU provider when the package opens it.
    prelus = out["onnx_file_rewrites"]["prelu"]
    assert prelus > 0 and out["onnx_file_rewrites"]["dra_sum"] == 0
    assert out["onnx_rewrites"]["prelu_nchwc"] == prelus
    assert out["onnx_plain_rewrites"] == {}
    assert sorted(out["ratios"]) == ["onnx_24x16_vs_file", "onnx_24x16_vs_jax",
                                     "onnx_24x16_vs_plain"]
    assert not any(k.startswith(("eval_", "data_", "startup_")) for k in out)
    assert proc.stderr.splitlines()[0].startswith("DRSAN-32s x2 on ")  # the table


@pytest.fixture(scope="module")
def gpu_check_data(shared_data, tmp_path_factory):
    """A --data_dir as gpu_check.py reads it: four T91 and one BSD200 training images, and a
    Set5 and a Set14 of two 48x48 crops each (their LR made by bicubic)."""
    root = tmp_path_factory.mktemp("gpu_check_data")
    for name, count in (("T91", 4), ("BSD200", 1)):
        (root / "train" / name).mkdir(parents=True)
        for path in sorted((shared_data / "train" / name).iterdir())[:count]:
            (root / "train" / name / path.name).symlink_to(path)
    for name in ("Set5", "Set14"):
        for path in sorted((shared_data / "benchmark" / "HR" / name).glob("*.png"))[:2]:
            write_image(root / "benchmark" / "HR" / name / path.name, read_image(path)[:48, :48])
    return root


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_gpu_check_smoke(gpu_check_data, tmp_path):
    out = tmp_path / "out"
    proc = run_script("gpu_check.py", "--smoke", "--data_dir", str(gpu_check_data),
                      "--cache_dir", str(tmp_path / "cache"), env={"OUT": str(out)})
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["failures"] == [] and result["smoke"] is True
    assert result["device"]["gpu_found"] is False and result["device"]["backend"] == "cpu"
    assert "gpu_check: no GPU found: JAX's backend is cpu" in proc.stderr
    assert set(result["stage_s"]) == {"device", "bench", "data", "train"}
    assert all(positive(s) for s in result["stage_s"].values())
    assert result["paper"]["b100_x4_ms"] == {"32s": 8.3, "48m": 13.3}

    [run] = result["bench"]
    assert (run["variant"], run["dtype"], run["conv_impl"]) == ("32s", "bfloat16", "xla")
    for key in ("train_steps_per_s", "train_patches_per_s", "train_compile_s", "x4_ms"):
        assert positive(run[key]), key
    assert run["paper_b100_x4_ms"] == 8.3
    assert math.isclose(run["x4_ms_over_paper"], run["x4_ms"] / 8.3)
    bench = run["bench"]  # bench.py's own JSON, whole
    assert (bench["dtype"], bench["scale"], bench["infer_scale"]) == ("bfloat16", 2, 4)
    assert run["x4_lr_size"] == "24x16" and list(bench["infer_median_s"]) == ["24x16"]
    assert math.isclose(run["train_steps_per_s"], 1 / bench["train_step_median_s"])

    assert result["data"]["images"] == 5 and positive(result["data"]["batches_per_s"])

    train = result["train"]
    assert (train["num_train_steps"], train["final_step"], train["returncode"]) == (4, 4, 0)
    assert train["completed"] is True and "interrupted" not in train
    assert train["planned_steps"] >= 4 and positive(train["planned_rate_steps_per_s"])
    for key in ("steps_per_s", "patches_per_s", "final_loss", "wall_s", "checkpoint_params",
                "overhead_s_measured", "rate_factor_measured"):
        assert positive(train[key]), key
    assert sorted(train["val_psnr"]) == ["Set14", "Set5"]
    assert all(positive(v) for v in train["val_psnr"].values())
    checkpoint = out / "train" / "checkpoints" / "4"
    assert train["checkpoint"] == str(checkpoint) and train["checkpoint_weights"] == "params_ema"
    assert (checkpoint / "params").is_dir() and (checkpoint / "params_ema").is_dir()
    assert "train.py --config configs/short_budget.py" in train["resume_command"]
    assert "--config.num_train_steps=4" in train["resume_command"]
    assert sorted(p.name for p in (out / "logs").iterdir()) == [
        "bench_32s_bfloat16.log", "device.log", "train.log"]

    lines = proc.stdout.splitlines()
    assert lines[0].startswith("GPU check (--smoke) on cpu ")
    assert re.match(r"  32s   bfloat16 +[\d.]+ +[\d.]+ +[\d.]+ +8\.3 +[\d.]+   24x16$", lines[2])
    assert lines[-2:] == ["no stage failed", f"wrote {out / 'gpu_check.json'}"]


@pytest.mark.slow
def test_gpu_check_reports_each_failure(tmp_path):
    # Without a GPU the normal mode refuses; the JSON says why.
    out = tmp_path / "refused"
    proc = run_script("gpu_check.sh", "--out", str(out), expect_rc=2,
                      env={"JAX_PLATFORMS": "cpu", "OUT": ""})
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["device"]["gpu_found"] is False and list(result["stage_s"]) == ["device"]
    [failure] = result["failures"]
    assert failure.startswith("device: no GPU found: JAX's backend is cpu")
    assert f"gpu_check: {failure.replace(': ', ' failed: ', 1)}" in proc.stderr.splitlines()
    # In --smoke, with no time for the bench and no data: each stage after the device fails in
    # one line of its own, and the exit status says so.
    out = tmp_path / "failed"
    proc = run_script("gpu_check.py", "--smoke", "--out", str(out), "--budget_min", "0.001",
                      "--data_dir", str(tmp_path / "missing"), expect_rc=1, env={"OUT": ""})
    result = json.loads((out / "gpu_check.json").read_text())
    stages = [failure.split(":")[0] for failure in result["failures"]]
    assert stages == ["bench_32s_bfloat16", "data", "train"]
    assert result["bench"][0]["error"].startswith("not run: the bench share of the budget")
    assert "missing" in result["data"]["error"]
    assert result["train"]["error"].startswith("not run: no measured step rate")
    errors = [line for line in proc.stderr.splitlines() if " failed: " in line]
    assert errors == [f"gpu_check: {f.replace(': ', ' failed: ', 1)}" for f in result["failures"]]
    assert proc.stdout.splitlines()[-4:-1] == [f"FAILED {f}" for f in result["failures"]]


def test_bench_rejects_unknown_sections():
    proc = run_script("bench.py", "--sections", "train,nope", expect_rc=2)
    assert "--sections: unknown ['nope']" in proc.stderr


@pytest.mark.slow
def test_export_bench_smoke():
    proc = run_script("export_bench.py", "--smoke")
    lines = proc.stdout.splitlines()
    assert re.match(r"jax \S+ on \d+ cpu device\(s\), onnxruntime \S+", lines[0])
    for label in ("onnx fp32", "onnx fp16", "stablehlo fp32"):
        assert any(re.match(rf"32s x2 \(random weights\): {label} [\d.]+ MB, exported in ", line)
                   for line in lines), label
    assert "| model | LR (W x H) | JAX ms | JAX compile s | ORT ms | JAX / ORT | load |" in lines
    rows = [line for line in lines if line.startswith("| 32s | 24x16 | ")]
    assert len(rows) == 1 and len(rows[0].split("|")) == 9


@pytest.mark.slow
def test_small_inputs_smoke(tiny_benchmark):
    proc = run_script("small_inputs.py", "--models", "32s-x2", "--benchmark",
                      str(tiny_benchmark), "--sets", "Set5", "--sides", "4,32")
    lines = proc.stdout.splitlines()
    assert any(line.startswith("Upscaler(drsan-32s x2") and "2 images of Set5, 3 crops each"
               in line for line in lines)
    rows = {int(line.split()[0]): line.split()[1:] for line in lines
            if re.match(r"\s*\d+\s+-?[\d.]+", line)}
    assert sorted(rows) == [4, 32] and all(len(cells) == 6 for cells in rows.values())
    assert re.match(r"smallest trustworthy side alone .*: (4|32|above 32)$", lines[-1])


@pytest.mark.slow
def test_tiling_agreement_smoke(tiny_benchmark):
    proc = run_script("tiling_agreement.py", "--ckpt", "32s-x2", "--benchmark",
                      str(tiny_benchmark), "--sets", "Set5", "--tiles", "32", "--overlaps", "8")
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Upscaler(drsan-32s x2") and lines[1].startswith("set     tile")
    assert len(lines) == 3
    cells = lines[2].split()
    assert cells[:4] == ["Set5", "32", "8", "2"]  # both images split into tiles
    assert len(cells) == 10 and float(cells[4]) > 1  # tiles per image, 4 PSNRs, agreement


@pytest.mark.slow
def test_tiling_speed_smoke():
    proc = run_script("tiling_speed.py", "--ckpt", "32s-x2", "--whole", "32x32", "--tiled",
                      "64x64", "--tile", "32", "--overlap", "8", "--repeats", "1")
    text = proc.stdout
    assert re.search(r"^whole 32x32 x 4: median [\d.]+ s \([\d.]+\), [\d.]+ kpx/s$", text, LINES)
    assert re.search(r"^tiled 64x64 x 1: median [\d.]+ s", text, LINES)
    assert re.search(r"^tiled / whole pixel rate: [\d.]+$", text, LINES)
    assert re.search(r"^Upscaler\(drsan-32s x2.*: \d+ tiles of 32 \(overlap 8\) computing "
                     r"[\d.]+x the image's pixels, \d+ per call; [\d.]+% of the tiled time in "
                     r"the network$", text, LINES)
    assert text.startswith("load average before: ") and "load average after: " in text


@pytest.mark.slow
def test_upscale_memory_smoke():
    proc = run_script("upscale_memory.py", "--variant", "32s", "--scale", "2", "--size", "48x32",
                      "--tile", "none")
    text = proc.stdout
    assert re.search(r"^DRSAN-32s x2: 48x32 -> 96x64, 1 tile\(s\) \(--tile none\)$", text, LINES)
    assert re.search(r"^wall time [\d.]+ s, peak RSS [\d.]+ GiB$", text, LINES)
    assert re.search(r"^uint8 result [\d.]+ GiB, a float32 copy of it [\d.]+ GiB; network "
                     r"scratch [\d.]+ GiB per 48-pixel tile, 1 tile\(s\) per call$", text, LINES)


@pytest.mark.slow
def test_torch_equivalence_without_torch():
    # Everything past the arguments needs torch: without it the script says so and stops.
    assert "--torch_python" in run_script("torch_equivalence.py", "--help").stdout
    proc = run_script("torch_equivalence.py", "--steps", "2", "--adam_check_steps", "3",
                      expect_rc=2)
    assert "--adam_check_steps must be between 1 and --steps" in proc.stderr
    proc = run_script("torch_equivalence.py", "--torch_python", "/nonexistent/python",
                      "--steps", "2", "--adam_check_steps", "1", expect_rc=1)
    assert "a Python with torch (--torch_python)" in proc.stderr


def test_recipe_study_runs_sh_names_real_files_and_config_fields(configs_module):
    script = BENCHMARKS / "recipe_study_runs.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    words = shlex.split(script.read_text(), comments=True)
    paths = [w for w in words if re.fullmatch(r"[\w./-]+\.(py|sh)", w)]
    paths += [p for w in words if w.startswith("--config.train_data=")
              for p in w.split("=", 1)[1].split(",")]
    assert "train.py" in paths and "configs/drsan32s.py" in paths
    for path in paths:
        assert (REPO / path).exists(), path
    # The study's table comes from benchmarks/recipe_study.py; the comment names it.
    assert "benchmarks/recipe_study.py" in script.read_text()
    assert (BENCHMARKS / "recipe_study.py").is_file()
    fields = {w.split("=", 1)[0][len("--config."):] for w in words
              if w.startswith("--config.")}
    config = configs_module.get_config()
    assert fields and not fields - set(config.keys()), fields - set(config.keys())


def test_xla_conv_probe_smoke():
    proc = run_script("xla_conv_probe.py", "--smoke", "--json")
    result = json.loads(proc.stdout)
    assert set(result["impls"]) == {"xla", "im2col"}
    for counts in result["impls"].values():
        # Every convolution and dot of the gradient is found somewhere.
        assert counts["convolutions_in_ynn"] + counts["convolutions_in_xla"] > 0
        assert all(isinstance(v, int) and v >= 0 for v in counts.values())
    # im2col computes the weight gradients as dots: more of them than XLA's own path.
    assert result["impls"]["im2col"]["dots_in_xla"] + result["impls"]["im2col"]["dots_in_ynn"] \
        > result["impls"]["xla"]["dots_in_xla"] + result["impls"]["xla"]["dots_in_ynn"]


def test_train_profile_smoke():
    proc = run_script("train_profile.py", "--smoke", "--json")
    result = json.loads(proc.stdout)
    jax_part = result["jax"]
    assert set(jax_part["by_kind_ms"]) == {
        "ynn_convolutions", "xla_convolutions", "matmuls", "loop_fusions", "concatenate",
        "collectives", "ynn_reductions", "layout_copies", "other"}
    # Every traced instruction was found in the program and sorted into one kind.
    assert jax_part["instruction_ms"] > 0
    assert math.isclose(sum(jax_part["by_kind_ms"].values()), jax_part["instruction_ms"])
    assert math.isclose(sum(jax_part["by_kind_share"].values()), 1.0)
    # The tiny DRSAN's convolutions are found (in YNNPACK or XLA), and im2col's weight
    # gradients are matmuls.
    kinds = jax_part["by_kind_ms"]
    assert kinds["ynn_convolutions"] + kinds["xla_convolutions"] > 0
    assert jax_part["conv_impl"] == "im2col" and kinds["matmuls"] > 0
    assert jax_part["top"] and all(row["ms"] > 0 for row in jax_part["top"])
    # The streaming fusions' bytes are read off the program, and the memory's speed measured.
    assert jax_part["streaming_fusions"] > 0 and jax_part["streaming_gb_per_device"] > 0
    assert jax_part["stream_gbs"] > 0 and jax_part["streaming_fraction_of_stream"] > 0
    assert result["torch"]["note"].startswith("skipped")
    assert re.search(r"^  loop_fusions +[\d.]+ +[\d.]+%$", proc.stderr, LINES)


def test_train_profile_rejects_bad_counts():
    proc = run_script("train_profile.py", "--steps", "0", expect_rc=2)
    assert "--steps must be at least 1, got 0" in proc.stderr


def test_every_benchmark_script_has_a_test():
    # A script added to benchmarks/ without a test would break unseen at the next move. Tests
    # name a script by its file name (run_script) or, when they import it, by its stem.
    here = REPO / "tests" / "benchmarks"
    tests = "\n".join(path.read_text() for path in here.glob("test_*.py"))
    scripts = [path.name for path in sorted(BENCHMARKS.iterdir())
               if path.suffix in (".py", ".sh")]
    assert "train_profile.py" in scripts
    missing = [name for name in scripts
               if f'"{name}"' not in tests and f'"{Path(name).stem}"' not in tests]
    assert not missing, f"benchmarks/ scripts no test runs: {missing}"
