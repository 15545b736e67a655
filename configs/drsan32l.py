"""DRSAN-32l (c=32, N=4, K=10), trained with the default recipe."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRSAN-32l configuration."""
    config = default.get_config()
    config.model.variant = "32l"
    return config
