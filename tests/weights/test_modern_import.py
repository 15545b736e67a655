"""The SMFANet, SPAN and SAFMN authors' released files, imported and checked layer by layer.

Every file in shared data (never committed) is read by `drsan_jax.load` with its family,
variant and scale recognised from the keys, and the converted model must equal a forward pass
written here in float64 NumPy from the networks' specification (docs/networks/smfanet.md,
span.md, safmn.md) on the raw PyTorch state dict, to 1e-5, on an odd-sized crop whose sides
are not multiples of the pooling factors (uneven, overlapping adaptive-pooling bins).
"""

import math

import jax
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import erf
from test_torch_io import safetensors_bytes

import drsan_jax
from drsan_jax.data import read_image
from drsan_jax.weights import torch_io

SMFANET = [f"SMFANet{plus}_{data}_100w_x{s}SR.pth" for plus in ("", "_plus")
           for data in ("DF2K", "DIV2K") for s in (2, 3, 4)]
# file -> (folder, model name, scale)
FILES = {
    **{f: ("smfanet", "smfanet-plus" if "_plus" in f else "smfanet", int(f[-7])) for f in SMFANET},
    "team38_span_ch28_slim.pth": ("span", "span", 4),
    "team39_spantiny_ch26_slim.pth": ("span", "span-tiny", 4),
    "team15_SAFMN.pth": ("safmn", "safmn-ntire", 4),
}
# A few files compile in the default run; the rest are the same code at other sizes.
QUICK = ("SMFANet_DF2K_100w_x3SR.pth", "SMFANet_plus_DIV2K_100w_x2SR.pth",
         "team38_span_ch28_slim.pth", "team15_SAFMN.pth")
SPAN_MEAN = np.array([0.4488, 0.4371, 0.4040], np.float32).astype(np.float64)  # float32 values


# --- PyTorch's operators on (C, H, W) float64 arrays ----------------------------------------

