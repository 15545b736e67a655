"""Tests for drsan_jax.evaluation: scores through the whole path, both protocols, requests."""

import json
import math

import numpy as np
import pytest
from conftest import (
    NearestUpsampler,
    make_benchmark,
    nearest,
    random_params,
    tiny_model,
)

from drsan_jax import evaluation, files, inference, metrics
from drsan_jax.data import (
    BenchmarkError,
    ImageReadError,
    benchmark,
    read_image,
    write_image,
)
from drsan_jax.evaluation import EvaluationError, evaluate


def test_identical_images_score_infinite_psnr_and_ssim_one(tmp_path, lq_rgb):
    # Odd HR sizes: the extra row and column past 3 * LR are cropped away, whatever they hold.
    grey = lq_rgb[..., 1]
    hr_grey = np.full((49, 41), 7, np.uint8)
    hr_grey[:48, :39] = nearest(grey, 3)
    hr_rgb = np.full((49, 41, 3), 250, np.uint8)
    hr_rgb[:48, :39] = nearest(lq_rgb, 3)
    root = make_benchmark(tmp_path, {"Toy": {"grey.png": hr_grey, "rgb.png": hr_rgb}},
                          {3: {"Toy": {"grey.png": grey, "rgb.png": lq_rgb}}})
    for protocol in metrics.PROTOCOLS:
        for method, model in (("model", NearestUpsampler(3)), ("bicubic", None)):
            result = evaluate(model, {} if model else None, root, ["Toy"], 3, protocol,
                              method=method, progress=False)["datasets"]["Toy"]
            if method == "model":
                # The model's RGB output of a grey input is scored against grey ground truth.
                assert result["images"]["grey"] == {"psnr": math.inf, "ssim": 1.0}, protocol
                assert result["images"]["rgb"] == {"psnr": math.inf, "ssim": 1.0}, protocol
            else:
                assert result["images"]["rgb"]["psnr"] < 40


def test_known_noise(tmp_path, lq_rgb):
    # HR is the nearest-upsampled LR plus one level on every channel: under "drsan", Y differs
    # by exactly 219/255 everywhere. Grey ground truth under "matlab": one grey level.
    hr_rgb = nearest(lq_rgb, 2) + 1
    hr_grey = nearest(lq_rgb[..., 0], 2) + 1
    root = make_benchmark(tmp_path, {"Toy": {"grey.png": hr_grey, "rgb.png": hr_rgb}},
                          {2: {"Toy": {"grey.png": lq_rgb[..., 0], "rgb.png": lq_rgb}}})
    drsan = evaluate(NearestUpsampler(2), {}, root, "Toy", 2, "drsan", progress=False)
    matlab = evaluate(NearestUpsampler(2), {}, root, "Toy", 2, "matlab", progress=False)
    rgb = drsan["datasets"]["Toy"]["images"]["rgb"]
    grey = matlab["datasets"]["Toy"]["images"]["grey"]
    assert rgb["psnr"] == pytest.approx(20 * math.log10(255 / (219 / 255)), abs=1e-9)
    assert grey["psnr"] == pytest.approx(20 * math.log10(255), abs=1e-9)
    shave = (slice(2, -2), slice(2, -2))
    y_sr = metrics.rgb_to_y(nearest(lq_rgb, 2), round_to_uint8=False)[shave]
    y_hr = metrics.rgb_to_y(hr_rgb, round_to_uint8=False)[shave]
    assert rgb["ssim"] == pytest.approx(metrics.ssim(y_sr, y_hr), abs=1e-12)
    assert rgb["ssim"] < 1.0
    assert drsan["datasets"]["Toy"]["psnr"] == pytest.approx(
        (rgb["psnr"] + drsan["datasets"]["Toy"]["images"]["grey"]["psnr"]) / 2)


def test_both_protocols_from_one_inference_pass(tmp_path, monkeypatch, lq_rgb):
    # Grey and RGB ground truth, which the two protocols score differently.
    hr_rgb = nearest(lq_rgb, 2) + 1
    hr_grey = nearest(lq_rgb[..., 0], 2) + 1
    root = make_benchmark(tmp_path, {"Toy": {"grey.png": hr_grey, "rgb.png": hr_rgb}},
                          {2: {"Toy": {"grey.png": lq_rgb[..., 0], "rgb.png": lq_rgb}}})
    singles = {p: evaluate(NearestUpsampler(2), {}, root, "Toy", 2, p, progress=False)
               for p in metrics.PROJECT_PROTOCOLS}
    assert singles["drsan"]["datasets"] != singles["matlab"]["datasets"]
    predicted = []
    predict_iter = inference.Predictor.predict_iter

    def counting_predict_iter(self, images):
        for i, sr in predict_iter(self, images):
            predicted.append(i)
            yield i, sr

    monkeypatch.setattr(inference.Predictor, "predict_iter", counting_predict_iter)
    both = evaluate(NearestUpsampler(2), {}, root, "Toy", 2, "both", progress=False)
    assert sorted(predicted) == [0, 1]  # each image super-resolved once, not once per protocol
    assert both == {"protocol": "both", "results": singles}
    assert evaluation.format_table(both, per_image=True) == "\n\n".join(
        evaluation.format_table(singles[p], per_image=True) for p in ("drsan", "matlab"))


