"""SMFANet (C=36, N=8) with its authors' recipe (`options/train/SMFANet_DIV2K_100w_x*SR.yml`).

docs/networks/smfanet.md: DIV2K with bicubic LR, 64x64 LR patches (HR 128 / 192 / 256) with
flips and rotations, batch 64, L1 + 0.05 x FFT loss, Adam (0.9, 0.99) at 1e-3, cosine
annealing over 1,000,000 steps down to 1e-6, EMA 0.999, seed 10, Set5 validation every 5,000
steps; each scale from scratch. The authors' DF2K weights came without a config.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the SMFANet configuration."""
    config = default.get_config()
    config.model = default.model_fields("smfanet")
    config.loss = "l1_fft"
    config.batch_size = 64
    config.patch_size = 64
    config.learning_rate = 1e-3
    config.adam_b2 = 0.99
    config.lr_schedule = "cosine"
    config.lr_end_factor = 1e-3  # 1e-6 / 1e-3
    config.num_train_steps = 1_000_000
    config.ema_decay = 0.999
    config.seed = 10
    return config
