"""Published PyTorch weights -> this project's models: family detection and key mapping.

    imported = import_weights("lesrcnn_x2.pth")            # family and scale from the keys
    imported = import_weights("EDSR_x4.pt", model="edsr")  # or forced
    imported.model.apply({"params": imported.params}, lq)

`drsan_jax.weights.torch_io` reads the file safely (no code runs); this module recognises the state
dict's architecture from its keys and shapes, maps every tensor to the Flax parameter it is, and
checks the result against the model's parameter shapes:

- LESRCNN / LESRCNN-S (the authors' keys, `conv1.0.weight` ... `conv18.0.weight`,
  `upsample.up.body.*` or `upsample.up2|up3|up4.body.*`): kernels OIHW -> HWIO, names one to one.
- EDSR-baseline / EDSR and MDSR-baseline / MDSR (the official EDSR-PyTorch keys, `head.0.*`,
  `body.<b>.body.<0|2>.*`, `tail.*` or `pre_process.*` / `upsample.*`): kernels OIHW -> HWIO and
  every bias divided by 255, since those networks were trained on [0, 255] inputs and this
  project feeds [0, 1] (the networks are positively homogeneous in input and biases together).

- SMFANet / SMFANet+, SAFMN (ICCV keys, or the NTIRE 2023 variant's: `norm.gamma`, no biases
  in SAFM/CCM) and SPAN (deployed `*.eval_conv.*` files such as the NTIRE 2024 `*_slim.pth`, or
  training checkpoints with the Conv3XC branches): their authors' keys (`to_feat`,
  `feats.<i>.smfa.*` / `feats.<i>.safm.*`, `block_<i>.c<j>_r.*`, `to_img.0` / `upsampler.0`),
  kernels OIHW -> HWIO (grouped ones too), (1, C, 1, 1) scalings as (C,). Their inputs are
  [0, 1] as here; SPAN's (x - mean) * 255 is in the model, not the file.

Every family uses PyTorch's pixel-shuffle order in this project too, so no channel is permuted.
The frozen mean shifts of EDSR, MDSR and LESRCNN are checked against the DIV2K mean the models
use, and dropped.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drsan_jax.models import UPSAMPLER, branch_name, get_family
from drsan_jax.models.layers import DIV2K_RGB_MEAN
from drsan_jax.weights import torch_io
from drsan_jax.weights.loaded import InferenceModel, WeightsError, assemble

SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")
_RGB_RANGE = 255.0  # the EDSR code's inputs; LESRCNN's are [0, 1]


class WeightImportError(WeightsError):
    """A weight file that fits no supported architecture, or not the one asked for."""


def is_weight_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a PyTorch or safetensors file by its suffix."""
    return Path(path).suffix.lower() in SUFFIXES


def import_weights(path: str | os.PathLike, model: str | None = None,
                   scale: int | None = None) -> InferenceModel:
    """Reads a published PyTorch weight file as an `InferenceModel`.

    Args:
      path: a `.pth` / `.pt` (zip or legacy serialization) or `.safetensors` file.
      model: force the model family or name ("lesrcnn", "edsr-baseline", "mdsr", ...);
        default: recognised from the keys.
      scale: for a multi-scale file, the scale to run at (default: 2).

    Raises:
      torch_io.WeightFileError: an unreadable or unsafe file.
      WeightImportError: keys or shapes that fit no supported model (or not `model`).
    """
    state = torch_io.read_state_dict(path)
    row = _detect(state, path) if model is None else _row_of_name(model)
    family = row.family
    tracked = _Tracked(state)
    try:
        config, flat = row.read(tracked, path)
    except KeyError as e:
        raise WeightImportError(f"{path}: read as {family}, but key {e} is missing "
                                f"(expected keys like {row.expected_keys})") from None
    unused = sorted(set(state) - tracked.read)
    if unused:
        raise WeightImportError(f"{path}: {len(unused)} key(s) that a {family} model does not "
                                f"have: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    loaded = assemble(config, flat, f"{path} (as {family})", path=str(path),
                      extra={"imported_from": str(path), "format": "pytorch"})
    return loaded.at_scale(scale)


def _row_of_name(model: str) -> TorchFamily:
    for row in TORCH_FAMILIES:
        if model in row.models or model == row.family:
            return row
    raise WeightImportError(f"--model {model!r}: PyTorch weights are read for "
                            f"{', '.join(MODELS)}; got {model!r}")


