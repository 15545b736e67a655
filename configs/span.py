"""SPAN (C=28, the NTIRE 2024 entry's size) in its training form, with the Conv3XC branches.

Neither the SPAN repository nor the NTIRE 2024 one ships a training recipe (docs/networks/
span.md), and the paper could not be read. Until it can, this config borrows the BasicSR recipe
of the same generation of efficient networks (SAFMN's and SMFANet's, configs/smfanet.py) with
plain L1: 64x64 LR patches, batch 64, Adam (0.9, 0.99) at 1e-3, cosine over 1,000,000 steps
to 1e-6, EMA 0.999. It is not the SPAN authors' recipe. The branches fold into the deployed
3x3 convolutions for validation, evaluation, upscaling and export (`models.deploy`).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the SPAN configuration."""
    config = default.get_config()
    config.model = default.model_fields("span")
    config.model.reparam = True
    config.loss = "l1"
    config.batch_size = 64
    config.patch_size = 64
    config.learning_rate = 1e-3
    config.adam_b2 = 0.99
    config.lr_schedule = "cosine"
    config.lr_end_factor = 1e-3
    config.num_train_steps = 1_000_000
    config.ema_decay = 0.999
    return config
