"""The weight mapping of benchmarks/torch_equivalence.py, checked without torch.

The benchmark runs this project's train step against ../shared/bench/torch_drsan.py from the
same weights; if the mapping to torch's names and layouts were wrong, its comparison would
measure nothing. The torch state dict expected here is written out from torch_drsan.py's
constructors (names and OIHW shapes), not from the mapping.
"""

import importlib.util

import numpy as np
import pytest
from conftest import REPO

from drsan_jax.models import build_model, param_shapes

# benchmarks/ is a folder of scripts, not a package: load the file itself.
_spec = importlib.util.spec_from_file_location("torch_equivalence",
                                               REPO / "benchmarks" / "torch_equivalence.py")
torch_equivalence = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_equivalence)

VARIANTS = {"32s": (32, 4, 4), "48s": (48, 3, 4)}  # c, N, K as in torch_drsan.VARIANTS


def torch_state_shapes(variant: str, scale: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of torch_drsan.build(variant, scale).state_dict(), by its constructors."""
    c, n, k = VARIANTS[variant]
    m = n * (n + 1) // 2
    shapes = {}

    def conv(name, cin, cout, size):
        shapes[f"{name}.weight"] = (cout, cin, size, size)
        shapes[f"{name}.bias"] = (cout,)

    conv("head", 3, c, 3)
    for g in range(k):
        conv(f"groups.{g}.drm_conv1", c, 16, 1)
        shapes[f"groups.{g}.drm_act.weight"] = (16,)
        conv(f"groups.{g}.drm_conv2", 16, m, 1)
        for b in range(n):
            shapes[f"groups.{g}.blocks.{b}.act1.weight"] = (c,)
            conv(f"groups.{g}.blocks.{b}.conv1", c, c, 3)
            shapes[f"groups.{g}.blocks.{b}.act2.weight"] = (c,)
            conv(f"groups.{g}.blocks.{b}.conv2", c, c, 3)
        conv(f"groups.{g}.fuse", (n + 1) * c, c, 1)
    conv("body_tail", c, c, 3)
    for j, factor in enumerate([scale] if scale in (2, 3) else [2, 2]):
        conv(f"up.{j}", c, c * factor * factor, 3)
    conv("tail", c, 3, 3)
    return shapes


def flat_shapes(variant: str, scale: int) -> dict[str, tuple[int, ...]]:
    shapes = torch_equivalence.flat_shapes(param_shapes(build_model(variant, scale)))
    return {k: tuple(v.shape) for k, v in shapes.items()}


def random_flat(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("variant,scale", [("32s", 2), ("48s", 3), ("32s", 4)])
def test_names_and_layouts_are_torch_drsans(variant, scale):
    shapes = flat_shapes(variant, scale)
    state = torch_equivalence.to_torch(random_flat(shapes))
    assert {k: v.shape for k, v in state.items()} == torch_state_shapes(variant, scale)


@pytest.mark.parametrize("variant,scale", [("32s", 2), ("32s", 4)])
def test_round_trip_is_exact(variant, scale):
    shapes = flat_shapes(variant, scale)
    params = random_flat(shapes)
    back = torch_equivalence.from_torch(torch_equivalence.to_torch(params), shapes)
    assert back.keys() == params.keys()
    for path, value in params.items():
        np.testing.assert_array_equal(back[path], value, err_msg=path)


def test_kernel_element_lands_where_torch_reads_it():
    # PyTorch's Conv2d weight[o, i, y, x] multiplies input channel i at offset (y, x) into
    # output channel o; Flax's kernel[y, x, i, o] does the same.
    shapes = flat_shapes("32s", 2)
    params = random_flat(shapes)
    state = torch_equivalence.to_torch(params)
    kernel = params["DRAG_2/block_3/conv1/kernel"]
    weight = state["groups.2.blocks.2.conv1.weight"]
    assert weight[5, 7, 0, 2] == kernel[0, 2, 7, 5]
    np.testing.assert_array_equal(state["groups.1.drm_act.weight"],
                                  params["DRAG_1/DRM/prelu/alpha"])


def test_mismatches_are_named():
    shapes = flat_shapes("32s", 2)
    state = torch_equivalence.to_torch(random_flat(shapes))
    missing = dict(state)
    del missing["groups.3.fuse.bias"]
    with pytest.raises(ValueError, match="groups.3.fuse.bias"):
        torch_equivalence.from_torch(missing, shapes)
    wrong = {**state, "tail.weight": np.zeros((3, 32, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="tail.weight"):
        torch_equivalence.from_torch(wrong, shapes)
    with pytest.raises(ValueError, match="DRAG_0/extra/kernel"):
        torch_equivalence.torch_name("DRAG_0/extra/kernel")
