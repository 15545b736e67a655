"""DRAN (c=64, K=16) with its authors' recipe, read from their released training graphs.

docs/networks/dran.md: L1 loss, batch 16, 48x48 LR patches, Adam (0.9, 0.999, 1e-8) at 1e-4
multiplied by 0.75 every 200,000 steps, 2,000,000 steps, Glorot-uniform initialisation; every
scale from scratch.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the DRAN configuration."""
    config = default.get_config()
    config.model = default.model_fields("dran")
    config.learning_rate = 1e-4
    config.lr_decay_rate = 0.75
    config.num_train_steps = 2_000_000
    return config
