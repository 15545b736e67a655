"""LESRCNN with its authors' recipe (README commands and code).

docs/networks/lesrcnn.md: MSE loss on [0, 1], batch 64, 64x64 LR patches with flips and quarter
turns, Adam (0.9, 0.999, 1e-8) at 1e-4 halved every 400,000 steps, 600,000 steps, gradients
clipped to global norm 10, PyTorch's default initialisation; each scale from scratch.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the LESRCNN configuration."""
    config = default.get_config()
    config.model = default.model_fields("lesrcnn")
    config.loss = "mse"
    config.batch_size = 64
    config.patch_size = 64
    config.learning_rate = 1e-4
    config.lr_decay_rate = 0.5
    config.lr_decay_steps = 400_000
    config.num_train_steps = 600_000
    config.grad_clip_norm = 10.0
    return config
