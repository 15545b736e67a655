"""DRSAN-48s (c=48, N=3, K=4), trained with the default recipe."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRSAN-48s configuration."""
    config = default.get_config()
    config.model.variant = "48s"
    return config
