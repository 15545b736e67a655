"""Tests for eval.py: the published bicubic table, checkpoints, and errors a user can read."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from conftest import TINY, random_params, tiny_model

from drsan_jax import evaluation
from drsan_jax.data import bicubic_upscale
from drsan_jax.weights import checkpoints, compact, shipped

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("Set5", "Set14", "B100")

# Mean (PSNR, SSIM) of MATLAB-bicubic upscaling of the released LR images, per dataset, measured
# with an independent implementation; the bicubic rows published in SR papers sit within 0.02 dB
# of "matlab".
BICUBIC_TABLE = {
    "drsan": {
        2: ((33.682, 0.9305), (30.330, 0.8700), (29.565, 0.8436)),
        3: ((30.405, 0.8690), (27.634, 0.7760), (27.211, 0.7392)),
        4: ((28.431, 0.8113), (26.092, 0.7050), (25.963, 0.6682)),
    },
    "matlab": {
        2: ((33.649, 0.9295), (30.224, 0.8685), (29.552, 0.8428)),
        3: ((30.386, 0.8679), (27.533, 0.7738), (27.204, 0.7383)),
        4: ((28.419, 0.8102), (25.993, 0.7024), (25.958, 0.6674)),
    },
}


@pytest.fixture(scope="module")
def eval_cli():
    """eval.py, imported once (absl flags can be defined only once per process)."""
    spec = importlib.util.spec_from_file_location("eval_cli", REPO / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(eval_cli):
    """Runs `python eval.py ARGS...` in this process; returns what main returns."""

    def run(*args):
        eval_cli.FLAGS.unparse_flags()
        return eval_cli.main(eval_cli.FLAGS(["eval.py", *args]))

    return run


@pytest.fixture(scope="module")
def ckpt_x4(tmp_path_factory):
    """A tiny x4 model saved as a checkpoint at step 123."""
    path = tmp_path_factory.mktemp("ckpt") / "123"
    return checkpoints.save_params_for_inference(path, {"scale": 4, **TINY},
                                                 random_params(tiny_model(4)), step=123)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_reproduces_the_reference_table(run, benchmark_dir, tmp_path, scale):
    for protocol in BICUBIC_TABLE:
        out = tmp_path / f"{protocol}.json"
        run("--method=bicubic", f"--scale={scale}", f"--protocol={protocol}",
            f"--datasets={','.join(DATASETS)}", f"--data_dir={benchmark_dir}",
            f"--output_json={out}")
        results = json.loads(out.read_text())
        assert (results["protocol"], results["scale"], results["method"]) == (
            protocol, scale, "bicubic")
        for name, (psnr, ssim) in zip(DATASETS, BICUBIC_TABLE[protocol][scale]):
            got = results["datasets"][name]
            where = f"x{scale} {name} {protocol}"
            assert got["psnr"] == pytest.approx(psnr, abs=0.002), where
            assert got["ssim"] == pytest.approx(ssim, abs=0.0002), where
        assert results["datasets"]["B100"]["num_images"] == 100


def test_both_protocols_score_one_bicubic_pass(run, benchmark_dir, tmp_path, monkeypatch,
                                              capsys):
    singles, tables = {}, []
    for protocol in ("drsan", "matlab"):
        run("--method=bicubic", "--scale=4", f"--protocol={protocol}", "--datasets=Set5",
            f"--data_dir={benchmark_dir}", f"--output_json={tmp_path / protocol}.json")
        singles[protocol] = json.loads((tmp_path / f"{protocol}.json").read_text())
        tables.append(capsys.readouterr().out)
    upscaled = []
    monkeypatch.setattr(evaluation, "bicubic_upscale",
                        lambda lq, scale: upscaled.append(lq) or bicubic_upscale(lq, scale))
    run("--method=bicubic", "--scale=4", "--protocol=both", "--datasets=Set5",
        f"--data_dir={benchmark_dir}", f"--output_json={tmp_path / 'both.json'}")
    assert len(upscaled) == 5  # Set5 upscaled once, not once per protocol
    both = json.loads((tmp_path / "both.json").read_text())
    assert both == {"protocol": "both", "results": singles}  # every image's PSNR / SSIM
    assert capsys.readouterr().out == "\n".join(tables)  # the drsan table, then the matlab one
    assert "28.431" in tables[0] and "28.419" in tables[1]  # Set5, BICUBIC_TABLE[...][4]


def test_checkpoint_both_protocols(run, benchmark_dir, ckpt_x4, tmp_path):
    run(f"--ckpt={ckpt_x4}", "--datasets=Set5", f"--data_dir={benchmark_dir}",
        "--protocol=matlab", f"--output_json={tmp_path / 'matlab.json'}")
    run(f"--ckpt={ckpt_x4}", "--datasets=Set5", f"--data_dir={benchmark_dir}",
        "--protocol=both", f"--output_json={tmp_path / 'both.json'}")
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["protocol"] == "both" and list(both["results"]) == ["drsan", "matlab"]
    assert both["results"]["matlab"] == json.loads((tmp_path / "matlab.json").read_text())
    drsan = both["results"]["drsan"]
    assert (drsan["protocol"], drsan["step"], drsan["checkpoint"]) == ("drsan", 123, str(ckpt_x4))


def test_unknown_protocol_lists_the_choices(run, benchmark_dir):
    with pytest.raises(flags.IllegalFlagValueError,
                       match=r"drsan\|matlab\|lesrcnn\|ntire\|both"):
        run("--method=bicubic", "--scale=4", "--protocol=rgb", f"--data_dir={benchmark_dir}")


def test_checkpoint_per_image_and_exact_shapes(run, benchmark_dir, ckpt_x4, tmp_path, capsys):
    run(f"--ckpt={ckpt_x4}", "--datasets=Set5", f"--data_dir={benchmark_dir}", "--per_image",
        f"--output_json={tmp_path / 'bucketed.json'}")
    table = capsys.readouterr().out
    assert "step 123" in table and "butterfly" in table and "Set5" in table
    bucketed = json.loads((tmp_path / "bucketed.json").read_text())
    assert bucketed["step"] == 123 and bucketed["scale"] == 4
    assert bucketed["checkpoint"] == str(ckpt_x4)
    assert bucketed["model"]["features"] == 8 and bucketed["versions"]["jax"]
    run(f"--ckpt={ckpt_x4}", "--datasets=Set5", f"--data_dir={benchmark_dir}", "--exact_shapes",
        f"--output_json={tmp_path / 'exact.json'}")
    exact = json.loads((tmp_path / "exact.json").read_text())
    assert exact["exact_shapes"] and not bucketed["exact_shapes"]
    images = bucketed["datasets"]["Set5"]["images"]
    assert images.keys() == exact["datasets"]["Set5"]["images"].keys()
    for stem, scores in exact["datasets"]["Set5"]["images"].items():
        assert abs(scores["psnr"] - images[stem]["psnr"]) < 1e-3, stem


def one_line_error(capsys) -> str:
    """The error eval.py printed, checked to be one line on stderr."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eval.py: error: "), err
    return err


