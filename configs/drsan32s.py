"""DRSAN-32s (c=32, N=4, K=4): the default configuration, under the name the other variants use."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRSAN-32s configuration."""
    return default.get_config()
