"""DRSAN-32m (c=32, N=4, K=8), trained with the default recipe."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRSAN-32m configuration."""
    config = default.get_config()
    config.model.variant = "32m"
    return config