def test_scale_must_agree_with_the_checkpoint(run, benchmark_dir, ckpt_x4, capsys):
    assert run(f"--ckpt={ckpt_x4}", "--scale=3", "--datasets=Set5",
               f"--data_dir={benchmark_dir}") == 2
    assert re.search(r"--scale 3 disagrees with the checkpoint .* x4 model",
                     one_line_error(capsys))


@pytest.mark.parametrize("args,match", [
    (["--method=bicubic", "--scale=2", "--datasets=Set5,Urban100"],
     r"'Urban100' not found .*found: Set5, Set14, B100"),
    (["--method=bicubic", "--datasets=Set5"], "--method bicubic needs --scale"),
    (["--datasets=Set5"], "--ckpt is required"),
    (["--ckpt=nowhere", "--method=bicubic", "--scale=2"], "--ckpt is not used with"),
])
def test_errors_name_the_flag_or_what_was_found(run, benchmark_dir, args, match, capsys):
    assert run(*args, f"--data_dir={benchmark_dir}") == 2
    assert re.search(match, one_line_error(capsys))


def test_missing_checkpoint_and_data_dir(run, benchmark_dir, tmp_path, capsys):
    assert run(f"--ckpt={tmp_path / 'nothing'}", f"--data_dir={benchmark_dir}") == 2
    assert f"{tmp_path / 'nothing'}: no such file or folder" in one_line_error(capsys)
    assert run("--method=bicubic", "--scale=2", f"--data_dir={tmp_path / 'nothing'}") == 2
    assert re.search("--data_dir .* is not a folder", one_line_error(capsys))


def test_a_damaged_shipped_model_is_one_line(run, benchmark_dir, tmp_path, monkeypatch, capsys):
    package = tmp_path / "pretrained"
    shutil.copytree(shipped.PRETRAINED_DIR, package)
    weights = package / shipped.read_manifest(package)["models"]["32s-x2"]["file"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "PRETRAINED_DIR", package)
    out = tmp_path / "e.json"
    assert run("--ckpt=32s-x2", "--datasets=Set5", f"--data_dir={benchmark_dir}",
               f"--output_json={out}") == 2
    assert "the weights of 32s-x2" in one_line_error(capsys) and not out.exists()


def run_script(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "eval.py"), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_a_damaged_weights_file_through_the_script(benchmark_dir, tmp_path):
    path = tmp_path / "tiny.npz"
    compact.write(path, random_params(tiny_model(2)), {"scale": 2, **TINY})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    out = tmp_path / "e.json"
    args = (f"--ckpt={path}", "--datasets=Set5", f"--data_dir={benchmark_dir}",
            f"--output_json={out}")
    result = run_script(*args)
    assert result.returncode == 2 and not out.exists()
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"eval.py: error: {path}: not a readable drsan-jax weights "
                                    f"file (Bad CRC-32")
    verbose = run_script(*args, "--verbose")
    assert verbose.returncode == 2 and "Traceback (most recent call last)" in verbose.stderr
    assert "WeightsError" in verbose.stderr.splitlines()[-1]


@pytest.mark.parametrize("args,message", [
    (["--scale=two"], "eval.py: error: flag --scale=two: invalid literal for int()"),
    (["--protocl=drsan"], "eval.py: error: Unknown command line flag 'protocl'"),
    (["--method=bicubic", "--scale=2", "stray"], "eval.py: error: unexpected arguments: stray"),
])
def test_bad_flags_through_the_script_are_one_line(args, message):
    result = run_script(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), \
        result.stderr


def test_runs_as_a_script(benchmark_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "eval.py"), "--method=bicubic", "--scale=4",
         "--datasets=Set5", f"--data_dir={benchmark_dir}", "--protocol=matlab"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bicubic x4, protocol matlab" in done.stdout
    assert "28.419" in done.stdout  # Set5, BICUBIC_TABLE["matlab"][4]
