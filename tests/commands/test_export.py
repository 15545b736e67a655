"""Tests for drsan_jax.export (ONNX and StableHLO), drsan_jax.onnx_runtime and the model card.

Each exported file runs in its own runtime (ONNX Runtime; `jax.export.deserialize`) on real
benchmark crops and must equal the JAX model (export_fixtures.assert_matches_jax). Each file is
exported once per module. The TFLite export needs TensorFlow and has its own file,
test_export_tflite.py, which CI runs in a separate step after installing the [tflite] extra.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from export_fixtures import (
    MODELS,
    assert_matches_jax,
    from_layout,
    jax_reference,
    load_exported_model,
    lq_batches,
    to_layout,
)

import drsan_jax
from drsan_jax import api, export, model_card, onnx_runtime, upscale
from drsan_jax.data import read_image
from drsan_jax.models import count_params, dra
from drsan_jax.upscaling import shapes

onnx = pytest.importorskip("onnx", reason='the ONNX tests need pip install -e ".[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='the ONNX tests need pip install -e ".[onnx]"')
pytest.importorskip("jax2onnx", reason='the ONNX tests need pip install -e ".[onnx]"')

# (format, layout, precision) of every file exported here.
CASES = [
    ("onnx", "nhwc", "fp32"),
    ("onnx", "nchw", "fp32"),
    ("onnx", "nhwc", "fp16"),
    ("stablehlo", "nhwc", "fp32"),
    ("stablehlo", "nchw", "fp16"),
]
SUFFIX = {"onnx": ".onnx", "stablehlo": ".stablehlo"}


@pytest.fixture(scope="module", params=MODELS)
def inference_model(request):
    return load_exported_model(request.param)


@pytest.fixture(scope="module")
def exported(inference_model, tmp_path_factory):
    """(format, layout, precision) -> the exported file, exported on first use."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}

    def get(fmt: str, layout: str, precision: str) -> Path:
        if (fmt, layout, precision) not in files:
            path = folder / f"model-{layout}-{precision}{SUFFIX[fmt]}"
            export.export(inference_model, fmt, path, layout=layout, precision=precision)
            files[fmt, layout, precision] = path
        return files[fmt, layout, precision]

    return get


@pytest.fixture(scope="module")
def batches(inference_model, benchmark_dir):
    return lq_batches(benchmark_dir, inference_model.scale)


