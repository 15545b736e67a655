"""Every network of drsan-jax: DRSAN and the baselines it is measured against.

    registry.py   model names -> families; `build_model("edsr-baseline", scale=3)`
    family.py     what a family declares for the rest of the package (`Family`)
    schema.py     the model configuration stored with checkpoints; `InferenceModel`
    params.py     parameter shapes, counts, per-scale paths, each family's initialisation
    layers.py     shared layers: conv, PReLU, pixel shuffle (both orders), upsampler, masks
    conv.py       the stride-1 convolution with an im2col weight gradient (fast on CPUs)
    drsan.py      DRSAN: DRM, residual block, DRSA step, DRAG        (Park et al., TMM 2021)
    dran.py       DRAN, DRAN-s                                        (Park et al., ICPR 2020)
    edsr.py       EDSR-baseline, EDSR                                 (Lim et al., CVPRW 2017)
    mdsr.py       MDSR-baseline, MDSR: one network for x2/x3/x4       (Lim et al., CVPRW 2017)
    lesrcnn.py    LESRCNN, LESRCNN-S (multi-scale)                    (Tian et al., KBS 2020)

Every model maps an NHWC RGB batch in [0, 1] to the HR batch in [0, 1], takes an optional
validity mask that makes a padded batch equal each image run alone, a `dtype` for bfloat16
compute and a `conv_impl`; see `family.py` for the conventions.
"""

from drsan_jax.models.drsan import (
    DRAG,
    DRM,
    DRSAN,
    SCALES,
    VARIANTS,
    ResidualBlock,
    dynamic_residual,
    num_paths,
    path_index,
)
from drsan_jax.models.family import Family
from drsan_jax.models.layers import PReLU, Upsampler, depth_to_space, upsample_mask
from drsan_jax.models.params import count_params, init_params, param_shapes, scale_path
from drsan_jax.models.registry import (
    FAMILIES,
    MODEL_NAMES,
    build_model,
    family_of,
    get_family,
    resolve,
)
from drsan_jax.models.schema import (
    DTYPES,
    InferenceModel,
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
    "InferenceModel",
    "MODEL_NAMES",
    "PReLU",
    "ResidualBlock",
    "SCALES",
    "Upsampler",
    "VARIANTS",
    "build_model",
    "build_model_from_config",
    "config_of",
    "count_params",
    "depth_to_space",
    "dynamic_residual",
    "family_of",
    "get_family",
    "init_params",
    "model_name",
    "normalize_model_config",
    "num_paths",
    "param_shapes",
    "path_index",
    "resolve",
    "scale_path",
    "upsample_mask",
]
