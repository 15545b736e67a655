"""Rewrites of an exported ONNX graph into operators that ONNX Runtime runs fast, with equal results.

jax2onnx writes each JAX primitive as the ONNX operators that compute it, which is exact but not
always what ONNX Runtime's CPU kernels are quick at. Profiled on DRSAN-32s x2 (240x160 LR, ONNX
Runtime 1.32, benchmarks/README.md), half the time of the graph as written went to two patterns:

- **PReLU** is `jnp.where(x >= 0, x, alpha * x)`, written as `Where(GreaterOrEqual(x, 0), x,
  Mul(alpha, x))`: three passes over the tensor, and a `Where` with broadcasting that is slow
  in ONNX Runtime and breaks its blocked (NCHWc) convolution layout on both sides. It becomes
  the single operator `PRelu(x, alpha)`: the same value for every x (for x >= 0 both give x,
  otherwise both give alpha * x, one rounding each).
- **The DRA sum** d = sum_k r_k f_k (`models.dra.dynamic_residual`) is an `Einsum("bk,bkhwc->
  bhwc", r, Concat(Unsqueeze(f_k)))`: a copy of every preceding feature into one stacked
  tensor, then a generic einsum. It becomes `Mul(f_0, r_0) + Mul(f_1, r_1) + ...`, each r_k a
  (B, 1, 1, 1) slice of r: no stacking copy, and operators that stay in the blocked layout.
  The sum is taken in the order k = 0, 1, ..., so the result can differ from the einsum's by
  float32 rounding (a few 1e-7 relative); tests/commands/test_export.py holds the exported
  files to the JAX model. A model traced on a CPU already has the multiply-adds
  (`dynamic_residual`'s "unrolled" form, its CPU default), so this pattern is found in exports
  made on GPU or TPU machines, whose files then come out the same.

`optimize(model)` applies both where the graph holds the exact pattern (every input, constant
and use checked) and leaves anything else as written, then drops the nodes no longer used.
It needs only `onnx` and NumPy.

One more rewrite is for ONNX Runtime's CPU provider alone, so the exporter leaves it out of the
file and `onnx_runtime.OnnxUpscaler` applies it in memory when it opens a file on the CPU
(`CPU_REWRITES`):

- **prelu_nchwc**: ONNX Runtime runs convolutions in a blocked channel layout (NCHWc) but has
  no blocked `PRelu`, so every PReLU is a reorder out of that layout, a broadcasting pass and
  a reorder back (profiled: PRelu 24% and the reorders 13% of DRSAN-32s at 240x160). It
  becomes `Relu(x) + DWConv(-alpha)(Relu(DWConv(-1)(x)))`, two 1x1 depthwise convolutions and
  two ReLUs, all of which the blocked layout has. The value is the same bit for bit: for
  x >= 0 both give x (x plus a zero), otherwise both give alpha * x (-alpha times -x, one
  rounding). Any runtime can run that graph, but it no longer reads as a PReLU, and runtimes
  with a fused PReLU gain nothing from it: hence not in the file.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

REWRITES = ("prelu", "dra_sum")
# Applied by onnx_runtime.OnnxUpscaler on the CPU provider, not written into exported files.
CPU_REWRITES = ("prelu_nchwc",)


class _Graph:
    """Producer and use counts of a graph's values, and the constants it holds."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {name: node for node in graph.node for name in node.output}
        self.uses = Counter(name for node in graph.node for name in node.input)
        for output in graph.output:
            self.uses[output.name] += 1
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 \
                    and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.names = {name for node in graph.node for name in (*node.input, *node.output)}
        self.names.update(self.constants)

    def node(self, name: str, op_type: str) -> Any | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def fresh(self, stem: str) -> str:
        """A value name the graph does not use yet."""
        index = 0
        while f"{stem}_{index}" in self.names:
            index += 1
        name = f"{stem}_{index}"
        self.names.add(name)
        return name


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return None