def run_file(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """The exported file run in its own runtime on one batch (in the file's layout)."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x})[0]
    return np.asarray(jax.export.deserialize(bytearray(path.read_bytes())).call(x))


@pytest.mark.parametrize("fmt,layout,precision", CASES)
def test_exported_file_equals_the_jax_model(fmt, layout, precision, exported, inference_model,
                                            batches):
    path = exported(fmt, layout, precision)
    for name, lq in batches.items():
        got = from_layout(run_file(path, fmt, to_layout(lq, layout)), layout)
        numbers = assert_matches_jax(got, jax_reference(inference_model, lq), precision,
                                     inference_model.config["family"])
        print(f"{fmt} {layout} {precision} {name}: {numbers}")


def test_onnx_graph_has_symbolic_batch_height_and_width(exported, inference_model):
    proto = onnx.load(exported("onnx", "nchw", "fp32"))
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 18
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    s = inference_model.scale
    assert dims(proto.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(proto.graph.output[0]) == ["batch", 3, f"{s}*height", f"{s}*width"]
    assert proto.graph.input[0].name == "input" and proto.graph.output[0].name == "output"
    fp16 = onnx.load(exported("onnx", "nhwc", "fp16"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in fp16.graph.initializer if len(t.dims) == 4} == {
        onnx.TensorProto.FLOAT16}


def test_onnx_graph_is_rewritten_for_onnx_runtime(exported, inference_model):
    """Every PReLU is one PRelu and every DRA sum multiply-adds (drsan_jax.onnx_graph); the
    metadata and the card count them. The values are held to JAX by the test above."""
    from collections import Counter

    from drsan_jax.models import flatten

    prelus = sum(name.endswith("alpha") for name in flatten(inference_model.params))
    for layout, precision in (("nhwc", "fp32"), ("nchw", "fp32"), ("nhwc", "fp16")):
        path = exported("onnx", layout, precision)
        proto = onnx.load(path)
        ops = Counter(node.op_type for node in proto.graph.node)
        assert ops["PRelu"] == prelus and "Where" not in ops and "Einsum" not in ops, ops
        meta = {p.key: p.value for p in proto.metadata_props}
        counts = dict(item.split(":") for item in meta[onnx_runtime.META_REWRITES].split(","))
        assert int(counts["prelu"]) == prelus
        # Traced on a CPU the DRA sum is already multiply-adds (`dra.default_dra_impl`): the
        # einsum's rewrite has nothing to do (test_einsum_dra_sum_is_rewritten covers it).
        assert int(counts["dra_sum"]) == 0
        card = json.loads(model_card.card_path(path).read_text())
        assert card["format"]["rewrites"] == {k: int(v) for k, v in counts.items()}


def test_onnx_upscaler_opens_the_graph_rewritten_for_the_cpu(exported, inference_model, batches):
    """On the CPU provider every float32 PRelu runs as depthwise convolutions and ReLUs
    (onnx_graph.CPU_REWRITES), in memory: the same values bit for bit as the file's graph, and
    held to JAX like the file; float16 files and cpu_rewrites=False run as written."""
    from drsan_jax.models import flatten

    prelus = sum(name.endswith("alpha") for name in flatten(inference_model.params))
    for layout in ("nhwc", "nchw"):
        path = exported("onnx", layout, "fp32")
        fast = onnx_runtime.OnnxUpscaler(path, providers=["CPUExecutionProvider"])
        plain = onnx_runtime.OnnxUpscaler(path, providers=["CPUExecutionProvider"],
                                          cpu_rewrites=False)
        assert fast.rewrites.get("prelu_nchwc", 0) == prelus and plain.rewrites == {}
        lq = next(iter(batches.values()))[0]
        got = fast.predict(lq)
        np.testing.assert_array_equal(got, plain.predict(lq))
        assert_matches_jax(got[None], jax_reference(inference_model, lq[None]), "fp32",
                           inference_model.config["family"])
    assert onnx_runtime.OnnxUpscaler(exported("onnx", "nhwc", "fp16")).rewrites == {}


@pytest.fixture
def einsum_dra(monkeypatch):
    """Traces DRSAN's DRA sum as the stacked einsum, as it is on GPUs and TPUs."""
    monkeypatch.setattr(dra, "default_dra_impl", lambda backend=None: "einsum")


def test_export_without_rewrites_keeps_jax2onnx_graph(tmp_path, einsum_dra):
    """`--onnx_rewrites none` writes the graph jax2onnx made: the Where and the Einsum stay."""
    path = tmp_path / "plain.onnx"
    assert export.main(["--ckpt", "32s-x2", "--format", "onnx", "--output", str(path),
                        "--onnx_rewrites", "none"]) == 0
    proto = onnx.load(path)
    ops = {node.op_type for node in proto.graph.node}
    assert {"Where", "Einsum"} <= ops and "PRelu" not in ops
    assert {p.key: p.value for p in proto.metadata_props}[onnx_runtime.META_REWRITES] == ""


def test_einsum_dra_sum_is_rewritten(tmp_path, einsum_dra, benchmark_dir):
    """A DRSAN traced with the einsum DRA sum (a GPU or TPU machine's export) gets every einsum
    rewritten into multiply-adds, one per DRSA step, and still equals the JAX model."""
    model = load_exported_model("32s-x2")
    path = tmp_path / "einsum.onnx"
    export.export(model, "onnx", path)
    proto = onnx.load(path)
    assert "Einsum" not in {node.op_type for node in proto.graph.node}
    meta = {p.key: p.value for p in proto.metadata_props}
    counts = dict(item.split(":") for item in meta[onnx_runtime.META_REWRITES].split(","))
    steps = model.config["num_groups"] * model.config["num_blocks"]
    assert int(counts["dra_sum"]) == steps
    for name, lq in lq_batches(benchmark_dir, model.scale).items():
        got = from_layout(run_file(path, "onnx", to_layout(lq, "nhwc")), "nhwc")
        numbers = assert_matches_jax(got, jax_reference(model, lq), "fp32", "drsan")
        print(f"einsum-traced onnx {name}: {numbers}")


def test_model_card_describes_the_file(exported, inference_model):
    path = exported("onnx", "nchw", "fp32")
    card = json.loads(model_card.card_path(path).read_text())
    resource = card["resources"][0]
    assert resource["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert resource["size"] == path.stat().st_size and resource["type"] == "onnx"
    assert card["scale"] == inference_model.scale
    assert card["parameters"] == count_params(inference_model.params)
    assert card["format"]["opset"] == 18 and card["format"]["producer"].startswith("jax2onnx")
    assert card["input"]["layout"] == "NCHW" and card["input"]["range"] == [0.0, 1.0]
    assert card["output"]["shape"][2] == f"{inference_model.scale}*height"
    assert (card["architecture"], card["variant"]) == (inference_model.config["family"],
                                                       inference_model.config["variant"])
    assert card["trainingIterations"] == inference_model.step
    if (inference_model.extra or {}).get("pretrained"):
        # The shipped models' training and evaluation come from the manifest.
        assert card["license"] == "Apache-2.0" and card["dataset"].startswith("T91")
        assert card["evaluation"]["drsan"]["plain"]["Set5"]["psnr"] > 30
    else:  # imported weights: nothing is claimed that the file does not say
        assert card["license"] is None and card["evaluation"] is None
    stablehlo = json.loads(model_card.card_path(exported("stablehlo", "nhwc", "fp32")).read_text())
    assert "cuda" in stablehlo["format"]["platforms"]


def test_onnx_upscaler_reads_the_metadata(exported, inference_model, tmp_path):
    runner = onnx_runtime.OnnxUpscaler(exported("onnx", "nchw", "fp32"))
    assert (runner.scale, runner.layout, runner.step) == (inference_model.scale, "nchw",
                                                          inference_model.step)
    assert runner.name == model_card.model_name(inference_model)
    assert f"x{inference_model.scale}" in repr(runner)
    # A file from elsewhere has no metadata: the layout comes from the input, the scale from a
    # probe run.
    proto = onnx.load(exported("onnx", "nchw", "fp32"))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, bare)
    foreign = onnx_runtime.OnnxUpscaler(bare)
    assert (foreign.scale, foreign.layout, foreign.name) == (inference_model.scale, "nchw", None)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="ONNX Runtime cannot load"):
        onnx_runtime.OnnxUpscaler(tmp_path / "broken.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        drsan_jax.load(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def pictures(benchmark_dir):
    """An RGB crop and the grey, RGBA and 16-bit pictures made from it."""
    rgb = read_image(benchmark_dir / "x2" / "Set14" / "baboon.png")[:45, :61]
    alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None].repeat(rgb.shape[0], 0)
    deep = rgb.astype(np.uint16) * 257 + np.arange(rgb.size, dtype=np.uint16).reshape(
        rgb.shape) % 257
    return {"rgb": rgb, "grey": rgb[..., 1], "grey1": rgb[..., 1:2],
            "rgba": np.dstack([rgb, alpha]), "16bit": deep}


