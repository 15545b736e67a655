"""EDSR (B=32, F=256, residual scaling 0.1) with the official PyTorch code's recipe.

The recipe of edsr_baseline.py (x3/x4 from the trained x2, `--config.init_from`).
"""

import ml_collections

from configs import default, edsr_baseline


def get_config() -> ml_collections.ConfigDict:
    """Returns the EDSR configuration."""
    config = edsr_baseline.get_config()
    config.model = default.model_fields("edsr")
    return config
