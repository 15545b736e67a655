"""MDSR-baseline (B=16): one network for x2/x3/x4, with the authors' multi-scale recipe.

docs/networks/edsr_mdsr.md (the legacy code's behaviour): each step draws its scale uniformly from
{2, 3, 4} and runs that scale's branch on 48x48 LR patches; L1 loss, batch 16, Adam (0.9, 0.999,
1e-8) at 1e-4 halved every 200,000 steps, 650,000 steps, from scratch (no x2 pre-training).
Plain Adam over the whole tree, as the PyTorch code: the idle branches keep moving with their
momentum. Validation runs every scale.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the MDSR-baseline configuration."""
    config = default.get_config()
    config.model = default.model_fields("mdsr-baseline")
    config.learning_rate = 1e-4
    config.lr_decay_rate = 0.5
    config.lr_decay_steps = 200_000
    config.num_train_steps = 650_000
    return config
