"""Tests for drsan_jax.onnx_graph: each rewrite on small hand-written graphs, run in ONNX Runtime.

The rewritten exports of whole networks are held to the JAX model by test_export.py; here each
pattern is checked on its own, including graphs that look alike but must be left as written.
"""

import numpy as np
import pytest

from drsan_jax import onnx_graph

onnx = pytest.importorskip("onnx", reason='the ONNX tests need pip install -e ".[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='the ONNX tests need pip install -e ".[onnx]"')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CHANNELS = 4


def make_model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def prelu_model(threshold=0.0, alpha_first=True, extra_use=False, dtype=np.float32):
    """jax2onnx's form of jnp.where(x >= threshold, x, alpha * x) on (B, H, W, C)."""
    elem = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    alpha = np.array([0.25, -0.5, 0.0, 1.5], dtype).reshape(1, 1, 1, CHANNELS)
    mul_inputs = ["alpha", "x"] if alpha_first else ["x", "alpha"]
    nodes = [helper.make_node("GreaterOrEqual", ["x", "zero"], ["ge"]),
             helper.make_node("Mul", mul_inputs, ["ax"]),
             helper.make_node("Where", ["ge", "x", "ax"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", elem, [None] * 4)]
    if extra_use:  # the comparison is also a result: it must stay
        nodes.append(helper.make_node("Cast", ["ge"], ["ge_out"], to=elem))
        outputs.append(helper.make_tensor_value_info("ge_out", elem, [None] * 4))
    return make_model(nodes, [helper.make_tensor_value_info("x", elem, [None, None, None,
                                                                         CHANNELS])],
                      outputs, {"zero": np.array(threshold, dtype), "alpha": alpha})


def test_where_prelu_becomes_one_prelu_with_equal_values():
    model = prelu_model()
    x = np.random.default_rng(0).normal(size=(2, 3, 5, CHANNELS)).astype(np.float32) * 100
    x[0, 0, 0] = [0.0, -0.0, np.float32(-1e-38), np.float32(3e38)]
    before = run(model, {"x": x})
    counts = onnx_graph.optimize(model)
    assert counts == {"prelu": 1, "dra_sum": 0, "removed": 2}
    assert [node.op_type for node in model.graph.node] == ["PRelu"]
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, {"x": x}), before)  # bit for bit


@pytest.mark.parametrize("alpha_first", [True, False])
def test_prelu_rewrite_takes_either_operand_order_and_float16(alpha_first):
    model = prelu_model(alpha_first=alpha_first, dtype=np.float16)
    x = np.random.default_rng(1).normal(size=(1, 4, 4, CHANNELS)).astype(np.float16)
    before = run(model, {"x": x})
    assert onnx_graph.optimize(model)["prelu"] == 1
    np.testing.assert_array_equal(run(model, {"x": x}), before)


@pytest.mark.parametrize("kwargs", [{"threshold": 0.5}, {"extra_use": True}],
                         ids=["threshold-not-zero", "comparison-used-elsewhere"])
def test_look_alike_graphs_are_left_as_written(kwargs):
    model = prelu_model(**kwargs)
    ops = [node.op_type for node in model.graph.node]
    assert onnx_graph.optimize(model)["prelu"] == 0
    assert [node.op_type for node in model.graph.node] == ops


def dra_model(paths=3, stacked_axis=1):
    """jax2onnx's form of models.dra.dynamic_residual: Einsum over stacked features."""
    nodes, inputs = [], [helper.make_tensor_value_info("r", TensorProto.FLOAT, [None, paths])]
    for k in range(paths):
        inputs.append(helper.make_tensor_value_info(f"f{k}", TensorProto.FLOAT,
                                                    [None, None, None, CHANNELS]))
        nodes.append(helper.make_node("Unsqueeze", [f"f{k}", "axis"], [f"u{k}"]))
    nodes += [helper.make_node("Concat", [f"u{k}" for k in range(paths)], ["stacked"],
                               axis=stacked_axis),
              helper.make_node("Einsum", ["r", "stacked"], ["d"], equation="bk,bkhwc->bhwc")]
    return make_model(nodes, inputs, [helper.make_tensor_value_info("d", TensorProto.FLOAT, [None] * 4)],
                      {"axis": np.array([1], np.int64)})


@pytest.mark.parametrize("paths", [1, 3, 6])
def test_dra_einsum_becomes_multiply_adds_within_float32_rounding(paths):
    model = dra_model(paths)
    rng = np.random.default_rng(paths)
    feeds = {"r": rng.normal(size=(2, paths)).astype(np.float32)}
    feeds.update({f"f{k}": rng.normal(size=(2, 5, 7, CHANNELS)).astype(np.float32)
                  for k in range(paths)})
    before = run(model, feeds)
    counts = onnx_graph.optimize(model)
    assert counts["dra_sum"] == 1
    ops = [node.op_type for node in model.graph.node]
    assert "Einsum" not in ops and "Concat" not in ops
    assert ops.count("Mul") == paths and ops.count("Add") == paths - 1
    onnx.checker.check_model(model)
    after = run(model, feeds)
    expected = sum(feeds["r"][:, k, None, None, None] * feeds[f"f{k}"] for k in range(paths))
    np.testing.assert_allclose(after, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


def test_an_einsum_over_another_axis_is_left_as_written():
    model = dra_model(3, stacked_axis=0)  # stacked on the wrong axis: not the DRA sum
    model.graph.node[-1].attribute[0].s = b"kb,kbhwc->bhwc"
    assert onnx_graph.optimize(model)["dra_sum"] == 0
    assert model.graph.node[-1].op_type == "Einsum"


def test_unknown_rewrite_names_the_choices():
    with pytest.raises(ValueError, match="unknown ONNX rewrite.*prelu, dra_sum"):
        onnx_graph.optimize(prelu_model(), ("fuse_everything",))


def prelu_op_model(alpha, channels_last=True):
    """One PRelu(x, alpha) on a 4-D float32 x: the form the 'prelu' rewrite writes."""
    shape = [None, None, None, CHANNELS] if channels_last else [None, CHANNELS, None, None]
    elem = TensorProto.FLOAT16 if alpha.dtype == np.float16 else TensorProto.FLOAT
    return make_model([helper.make_node("PRelu", ["x", "alpha"], ["y"])],
                      [helper.make_tensor_value_info("x", elem, shape)],
                      [helper.make_tensor_value_info("y", elem, [None] * 4)], {"alpha": alpha})


SLOPES = np.array([0.25, -0.5, 0.0, 1.5], np.float32)


@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_prelu_nchwc_keeps_every_value_bit_for_bit(channels_last):
    alpha = SLOPES.reshape((1, 1, 1, CHANNELS) if channels_last else (1, CHANNELS, 1, 1))
    model = prelu_op_model(alpha, channels_last)
    shape = (2, 3, 5, CHANNELS) if channels_last else (2, CHANNELS, 3, 5)
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32) * 100
    x.reshape(-1)[:6] = [0.0, 1e-38, -1e-38, 3e38, -3e38, -1e-45]
    before = run(model, {"x": x})
    counts = onnx_graph.optimize(model, onnx_graph.CPU_REWRITES)
    assert counts == {"prelu_nchwc": 1, "removed": 0}
    ops = [node.op_type for node in model.graph.node]
    assert "PRelu" not in ops and ops.count("Conv") == 2 and ops.count("Relu") == 2
    assert ops.count("Transpose") == (2 if channels_last else 0)
    onnx.checker.check_model(model)
    after = run(model, {"x": x})
    np.testing.assert_array_equal(after, before)
    with np.errstate(over="ignore"):  # -3e38 * 1.5 is -inf in both
        np.testing.assert_array_equal(after, np.where(x >= 0, x, alpha * x))


@pytest.mark.parametrize("alpha", [
    np.full((1, 1, 1, 1), 0.25, np.float32),              # one slope for every channel
    SLOPES,                                                # (C,): rank of x unknown
    SLOPES.astype(np.float16).reshape(1, 1, 1, CHANNELS),  # float16: no blocked layout
], ids=["scalar", "rank-1", "float16"])
def test_prelu_nchwc_leaves_other_slopes_as_written(alpha):
    model = prelu_op_model(alpha)
    assert onnx_graph.optimize(model, onnx_graph.CPU_REWRITES)["prelu_nchwc"] == 0
    assert [node.op_type for node in model.graph.node] == ["PRelu"]


def test_prelu_nchwc_needs_a_constant_slope():
    model = make_model([helper.make_node("PRelu", ["x", "a"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None] * 4),
                        helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1, 1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], {})
    assert onnx_graph.optimize(model, onnx_graph.CPU_REWRITES)["prelu_nchwc"] == 0


def test_the_export_rewrites_leave_the_cpu_rewrite_out():
    assert not set(onnx_graph.CPU_REWRITES) & set(onnx_graph.REWRITES)
    model = prelu_op_model(SLOPES.reshape(1, 1, 1, CHANNELS))
    assert "prelu_nchwc" not in onnx_graph.optimize(model)
    assert [node.op_type for node in model.graph.node] == ["PRelu"]
