"""Published PyTorch weights through the whole project: mapping, golden scores, convert, errors.

The LESRCNN authors' released x2/x3/x4 checkpoints (shared data, never committed) must score
their paper's table under their own scoring; their mapped network must equal a forward pass
written here from docs/networks/lesrcnn.md on the raw state dict. EDSR and MDSR have no released files here:
state dicts under the official code's key names (docs/networks/edsr_mdsr.md) are made up in the test, and an
independent forward pass at the authors' [0, 255] range checks the mapping and the bias scaling.
"""

import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_torch_io import safetensors_bytes

from drsan_jax import convert, evaluation
from drsan_jax.data import read_image
from drsan_jax.weights import loading, torch_import, torch_io

MEAN = np.array([0.4488, 0.4371, 0.4040])
# docs/networks/lesrcnn.md: published LESRCNN PSNR / SSIM (Set5, Set14, B100).
PUBLISHED = {
    2: {"Set5": (37.65, 0.9586), "Set14": (33.32, 0.9148), "B100": (31.95, 0.8964)},
    3: {"Set5": (33.93, 0.9231), "Set14": (30.12, 0.8380), "B100": (28.91, 0.8005)},
    4: {"Set5": (31.88, 0.8903), "Set14": (28.44, 0.7772), "B100": (27.45, 0.7313)},
}


@pytest.fixture(scope="module")
def lesrcnn_dir(shared_data):
    return shared_data / "weights" / "lesrcnn"


# --- An independent forward pass, from the specification, on PyTorch-layout weights ----------

def _conv(x, weight, bias=None):
    """PyTorch's Conv2d (NCHW, OIHW, 'same' padding), stride 1."""
    pad = weight.shape[-1] // 2
    y = jax.lax.conv_general_dilated(
        x, weight, (1, 1), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST)
    return y if bias is None else y + bias[None, :, None, None]


