"""Tests of drsan_jax.weights.loading and drsan_jax.weights.compact: one loader for names, folders and files."""

import jax
import numpy as np
import pytest

from drsan_jax.models import build_model, config_of, init_params
from drsan_jax.weights import checkpoints, compact, loading
from drsan_jax.weights.loaded import WeightsError, to_params


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def multi_scale(tmp_path_factory):
    """A small LESRCNN-S saved as a compact float32 file."""
    model = build_model("lesrcnn-s", 2, features=4)
    params = init_params(model, jax.random.key(0))
    path = tmp_path_factory.mktemp("compact") / "lesrcnn_s.npz"
    compact.write(path, params, config_of(model), storage_dtype="float32", step=5,
                  extra={"source": "test"})
    return path, model, params


def test_compact_file_round_trip_and_scale_choice(multi_scale):
    path, model, params = multi_scale
    loaded = loading.load_model(path)
    assert (loaded.scale, loaded.scales, loaded.step) == (2, (2, 3, 4), 5)
    assert loaded.name == "lesrcnn (features=4 multi_scale=True)"
    assert loaded.extra == {"source": "test"} and loaded.model == model
    _assert_trees_equal(loaded.params, params)
    at_three = loading.load_model(path, scale=3)
    assert at_three.scale == 3 and at_three.model == model.clone(scale=3)
    x = np.full((1, 5, 4, 3), 0.5, np.float32)
    assert at_three.model.apply({"params": at_three.params}, x).shape == (1, 15, 12, 3)


def test_float16_storage_is_half_the_size_and_close(tmp_path):
    model = build_model("edsr-baseline", 2, features=8, num_blocks=1)
    params = init_params(model, jax.random.key(1))
    half = compact.write(tmp_path / "h.npz", params, config_of(model))
    full = compact.write(tmp_path / "f.npz", params, config_of(model), storage_dtype="float32")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = loading.load_model(half)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_load_errors_name_the_file_and_what_was_expected(tmp_path, multi_scale):
    path, _, _ = multi_scale
    with pytest.raises(FileNotFoundError, match="nothing: no such file or folder; expected a "
                                                "shipped model's name"):
        loading.load_model(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not a model file drsan-jax reads"):
        loading.load_model(tmp_path / "notes.txt")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(WeightsError, match="broken.npz: not a readable drsan-jax"):
        loading.load_model(tmp_path / "broken.npz")
    bare = tmp_path / "bare.npz"
    bare.write_bytes(compact.encode({"a": np.zeros(2)}))
    with pytest.raises(WeightsError, match="bare.npz: holds no model description"):
        loading.load_model(bare)
    single = loading.load_model("32s-x2")
    with pytest.raises(ValueError, match="is a drsan-32s x2 model; it cannot run at x3"):
        single.at_scale(3)
    flat, meta = compact.read(path)
    flat.pop("conv1/kernel")
    with pytest.raises(WeightsError, match=r"missing \['conv1/kernel'\]"):
        to_params(flat, jax.eval_shape(lambda: init_params(
            build_model("lesrcnn-s", 2, features=4), jax.random.key(0))), "x")


def _tampered_npz(path, source, key, value):
    """A copy of a compact file with one array replaced, written the way np.savez does."""
    with np.load(source, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays[key] = value
    np.savez(path, **arrays)
    return path


def test_non_finite_or_integer_weights_are_refused_naming_the_array(tmp_path, multi_scale):
    path, _, _ = multi_scale
    flat, _ = compact.read(path)
    kernel = flat["conv1/kernel"]
    nan = kernel.copy()
    nan.flat[0] = np.nan
    with pytest.raises(WeightsError, match="conv1/kernel holds NaN or infinite values"):
        loading.load_model(_tampered_npz(tmp_path / "nan.npz", path, "conv1/kernel", nan))
    inf = kernel.astype(np.float32)
    inf.flat[-1] = np.inf
    with pytest.raises(WeightsError, match="conv1/kernel holds NaN or infinite values"):
        loading.load_model(_tampered_npz(tmp_path / "inf.npz", path, "conv1/kernel", inf))
    ints = np.ones(kernel.shape, np.int8)
    with pytest.raises(WeightsError, match="conv1/kernel holds int8 values"):
        loading.load_model(_tampered_npz(tmp_path / "int8.npz", path, "conv1/kernel", ints))
    assert loading.load_model(_tampered_npz(tmp_path / "ok.npz", path, "conv1/kernel", kernel))


def test_a_checkpoint_with_an_infinite_weight_is_refused(tmp_path):
    model = build_model("lesrcnn", 2, features=4)
    params = jax.tree.map(np.asarray, init_params(model, jax.random.key(0)))
    params["conv1"]["kernel"] = params["conv1"]["kernel"].copy()
    params["conv1"]["kernel"].flat[3] = -np.inf
    ckpt = checkpoints.save_params_for_inference(tmp_path / "ckpt", config_of(model), params)
    with pytest.raises(WeightsError, match=r"ckpt/params: conv1/kernel holds NaN or infinite"):
        loading.load_model(ckpt)
