"""EDSR-baseline (B=16, F=64) with the official PyTorch code's recipe.

docs/networks/edsr_mdsr.md: L1 loss, batch 16, 48x48 LR patches, Adam (0.9, 0.999, 1e-8) at 1e-4
halved at step 200,000, 300,000 steps, PyTorch's default initialisation. x2 from scratch; x3
and x4 start from the trained x2 (every layer whose shape matches is copied):

    python train.py --config configs/edsr_baseline.py --workdir runs/edsr_baseline_x3 \\
        --config.scale=3 --config.init_from=runs/edsr_baseline_x2 \\
        --config.train_data=../shared/data/train/T91,../shared/data/train/BSD200
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the EDSR-baseline configuration."""
    config = default.get_config()
    config.model = default.model_fields("edsr-baseline")
    config.learning_rate = 1e-4
    config.lr_decay_rate = 0.5
    config.lr_decay_steps = 200_000
    config.num_train_steps = 300_000
    return config
