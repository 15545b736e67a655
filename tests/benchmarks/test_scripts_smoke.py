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
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, lr_crop, make_benchmark

from drsan_jax.data import read_image

BENCHMARKS = REPO / "benchmarks"
TIMEOUT_S = 300
LINES = re.MULTILINE  # ^ and $ at every line of the output


def run_script(name: str, *args: str, expect_rc: int = 0) -> subprocess.CompletedProcess:
    """`python benchmarks/<name> <args>` from the repository root; its exit code checked."""
    # No persistent compilation cache written from tests (the scripts call runtime.configure()).
    env = dict(os.environ, DRSAN_JAX_CACHE_DIR="none")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=REPO, env=env,
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
    proc = run_script("bench.py", "--smoke", "--sections", "train,infer,torch",
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
    assert out["torch_note"].startswith("skipped: ") and out["ratios"] == {}
    assert not any(k.startswith(("eval_", "data_", "startup_")) for k in out)
    assert proc.stderr.splitlines()[0].startswith("DRSAN-32s x2 on ")  # the table


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