@pytest.mark.parametrize("tile", [None, 32])
def test_onnx_upscaler_upscales_like_the_jax_upscaler(tile, exported, inference_model,
                                                      pictures):
    runner = drsan_jax.load(exported("onnx", "nhwc", "fp32"))
    assert isinstance(runner, onnx_runtime.OnnxUpscaler)
    jax_upscaler = api.Upscaler(inference_model)
    assert runner.tile_count(45, 61, tile, 8) == jax_upscaler.tile_count(45, 61, tile, 8)
    for kind, picture in pictures.items():
        got = runner.upscale(picture, tile=tile, overlap=8)
        expected = jax_upscaler.upscale(picture, tile=tile, overlap=8)
        assert got.shape == expected.shape and got.dtype == expected.dtype, kind
        levels = np.abs(got.astype(np.int64) - expected)
        # A 16-bit level is 1.5e-5: float rounding moves some values by one.
        assert levels.max() <= 1, kind
        assert picture.dtype == np.uint16 or (levels == 0).mean() >= 0.999, kind
    np.testing.assert_array_equal(runner.bicubic(pictures["rgba"]),
                                  jax_upscaler.bicubic(pictures["rgba"]))
    with pytest.raises(ValueError, match="self-ensemble is not available"):
        runner.upscale(pictures["rgb"], self_ensemble=True)


