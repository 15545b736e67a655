"""SMFANet+ (C=48, N=12) with its authors' recipe: SMFANet's (configs/smfanet.py).

The `options/train/SMFANet_plus_DIV2K_100w_x*SR.yml` files differ from SMFANet's only in the
network's size (docs/networks/smfanet.md).
"""

import ml_collections

from configs import default, smfanet


def get_config() -> ml_collections.ConfigDict:
    """Returns the SMFANet+ configuration."""
    config = smfanet.get_config()
    config.model = default.model_fields("smfanet-plus")
    return config