class _Tracked(dict):
    """A state dict that remembers which keys the mapping read, to report the rest."""

    def __init__(self, state: dict[str, np.ndarray]):
        super().__init__(state)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> np.ndarray:
        value = super().__getitem__(key)
        self.read.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default


def _detect(state: dict[str, np.ndarray], path) -> TorchFamily:
    keys = set(state)
    for row in TORCH_FAMILIES:
        if row.detect(keys):
            return row
    sample = ", ".join(sorted(keys)[:6]) + (" ..." if len(keys) > 6 else "")
    expected = "; ".join(f"{row.family}: {row.expected_keys}" for row in TORCH_FAMILIES)
    raise WeightImportError(f"{path}: a state dict of no supported architecture; found keys "
                            f"{sample}; expected those of {expected}")


def _hwio(weight: np.ndarray) -> np.ndarray:
    """A PyTorch OIHW conv kernel as HWIO."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def _check_mean_shift(state: dict[str, np.ndarray], path, names: tuple[str, str],
                      rgb_range: float) -> None:
    """The frozen mean shifts must be the DIV2K mean the models hard-code (sub, then add)."""
    mean = np.asarray(DIV2K_RGB_MEAN) * rgb_range
    for name, sign in zip(names, (-1.0, 1.0)):
        state.get(f"{name}.weight")  # the identity kernel: frozen, nothing to map
        bias = state.get(f"{name}.bias")
        if bias is not None and not np.allclose(bias, sign * mean, atol=1e-3 * rgb_range):
            raise WeightImportError(f"{path}: {name}.bias is {np.round(bias, 4).tolist()}, not the "
                               f"DIV2K mean shift {(sign * mean).round(4).tolist()} the model "
                               f"uses")


def _upsampler_scale(weights: list[np.ndarray], features: int, path) -> int:
    """x2: one conv to 4F; x3: one to 9F; x4: two to 4F."""
    outs = [w.shape[0] // features for w in weights]
    scale = {(4,): 2, (9,): 3, (4, 4): 4}.get(tuple(outs))
    if scale is None:
        raise WeightImportError(f"{path}: upsampler convs with {[w.shape[0] for w in weights]} "
                           f"outputs fit no scale of {features}-channel features")
    return scale


def _map_lesrcnn(state, path):
    _check_mean_shift(state, path, ("sub_mean.shifter", "add_mean.shifter"), 1.0)
    flat = {}
    for key in list(state):
        m = re.fullmatch(r"(conv\d+(?:_\d)?)\.0\.weight", key)
        if m:
            flat[f"{m.group(1)}/kernel"] = _hwio(state[key])
    features = state["conv1.0.weight"].shape[0]
    ups = sorted({m.group(1) for k in state
                  if (m := re.fullmatch(r"upsample\.(up\d?)\.body\.\d+\.weight", k))})
    multi = ups != ["up"]
    scale = 2
    for up in ups:
        convs = sorted(int(m.group(1)) for k in state
                       if (m := re.fullmatch(rf"upsample\.{up}\.body\.(\d+)\.weight", k)))
        found = _upsampler_scale([state[f"upsample.{up}.body.{i}.weight"] for i in convs],
                                 features, path)
        if up == "up":
            scale, target = found, UPSAMPLER
        else:
            if int(up[2:]) != found:
                raise WeightImportError(f"{path}: upsample.{up} upsamples x{found}")
            target = branch_name(UPSAMPLER, found)
        for j, i in enumerate(convs):
            flat[f"{target}/conv_{j}/kernel"] = _hwio(state[f"upsample.{up}.body.{i}.weight"])
            flat[f"{target}/conv_{j}/bias"] = state[f"upsample.{up}.body.{i}.bias"]
    variant = "lesrcnn-s" if multi else "lesrcnn"
    return ({"family": "lesrcnn", "variant": variant, "features": features,
             "multi_scale": multi, "scale": scale}, flat)


def _edsr_convs(state, prefix: str, target: str, flat: dict) -> None:
    flat[f"{target}/kernel"] = _hwio(state[f"{prefix}.weight"])
    flat[f"{target}/bias"] = state[f"{prefix}.bias"] / _RGB_RANGE


def _map_edsr_trunk(state, flat: dict) -> tuple[int, int]:
    """The head, residual blocks and body-end conv that EDSR and MDSR share; (F, B)."""
    blocks = len({int(m.group(1)) for k in state
                  if (m := re.fullmatch(r"body\.(\d+)\.body\.\d\.weight", k))})
    _edsr_convs(state, "head.0", "head", flat)
    for b in range(blocks):
        _edsr_convs(state, f"body.{b}.body.0", f"block_{b}/conv1", flat)
        _edsr_convs(state, f"body.{b}.body.2", f"block_{b}/conv2", flat)
    _edsr_convs(state, f"body.{blocks}", "body_tail", flat)
    return state["head.0.weight"].shape[0], blocks


def _map_edsr(state, path):
    _check_mean_shift(state, path, ("sub_mean", "add_mean"), _RGB_RANGE)
    flat = {}
    features, blocks = _map_edsr_trunk(state, flat)
    ups = [i for i in (0, 2) if f"tail.0.{i}.weight" in state]
    scale = _upsampler_scale([state[f"tail.0.{i}.weight"] for i in ups], features, path)
    for j, i in enumerate(ups):
        _edsr_convs(state, f"tail.0.{i}", f"{UPSAMPLER}/conv_{j}", flat)
    _edsr_convs(state, "tail.1", "output", flat)
    family = get_family("edsr")
    sizes = {"features": features, "num_blocks": blocks}
    # Residual scaling is not in the weights: the published sizes say which it was.
    variant = next((v for v, s in family.variants.items()
                    if (s["features"], s["num_blocks"]) == (features, blocks)), None)
    res_scale = family.variants[variant]["res_scale"] if variant else 1.0
    return ({"family": "edsr", "variant": variant, **sizes, "res_scale": res_scale,
             "scale": scale}, flat)


def _map_mdsr(state, path):
    _check_mean_shift(state, path, ("sub_mean", "add_mean"), _RGB_RANGE)
    flat = {}
    features, blocks = _map_edsr_trunk(state, flat)
    for j in sorted({int(m.group(1)) for k in state
                     if (m := re.fullmatch(r"upsample\.(\d+)\.0\.weight", k))}):
        ups = [i for i in (0, 2) if f"upsample.{j}.{i}.weight" in state]
        s = _upsampler_scale([state[f"upsample.{j}.{i}.weight"] for i in ups], features, path)
        for n, i in enumerate(ups):
            _edsr_convs(state, f"upsample.{j}.{i}", f"{branch_name(UPSAMPLER, s)}/conv_{n}", flat)
        for k in (0, 1):
            for c, conv in ((0, "conv1"), (2, "conv2")):
                _edsr_convs(state, f"pre_process.{j}.{k}.body.{c}",
                            f"{branch_name('pre', s)}/block_{k}/{conv}", flat)
    _edsr_convs(state, "tail.0", "output", flat)
    family = get_family("mdsr")
    variant = next((v for v, s in family.variants.items()
                    if (s["features"], s["num_blocks"]) == (features, blocks)), None)
    return ({"family": "mdsr", "variant": variant, "features": features, "num_blocks": blocks,
             "scale": 2}, flat)


def _conv_into(state, prefix: str, target: str, flat: dict) -> None:
    """`prefix`.weight (OIHW) and, if the file has one, `prefix`.bias into `target`."""
    flat[f"{target}/kernel"] = _hwio(state[f"{prefix}.weight"])
    if f"{prefix}.bias" in state:
        flat[f"{target}/bias"] = state[f"{prefix}.bias"]


def _count(state, pattern: str) -> int:
    """How many distinct integers the (\\d+) group of `pattern` takes over the keys."""
    return len({m.group(1) for k in state if (m := re.fullmatch(pattern, k))})


def _pixel_shuffle_scale(weight: np.ndarray, path, key: str) -> int:
    """The scale s of a last conv to 3 s^2 channels (RGB after a pixel shuffle)."""
    for s in (2, 3, 4):
        if weight.shape[0] == 3 * s * s:
            return s
    raise WeightImportError(f"{path}: {key} has {weight.shape[0]} outputs, not 3 s^2 for a "
                            f"scale s of 2, 3 or 4")


def _variant(family: str, sizes: dict[str, Any]) -> str | None:
    """The published variant with exactly these sizes, or None for a custom size."""
    return next((v for v, fields in get_family(family).variants.items()
                 if all(fields[k] == sizes[k] for k in fields)), None)


def _map_smfanet(state, path):
    flat = {}
    _conv_into(state, "to_feat", "to_feat", flat)
    blocks = _count(state, r"feats\.(\d+)\.smfa\.alpha")
    for i in range(blocks):
        src, dst = f"feats.{i}", f"feats_{i}"
        for name in ("linear_0", "linear_1", "linear_2", "dw_conv"):
            _conv_into(state, f"{src}.smfa.{name}", f"{dst}/smfa/{name}", flat)
        for j, name in enumerate(("lde.conv_0.0", "lde.conv_0.1", "lde.conv_1")):
            _conv_into(state, f"{src}.smfa.{name}", f"{dst}/smfa/lde_{j}", flat)
        flat[f"{dst}/smfa/scale"] = state[f"{src}.smfa.alpha"].reshape(-1)
        flat[f"{dst}/smfa/variance_weight"] = state[f"{src}.smfa.belt"].reshape(-1)
        for name in ("conv_0", "conv_1", "conv_2"):
            _conv_into(state, f"{src}.pcfn.{name}", f"{dst}/pcfn/{name}", flat)
    _conv_into(state, "to_img.0", UPSAMPLER, flat)
    sizes = {"features": state["to_feat.weight"].shape[0], "num_blocks": blocks}
    return ({"family": "smfanet", "variant": _variant("smfanet", sizes), **sizes,
             "scale": _pixel_shuffle_scale(state["to_img.0.weight"], path, "to_img.0.weight")},
            flat)


def _map_safmn(state, path):
    flat = {}
    ntire = "norm.gamma" in state
    _conv_into(state, "to_feat", "to_feat", flat)
    if ntire:
        flat["norm/gamma"] = state["norm.gamma"].reshape(-1)
        flat["norm/beta"] = state["norm.beta"].reshape(-1)
    blocks = _count(state, r"feats\.(\d+)\.safm\.aggr\.weight")
    for i in range(blocks):
        src, dst = f"feats.{i}", f"feats_{i}"
        if not ntire:
            for norm in ("norm1", "norm2"):
                flat[f"{dst}/{norm}/scale"] = state[f"{src}.{norm}.weight"]
                flat[f"{dst}/{norm}/bias"] = state[f"{src}.{norm}.bias"]
        for j in range(_count(state, rf"feats\.{i}\.safm\.mfr\.(\d+)\.weight")):
            _conv_into(state, f"{src}.safm.mfr.{j}", f"{dst}/safm/mfr_{j}", flat)
        _conv_into(state, f"{src}.safm.aggr", f"{dst}/safm/aggr", flat)
        _conv_into(state, f"{src}.ccm.ccm.0", f"{dst}/ccm/conv_0", flat)
        _conv_into(state, f"{src}.ccm.ccm.2", f"{dst}/ccm/conv_2", flat)
    _conv_into(state, "to_img.0", UPSAMPLER, flat)
    sizes = {"features": state["to_feat.weight"].shape[0], "num_blocks": blocks,
             "ntire2023": ntire}
    return ({"family": "safmn", "variant": _variant("safmn", sizes), **sizes,
             "scale": _pixel_shuffle_scale(state["to_img.0.weight"], path, "to_img.0.weight")},
            flat)


# SPAN's Conv3XC layers: (file prefix, model path) in the authors' order.
_SPAN_CONVS = (("conv_1", "conv_1"),
               *((f"block_{b}.c{j}_r", f"block_{b}/c{j}_r") for b in range(1, 7)
                 for j in (1, 2, 3)),
               ("conv_2", "conv_2"))
# A training-form Conv3XC's branches: file name -> model name.
_SPAN_BRANCHES = (("sk", "sk"), ("conv.0", "conv_0"), ("conv.1", "conv_1"), ("conv.2", "conv_2"))


def _map_span(state, path):
    flat = {}
    reparam = "conv_1.sk.weight" in state
    for src, dst in _SPAN_CONVS:
        if reparam:
            for branch, name in _SPAN_BRANCHES:
                _conv_into(state, f"{src}.{branch}", f"{dst}/{name}", flat)
            # The authors' checkpoints also hold the fold, refreshed only by eval-mode
            # forwards (possibly stale): the branches are the weights; it is read and dropped.
            state.get(f"{src}.eval_conv.weight")
            state.get(f"{src}.eval_conv.bias")
        else:
            _conv_into(state, f"{src}.eval_conv", f"{dst}/eval_conv", flat)
    _conv_into(state, "conv_cat", "conv_cat", flat)
    _conv_into(state, "upsampler.0", UPSAMPLER, flat)
    sizes = {"features": state["conv_cat.weight"].shape[0]}
    return ({"family": "span", "variant": _variant("span", sizes), **sizes, "reparam": reparam,
             "scale": _pixel_shuffle_scale(state["upsampler.0.weight"], path,
                                           "upsampler.0.weight")}, flat)


@dataclasses.dataclass(frozen=True)
class TorchFamily:
    """How one family's published PyTorch state dicts are recognised and read.

    Attributes:
      family: the family of `drsan_jax.models` the files become.
      models: the names `--model` accepts for it.
      expected_keys: what its keys look like, for the error of a file that fits nothing.
      detect: whether a state dict's key set is this family's.
      read: (state dict, path) -> (model configuration, {flat parameter name: array}).
    """

    family: str
    models: tuple[str, ...]
    expected_keys: str
    detect: Callable[[set[str]], bool]
    read: Callable[[Mapping[str, np.ndarray], Any], tuple[dict[str, Any], dict[str, Any]]]


# One row per family; at most one row's `detect` accepts a state dict.
TORCH_FAMILIES: tuple[TorchFamily, ...] = (
    TorchFamily(
        "lesrcnn", ("lesrcnn", "lesrcnn-s"),
        "conv1.0.weight ... conv18.0.weight, upsample.up[2|3|4].body.<i>.weight",
        lambda keys: "conv1.0.weight" in keys and any(k.startswith("upsample.") for k in keys),
        _map_lesrcnn),
    TorchFamily(
        "edsr", ("edsr", "edsr-baseline"),
        "head.0.weight, body.<b>.body.<0|2>.weight, tail.0.<0|2>.weight, tail.1.weight",
        lambda keys: "head.0.weight" in keys and "tail.0.0.weight" in keys,
        _map_edsr),
    TorchFamily(
        "mdsr", ("mdsr", "mdsr-baseline"),
        "head.0.weight, pre_process.<j>.<0|1>.body.<0|2>.weight, upsample.<j>.<0|2>.weight",
        lambda keys: "head.0.weight" in keys and any(k.startswith("pre_process.") for k in keys),
        _map_mdsr),
    TorchFamily(
        "smfanet", ("smfanet", "smfanet-plus"),
        "to_feat.weight, feats.<i>.smfa.{alpha,belt,linear_0,lde.conv_0.0,dw_conv}.*, "
        "feats.<i>.pcfn.conv_<0|1|2>.*, to_img.0.weight",
        lambda keys: "to_feat.weight" in keys and "feats.0.smfa.alpha" in keys,
        _map_smfanet),
    TorchFamily(
        "safmn", ("safmn", "safmn-ntire"),
        "to_feat.weight, [norm.gamma,] feats.<i>.safm.mfr.<j>.weight, feats.<i>.safm.aggr.weight, "
        "feats.<i>.ccm.ccm.<0|2>.weight, to_img.0.weight",
        lambda keys: "to_feat.weight" in keys and "feats.0.safm.aggr.weight" in keys,
        _map_safmn),
    TorchFamily(
        "span", ("span", "span-tiny"),
        "conv_1.eval_conv.weight (or conv_1.sk/conv.<0|1|2>.*), block_<1..6>.c<1|2|3>_r.*, "
        "conv_2.*, conv_cat.weight, upsampler.0.weight",
        lambda keys: "conv_cat.weight" in keys and ("block_1.c1_r.eval_conv.weight" in keys
                                                     or "block_1.c1_r.sk.weight" in keys),
        _map_span),
)
MODELS: tuple[str, ...] = tuple(name for row in TORCH_FAMILIES for name in row.models)


__all__ = ["MODELS", "SUFFIXES", "TORCH_FAMILIES", "TorchFamily", "WeightImportError",
           "import_weights", "is_weight_file"]
