"""Default training configuration: the paper's recipe (docs/networks/drsan.md, "Training recipe") for DRSAN-32s.

Every field has a comment; the variant files (drsan32s.py ... drsan48m.py) and the baselines'
files (dran.py, edsr_baseline.py, mdsr.py, lesrcnn.py, ...) override only what differs; a
baseline replaces `config.model` with its family's fields (`model_fields`). Override any field
from the command line, e.g.

    python train.py --config configs/drsan48s.py --workdir runs/drsan48s_x2 \
        --config.train_data=../shared/data/train/T91,../shared/data/train/BSD200 \
        --config.scale=3 --config.batch_size=32

Relative paths are relative to the working directory. `train_data` has no default: every
command names its training images.
"""

import dataclasses

import ml_collections
from ml_collections import config_dict


def model_fields(name: str) -> ml_collections.ConfigDict:
    """`config.model` for a published model of any family ("edsr-baseline", "mdsr", ...).

    The size fields are placeholders (None: the variant's; set them for a custom size), the
    option fields start at the module's defaults; the family's module documents each field.
    """
    from drsan_jax.models import resolve

    family, variant = resolve(name)
    defaults = {f.name: f.default for f in dataclasses.fields(family.module)}
    model = ml_collections.ConfigDict()
    model.family = family.name
    model.variant = variant
    for field in family.size_fields:
        model[field] = config_dict.placeholder(type(family.variants[variant][field]))
    for field in family.option_fields:
        model[field] = defaults[field]
    model.dtype = "float32"
    return model


def get_config() -> ml_collections.ConfigDict:
    """Returns the default configuration."""
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    # Model family (drsan_jax.models): "drsan", "dran", "edsr", "mdsr", "lesrcnn".
    config.model.family = "drsan"
    # Published variant: "32s", "32m", "32l", "48s" or "48m" (channels c, blocks N, DRAGs K).
    config.model.variant = "32s"
    # Channels c; None takes the variant's. Set with num_blocks/num_groups for tiny test models.
    config.model.features = config_dict.placeholder(int)
    # Residual blocks N per DRAG; None takes the variant's.
    config.model.num_blocks = config_dict.placeholder(int)
    # DRAGs K; None takes the variant's.
    config.model.num_groups = config_dict.placeholder(int)
    # Ablation (paper Table VI): activation on the DRM path weights, "none", "tanh", "sigmoid".
    config.model.drm_activation = "none"
    # Ablation: residual self-attention gating f_n = (t + d) * sigmoid(t); False: f_n = t + d.
    config.model.use_rsa = True
    # Ablation: residual paths, "dynamic" (DRM weights), "plain" (SRResNet) or "ones".
    config.model.residual = "dynamic"
    # Ablation: concat of f_0..f_N + 1x1 fusion at the end of each DRAG; False returns f_N.
    config.model.use_fusion = True
    # Computation dtype, "float32" or "bfloat16" (parameters and loss stay float32).
    config.model.dtype = "float32"

    # Upscaling factor: 2, 3 or 4. A multi-scale model (MDSR, LESRCNN-S) trains all three, each
    # step at a scale drawn uniformly; this is then the scale its checkpoints run at by default.
    config.scale = 2
    # Training images, comma-separated: HR folders, a DIV2K folder (DIV2K_train_HR/ and, if
    # present, DIV2K_train_LR_bicubic/X<s>/), or tfds:div2k. Required: no default, since the
    # data decides what the model learns (the shipped models: ../shared/data/train/T91 and
    # ../shared/data/train/BSD200; the paper: DIV2K).
    config.train_data = config_dict.placeholder(str)
    # Where decoded HR and bicubic LR training images are cached as .npy (made once, reused).
    config.cache_dir = "~/.cache/drsan_jax"
    # Benchmark root for validation during training, laid out as HR/<set>/ and x<s>/<set>/.
    config.val_data = "../shared/data/benchmark"
    # Benchmark sets to validate on, comma-separated; "" turns validation off.
    config.val_datasets = "Set5"

    # LR patch side in pixels (HR patches are patch_size * scale).
    config.patch_size = 48
    # Global batch over all devices and hosts; must divide by the number of devices.
    config.batch_size = 16
    # Total training steps. The paper gives none; DRSAN's predecessors train for about 10^6.
    config.num_train_steps = 1_000_000
    # Training loss: "l1" (DRSAN, DRAN, EDSR, MDSR), "mse" (LESRCNN) or "l1_fft" (L1 + 0.05 x
    # the L1 of the images' 2-D FFTs: SAFMN, SMFANet).
    config.loss = "l1"
    # Adam learning rate at step 0.
    config.learning_rate = 2e-4
    # Factor the learning rate is multiplied by every lr_decay_steps (staircase).
    config.lr_decay_rate = 0.85
    # Steps between learning-rate decays.
    config.lr_decay_steps = 200_000
    # Learning-rate schedule: "staircase" (the paper's: learning_rate * lr_decay_rate every
    # lr_decay_steps) or "cosine" (from learning_rate down to learning_rate * lr_end_factor at
    # num_train_steps); drsan_jax.training.optim documents both.
    config.lr_schedule = "staircase"
    # Steps of linear warm-up to learning_rate before the schedule starts (0: none).
    config.warmup_steps = 0
    # "cosine" only: the final learning rate as a fraction of learning_rate.
    config.lr_end_factor = 0.0
    # Adam beta1.
    config.adam_b1 = 0.9
    # Adam beta2.
    config.adam_b2 = 0.999
    # Adam epsilon.
    config.adam_eps = 1e-8
    # Clip the gradient to this global L2 norm before Adam (LESRCNN: 10); None: no clipping.
    config.grad_clip_norm = config_dict.placeholder(float)
    # Exponential moving average of the weights (BasicSR's params_ema), e.g. 0.999: stored in
    # each checkpoint and used for validation, eval.py, upscaling and export. None: off.
    config.ema_decay = config_dict.placeholder(float)
    # Seed of the parameter initialisation and of the patch sampler.
    config.seed = 0
    # Checkpoint (workdir, step folder, shipped name or weights file) to start from: every
    # parameter whose name and shape match is copied (EDSR's x2 -> x3/x4 transfer: the
    # upsampler layers that differ start fresh). None: fresh.
    config.init_from = config_dict.placeholder(str)
    # Distillation: a model to learn from beside the HR images (a shipped name, a workdir or a
    # weights file, e.g. the LESRCNN authors' lesrcnn_x2.pth), at this run's scale. Its outputs
    # on the training images are computed once before the first step and cropped with the
    # patches; the loss becomes (1 - teacher_weight) * loss(SR, HR) + teacher_weight *
    # loss(SR, teacher). None: no teacher.
    config.teacher = config_dict.placeholder(str)
    # With a teacher: the share of the loss that is the teacher's target, in (0, 1].
    config.teacher_weight = 0.5

    # Background threads cutting patches.
    config.data_workers = 2
    # Batches prepared ahead of the training step.
    config.prefetch_batches = 8

    # Steps between progress lines and TensorBoard training scalars.
    config.log_every_steps = 100
    # Steps between validations (each also saves a checkpoint, ranked by PSNR).
    config.eval_every_steps = 5000
    # Steps between checkpoints (one is also saved at the end).
    config.checkpoint_every_steps = 1000
    # Latest checkpoints kept.
    config.keep_checkpoints = 3
    # Checkpoints with the best validation PSNR kept besides the latest.
    config.keep_best_checkpoints = 1

    return config