def _pixel_shuffle(x, s):
    """PyTorch's PixelShuffle: out[c, h*s+i, w*s+j] = in[c*s*s + i*s + j, h, w]."""
    b, cs, h, w = x.shape
    c = cs // (s * s)
    return x.reshape(b, c, s, s, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(b, c, h * s, w * s)


def _upsample(x, state, prefix, scale):
    stages = [(0, 2), (2, 2)] if scale == 4 else [(0, scale)]
    for index, s in stages:
        x = _pixel_shuffle(_conv(x, state[f"{prefix}.{index}.weight"],
                                 state[f"{prefix}.{index}.bias"]), s)
    return x


def lesrcnn_reference(state, lq_nhwc, scale):
    """docs/networks/lesrcnn.md, written out on the raw state dict."""
    relu = jax.nn.relu
    x = jnp.transpose(lq_nhwc, (0, 3, 1, 2)) - MEAN[None, :, None, None]
    g = relu(_conv(x, state["conv1.0.weight"]))
    h = g
    for i in range(8):
        t = relu(_conv(h, state[f"conv{2 + 2 * i}.0.weight"]))
        h = relu(h + _conv(t, state[f"conv{3 + 2 * i}.0.weight"]))
    u = relu(_upsample(h, state, "upsample.up.body", scale)
             + _upsample(g, state, "upsample.up.body", scale))
    for j in range(1, 5):
        u = relu(_conv(u, state[f"conv17_{j}.0.weight"]))
    out = _conv(u, state["conv18.0.weight"]) + MEAN[None, :, None, None]
    return jnp.transpose(out, (0, 2, 3, 1))


@pytest.mark.parametrize("scale", (2, 4))
def test_lesrcnn_import_equals_the_specification(lesrcnn_dir, benchmark_dir, scale):
    path = lesrcnn_dir / f"lesrcnn_x{scale}.pth"
    imported = loading.load_model(path)
    assert (imported.name, imported.scale) == ("lesrcnn", scale)
    lq = read_image(benchmark_dir / f"x{scale}" / "Set5" / "butterfly.png")[:23, :30]
    lq = (lq.astype(np.float32) / 255)[None]
    state = torch_io.read_state_dict(path)
    with jax.default_matmul_precision("highest"):
        ours = imported.model.apply({"params": imported.params}, lq)
    np.testing.assert_allclose(ours, lesrcnn_reference(state, lq, scale), atol=1e-5)


def _assert_published(lesrcnn_dir, benchmark_dir, scale, datasets):
    results = evaluation.evaluate_and_report(
        ckpt=lesrcnn_dir / f"lesrcnn_x{scale}.pth", datasets=list(datasets),
        data_dir=benchmark_dir, protocol="lesrcnn", progress=False)
    assert results["scale"] == scale and results["model"]["name"] == "lesrcnn"
    for name in datasets:
        psnr, ssim = PUBLISHED[scale][name]
        got = results["datasets"][name]
        assert got["psnr"] == pytest.approx(psnr, abs=0.02), (name, got)
        assert got["ssim"] == pytest.approx(ssim, abs=0.002), (name, got)


@pytest.mark.slow
@pytest.mark.parametrize("scale", (2, 3, 4))
def test_released_lesrcnn_reproduces_the_published_set5_and_set14(lesrcnn_dir, benchmark_dir,
                                                                   scale):
    _assert_published(lesrcnn_dir, benchmark_dir, scale, ("Set5", "Set14"))


@pytest.mark.long
@pytest.mark.parametrize("scale", (2, 3, 4))
def test_released_lesrcnn_reproduces_the_published_b100(lesrcnn_dir, benchmark_dir, scale):
    # About 100 s a scale on 2 cores: a step of its own in .ci/run (pytest -m long).
    _assert_published(lesrcnn_dir, benchmark_dir, scale, ("B100",))


def test_convert_round_trip_is_exact(lesrcnn_dir, tmp_path, capsys):
    out = tmp_path / "lesrcnn_x3.npz"
    assert convert.main([str(lesrcnn_dir / "lesrcnn_x3.pth"), str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    direct, again = loading.load_model(lesrcnn_dir / "lesrcnn_x3.pth"), loading.load_model(out)
    assert again.config == direct.config and again.extra["converted_from"].endswith(".pth")
    for a, b in zip(jax.tree.leaves(direct.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lq = np.random.default_rng(0).uniform(size=(1, 9, 11, 3)).astype(np.float32)
    np.testing.assert_array_equal(direct.model.apply({"params": direct.params}, lq),
                                  again.model.apply({"params": again.params}, lq))


# --- EDSR and MDSR: made-up weights under the official key names ------------------------------

def _edsr_state(rng, features, blocks, scale, mdsr=False):
    """An official-code state dict (docs/networks/edsr_mdsr.md), trained at range 255."""
    def conv(name, cin, cout, k=3):
        state[f"{name}.weight"] = rng.normal(0, 0.5 / np.sqrt(cin * k * k),
                                             (cout, cin, k, k)).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 5, cout).astype(np.float32)  # range-255 biases

    state = {"sub_mean.weight": np.eye(3, dtype=np.float32)[:, :, None, None],
             "sub_mean.bias": (-255 * MEAN).astype(np.float32),
             "add_mean.weight": np.eye(3, dtype=np.float32)[:, :, None, None],
             "add_mean.bias": (255 * MEAN).astype(np.float32)}
    conv("head.0", 3, features)
    for b in range(blocks):
        conv(f"body.{b}.body.0", features, features)
        conv(f"body.{b}.body.2", features, features)
    conv(f"body.{blocks}", features, features)
    if mdsr:
        for j, s in enumerate((2, 3, 4)):
            for k in (0, 1):
                conv(f"pre_process.{j}.{k}.body.0", features, features, 5)
                conv(f"pre_process.{j}.{k}.body.2", features, features, 5)
            for i in ((0, 2) if s == 4 else (0,)):
                conv(f"upsample.{j}.{i}", features, features * (4 if s == 4 else s * s))
        conv("tail.0", features, 3)
    else:
        for i in ((0, 2) if scale == 4 else (0,)):
            conv(f"tail.0.{i}", features, features * (4 if scale == 4 else scale * scale))
        conv("tail.1", features, 3)
    return state


def edsr_reference(state, lq255, scale, blocks, mdsr=False):
    """docs/networks/edsr_mdsr.md on the raw state dict, at the authors' [0, 255] range."""
    def block(h, prefix):
        t = jax.nn.relu(_conv(h, state[f"{prefix}.0.weight"], state[f"{prefix}.0.bias"]))
        return h + _conv(t, state[f"{prefix}.2.weight"], state[f"{prefix}.2.bias"])

    x = jnp.transpose(lq255, (0, 3, 1, 2)) + state["sub_mean.bias"][None, :, None, None]
    h = _conv(x, state["head.0.weight"], state["head.0.bias"])
    j = (2, 3, 4).index(scale)
    skip = h
    if mdsr:
        for k in (0, 1):
            h = block(h, f"pre_process.{j}.{k}.body")
        skip = h
    for b in range(blocks):
        h = block(h, f"body.{b}.body")
    h = _conv(h, state[f"body.{blocks}.weight"], state[f"body.{blocks}.bias"]) + skip
    if mdsr:
        h = _upsample(h, state, f"upsample.{j}", scale)
        out = _conv(h, state["tail.0.weight"], state["tail.0.bias"])
    else:
        h = _upsample(h, state, "tail.0", scale)
        out = _conv(h, state["tail.1.weight"], state["tail.1.bias"])
    out = out + state["add_mean.bias"][None, :, None, None]
    return jnp.transpose(out, (0, 2, 3, 1))


@pytest.mark.parametrize("mdsr,scale", [(False, 3), (False, 4), (True, 3)])
def test_edsr_family_import_matches_the_official_network_at_range_255(tmp_path, mdsr, scale):
    rng = np.random.default_rng(scale)
    state = _edsr_state(rng, 8, 2, scale, mdsr)
    path = tmp_path / "edsr.safetensors"
    path.write_bytes(safetensors_bytes(state))
    imported = loading.load_model(path, scale=scale)
    assert imported.config["family"] == ("mdsr" if mdsr else "edsr")
    assert imported.scale == scale and imported.scales == ((2, 3, 4) if mdsr else (scale,))
    lq = rng.uniform(size=(2, 7, 6, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        ours = imported.model.apply({"params": imported.params}, lq)
    expected = edsr_reference(state, lq * 255, scale, 2, mdsr) / 255
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_edsr_baseline_sizes_are_recognised_with_their_residual_scaling(tmp_path):
    state = _edsr_state(np.random.default_rng(0), 64, 16, 2)
    path = tmp_path / "edsr_baseline_x2.safetensors"
    path.write_bytes(safetensors_bytes(state))
    imported = loading.load_model(path)
    assert imported.name == "edsr-baseline" and imported.config["res_scale"] == 1.0


# --- Bad input: one line, exit 2, nothing written ---------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def _bad_files(tmp_path, lesrcnn_dir):
    good = (lesrcnn_dir / "lesrcnn_x2.pth").read_bytes()
    state = torch_io.read_state_dict(lesrcnn_dir / "lesrcnn_x2.pth")
    files = {
        "empty": (b"", "empty"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "zip": (_zip_bytes(), "not a PyTorch"),
        "missing": (safetensors_bytes({k: v for k, v in state.items()
                                       if k != "conv5.0.weight"}), "missing ['conv5/kernel']"),
        "extra": (safetensors_bytes({**state, "conv99.0.bias": np.zeros(3, np.float32)}),
                  "does not have: conv99.0.bias"),
        "shape": (safetensors_bytes({**state, "conv5.0.weight": state["conv5.0.weight"][:32]}),
                  "conv5/kernel (1, 1, 64, 32) (expected (1, 1, 64, 64))"),
        "evil": (pickle.dumps({"w": _Evil(tmp_path / "pwned")}, protocol=2),
                 "refused to load global"),
        "unknown": (safetensors_bytes({"encoder.weight": np.zeros((4, 3, 3, 3), np.float32)}),
                    "a state dict of no supported architecture; found keys encoder.weight"),
    }
    return files


def _zip_bytes():
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("readme.txt", "hello")
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["empty", "truncated", "zip", "missing", "extra", "shape",
                                  "evil", "unknown"])
def test_bad_weight_files_are_one_line_and_write_nothing(case, tmp_path, lesrcnn_dir):
    data, message = _bad_files(tmp_path, lesrcnn_dir)[case]
    suffix = ".safetensors" if data[:1] not in (b"\x80", b"PK", b"") else ".pth"
    source = tmp_path / f"{case}{suffix}"
    source.write_bytes(data)
    out = tmp_path / "out.npz"
    result = subprocess.run([sys.executable, "-m", "drsan_jax.convert", str(source), str(out)],
                            capture_output=True, text=True, env=_env())
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m drsan_jax.convert: error: ")
    assert str(source) in lines[0] and message in lines[0], lines[0]
    assert not out.exists() and not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_convert_refuses_to_overwrite_and_a_forced_family_must_fit(tmp_path, lesrcnn_dir):
    existing = tmp_path / "mine.npz"
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exit_:
        convert.main([str(lesrcnn_dir / "lesrcnn_x2.pth"), str(existing)])
    assert exit_.value.code == 2 and existing.read_bytes() == b"keep me"
    with pytest.raises(torch_import.WeightImportError,
                       match=r"read as edsr, but key 'head.0.weight' is missing"):
        loading.load_model(lesrcnn_dir / "lesrcnn_x2.pth", model="edsr")


def _env():
    import os
    return {k: v for k, v in os.environ.items()} | {"DRSAN_JAX_CACHE_DIR": "none",
                                                    "DRSAN_JAX_CPU_DEVICES": "1"}