def _prelu(g: _Graph, node: Any) -> list[Any] | None:
    """Where(x >= 0, x, alpha * x) -> PRelu(x, alpha), or None when `node` is not that."""
    from onnx import helper

    if node.op_type != "Where" or len(node.input) != 3:
        return None
    condition, x, negative = node.input
    compare = g.node(condition, "GreaterOrEqual")
    scale = g.node(negative, "Mul")
    if compare is None or scale is None or compare.input[0] != x:
        return None
    zero = g.constants.get(compare.input[1])
    if zero is None or zero.size != 1 or float(zero.reshape(())) != 0.0:
        return None
    others = [name for name in scale.input if name != x]
    if len(others) != 1 or len(scale.input) != 2:
        return None
    alpha = g.constants.get(others[0])
    if alpha is None or alpha.ndim > 1 and any(d != 1 for d in alpha.shape[:-1]):
        return None
    if g.uses[condition] != 1 or g.uses[negative] != 1:
        return None
    return [helper.make_node("PRelu", [x, others[0]], list(node.output),
                             name=g.fresh("prelu"))]


def _dra_sum(g: _Graph, node: Any) -> list[Any] | None:
    """Einsum("bk,bk...->b...", r, Concat(Unsqueeze(f_k, 1))) -> sum_k r[:, k] * f_k."""
    from onnx import helper

    if node.op_type != "Einsum" or len(node.input) != 2:
        return None
    equation = (_attribute(node, "equation") or b"")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    equation = equation.replace(" ", "")
    inputs, _, output = equation.partition("->")
    operands = inputs.split(",")
    if len(operands) != 2 or len(operands[0]) != 2:
        return None
    (b, k), stacked_letters = operands[0], operands[1]
    rest = stacked_letters[2:]
    if stacked_letters[:2] != b + k or output != b + rest or len(set(stacked_letters)) != len(
            stacked_letters):
        return None
    weights, stacked = node.input
    concat = g.node(stacked, "Concat")
    if concat is None or _attribute(concat, "axis") != 1 or g.uses[stacked] != 1:
        return None
    features = []
    for part in concat.input:
        unsqueeze = g.node(part, "Unsqueeze")
        if unsqueeze is None or len(unsqueeze.input) != 2:
            return None
        axes = g.constants.get(unsqueeze.input[1])
        if axes is None or axes.reshape(-1).tolist() != [1]:
            return None
        features.append(unsqueeze.input[0])
    nodes, total = [], None
    # r[:, k:k+1] is (B, 1); the feature's other axes (len(rest) - 1 beyond the 1) are added.
    trailing = helper.make_tensor(g.fresh("dra_axes"), 7, [len(rest) - 1],
                                  list(range(2, 1 + len(rest))))
    axes_name = trailing.name
    g.graph.initializer.append(trailing)
    for index, feature in enumerate(features):
        position = helper.make_tensor(g.fresh("dra_index"), 7, [1], [index])
        g.graph.initializer.append(position)
        column, weight, term = g.fresh("dra_r"), g.fresh("dra_w"), g.fresh("dra_term")
        nodes += [helper.make_node("Gather", [weights, position.name], [column], axis=1,
                                   name=g.fresh("dra_gather")),
                  helper.make_node("Unsqueeze", [column, axes_name], [weight],
                                   name=g.fresh("dra_unsqueeze"))]
        last = index == len(features) - 1
        if total is None:
            target = node.output[0] if last else term
            nodes.append(helper.make_node("Mul", [feature, weight], [target],
                                          name=g.fresh("dra_mul")))
            total = target
            continue
        nodes.append(helper.make_node("Mul", [feature, weight], [term], name=g.fresh("dra_mul")))
        target = node.output[0] if last else g.fresh("dra_sum")
        nodes.append(helper.make_node("Add", [total, term], [target], name=g.fresh("dra_add")))
        total = target
    return nodes


