"""Every network of drsan-jax: DRSAN and the baselines it is measured against.

    registry.py   model names -> families; `build_model("edsr-baseline", scale=3)`
    family.py     what a family declares for the rest of the package (`Family`)
    family.py     also the zoo's SCALES and the naming rule of scale-dependent layers
    schema.py     the model configuration stored with checkpoints
    params.py     parameter shapes, counts, flat names, per-scale parts, each family's init
    layers.py     shared layers: the conv factory (plain, grouped, 'VALID'), PReLU, pixel
                  shuffle (both orders), the upsampler, masks, the DIV2K mean shift, EDSR's
                  residual block, exact GELU, input checks
    conv.py       the stride-1 convolution with an im2col weight gradient (fast on CPUs)
    depthwise.py  depthwise convolutions as shifted multiply-adds (SMFANet, SAFMN; 67x faster
                  to train on CPUs than XLA's grouped convolution)
    dra.py        dynamic residual attention: the residual block and the DRA einsum that
                  DRSAN and DRAN share
    drsan.py      DRSAN: DRM, DRSA step, DRAG                         (Park et al., TMM 2021)
    dran.py       DRAN, DRAN-s                                        (Park et al., ICPR 2020)
    edsr.py       EDSR-baseline, EDSR                                 (Lim et al., CVPRW 2017)
    mdsr.py       MDSR-baseline, MDSR: one network for x2/x3/x4       (Lim et al., CVPRW 2017)
    lesrcnn.py    LESRCNN, LESRCNN-S (multi-scale)                    (Tian et al., KBS 2020)
    smfanet.py    SMFANet, SMFANet+                                   (Zheng et al., ECCV 2024)
    span.py       SPAN (NTIRE 2024 entry), SPAN-tiny; training form   (Wan et al., CVPRW 2024)
    safmn.py      SAFMN, its NTIRE 2023 variant                       (Sun et al., ICCV 2023)
    resampling.py PyTorch's adaptive max pooling, nearest and bilinear interpolation (SMFANet,
                  SAFMN)

No family file imports another; what two families share lives in `layers.py` or `dra.py`.
Every model maps an NHWC RGB batch in [0, 1] to the HR batch in [0, 1], takes an optional
validity mask that makes a padded batch equal each image run alone, a `dtype` for bfloat16
compute and a `conv_impl`; see `family.py` for the conventions.
"""

from drsan_jax.models.dra import ResidualBlock, dynamic_residual, num_paths, path_index
from drsan_jax.models.drsan import DRAG, DRM, DRSAN, VARIANTS
from drsan_jax.models.family import SCALES, UPSAMPLER, Family, branch_name, branch_scale
from drsan_jax.models.layers import PReLU, Upsampler, depth_to_space, upsample_mask
from drsan_jax.models.params import (
    SEPARATOR,
    count_params,
    flatten,
    init_params,
    is_scale_dependent,
    param_shapes,
    scale_path,
    unflatten,
)
from drsan_jax.models.registry import (
    FAMILIES,
    MODEL_NAMES,
    build_model,
    deploy,
    family_of,
    get_family,
    padded_batches_exact,
    resolve,
)
from drsan_jax.models.schema import (
    DTYPES,
    build_model_from_config,
    config_of,
    model_name,
    normalize_model_config,
)

__all__ = [
    "DRAG",
    "DRM",
    "DRSAN",
    "DTYPES",
    "FAMILIES",
    "Family",
    "MODEL_NAMES",
    "PReLU",
    "ResidualBlock",
    "SCALES",
    "SEPARATOR",
    "UPSAMPLER",
    "Upsampler",
    "VARIANTS",
    "branch_name",
    "branch_scale",
    "build_model",
    "build_model_from_config",
    "config_of",
    "deploy",
    "count_params",
    "depth_to_space",
    "dynamic_residual",
    "family_of",
    "flatten",
    "get_family",
    "init_params",
    "is_scale_dependent",
    "model_name",
    "normalize_model_config",
    "num_paths",
    "padded_batches_exact",
    "param_shapes",
    "path_index",
    "resolve",
    "scale_path",
    "unflatten",
    "upsample_mask",
]
