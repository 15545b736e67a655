"""The 8 flips and quarter turns of an image (the dihedral group of the square).

Training augments patches with them (`sampler.PatchSampler`) and the geometric self-ensemble of
EDSR ("+", `inference.Predictor(self_ensemble=True)`) runs the model on all 8 and maps each
output back with `inverse_transform`. They are views (no copy) of NumPy arrays of any trailing
shape, so the same index moves an LR patch and its HR patch identically.
"""

from __future__ import annotations

import numpy as np

NUM_TRANSFORMS = 8


def transform(image: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 flips and quarter turns of an image (the self-ensemble's inputs).

    Args:
      image: (H, W, ...) array.
      k: 0..7; k % 4 counter-clockwise quarter turns, then a left-right flip if k >= 4.
        k = 0 is the identity; odd k % 4 swaps height and width.

    Returns:
      The transformed view.
    """
    _check_transform(k)
    image = np.rot90(image, k % 4, axes=(0, 1))
    return image[:, ::-1] if k >= 4 else image


def inverse_transform(image: np.ndarray, k: int) -> np.ndarray:
    """Undoes `transform(., k)`: inverse_transform(transform(x, k), k) is x, pixel for pixel."""
    _check_transform(k)
    if k >= 4:
        image = image[:, ::-1]
    return np.rot90(image, -(k % 4), axes=(0, 1))


def _check_transform(k: int) -> None:
    if k not in range(NUM_TRANSFORMS):
        raise ValueError(f"transform index must be 0..{NUM_TRANSFORMS - 1}, got {k}")


__all__ = ["NUM_TRANSFORMS", "inverse_transform", "transform"]