def _prelu_nchwc(g: _Graph, node: Any) -> list[Any] | None:
    """PRelu(x, alpha) -> Relu(x) + DWConv(-alpha)(Relu(DWConv(-1)(x))) for a float32 4-D x.

    Only a constant, per-channel float32 alpha of shape (1, 1, 1, C) (channels last: the
    depthwise convolutions run between two transposes, which ONNX Runtime folds into its
    neighbours) or (1, C, 1, 1) (channels first) is taken, with C > 1; None otherwise.
    """
    from onnx import helper, numpy_helper

    if node.op_type != "PRelu" or len(node.input) != 2:
        return None
    x, slope = node.input
    alpha = g.constants.get(slope)
    if alpha is None or alpha.dtype != np.float32 or alpha.ndim != 4:
        return None
    if alpha.shape[:3] == (1, 1, 1) and alpha.shape[3] > 1:
        channels_last = True
    elif alpha.shape[0] == 1 and alpha.shape[2:] == (1, 1) and alpha.shape[1] > 1:
        channels_last = False
    else:
        return None
    channels = alpha.size
    minus_one = numpy_helper.from_array(-np.ones((channels, 1, 1, 1), np.float32),
                                        g.fresh("prelu_minus_one"))
    minus_alpha = numpy_helper.from_array(-alpha.reshape(channels, 1, 1, 1),
                                          g.fresh("prelu_minus_alpha"))
    g.graph.initializer.extend([minus_one, minus_alpha])
    nodes = []
    source = x
    if channels_last:
        source = g.fresh("prelu_nchw")
        nodes.append(helper.make_node("Transpose", [x], [source], perm=[0, 3, 1, 2],
                                      name=g.fresh("prelu_to_nchw")))
    negated, negative, scaled, positive = (g.fresh(f"prelu_{part}") for part in
                                           ("negated", "negative", "scaled", "positive"))
    total = g.fresh("prelu_sum") if channels_last else node.output[0]
    nodes += [
        helper.make_node("Conv", [source, minus_one.name], [negated], group=channels,
                         name=g.fresh("prelu_negate")),
        helper.make_node("Relu", [negated], [negative], name=g.fresh("prelu_relu_negative")),
        helper.make_node("Conv", [negative, minus_alpha.name], [scaled], group=channels,
                         name=g.fresh("prelu_scale")),
        helper.make_node("Relu", [source], [positive], name=g.fresh("prelu_relu")),
        helper.make_node("Add", [positive, scaled], [total], name=g.fresh("prelu_add")),
    ]
    if channels_last:
        nodes.append(helper.make_node("Transpose", [total], list(node.output), perm=[0, 2, 3, 1],
                                      name=g.fresh("prelu_to_nhwc")))
    return nodes


_PATTERNS = {"prelu": _prelu, "dra_sum": _dra_sum, "prelu_nchwc": _prelu_nchwc}


def _drop_unused(graph: Any) -> int:
    """Removes nodes none of whose outputs is used; returns how many."""
    removed = 0
    while True:
        used = {name for node in graph.node for name in node.input}
        used.update(output.name for output in graph.output)
        keep = [node for node in graph.node if any(name in used for name in node.output)]
        if len(keep) == len(graph.node):
            break
        removed += len(graph.node) - len(keep)
        del graph.node[:]
        graph.node.extend(keep)
    names = {name for node in graph.node for name in node.input}
    names.update(output.name for output in graph.output)
    initializers = [init for init in graph.initializer if init.name in names]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return removed


def optimize(model: Any, rewrites: tuple[str, ...] = REWRITES) -> dict[str, int]:
    """Applies `rewrites` (names from `REWRITES` and `CPU_REWRITES`) to `model` (an onnx
    ModelProto) in place.

    Returns how often each rewrite was applied, and under "removed" how many nodes went unused.
    """
    unknown = set(rewrites) - set(_PATTERNS)
    if unknown:
        raise ValueError(f"unknown ONNX rewrite(s) {sorted(unknown)}; expected some of "
                         f"{', '.join(_PATTERNS)}")
    counts = {name: 0 for name in rewrites}
    counts["removed"] = 0
    graph = model.graph
    for name in rewrites:
        g = _Graph(graph)
        new_nodes = []
        for node in graph.node:
            replacement = _PATTERNS[name](g, node)
            if replacement is None:
                new_nodes.append(node)
            else:
                new_nodes.extend(replacement)
                counts[name] += 1
        del graph.node[:]
        graph.node.extend(new_nodes)
        counts["removed"] += _drop_unused(graph)
    return counts


__all__ = ["CPU_REWRITES", "REWRITES", "optimize"]
