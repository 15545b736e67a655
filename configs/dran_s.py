"""DRAN-s (c=64, K=8, DRM p=9; sizes inferred from the published counts) with DRAN's recipe."""

import ml_collections

from configs import default, dran


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRAN-s configuration."""
    config = dran.get_config()
    config.model = default.model_fields("dran-s")
    return config