def test_onnx_upscaler_mirrors_small_pictures_like_the_jax_upscaler(exported, inference_model,
                                                                   pictures):
    runner = onnx_runtime.OnnxUpscaler(exported("onnx", "nhwc", "fp32"))
    jax_upscaler = api.Upscaler(inference_model)
    calls = []
    predict = runner.predict
    runner.predict = lambda lq: calls.append(lq.shape) or predict(lq)
    for shape in [(1, 1), (2, 3), (1, 7)]:
        picture = pictures["rgb"][:shape[0], :shape[1]]
        got, expected = runner.upscale(picture), jax_upscaler.upscale(picture)
        s = inference_model.scale
        assert got.shape == expected.shape == (s * shape[0], s * shape[1], 3)
        assert np.abs(got.astype(int) - expected).max() <= 1
    # The network saw each picture mirrored to the smallest side, never the few pixels alone.
    assert calls == [(shapes.MIN_SIDE, shapes.MIN_SIDE, 3)] * 3


def test_onnx_upscaler_tiles_when_the_picture_does_not_fit(exported, monkeypatch):
    runner = onnx_runtime.OnnxUpscaler(exported("onnx", "nhwc", "fp32"))
    assert runner.resolve_tile(45, 61) is None
    monkeypatch.setattr(onnx_runtime.memory, "host_memory_budget", lambda: 1e6)
    assert runner.resolve_tile(600, 1100) == onnx_runtime.tiling.DEFAULT_TILE
    with pytest.raises(ValueError, match="tile must be"):
        runner.resolve_tile(45, 61, tile=0)


def test_onnx_runner_imports_no_jax(exported, pictures, tmp_path):
    np.save(tmp_path / "rgb.npy", pictures["rgb"])
    script = (
        "import sys, numpy as np\n"
        "sys.modules['jax'] = sys.modules['flax'] = None  # importing either now fails\n"
        "from drsan_jax.onnx_runtime import OnnxUpscaler\n"
        "sr = OnnxUpscaler(sys.argv[1]).upscale(np.load(sys.argv[2]), tile=32, overlap=8)\n"
        "np.save(sys.argv[3], sr)\n"
        "assert not [m for m, module in sys.modules.items()\n"
        "            if m.startswith(('jax', 'flax')) and module is not None]\n"
    )
    path = exported("onnx", "nhwc", "fp32")
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "rgb.npy"),
                    str(tmp_path / "sr.npy")], check=True, timeout=120)
    expected = onnx_runtime.OnnxUpscaler(path).upscale(pictures["rgb"], tile=32, overlap=8)
    np.testing.assert_array_equal(np.load(tmp_path / "sr.npy"), expected)


@pytest.fixture
def no_runtime_side_effects(monkeypatch):
    """upscale.main configures the JAX runtime; here it must leave the test process as it is."""
    monkeypatch.setenv("DRSAN_JAX_CACHE_DIR", "none")
    monkeypatch.setenv("DRSAN_JAX_CPU_DEVICES", "1")


def test_upscale_command_runs_an_onnx_file(exported, benchmark_dir, tmp_path,
                                           no_runtime_side_effects, capsys):
    path = exported("onnx", "nchw", "fp32")
    picture = benchmark_dir / "x2" / "Set5" / "butterfly.png"
    assert upscale.main(["--ckpt", str(path), str(picture), "--output", str(tmp_path)]) == 0
    expected = onnx_runtime.OnnxUpscaler(path).upscale(read_image(picture))
    np.testing.assert_array_equal(read_image(tmp_path / "butterfly.png"), expected)
    with pytest.raises(SystemExit) as stopped:
        upscale.main(["--ckpt", str(path), "--self_ensemble", str(picture), "--output",
                      str(tmp_path / "se")])
    assert stopped.value.code == 2
    assert "--self_ensemble is not available" in capsys.readouterr().err


def run_cli(*argv, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "drsan_jax.export", *argv], capture_output=True,
                          text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})


