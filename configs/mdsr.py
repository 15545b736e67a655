"""MDSR (B=80): one network for x2/x3/x4, with mdsr_baseline.py's multi-scale recipe."""

import ml_collections

from configs import default, mdsr_baseline


def get_config() -> ml_collections.ConfigDict:
    """Returns the MDSR configuration."""
    config = mdsr_baseline.get_config()
    config.model = default.model_fields("mdsr")
    return config