def test_results_json_and_saved_images(benchmark_dir, tmp_path):
    model = tiny_model(4)
    params = random_params(model)
    results = evaluate(model, params, benchmark_dir, ["Set5"], 4, save_images=tmp_path,
                       progress=False)
    set5 = results["datasets"]["Set5"]
    assert list(set5["images"]) == ["baby", "bird", "butterfly", "head", "woman"]
    assert set5["num_images"] == 5
    assert set5["psnr"] == pytest.approx(np.mean([s["psnr"] for s in set5["images"].values()]))
    assert set5["ssim"] == pytest.approx(np.mean([s["ssim"] for s in set5["images"].values()]))
    assert results["protocol"] == "drsan" and results["scale"] == 4
    assert results["model"]["features"] == 8 and results["model"]["variant"] is None
    assert {"jax", "flax", "numpy", "drsan_jax", "python"} <= set(results["versions"])
    json_path = tmp_path / "out" / "results.json"
    files.write_json(json_path, results)
    assert json.loads(json_path.read_text()) == results
    saved = read_image(tmp_path / "x4" / "Set5" / "bird.png")
    hr = read_image(benchmark_dir / "HR" / "Set5" / "bird.png")
    assert saved.shape == hr.shape and saved.dtype == np.uint8
    # Re-scoring the saved PNG gives the reported number: what is saved is what was scored.
    assert metrics.evaluate_pair(saved, hr, 4)[0] == set5["images"]["bird"]["psnr"]
    table = evaluation.format_table(results, per_image=True)
    assert "Set5" in table and "butterfly" in table and f"{set5['psnr']:.3f}" in table


def test_repeated_calls_reuse_programs_and_images_but_see_changes(tmp_path, monkeypatch,
                                                                   lq_rgb):
    root = make_benchmark(tmp_path, {"Toy": {"a.png": nearest(lq_rgb, 2)}},
                          {2: {"Toy": {"a.png": lq_rgb}}})
    model = tiny_model(2)
    params = random_params(model)
    first = evaluate(model, params, root, ["Toy"], 2, progress=False)
    reads = []
    monkeypatch.setattr(benchmark, "read_image", lambda p: reads.append(p) or read_image(p))
    programs = inference.compiled_programs()
    again = evaluate(model, params, root, ["Toy"], 2, progress=False)
    assert again["datasets"] == first["datasets"]
    assert inference.compiled_programs() == programs and reads == []
    write_image(root / "HR" / "Toy" / "a.png", nearest(255 - lq_rgb, 2))
    changed = evaluate(model, params, root, ["Toy"], 2, progress=False)
    assert len(reads) == 1
    assert changed["datasets"]["Toy"]["psnr"] != first["datasets"]["Toy"]["psnr"]


def test_self_ensemble_result(benchmark_dir):
    model = tiny_model(4)
    params = random_params(model)
    plain = evaluate(model, params, benchmark_dir, ["Set5"], 4, progress=False)
    ensemble = evaluate(model, params, benchmark_dir, ["Set5"], 4, self_ensemble=True,
                        progress=False)
    assert ensemble["self_ensemble"] and not plain["self_ensemble"]
    plain, ensemble = plain["datasets"]["Set5"], ensemble["datasets"]["Set5"]
    assert ensemble["images"].keys() == plain["images"].keys()
    assert ensemble["psnr"] != plain["psnr"]


def test_unreadable_image_is_named(tmp_path, lq_rgb):
    root = make_benchmark(tmp_path, {"Toy": {"a.png": nearest(lq_rgb, 2)}})
    (root / "HR" / "Toy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match=r"HR/Toy/broken\.png"):
        evaluate(None, None, root, ["Toy"], 2, method="bicubic", progress=False)


def test_request_errors(benchmark_dir):
    # Every dataset is found and paired before the first image is computed.
    with pytest.raises(BenchmarkError, match=r"'Urban100' not found .*found: Set5, Set14, B100"):
        evaluate(None, None, benchmark_dir, ["Set5", "Urban100"], 2, method="bicubic")
    model = tiny_model(2)
    with pytest.raises(EvaluationError, match="scale 3 disagrees with the model, which is x2"):
        evaluate(model, {}, benchmark_dir, ["Set5"], 3)
    for kwargs, match in [
        ({"protocol": "rgb"}, r"unknown protocol 'rgb'; expected .*'matlab', 'lesrcnn', 'ntire', 'both'\)"),
        ({"method": "nearest"}, "unknown method 'nearest'"),
        ({"method": "bicubic", "self_ensemble": True}, "method 'model' only"),
        ({"method": "model"}, "needs a model"),
    ]:
        with pytest.raises(EvaluationError, match=match):
            evaluate(None, None, benchmark_dir, ["Set5"], 2, **{"method": "bicubic", **kwargs})
