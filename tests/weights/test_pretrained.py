"""Tests for the shipped weights (`drsan_jax.pretrained`) and the names that load them."""

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import lr_crop, random_params

from drsan_jax import api, evaluation, pretrained, upscale
from drsan_jax.data import read_image, write_image
from drsan_jax.models import build_model
from drsan_jax.weights import checkpoints, loading, shipped

# The models the project promises (issue: weights for 32s at x2, x3 and x4); every shipped model
# (these and any other in the manifest) is held to the same checks.
PROMISED = ("32s-x2", "32s-x3", "32s-x4")
SHIPPED = tuple(sorted(shipped.read_manifest()["models"]))
# Bicubic PSNR (drsan protocol) of Set5, Set14, B100 at each scale, as `eval.py --method
# bicubic` measures it (docs/evaluation.md; test_evaluation checks it against the published numbers).
BICUBIC_PSNR = {2: {"Set5": 33.68, "Set14": 30.33, "B100": 29.56},
                3: {"Set5": 30.40, "Set14": 27.63, "B100": 27.21},
                4: {"Set5": 28.43, "Set14": 26.09, "B100": 25.96}}


# upscale.main() calls runtime.configure().
pytestmark = pytest.mark.usefixtures("no_runtime_side_effects")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A saved 32s x2 checkpoint: the shipped weights plus noise (not float16-exact).

    A trained network, as exports are: an untrained one with random weights amplifies the
    float16 rounding of its weights to the size of its output, which `verify_export` refuses.
    """
    trained = loading.load_shipped("32s-x2").params
    params = jax.tree.map(lambda p, r: np.asarray(p) + 0.01 * (np.asarray(r) - np.asarray(p)),
                          trained, random_params(build_model("32s", scale=2)))
    path = checkpoints.save_params_for_inference(
        tmp_path_factory.mktemp("src") / "ckpt", {"variant": "32s", "scale": 2}, params, step=9)
    return path, params


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_export_then_load_gives_the_stored_parameters(source, tmp_path, dtype):
    path, params = source
    written = pretrained.export(path, "32s-x2", storage_dtype=dtype, data="toy",
                                directory=tmp_path)
    loaded = loading.load_shipped("32s-x2", directory=tmp_path)
    assert loaded.scale == 2 and loaded.variant == "32s" and loaded.step == 9
    want = jax.tree.map(lambda p: np.asarray(p).astype(dtype).astype(np.float32), params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b),
                 loaded.params, want)
    assert jax.tree.structure(loaded.params) == jax.tree.structure(params)
    # float16 halves the file; both stay well under the 2 MB a 32s model may take.
    assert written.stat().st_size < (1.0e6 if dtype == "float16" else 2.0e6)
    entry = shipped.read_manifest(tmp_path)["models"]["32s-x2"]
    assert entry["storage_dtype"] == dtype and entry["training"]["data"] == "toy"
    assert entry["model"]["variant"] == "32s" and entry["model"]["scale"] == 2
    assert entry["training"]["weights"] == "params"
    difference = entry["verification"]["max_abs_output_difference"]
    assert difference <= pretrained.VERIFY_TOLERANCE[dtype]
    assert (difference == 0.0) == (dtype == "float32")


def test_an_export_that_does_not_reproduce_its_checkpoint_replaces_nothing(source, tmp_path,
                                                                           monkeypatch):
    path, _ = source
    written = pretrained.export(path, "32s-x2", directory=tmp_path)
    before = _tree_digest(tmp_path)
    encode = pretrained.compact.encode

    def damaged(params, storage_dtype, meta):  # one weight off by 0.25 in the file
        params = jax.tree.map(np.array, params)
        params["output"]["kernel"][0, 0, 0, 0] += 0.25
        return encode(params, storage_dtype, meta)

    monkeypatch.setattr(pretrained.compact, "encode", damaged)
    with pytest.raises(shipped.PretrainedError, match="output/kernel does not hold the "
                                                         "checkpoint's values; nothing was replaced"):
        pretrained.export(path, "32s-x2", directory=tmp_path, force=True)
    assert _tree_digest(tmp_path) == before and written.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["32s-x2.npz", "manifest.json"]


def test_bad_names_and_damaged_files_are_reported(source, tmp_path):
    path, _ = source
    with pytest.raises(shipped.PretrainedError,
                       match="holds a drsan-32s x2 model; name it 32s-x2 or drsan-32s-x2, not 32s-x3"):
        pretrained.export(path, "32s-x3", directory=tmp_path)
    written = pretrained.export(path, "32s-x2", directory=tmp_path)
    with pytest.raises(shipped.PretrainedError, match=r"no shipped model is named '48m-x4'; "
                                                         r"shipped: 32s-x2"):
        loading.load_shipped("48m-x4", directory=tmp_path)
    data = bytearray(written.read_bytes())
    data[len(data) // 2] ^= 0xFF
    written.write_bytes(bytes(data))
    with pytest.raises(shipped.PretrainedError, match="damaged"):
        loading.load_shipped("32s-x2", directory=tmp_path)
    written.unlink()
    with pytest.raises(shipped.PretrainedError, match="missing"):
        loading.load_shipped("32s-x2", directory=tmp_path)


def _tree_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "drsan_jax.pretrained", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_export_writes_outside_the_package_and_never_replaces_without_force(source, tmp_path):
    path, params = source
    package = _tree_digest(shipped.PRETRAINED_DIR)
    # Where to write is required: a user's export never lands in the package by default.
    result = _cli("export", "--ckpt", path, "--name", "32s-x2", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "python -m drsan_jax.pretrained export: error: one of the arguments --output_dir "
        "--into_package is required"]
    # The shipped model of that name is refused, and nothing is loaded or written.
    result = _cli("export", "--ckpt", path, "--name", "32s-x2", "--into_package", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "32s-x2 already exists in" in result.stderr and "(a shipped model); pass --force" \
        in result.stderr
    out = tmp_path / "mine"
    result = _cli("export", "--ckpt", path, "--name", "32s-x2", "--output_dir", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["32s-x2.npz", "manifest.json"]
    assert shipped.available(out) == ["32s-x2"]
    loaded = loading.load_model(out / "32s-x2.npz")  # self-describing: loads by its path
    assert loaded.step == 9 and loaded.variant == "32s"
    mine = _tree_digest(out)
    result = _cli("export", "--ckpt", path, "--name", "32s-x2", "--output_dir", out,
                  "--dtype", "float32", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert f"32s-x2 already exists in {out}; pass --force" in result.stderr
    assert _tree_digest(out) == mine
    result = _cli("export", "--ckpt", path, "--name", "32s-x2", "--output_dir", out,
                  "--dtype", "float32", "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert shipped.read_manifest(out)["models"]["32s-x2"]["storage_dtype"] == "float32"
    assert _tree_digest(shipped.PRETRAINED_DIR) == package
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_maintainers_export_into_the_package(source, tmp_path, monkeypatch, capsys):
    path, _ = source
    package = tmp_path / "pretrained"
    shutil.copytree(shipped.PRETRAINED_DIR, package)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", package)  # where --into_package writes
    monkeypatch.setattr(shipped, "PRETRAINED_DIR", package)  # what the loader reads
    before = shipped.read_manifest()["models"]
    argv = ["export", "--ckpt", str(path), "--name", "32s-x2", "--into_package", "--data", "toy"]
    assert pretrained.main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert pretrained.main([*argv, "--force"]) == 0
    after = shipped.read_manifest()["models"]
    assert after["32s-x2"]["training"]["data"] == "toy" and after["32s-x2"]["evaluation"] == {}
    assert {k: v for k, v in after.items() if k != "32s-x2"} == {
        k: v for k, v in before.items() if k != "32s-x2"}


def test_a_name_that_is_not_shipped_lists_the_shipped_ones():
    assert shipped.is_model_name("48m-x3") and not shipped.is_model_name("runs/48m-x3")
    with pytest.raises(ValueError, match="no shipped model is named '48m-x3'; shipped: 32s-x2"):
        loading.load_model("48m-x3")


def test_record_eval_copies_eval_results_and_storage_cost(source, tmp_path):
    path, _ = source
    pretrained.export(path, "32s-x2", directory=tmp_path)

    def run(checkpoint, protocol, ensemble, psnr):
        return {"method": "model", "scale": 2, "protocol": protocol, "self_ensemble": ensemble,
                "checkpoint": checkpoint,
                "datasets": {"Set5": {"psnr": psnr, "ssim": 0.9, "num_images": 5}}}

    results = tmp_path / "shipped.json"
    results.write_text(json.dumps({"protocol": "both", "results": {
        "drsan": run("32s-x2 (x)", "drsan", False, 35.0),
        "matlab": run("32s-x2 (x)", "matlab", False, 34.9)}}))
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps(run("/runs/a/1", "drsan", False, 35.00004)))
    with pytest.raises(shipped.PretrainedError, match="evaluates /runs/a/1, not 32s-x2"):
        pretrained.record_eval("32s-x2", [reference], directory=tmp_path)
    pretrained.record_eval("32s-x2", [results], directory=tmp_path)
    pretrained.record_eval("32s-x2", [reference], reference=True, directory=tmp_path)
    entry = shipped.read_manifest(tmp_path)["models"]["32s-x2"]
    assert entry["evaluation"]["drsan"]["plain"]["Set5"]["psnr"] == 35.0
    assert entry["evaluation"]["matlab"]["plain"]["Set5"]["psnr"] == 34.9
    assert entry["storage_cost"]["drsan"]["plain"]["Set5"] == 0.0
    table = pretrained.markdown_table(directory=tmp_path)
    assert "| 32s-x2 (9 steps) | 35.00 / 0.9000 | - | - |" in table


def test_the_shipped_models_are_small_and_evaluated():
    models = shipped.read_manifest()["models"]
    assert set(PROMISED) <= set(models), f"shipped: {sorted(models)}"
    for name in SHIPPED:
        entry = models[name]
        scale = entry["model"]["scale"]
        assert name == f"{entry['model']['variant']}-x{scale}"
        assert (shipped.PRETRAINED_DIR / entry["file"]).stat().st_size < 2e6
        for protocol in ("drsan", "matlab"):
            for mode in ("plain", "self_ensemble"):
                scores = entry["evaluation"][protocol][mode]
                assert set(scores) >= {"Set5", "Set14", "B100"}, (name, protocol, mode)
        # Clearly better than bicubic on every set: by 1.0 dB at least (the shipped models
        # lead by 1.09 to 3.40 dB).
        for dataset, bicubic in BICUBIC_PSNR[scale].items():
            assert entry["evaluation"]["drsan"]["plain"][dataset]["psnr"] > bicubic + 1.0
        # Stored weights lose nothing at two decimals against the float32 checkpoint.
        for dataset, cost in entry["storage_cost"]["drsan"]["plain"].items():
            assert abs(cost) < 0.005, (name, dataset, cost)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_manifest_set5_psnr(name, benchmark_dir):
    entry = shipped.read_manifest()["models"][name]
    results = evaluation.evaluate_and_report(
        ckpt=name, datasets="Set5", data_dir=benchmark_dir, protocol="drsan", progress=False)
    assert results["checkpoint"].startswith(f"{name} (")
    want = entry["evaluation"]["drsan"]["plain"]["Set5"]["psnr"]
    assert math.isclose(results["datasets"]["Set5"]["psnr"], want, abs_tol=0.01)


@pytest.mark.slow
def test_upscale_without_ckpt_uses_the_shipped_model_for_the_scale(tmp_path, benchmark_dir,
                                                                   capsys):
    crop = lr_crop(benchmark_dir, size=(24, 30))
    write_image(tmp_path / "photo.png", crop)
    assert upscale.main([str(tmp_path / "photo.png")]) == 0
    assert read_image(tmp_path / "photo_x2.png").shape == (48, 60, 3)
    assert "with 32s-x2" in capsys.readouterr().err
    assert upscale.main([str(tmp_path / "photo.png"), "--scale", "3"]) == 0
    x3 = read_image(tmp_path / "photo_x3.png")
    assert x3.shape == (72, 90, 3)
    np.testing.assert_array_equal(x3, api.load("32s-x3").upscale(crop))


def test_the_readme_table_is_the_manifest_s():
    # The README's rows are generated (`python -m drsan_jax.pretrained table --readme`), never typed.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = pretrained.readme_table()
    assert table in readme, f"README.md's shipped-model table differs from the manifest's:\n{table}"
    assert len(table.splitlines()) == 2 + len(shipped.read_manifest()["models"])


def test_the_shipped_weights_page_quotes_the_manifest():
    # docs/shipped_weights.md's score tables put bicubic and the paper beside the shipped models;
    # every shipped model's row there must hold the manifest's numbers, under both protocols.
    page = (Path(__file__).resolve().parents[2] / "docs" / "shipped_weights.md").read_text()
    drsan_part, matlab_part = page.split("under `--protocol matlab`")
    models = shipped.read_manifest()["models"]
    seen = set()
    for part, protocol in ((drsan_part, "drsan"), (matlab_part, "matlab")):
        for row in part.splitlines():
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if len(cells) != 5:
                continue
            name, _, label = cells[1].replace("*", "").partition(" (")[0].partition(" ")
            if name not in models:
                continue
            mode = "self_ensemble" if label == "+" else "plain"
            scores = models[name]["evaluation"][protocol][mode]
            want = [f"{scores[d]['psnr']:.2f} / {scores[d]['ssim']:.4f}"
                    for d in ("Set5", "Set14", "B100")]
            assert cells[2:] == want, (protocol, row)
            seen.add((name, protocol, mode))
    assert seen == {(n, p, m) for n in models for p in ("drsan", "matlab")
                    for m in ("plain", "self_ensemble")}, "a shipped model's row is missing"
