"""DRSAN-48m (c=48, N=3, K=8), trained with the default recipe."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRSAN-48m configuration."""
    config = default.get_config()
    config.model.variant = "48m"
    return config
