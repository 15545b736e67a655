"""Images in and out: files, resizing, augmentation, training sets and benchmark pairs.

One module per idea, none of them needing a model:

    image_io.py      read_image / write_image (8- and 16-bit, grey, RGB, RGBA), list_images,
                     check_image_file (an image's first bytes, before any work starts),
                     to_rgb_uint8 (the 8-bit RGB of caches and metrics), to_model_input (the
                     network's float32 RGB) and quantize (its output back to integer levels)
    decode.py        a file's pixels as viewers show them (EXIF orientation, transparency),
                     within max_image_pixels (DRSAN_JAX_MAX_IMAGE_PIXELS); no animations
    png.py           the 16-bit PNG codec Pillow lacks, and writing by rows
    resize.py        MATLAB's bicubic imresize, bit-exact: bicubic_downscale makes LR images
    transforms.py    the 8 flips and quarter turns (augmentation and the self-ensemble)
    training_set.py  load_training_set: folders, DIV2K or TFDS, decoded once into an .npy cache
    sampler.py       PatchSampler: random aligned LR/HR patches, a pure function of the step;
                     MultiScaleSampler: a scale drawn per step for multi-scale models
    benchmark.py     benchmark folders (HR/<name>/, x<s>/<name>/): datasets, pairs, load_pair

The names callers use are re-exported here (`data.load_training_set`, `data.PatchSampler`, ...).
"""

from drsan_jax.data.benchmark import (
    BENCHMARK_DIR_ENV,
    BenchmarkError,
    ImagePair,
    default_data_dir,
    find_datasets,
    load_pair,
    pair_images,
)
from drsan_jax.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    check_image_file,
    list_images,
    quantize,
    read_image,
    to_model_input,
    to_rgb_uint8,
    write_image,
)
from drsan_jax.data.resize import bicubic_downscale, bicubic_upscale, imresize
from drsan_jax.data.sampler import MultiScaleSampler, PatchSampler
from drsan_jax.data.training_set import (
    DIV2K_HR,
    DIV2K_LR,
    TrainingPair,
    TrainingSet,
    check_training_data,
    load_training_set,
)
from drsan_jax.data.transforms import NUM_TRANSFORMS, inverse_transform, transform

__all__ = [
    "BENCHMARK_DIR_ENV",
    "DIV2K_HR",
    "DIV2K_LR",
    "IMAGE_EXTENSIONS",
    "NUM_TRANSFORMS",
    "BenchmarkError",
    "ImagePair",
    "ImageReadError",
    "MultiScaleSampler",
    "PatchSampler",
    "TrainingPair",
    "TrainingSet",
    "bicubic_downscale",
    "bicubic_upscale",
    "check_image_file",
    "check_training_data",
    "default_data_dir",
    "find_datasets",
    "imresize",
    "inverse_transform",
    "list_images",
    "load_pair",
    "load_training_set",
    "pair_images",
    "quantize",
    "read_image",
    "to_model_input",
    "to_rgb_uint8",
    "transform",
    "write_image",
]