def conv(x, weight, bias=None, groups=1, pad=None):
    """nn.Conv2d, stride 1, zero padding k // 2 unless given; weight (O, I / groups, k, k)."""
    k = weight.shape[-1]
    pad = k // 2 if pad is None else pad
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    c, o = x.shape[0], weight.shape[0]
    windows = sliding_window_view(x, (k, k), axis=(1, 2))  # (C, H', W', k, k)
    windows = windows.reshape(groups, c // groups, *windows.shape[1:])
    w = weight.reshape(groups, o // groups, *weight.shape[1:])
    y = np.einsum("gchwij,gocij->gohw", windows, w).reshape(o, *windows.shape[2:4])
    return y if bias is None else y + bias[:, None, None]


def pixel_shuffle(x, s):
    c = x.shape[0] // (s * s)
    h, w = x.shape[1:]
    return x.reshape(c, s, s, h, w).transpose(0, 3, 1, 4, 2).reshape(c, h * s, w * s)


def gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def silu(x):
    return x / (1 + np.exp(-x))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def adaptive_max_pool(x, out_h, out_w):
    """Bin i of n -> m covers floor(i n / m) .. ceil((i + 1) n / m) - 1."""
    _, h, w = x.shape
    out = np.empty((x.shape[0], out_h, out_w))
    for i in range(out_h):
        r0, r1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            c0, c1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
            out[:, i, j] = x[:, r0:r1, c0:c1].max(axis=(1, 2))
    return out


def nearest(x, h, w):
    rows = [math.floor(r * x.shape[1] / h) for r in range(h)]
    cols = [math.floor(c * x.shape[2] / w) for c in range(w)]
    return x[:, rows][:, :, cols]


def bilinear(x, s):
    """align_corners=False: source (d + 0.5) / s - 0.5, clamped at 0 and at the last pixel."""
    def axis(n):
        m = np.zeros((n * s, n))
        for d in range(n * s):
            src = max((d + 0.5) / s - 0.5, 0.0)
            i = math.floor(src)
            m[d, i] += 1 - (src - i)
            m[d, min(i + 1, n - 1)] += src - i
        return m
    return np.einsum("rh,chw,qw->crq", axis(x.shape[1]), x, axis(x.shape[2]))


# --- The three networks, as specified -------------------------------------------------------

def smfanet(state, x, scale):
    def p(name):
        return state[name].astype(np.float64)

    def c(prefix, t, **kw):
        return conv(t, p(f"{prefix}.weight"), p(f"{prefix}.bias"), **kw)

    f0 = c("to_feat", x)
    h = f0
    blocks = len({k.split(".")[1] for k in state if k.startswith("feats.")})
    ch = f0.shape[0]
    for i in range(blocks):
        b = f"feats.{i}"
        z = h / np.maximum(np.sqrt((h * h).sum(0, keepdims=True)), 1e-12)
        y, v = np.split(c(f"{b}.smfa.linear_0", z), 2)
        _, hh, ww = v.shape
        pooled = c(f"{b}.smfa.dw_conv", adaptive_max_pool(v, hh // 8, ww // 8), groups=ch)
        var = v.reshape(ch, -1).var(axis=1, ddof=1)[:, None, None]
        m = gelu(c(f"{b}.smfa.linear_1", p(f"{b}.smfa.alpha")[0] * pooled
                   + p(f"{b}.smfa.belt")[0] * var))
        v_l = v * nearest(m, hh, ww)
        t = c(f"{b}.smfa.lde.conv_0.0", y, groups=ch)
        t = c(f"{b}.smfa.lde.conv_1", gelu(c(f"{b}.smfa.lde.conv_0.1", t)))
        h = c(f"{b}.smfa.linear_2", v_l + t) + h
        z = h / np.maximum(np.sqrt((h * h).sum(0, keepdims=True)), 1e-12)
        u = gelu(c(f"{b}.pcfn.conv_0", z))
        q = 2 * ch // 4
        u = np.concatenate([gelu(c(f"{b}.pcfn.conv_1", u[:q])), u[q:]])
        h = c(f"{b}.pcfn.conv_2", u) + h
    return pixel_shuffle(c("to_img.0", h + f0), scale)


def span(state, x, scale):
    def c(prefix, t):
        return conv(t, state[f"{prefix}.weight"].astype(np.float64),
                    state[f"{prefix}.bias"].astype(np.float64))

    x = (x - SPAN_MEAN[:, None, None]) * 255.0
    f0 = c("conv_1.eval_conv", x)
    t, outs = f0, []
    for i in range(1, 7):
        a1 = silu(c(f"block_{i}.c1_r.eval_conv", t))  # in place: the activated tensor
        a2 = silu(c(f"block_{i}.c2_r.eval_conv", a1))
        o3 = c(f"block_{i}.c3_r.eval_conv", a2)
        t = (o3 + t) * (sigmoid(o3) - 0.5)
        outs.append((t, a1))
    t6 = c("conv_2.eval_conv", t)
    u = c("conv_cat", np.concatenate([f0, t6, outs[0][0], outs[5][1]]))
    return pixel_shuffle(c("upsampler.0", u), scale)


def safmn_ntire(state, x, scale):
    def w(name):
        return state[f"{name}.weight"].astype(np.float64)

    f = conv(x, w("to_feat"), state["to_feat.bias"].astype(np.float64))
    gamma, beta = (state[f"norm.{k}"].astype(np.float64)[0] for k in ("gamma", "beta"))
    gx = np.sqrt((f * f).sum(axis=(1, 2), keepdims=True))
    h = gamma * (f * (gx / (gx.mean() + 1e-6))) + beta + f
    ch, part = h.shape[0], h.shape[0] // 4
    blocks = len({k.split(".")[1] for k in state if k.startswith("feats.")})
    for i in range(blocks):
        b = f"feats.{i}"
        _, hh, ww = h.shape
        levels = [conv(h[:part], w(f"{b}.safm.mfr.0"), groups=part)]
        for j in (1, 2, 3):
            pooled = adaptive_max_pool(h[j * part:(j + 1) * part], hh // 2 ** (j + 1),
                                       ww // 2 ** (j + 1))
            levels.append(nearest(conv(pooled, w(f"{b}.safm.mfr.{j}"), groups=part), hh, ww))
        h = gelu(conv(np.concatenate(levels), w(f"{b}.safm.aggr"))) * h + h
        h = conv(gelu(conv(h, w(f"{b}.ccm.ccm.0"))), w(f"{b}.ccm.ccm.2")) + h
    del ch
    out = pixel_shuffle(conv(h, w("to_img.0"), state["to_img.0.bias"].astype(np.float64)),
                        scale)
    return out + bilinear(x, scale)


REFERENCES = {"smfanet": smfanet, "span": span, "safmn": safmn_ntire}


@pytest.mark.parametrize("name", [pytest.param(f, marks=() if f in QUICK else pytest.mark.slow)
                                  for f in FILES])
def test_released_file_equals_the_specification(shared_data, benchmark_dir, name):
    folder, model_name, scale = FILES[name]
    path = shared_data / "weights" / folder / name
    upscaler = drsan_jax.load(path)
    assert (upscaler.name, upscaler.scale) == (model_name, scale)
    imported = upscaler.inference_model
    # 21 x 19: not multiples of 8 or 16, so SMFANet's and SAFMN's pooling bins are uneven.
    lq = read_image(benchmark_dir / f"x{scale}" / "Set5" / "butterfly.png")[:21, 5:24]
    lq = lq.astype(np.float32) / 255
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(imported.model.apply({"params": imported.params}, lq[None]))[0]
    state = torch_io.read_state_dict(path)
    reference = REFERENCES[folder](state, lq.transpose(2, 0, 1).astype(np.float64), scale)
    assert ours.shape == (21 * scale, 19 * scale, 3)
    np.testing.assert_allclose(ours, reference.transpose(1, 2, 0), atol=1e-5)


def _training_span_state(features, scale, rng):
    """A made-up training checkpoint under the authors' keys: every Conv3XC's branches, and a
    stale `eval_conv` (zeros) as an unrefreshed checkpoint may hold."""
    state = {}

    def tensor(*shape):
        return rng.normal(scale=0.2, size=shape).astype(np.float32)

    blocks = [f"block_{b}.c{j}_r" for b in range(1, 7) for j in (1, 2, 3)]
    convs = ["conv_1", *blocks, "conv_2"]
    for name in convs:
        cin = 3 if name == "conv_1" else features
        for branch, shape in (("sk", (features, cin, 1, 1)), ("conv.0", (2 * cin, cin, 1, 1)),
                              ("conv.1", (2 * features, 2 * cin, 3, 3)),
                              ("conv.2", (features, 2 * features, 1, 1))):
            state[f"{name}.{branch}.weight"] = tensor(*shape)
            state[f"{name}.{branch}.bias"] = tensor(shape[0])
        state[f"{name}.eval_conv.weight"] = np.zeros((features, cin, 3, 3), np.float32)
        state[f"{name}.eval_conv.bias"] = np.zeros(features, np.float32)
    state["conv_cat.weight"] = tensor(features, 4 * features, 1, 1)
    state["conv_cat.bias"] = tensor(features)
    state["upsampler.0.weight"] = tensor(3 * scale * scale, features, 3, 3)
    state["upsampler.0.bias"] = tensor(3 * scale * scale)
    return state, convs


def _fold_as_specified(state, name):
    """docs/networks/span.md's fold, in PyTorch's layout:
    W[o, i] = sum_m sum_n w3[o, m] w2[m, n] w1[n, i] (+ w_sk[o, i] at the centre tap),
    b[o] = sum_m w3[o, m] (b2[m] + sum_n b1[n] sum_taps w2[m, n]) + b3[o] + b_sk[o]."""
    f = {k: state[f"{name}.{k}"].astype(np.float64) for k in
         ("sk.weight", "sk.bias", "conv.0.weight", "conv.0.bias", "conv.1.weight",
          "conv.1.bias", "conv.2.weight", "conv.2.bias")}
    w1, w3 = f["conv.0.weight"][:, :, 0, 0], f["conv.2.weight"][:, :, 0, 0]
    weight = np.einsum("om,mnhw,ni->oihw", w3, f["conv.1.weight"], w1)
    weight[:, :, 1, 1] += f["sk.weight"][:, :, 0, 0]
    inner = f["conv.1.bias"] + np.einsum("n,mnhw->m", f["conv.0.bias"], f["conv.1.weight"])
    return weight, w3 @ inner + f["conv.2.bias"] + f["sk.bias"]


def test_a_span_training_checkpoint_imports_as_its_branches(tmp_path):
    rng = np.random.default_rng(0)
    state, convs = _training_span_state(features=8, scale=3, rng=rng)
    path = tmp_path / "spanx3_ch8.safetensors"
    path.write_bytes(safetensors_bytes(state))
    imported = drsan_jax.load(path).inference_model
    assert imported.config["reparam"] and imported.config["features"] == 8
    assert (imported.name, imported.scale) == ("span (features=8)", 3)
    lq = rng.uniform(size=(11, 9, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(imported.model.apply({"params": imported.params}, lq[None]))[0]
    folded = dict(state)
    for name in convs:
        folded[f"{name}.eval_conv.weight"], folded[f"{name}.eval_conv.bias"] = (
            _fold_as_specified(state, name))
    reference = span(folded, lq.transpose(2, 0, 1).astype(np.float64), 3).transpose(1, 2, 0)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6 * np.abs(reference).max())


def safmn_iccv(state, x, scale):
    """docs/networks/safmn.md, the ICCV network: LayerNorms, biases, pooling by 2, 4, 8."""
    def c(prefix, t, **kw):
        return conv(t, state[f"{prefix}.weight"].astype(np.float64),
                    state[f"{prefix}.bias"].astype(np.float64), **kw)

    def layer_norm(prefix, t):
        mean = t.mean(axis=0, keepdims=True)
        var = ((t - mean) ** 2).mean(axis=0, keepdims=True)
        return ((t - mean) / np.sqrt(var + 1e-6) * state[f"{prefix}.weight"][:, None, None]
                + state[f"{prefix}.bias"][:, None, None])

    f0 = c("to_feat", x)
    h = f0
    part = h.shape[0] // 4
    blocks = len({k.split(".")[1] for k in state if k.startswith("feats.")})
    for i in range(blocks):
        b = f"feats.{i}"
        z = layer_norm(f"{b}.norm1", h)
        _, hh, ww = z.shape
        levels = [c(f"{b}.safm.mfr.0", z[:part], groups=part)]
        for j in (1, 2, 3):
            pooled = adaptive_max_pool(z[j * part:(j + 1) * part], hh // 2 ** j, ww // 2 ** j)
            levels.append(nearest(c(f"{b}.safm.mfr.{j}", pooled, groups=part), hh, ww))
        h = gelu(c(f"{b}.safm.aggr", np.concatenate(levels))) * z + h
        h = c(f"{b}.ccm.ccm.2", gelu(c(f"{b}.ccm.ccm.0", layer_norm(f"{b}.norm2", h)))) + h
    return pixel_shuffle(c("to_img.0", h + f0), scale)


def test_a_safmn_iccv_state_dict_imports_as_the_iccv_network(tmp_path):
    # No ICCV weights are reachable: a state dict under its keys, with random values.
    rng = np.random.default_rng(1)
    ch, scale = 8, 2
    shapes = {"to_feat": (ch, 3, 3, 3), "to_img.0": (3 * scale * scale, ch, 3, 3)}
    for i in range(2):
        shapes.update({f"feats.{i}.safm.mfr.{j}": (ch // 4, 1, 3, 3) for j in range(4)})
        shapes.update({f"feats.{i}.safm.aggr": (ch, ch, 1, 1),
                       f"feats.{i}.ccm.ccm.0": (2 * ch, ch, 3, 3),
                       f"feats.{i}.ccm.ccm.2": (ch, 2 * ch, 1, 1)})
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = rng.normal(scale=0.3, size=shape).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(scale=0.1, size=shape[0]).astype(np.float32)
    for i in range(2):
        for norm in ("norm1", "norm2"):
            state[f"feats.{i}.{norm}.weight"] = (1 + 0.2 * rng.normal(size=ch)).astype(np.float32)
            state[f"feats.{i}.{norm}.bias"] = (0.1 * rng.normal(size=ch)).astype(np.float32)
    path = tmp_path / "SAFMN_x2.safetensors"
    path.write_bytes(safetensors_bytes(state))
    imported = drsan_jax.load(path).inference_model
    assert (imported.config["ntire2023"], imported.config["num_blocks"], imported.scale) == (
        False, 2, 2)
    lq = rng.uniform(size=(13, 11, 3)).astype(np.float32)  # 13 // 8 = 1: one uneven bin
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(imported.model.apply({"params": imported.params}, lq[None]))[0]
    reference = safmn_iccv(state, lq.transpose(2, 0, 1).astype(np.float64), scale)
    np.testing.assert_allclose(ours, reference.transpose(1, 2, 0), atol=1e-5)
