"""Tests for `--input_size`: fixed-size exports, which make SMFANet and SAFMN exportable to ONNX.

Their pooled sizes are floor divisions of the image size, which the ONNX converter cannot keep
symbolic; with a fixed height and width they are constants. Tiny random-weight models keep the
default run short; the authors' released files go through the same checks under `-m long`.
"""

import json

import jax
import numpy as np
import pytest
from conftest import random_params
from export_fixtures import assert_matches_jax, jax_reference

from drsan_jax import api, export, onnx_runtime, upscale
from drsan_jax.data import write_image
from drsan_jax.models import build_model, schema
from drsan_jax.weights import compact, loading

onnx = pytest.importorskip("onnx", reason='the ONNX tests need pip install -e ".[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='the ONNX tests need pip install -e ".[onnx]"')
pytest.importorskip("jax2onnx", reason='the ONNX tests need pip install -e ".[onnx]"')

# name -> (model name, sizes, fixed LR size). SAFMN-NTIRE needs 16 pixels a side, SMFANet 8;
# the picture upscaler mirrors a side below shapes.MIN_SIDE (32) up to it, so its files need 32.
TINY = {
    "smfanet": ("smfanet", {"features": 8, "num_blocks": 1}, (40, 32)),
    "safmn": ("safmn-ntire", {"features": 8, "num_blocks": 1}, (32, 48)),
}


def tiny_model(tmp_path, name: str):
    """A tiny random-weight model of the family, loaded back from its weights file."""
    model_name, sizes, _ = TINY[name]
    model = build_model(model_name, 2, **sizes)
    path = compact.write(tmp_path / f"{name}.npz", random_params(model), schema.config_of(model),
                         storage_dtype="float32")
    return loading.load_model(path)


def lq_batch(size: tuple[int, int], batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *size, 3), dtype=np.float32)


@pytest.fixture(scope="module", params=sorted(TINY))
def fixed(request, tmp_path_factory):
    """(name, loaded model, its fixed-size ONNX file, the size)."""
    folder = tmp_path_factory.mktemp("fixed")
    model = tiny_model(folder, request.param)
    size = TINY[request.param][2]
    path = folder / "model.onnx"
    export.export(model, "onnx", path, input_size=size)
    return request.param, model, path, size


def test_fixed_size_onnx_equals_the_jax_model(fixed):
    _, model, path, size = fixed
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch stays free
        lq = lq_batch(size, batch)
        got = session.run(None, {"input": lq})[0]
        assert_matches_jax(got, jax_reference(model, lq), "fp32")


def test_fixed_size_is_in_the_graph_the_metadata_and_the_card(fixed):
    _, model, path, (h, w) = fixed
    proto = onnx.load(path)
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    assert dims(proto.graph.input[0]) == ["batch", h, w, 3]
    assert dims(proto.graph.output[0])[1:] == [2 * h, 2 * w, 3]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[onnx_runtime.META_INPUT_SIZE] == f"{h}x{w}"
    assert f"{h}x{w} LR pixels only" in proto.doc_string
    card = json.loads((path.parent / "model.onnx.json").read_text())
    assert card["input"]["shape"] == ["batch", h, w, 3]
    assert card["output"]["shape"] == ["batch", 2 * h, 2 * w, 3]
    assert card["input"]["note"] == (f"fixed size: {h}x{w} LR pixels only (exported with "
                                     f"--input_size)")


def test_onnx_upscaler_runs_its_size_and_names_it_for_any_other(fixed):
    _, model, path, (h, w) = fixed
    upscaler = onnx_runtime.load(path)
    assert upscaler.input_size == (h, w) and upscaler.scale == 2
    picture = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = api.Upscaler(model).upscale(picture, tile=None)
    levels = np.abs(upscaler.upscale(picture).astype(np.int64) - expected)
    assert levels.max() <= 1 and (levels == 0).mean() >= 0.999  # float rounding moves a few
    other = np.zeros((h + 8, w, 3), np.uint8)
    with pytest.raises(ValueError, match=rf"model.onnx takes {h}x{w} LR inputs only \(it was "
                                         rf"exported with --input_size {h}x{w}\); got {h + 8}x{w}"):
        upscaler.upscale(other)


def test_a_fixed_file_without_metadata_is_known_by_its_graph(fixed, tmp_path):
    # Another exporter's static file: the size from the graph, the scale probed at that size.
    _, _, path, (h, w) = fixed
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    runner = onnx_runtime.load(tmp_path / "bare.onnx")
    assert (runner.input_size, runner.scale, runner.layout) == ((h, w), 2, "nhwc")


@pytest.mark.parametrize("name", sorted(TINY))
def test_whole_image_families_need_an_input_size_for_onnx(name, tmp_path):
    model = tiny_model(tmp_path, name)
    with pytest.raises(export.ExportError, match=r"its pooling grid follows the image size.*"
                                                 r"--input_size HxW"):
        export.export(model, "onnx", tmp_path / "any.onnx")
    side = model.model.min_side
    with pytest.raises(export.ExportError, match=rf"--input_size {side - 1}x40: .* needs at "
                                                 rf"least {side} LR pixels a side"):
        export.export(model, "onnx", tmp_path / "small.onnx", input_size=(side - 1, 40))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.npz"]


def test_fixed_size_stablehlo_takes_that_size_only(tmp_path):
    model = tiny_model(tmp_path, "smfanet")
    path = tmp_path / "m.stablehlo"
    export.export(model, "stablehlo", path, input_size=(24, 16))
    call = jax.export.deserialize(bytearray(path.read_bytes())).call
    lq = lq_batch((24, 16), 3)
    assert_matches_jax(np.asarray(call(lq)), jax_reference(model, lq), "fp32")
    with pytest.raises(ValueError):
        call(lq_batch((24, 24)))


@pytest.mark.parametrize("text", ["256", "0x4", "4x", "axb", "4x4x4", "-4x4"])
def test_input_size_text_is_checked(text):
    with pytest.raises(export.ExportError, match=rf"--input_size {text!r}: expected HEIGHTxWIDTH"):
        export.parse_input_size(text)
    assert export.parse_input_size("64x48") == (64, 48)


@pytest.mark.long
@pytest.mark.parametrize("name", ["smfanet/SMFANet_DF2K_100w_x4SR.pth",
                                  "safmn/team15_SAFMN.pth"])
def test_released_whole_image_models_export_to_fixed_size_onnx(shared_data, benchmark_dir,
                                                              tmp_path, name):
    from drsan_jax.data import read_image

    model = loading.load_model(shared_data / "weights" / name)
    path = tmp_path / "model.onnx"
    export.export(model, "onnx", path, input_size=(64, 48))
    lq = np.stack([read_image(benchmark_dir / "x4" / f"Set14/{image}.png")[:64, :48]
                   for image in ("baboon", "zebra")]).astype(np.float32) / np.float32(255)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    print(assert_matches_jax(session.run(None, {"input": lq})[0], jax_reference(model, lq),
                             "fp32"))


def test_upscale_command_names_the_size_a_fixed_file_takes(fixed, tmp_path, monkeypatch, capsys):
    _, _, path, (h, w) = fixed
    monkeypatch.setenv("DRSAN_JAX_CACHE_DIR", "none")
    monkeypatch.setenv("DRSAN_JAX_CPU_DEVICES", "1")
    picture = tmp_path / "wrong.png"
    write_image(picture, np.zeros((h + 8, w, 3), np.uint8))
    status = upscale.main(["--ckpt", str(path), str(picture), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and not (tmp_path / "out" / "wrong.png").exists()
    assert any(f"takes {h}x{w} LR inputs only" in line for line in err), err
