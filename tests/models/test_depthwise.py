"""Tests for drsan_jax.models.depthwise: the shifted form against XLA's grouped convolution."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drsan_jax.models import depthwise


@pytest.mark.parametrize("multiplier,kernel", [(1, 3), (2, 3), (1, 5), (3, 1)])
def test_shifted_form_equals_xla_with_its_gradients(multiplier, kernel):
    channels = 5
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, channels))
    k = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 1, channels * multiplier))
    chex.assert_trees_all_close(depthwise.depthwise_shifted(x, k),
                                depthwise.depthwise_xla(x, k), atol=1e-5, rtol=0)

    def loss(f):
        return lambda x_, k_: jnp.sum(jnp.sin(f(x_, k_)))

    got = jax.grad(loss(depthwise.depthwise_shifted), argnums=(0, 1))(x, k)
    want = jax.grad(loss(depthwise.depthwise_xla), argnums=(0, 1))(x, k)
    chex.assert_trees_all_close(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("impl", ["xla", "im2col"])
def test_module_has_nn_conv_parameters_and_values(impl):
    """Same parameters (names, shapes, initial values) and outputs as the nn.Conv it replaces."""
    x = jax.random.uniform(jax.random.PRNGKey(2), (1, 6, 8, 4))
    ours = depthwise.DepthwiseConv(8, (3, 3), groups=4, impl=impl)
    flax_conv = nn.Conv(8, (3, 3), padding="SAME", feature_group_count=4)
    params = ours.init(jax.random.PRNGKey(3), x)
    reference = flax_conv.init(jax.random.PRNGKey(3), x)
    chex.assert_trees_all_equal(params, reference)
    chex.assert_trees_all_close(ours.apply(params, x), flax_conv.apply(params, x), atol=1e-6,
                                rtol=0)


def test_wrong_channel_count_is_one_clear_error():
    module = depthwise.DepthwiseConv(8, (3, 3), groups=4, name="dw")
    with pytest.raises(ValueError, match="dw: a depthwise convolution of 4 groups needs 4 input"):
        module.init(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 3), np.float32))
