"""Tests for the TFLite (LiteRT) export of drsan_jax.export, run on the LiteRT interpreter.

They need the [tflite] extra (TensorFlow and ai-edge-litert), which is not in [dev]: CI installs
it and runs this file in a step of its own (.ci/run). Without TensorFlow the tests are skipped
on a developer's machine and fail under CI, where a skip would hide that nothing was checked.
"""

import json
import os

import numpy as np
import pytest
from conftest import random_params
from export_fixtures import (
    MODELS,
    assert_matches_jax,
    from_layout,
    jax_reference,
    load_exported_model,
    lq_batches,
    to_layout,
)

from drsan_jax import export, model_card
from drsan_jax.models import build_model, schema
from drsan_jax.weights import compact, loading


def _require(module: str):
    try:
        return pytest.importorskip(module,
                                   reason='the TFLite tests need pip install -e ".[tflite]"')
    except pytest.skip.Exception:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f'{module} is missing under CI: install the [tflite] extra first')
        raise


_require("tensorflow")
Interpreter = _require("ai_edge_litert.interpreter").Interpreter

CASES = [("nhwc", "fp32"), ("nchw", "fp32"), ("nhwc", "fp16")]


@pytest.fixture(scope="module", params=MODELS)
def inference_model(request):
    return load_exported_model(request.param)


@pytest.fixture(scope="module")
def exported(inference_model, tmp_path_factory):
    """(layout, precision) -> the exported .tflite file, exported on first use."""
    folder = tmp_path_factory.mktemp("tflite")
    files = {}

    def get(layout: str, precision: str):
        if (layout, precision) not in files:
            path = folder / f"model-{layout}-{precision}.tflite"
            export.export(inference_model, "tflite", path, layout=layout, precision=precision)
            files[layout, precision] = path
        return files[layout, precision]

    return get


def run_tflite(path, x: np.ndarray) -> np.ndarray:
    """One batch through the LiteRT interpreter, resized to the batch's shape."""
    interpreter = Interpreter(model_path=str(path))
    (given,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("layout,precision", CASES)
def test_tflite_file_equals_the_jax_model(layout, precision, exported, inference_model,
                                          benchmark_dir):
    path = exported(layout, precision)
    for name, lq in lq_batches(benchmark_dir, inference_model.scale).items():
        got = from_layout(run_tflite(path, to_layout(lq, layout)), layout)
        numbers = assert_matches_jax(got, jax_reference(inference_model, lq), precision,
                                     inference_model.config["family"])
        print(f"tflite {layout} {precision} {name}: {numbers}")


def test_tflite_takes_any_size_and_has_a_card(exported, inference_model):
    path = exported("nhwc", "fp32")
    (given,) = Interpreter(model_path=str(path)).get_input_details()
    assert list(given["shape_signature"]) == [-1, -1, -1, 3]
    card = json.loads(model_card.card_path(path).read_text())
    assert card["resources"][0]["type"] == "tflite"
    assert "built-in operators only" in card["format"]["schema"]
    assert card["input"]["shape"] == ["batch", "height", "width", 3]
    half = exported("nhwc", "fp16")
    (given,) = Interpreter(model_path=str(half)).get_input_details()
    assert list(given["shape_signature"]) == [-1, -1, -1, 3]
    card = json.loads(model_card.card_path(half).read_text())
    assert card["precision"]["weights"] == "float16" and card["input"]["dtype"] == "float32"
    assert half.stat().st_size < 0.65 * path.stat().st_size  # float16 weights


@pytest.mark.parametrize("name", ["smfanet", "safmn-ntire"])
def test_fixed_size_tflite_of_a_whole_image_family(name, tmp_path):
    # Their pooling grid follows the image size: with --input_size they export, at that size.
    model = build_model(name, 2, features=8, num_blocks=1)
    weights = compact.write(tmp_path / "tiny.npz", random_params(model), schema.config_of(model),
                            storage_dtype="float32")
    loaded = loading.load_model(weights)
    with pytest.raises(export.ExportError, match=r"--format tflite cannot express.*--input_size"):
        export.export(loaded, "tflite", tmp_path / "any.tflite")
    path = tmp_path / "fixed.tflite"
    export.export(loaded, "tflite", path, input_size=(40, 32))
    (given,) = Interpreter(model_path=str(path)).get_input_details()
    assert list(given["shape_signature"]) == [1, 40, 32, 3]  # all static (export.py)
    lq = np.random.default_rng(0).random((1, 40, 32, 3), dtype=np.float32)
    assert_matches_jax(run_tflite(path, lq), jax_reference(loaded, lq), "fp32")
    card = json.loads(model_card.card_path(path).read_text())
    assert card["input"]["shape"] == [1, 40, 32, 3] and card["output"]["shape"] == [1, 80, 64, 3]
    assert card["input"]["note"].endswith("(exported with --input_size), batch 1")
