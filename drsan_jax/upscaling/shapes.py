"""The shapes a network is run at: compile buckets and the smallest picture.

Buckets. XLA compiles one program per input shape, so `inference.Predictor` pads every input at
the bottom and right up to a bucket shape, whose sides come from the geometric set 16, 24, 32,
48, 64, 96, ... (`bucket_size`). Tiles (`upscaling.tiling`) are cut at these sizes, so that no tile is padded.

The smallest picture. Near its borders a network sees the zeros of its convolutions' padding,
and a picture of a few pixels is nothing but border: a 1x1 grey picture came out of DRSAN-32s x2
at a fifth of its brightness. `benchmarks/small_inputs.py` measures how far this reaches (crops
upscaled alone against the same region upscaled in context; benchmarks/README.md, "Small
pictures"): the shipped models need about 24 to 32 LR pixels a side. A side below `MIN_SIDE` is
therefore padded by reflection to it before the network
runs, and the result is cropped back: the network sees a picture of plausible content instead
of a border. The other families cannot be measured without trained weights; their receptive
fields are as deep as DRSAN-32s's (EDSR-baseline, DRAN) or deeper (EDSR, MDSR), and DRAN's DRM,
which pools twice by 2, has no value at all below 4 pixels.
"""

from __future__ import annotations

# The smallest bucket side, in pixels.
MIN_BUCKET = 16
# No side of a picture or tile reaches the network shorter than this, in LR pixels (see the
# module docstring: below it the zero padding darkens the result); shorter pictures are padded
# by reflection. A bucket side: a padded picture computes 32 x 32 pixels at most.
MIN_SIDE = 32


def bucket_size(length: int) -> int:
    """The bucket a side of `length` pixels is padded to: the smallest of 16, 24, 32, 48, ...

    Args:
      length: a positive side length.

    Returns:
      The smallest 2^k or 3 * 2^(k-1) (at least `MIN_BUCKET`) that is >= length.
    """
    if length < 1:
        raise ValueError(f"image sides must be at least 1 pixel, got {length}")
    size = MIN_BUCKET
    while True:
        if length <= size:
            return size
        if length <= size * 3 // 2:
            return size * 3 // 2
        size *= 2


def bucket_shape(height: int, width: int) -> tuple[int, int]:
    """The padded (height, width) an image of this size is computed at."""
    return bucket_size(height), bucket_size(width)


def min_side_padding(length: int) -> tuple[int, int]:
    """The (before, after) reflection padding that brings a side up to `MIN_SIDE`."""
    missing = max(0, MIN_SIDE - length)
    return missing // 2, missing - missing // 2


__all__ = ["MIN_BUCKET", "MIN_SIDE", "bucket_shape", "bucket_size", "min_side_padding"]
