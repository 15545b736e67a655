"""Tests of drsan_jax.models.schema: the model configuration stored with checkpoints."""

import pytest

from drsan_jax.models import (
    build_model,
    build_model_from_config,
    normalize_model_config,
)


def test_model_configuration_is_completed_from_the_variant():
    config = normalize_model_config({"variant": "48s", "scale": 4})
    assert config == {"family": "drsan", "variant": "48s", "scale": 4, "features": 48,
                      "num_blocks": 3, "num_groups": 4, "drm_activation": "none", "use_rsa": True,
                      "residual": "dynamic", "use_fusion": True, "dtype": "float32"}
    assert build_model_from_config(config) == build_model("48s", 4)
    custom = normalize_model_config({"variant": "32s", "features": 8, "scale": 2})
    assert custom["variant"] is None and custom["num_blocks"] == 4
    with pytest.raises(ValueError, match="channels: not a field of the drsan family"):
        normalize_model_config({"variant": "32s", "scale": 2, "channels": 8})
    with pytest.raises(ValueError, match="lacks"):
        normalize_model_config({"features": 8, "scale": 2})


