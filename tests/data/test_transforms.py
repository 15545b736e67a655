"""Tests for drsan_jax.data.transforms: the 8 flips and quarter turns."""

import numpy as np
import pytest

from drsan_jax.data.transforms import NUM_TRANSFORMS, inverse_transform, transform


def test_transforms_are_the_eight_distinct_symmetries_and_invert_exactly():
    x = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    seen = set()
    for k in range(NUM_TRANSFORMS):
        t = transform(x, k)
        assert t.shape == ((3, 2, 2) if k % 2 else (2, 3, 2))
        np.testing.assert_array_equal(inverse_transform(t, k), x)
        np.testing.assert_array_equal(transform(inverse_transform(x, k), k), x)
        seen.add(t.tobytes())
    assert len(seen) == 8
    np.testing.assert_array_equal(transform(x, 0), x)
    np.testing.assert_array_equal(transform(x, 4), x[:, ::-1])
    with pytest.raises(ValueError, match="0..7"):
        transform(x, 8)