@pytest.fixture(scope="module")
def without_jax2onnx(tmp_path_factory):
    """A PYTHONPATH under which `import jax2onnx` fails, as where it is not installed."""
    folder = tmp_path_factory.mktemp("no_jax2onnx")
    (folder / "jax2onnx.py").write_text("raise ImportError('No module named jax2onnx')\n")
    return os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])


@pytest.mark.parametrize("args,message", [
    (["--format", "onxx"], "--format 'onxx': expected one of onnx, tflite, stablehlo"),
    (["--format", "onnx", "--ckpt", "no/such/run"], "--ckpt no/such/run: cannot load"),
    (["--format", "onnx", "--output", "missing/model.onnx"], "--output missing/model.onnx"),
    (["--format", "onnx", "--opset", "17"], "--opset 17: the ONNX export needs opset 18"),
    (["--format", "stablehlo", "--opset", "19"], "--opset 19: only --format onnx"),
    (["--format", "onnx", "--layout", "hwc"], "--layout 'hwc'"),
    (["--format", "onnx", "--precision", "int8"], "--precision 'int8'"),
    (["--format", "onnx", "--scale", "3", "--ckpt", "32s-x2"],
     "is a drsan-32s x2 model; it cannot run at x3"),
    (["--format", "onnx", "--scale", "5"], "--scale 5: no shipped model"),
    (["--format", "onnx", "--input_size", "64"], "--input_size '64': expected HEIGHTxWIDTH"),
    (["--format", "onnx", "--onnx_rewrites", "fuse"],
     "--onnx_rewrites 'fuse': expected 'all', 'none' or some of prelu, dra_sum"),
    (["--format", "stablehlo", "--onnx_rewrites", "none"],
     "--onnx_rewrites none: only --format onnx"),
    (["--format", "onnx", "missing-dependency"],
     'needs the jax2onnx package: pip install -e ".[onnx]"'),
], ids=["format", "ckpt", "folder", "opset", "opset-format", "layout", "precision", "scale",
        "no-model", "input-size", "rewrites", "rewrites-format", "dependency"])
def test_bad_requests_are_one_line_with_status_2(args, message, tmp_path, without_jax2onnx):
    env = None
    if args[-1] == "missing-dependency":
        args, env = args[:-1], {"PYTHONPATH": without_jax2onnx}
    if "--output" not in args:
        args = [*args, "--output", "model.onnx"]
    result = run_cli(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr and result.stderr.startswith("python -m drsan_jax.export")
    assert list(tmp_path.iterdir()) == []


def test_command_line_writes_the_file_and_its_card(tmp_path):
    result = run_cli("--ckpt", "32s-x2", "--format", "stablehlo", "--output", "m.stablehlo",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.stablehlo", "m.stablehlo.json"]
    card = json.loads((tmp_path / "m.stablehlo.json").read_text())
    assert card["resources"][0]["sha256"] == hashlib.sha256(
        (tmp_path / "m.stablehlo").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["smfanet/SMFANet_DF2K_100w_x4SR.pth",
                                  "safmn/team15_SAFMN.pth"])
def test_whole_image_families_export_to_any_size_in_stablehlo_only(shared_data, benchmark_dir,
                                                                   tmp_path, name):
    # Their pooled sizes are floor divisions of the image size: jax.export keeps them symbolic,
    # the ONNX converter cannot, and an ONNX request without --input_size is refused with one
    # line (the fixed-size ONNX files: test_export_fixed_size.py).
    from drsan_jax.weights.loading import load_model

    model = load_model(shared_data / "weights" / name)
    refused = tmp_path / "model.onnx"
    with pytest.raises(export.ExportError, match=r"-x4: its pooling grid follows the image"):
        export.export(model, "onnx", refused)
    assert not refused.exists()
    path = tmp_path / "model.stablehlo"
    export.export(model, "stablehlo", path)
    for lq in lq_batches(benchmark_dir, 4).values():  # every crop at least 16 pixels a side
        assert_matches_jax(run_file(path, "stablehlo", lq), jax_reference(model, lq), "fp32")
    # Below the smallest side the file refuses to run (jax.export's shape checks).
    with pytest.raises(ValueError):
        run_file(path, "stablehlo", np.zeros((1, 20, 5, 3), np.float32))
