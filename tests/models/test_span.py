"""SPAN's training form: its Conv3XC branches fold exactly into the deployed 3x3 convolutions.

docs/networks/span.md: the fold is exact everywhere, the border ring included, because
training pads the input before the first 1x1 branch; a folded network therefore equals the
training-form network to float32 rounding, and so does what inference and export run.
"""

import jax
import numpy as np
import pytest

from drsan_jax import inference
from drsan_jax.models import build_model, count_params, deploy, init_params


def _random_training_span(scale, features=8, key=0):
    model = build_model("span", scale, features=features, reparam=True)
    params = init_params(model, jax.random.key(key))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(key + 1), len(leaves))
    # Biases are drawn too (PyTorch's init has them nonzero; b1's fold reaches the border).
    return model, jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape)
                                               for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("scale", (2, 3))
def test_folded_span_equals_the_training_form(scale):
    model, params = _random_training_span(scale)
    lq = np.random.default_rng(0).uniform(size=(2, 13, 11, 3)).astype(np.float32)
    deployed, folded = deploy(model, params)
    assert not deployed.reparam and deployed.features == model.features
    assert count_params(folded) == count_params(init_params(deployed, jax.random.key(0)))
    with jax.default_matmul_precision("highest"):
        trained = np.asarray(model.apply({"params": params}, lq))
        ours = np.asarray(deployed.apply({"params": folded}, lq))
    scale_of_output = np.abs(trained).max()
    assert scale_of_output > 1.0  # random weights: far from a trivial output
    np.testing.assert_allclose(ours, trained, rtol=0, atol=2e-6 * scale_of_output)
    # The border ring, where b1's fold matters most, is where the image edge is.
    np.testing.assert_allclose(ours[:, :scale], trained[:, :scale], rtol=0,
                               atol=2e-6 * scale_of_output)


def test_deploying_a_deployed_model_changes_nothing():
    model = build_model("span", 4)
    params = init_params(model, jax.random.key(0))
    assert deploy(model, params) == (model, params)


def test_inference_runs_a_training_form_span_folded():
    model, params = _random_training_span(2)
    predictor = inference.Predictor(model, params)
    assert not predictor.model.reparam
    lq = np.random.default_rng(1).uniform(size=(9, 10, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        trained = np.asarray(model.apply({"params": params}, lq[None]))[0]
    np.testing.assert_allclose(predictor(lq), trained, rtol=0,
                               atol=2e-6 * np.abs(trained).max())
