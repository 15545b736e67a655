"""SAFMN (the ICCV 2023 network, C=36, N=8) with its authors' recipe
(`options/train/SAFMN/train_DF2K_X*.yml`).

docs/networks/safmn.md: DF2K sub-images with bicubic LR, 64x64 LR patches with flips and
rotations, batch 64, L1 + 0.05 x FFT loss, Adam (0.9, 0.99) at 1e-3, cosine annealing over
500,000 steps down to 1e-5, EMA 0.999, seed 10; each scale from scratch. The NTIRE 2023
variant (`safmn-ntire`) has no published recipe: `--config.model.variant=safmn-ntire
--config.model.ntire2023=True` trains it with this one.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Returns the SAFMN configuration."""
    config = default.get_config()
    config.model = default.model_fields("safmn")
    config.loss = "l1_fft"
    config.batch_size = 64
    config.patch_size = 64
    config.learning_rate = 1e-3
    config.adam_b2 = 0.99
    config.lr_schedule = "cosine"
    config.lr_end_factor = 1e-2  # 1e-5 / 1e-3
    config.num_train_steps = 500_000
    config.ema_decay = 0.999
    config.seed = 10
    config.val_datasets = "Set5"
    return config
