"""LESRCNN-S: one LESRCNN for x2/x3/x4 (`lesrcnn_b`), with LESRCNN's recipe, multi-scale.

docs/networks/lesrcnn.md (LESRCNN-S): each step draws its scale uniformly from {2, 3, 4} (64x64 LR patches
at every scale) and runs that scale's upsampler; everything else as lesrcnn.py.
"""

import ml_collections

from configs import default, lesrcnn


def get_config() -> ml_collections.ConfigDict:
    """Returns the LESRCNN-S configuration."""
    config = lesrcnn.get_config()
    config.model = default.model_fields("lesrcnn-s")
    return config
