"""The short-budget recipe: what trained best in a few thousand steps (docs/training.md, "The short-budget
recipe"), for any model of the zoo.

    python train.py --config configs/short_budget.py:drsan48s --workdir runs/48s_x2_short \
        --config.train_data=../shared/data/train/T91,../shared/data/train/BSD200

The part after the colon names a config file of this folder (default drsan32s); its model,
initialisation and scale are kept, and its training recipe is replaced by this one, the same
for every family (which is what makes the families comparable at one budget): L1 loss, batch 16
of 48x48 LR patches, Adam (0.9, 0.999, 1e-8) with a linear warm-up of 100 steps to 2e-3 and a
cosine decay to zero at num_train_steps, no gradient clipping, and a weight average (EMA 0.999)
that validation, evaluation and export use. The cosine runs to num_train_steps: set it to the
budget (--config.num_train_steps=10000); a run resumed with a larger value continues on the
longer curve.

The paper's recipe (configs/default.py) stays the default everywhere else.
"""

import importlib

import ml_collections

BASES = ("drsan32s", "drsan32m", "drsan32l", "drsan48s", "drsan48m", "dran", "dran_s",
         "edsr_baseline", "edsr", "mdsr_baseline", "mdsr", "lesrcnn", "lesrcnn_s", "smfanet",
         "smfanet_plus", "span", "safmn")


def get_config(base: str = "drsan32s") -> ml_collections.ConfigDict:
    """Returns the short-budget recipe applied to configs/<base>.py."""
    base = base or "drsan32s"
    if base not in BASES:
        raise ValueError(f"expected one of the configs {', '.join(BASES)} after the colon, "
                         f"got {base!r}")
    config = importlib.import_module(f"configs.{base}").get_config()
    config.loss = "l1"
    config.batch_size = 16
    config.patch_size = 48
    config.learning_rate = 2e-3
    config.lr_schedule = "cosine"
    config.warmup_steps = 100
    config.lr_end_factor = 0.0
    config.grad_clip_norm = None
    config.ema_decay = 0.999
    config.num_train_steps = 2000
    config.val_datasets = "Set5,Set14"
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    config.log_every_steps = 50
    return config
