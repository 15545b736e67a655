"""Super-resolving images of any size with a bounded number of compiled programs.

XLA compiles one program per input shape, and benchmark sets (let alone users' folders) hold
dozens of image sizes. A `Predictor` pads each image at the bottom and right up to a bucket
shape, whose sides come from the geometric set 16, 24, 32, 48, 64, 96, 128, ... (2^k and
3 * 2^(k-1)), so a side grows by at most 1.5x and one octave of sizes shares two programs. The
padding does not change the result: DRSAN takes a validity mask (see `drsan_jax.models`) that
keeps every convolution's zero border and every DRM mean exactly as for the image alone, so the
bucketed output equals plain whole-image inference up to float rounding. `exact_shapes=True`
runs that plain inference (one program per shape, no mask) for anyone who wants to check.

Images of one bucket can share a call (`batch_size`), capped by a pixel budget so that large
images run one at a time. The geometric self-ensemble of EDSR ("+") is `self_ensemble=True`:
the model sees the 8 flips and quarter turns of each image (`transform`), each output is mapped
back (`inverse_transform`) and the 8 are averaged before any clipping.

Convolutions run at float32 "highest" precision by default: on recent GPUs the default lets
float32 convolutions drop to TF32 (about 3 decimal digits), enough to move 8-bit outputs and
therefore reported PSNRs.

On a CPU split into several devices (`drsan_jax.runtime.configure`, one per core) each call
also spreads over the cores (`split_rows`, on by default there). XLA:CPU runs each of DRSAN's
small convolutions on one core, so a single image on the default device leaves the others
idle, where PyTorch eager threads inside each convolution. Instead the padded batch and its mask are split by rows over all local devices
(a `NamedSharding` over a one-axis mesh, the parameters replicated): XLA's SPMD partitioner
gives every device a band of rows, exchanges the border rows each convolution needs and turns
the DRM means into cross-device sums, within float rounding of the one-device result
(benchmarks/README.md has the speeds, from benchmarks/bench.py). Buckets whose padded height does not split into at least 8 rows per device
run on one device as before; `exact_shapes` always does. A call that holds as many images as
there are devices (or a multiple: `batch_size`, as `api.Upscaler` sets it for tiles) is split
by images instead: each device runs whole images, with nothing to exchange.

    predictor = Predictor(model, params)
    sr = data.quantize(predictor(lq))     # lq: one HxW[xC] image, uint8 / 16 or float in [0, 1]
    for index, sr in predictor.predict_iter(images):   # many, grouped by bucket
        ...
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from drsan_jax.data.image_io import to_model_input
from drsan_jax.data.transforms import NUM_TRANSFORMS, inverse_transform, transform
from drsan_jax.models import deploy, padded_batches_exact

# The bucket sizes live with the other shapes the network runs at (JAX-free, for every backend).
from drsan_jax.upscaling.shapes import MIN_BUCKET, bucket_shape, bucket_size

# LR pixels of one padded batch: four 512x512 inputs, well within a GPU and a laptop's memory
# for the published variants (a 32s at 512x512 needs about half a GiB of scratch).
DEFAULT_MAX_BATCH_PIXELS = 4 * 512 * 512
# Fewest padded rows a device gets when an image is split by rows (split_rows).
MIN_ROWS_PER_DEVICE = 8
# The one axis of the device mesh calls are split over (by rows or by images).
DEVICES_AXIS = "devices"


def pad_batch(images: Sequence[np.ndarray], shape: tuple[int, int], size: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Pads images at the bottom and right into one batch, with the mask DRSAN takes.

    Args:
      images: (h, w, 3) float32 images, each at most `shape`.
      shape: the (height, width) of the batch, e.g. `bucket_shape` of the largest image.
      size: the batch size, at least len(images); default len(images). Unused slots are
        zeros with a full mask: they are computed and dropped, and a full mask keeps their
        DRM means (a division by the valid area) finite.

    Returns:
      lq (size, *shape, 3) float32, zero past each image; mask (size, *shape, 1) float32, one
      on each image's pixels and zero on its padding.
    """
    size = len(images) if size is None else size
    lq = np.zeros((size, *shape, 3), np.float32)
    mask = np.zeros((size, *shape, 1), np.float32)
    for j, x in enumerate(images):
        lq[j, : x.shape[0], : x.shape[1]] = x
        mask[j, : x.shape[0], : x.shape[1]] = 1.0
    mask[len(images) :] = 1.0
    return lq, mask


@functools.partial(jax.jit, static_argnames=("model", "precision"))
def _forward(
    model: nn.Module, params: Any, lq: jax.Array, mask: jax.Array | None, precision: str | None
) -> jax.Array:
    """model.apply at a given convolution precision; one compiled program per model and shape."""
    with jax.default_matmul_precision(precision):
        return model.apply({"params": params}, lq, mask)


def compiled_programs() -> int:
    """How many programs the predictors of this process have compiled so far (all models)."""
    return _forward._cache_size()


def default_split_rows() -> bool:
    """What `split_rows="auto"` means here: one CPU process with several CPU devices.

    On a GPU or TPU one device already uses the whole accelerator, and in a multi-process run
    each process's devices are left to the caller.
    """
    return (jax.default_backend() == "cpu" and jax.process_count() == 1
            and jax.local_device_count() > 1)


@functools.cache
def _split_shardings(devices: tuple[jax.Device, ...]
                     ) -> tuple[NamedSharding, NamedSharding, NamedSharding]:
    """(batch split on axis 1 (rows), on axis 0 (images), replicated) over `devices`.

    Cached so that every predictor passes equal shardings and `_forward` compiles one program
    per shape. The axis type is Auto: the partitioner chooses the intermediates' shardings.
    """
    mesh = jax.make_mesh((len(devices),), (DEVICES_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)
    return (NamedSharding(mesh, PartitionSpec(None, DEVICES_AXIS)),
            NamedSharding(mesh, PartitionSpec(DEVICES_AXIS)), NamedSharding(mesh, PartitionSpec()))


class Predictor:
    """Jitted, bucketed, masked inference of a DRSAN on images of any size.

    Attributes:
      model: the DRSAN module (anything with a `scale` attribute and
        `apply({"params": p}, lq, mask)` with the DRSAN semantics).
      params: its parameters.
      scale: the model's upscaling factor.
      self_ensemble: average the outputs of the 8 flips and quarter turns.
      exact_shapes: run each image alone at its own shape, with no padding or mask; always
        for the families whose output depends on the whole image (SMFANet, SAFMN:
        `Family.padded_batches_exact`), which take no mask.
      batch_size: most images of one bucket per call (1 in exact_shapes mode).
      max_batch_pixels: most LR pixels (padded) per call; larger buckets get smaller batches.
      precision: `jax.default_matmul_precision` for the convolutions ("highest", or None for
        the backend's default).
      split_rows: whether calls are spread over all local devices (resolved: False with one
        device or in exact_shapes mode). A call of a multiple of the device count of images
        gives each device whole images; another is split by rows when its padded height
        divides by the device count into at least `MIN_ROWS_PER_DEVICE` rows each, else it
        runs on one device. The outputs agree with one-device inference up to float rounding.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        *,
        self_ensemble: bool = False,
        exact_shapes: bool = False,
        batch_size: int = 1,
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
        precision: str | None = "highest",
        split_rows: bool | str = "auto",
    ):
        """See the class attributes; `split_rows` is True, False or "auto".

        "auto" splits when `default_split_rows()` (a single CPU process with several CPU
        devices) and not in exact_shapes mode; True splits whenever there are several local
        devices.

        Raises:
          ValueError: an invalid option, or split_rows=True with exact_shapes=True.
        """
        auto = isinstance(split_rows, str) and split_rows == "auto"
        if not (auto or isinstance(split_rows, (bool, np.bool_))):
            raise ValueError(f'split_rows must be True, False or "auto", got {split_rows!r}')
        if not auto and split_rows and exact_shapes:
            raise ValueError("split_rows=True does not apply with exact_shapes=True, which runs "
                             "each image alone on one device")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(max_batch_pixels, int) or max_batch_pixels < 1:
            raise ValueError(
                f"max_batch_pixels must be a positive integer, got {max_batch_pixels!r}")
        exact_shapes = exact_shapes or not padded_batches_exact(model)
        # A training-form model (SPAN's branches) runs folded: the same function, cheaper.
        model, params = deploy(model, params)
        self.model = model
        # Once on the device, not at every call (arrays already placed or sharded stay as they are).
        self.params = jax.device_put(params)
        self.scale = int(model.scale)
        self.self_ensemble = self_ensemble
        self.exact_shapes = exact_shapes
        self.batch_size = batch_size
        self.max_batch_pixels = max_batch_pixels
        self.precision = precision
        if auto:
            split_rows = default_split_rows()
        self.split_rows = bool(split_rows) and not exact_shapes and jax.local_device_count() > 1
        self._split_devices = jax.local_device_count() if self.split_rows else 1
        if self.split_rows:
            self._rows, self._images, replicated = _split_shardings(tuple(jax.local_devices()))
            # A second copy of the parameters, on every device; `self.params` (one device)
            # still serves the calls that are not split: committed replicated parameters
            # would pull those onto every device too, each computing the same thing.
            self._split_params = jax.device_put(params, replicated)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Super-resolves one image; see `predict_iter` for the input and output."""
        ((_, sr),) = self.predict_iter([image])
        return sr

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Super-resolves images; returns the `predict_iter` outputs in input order."""
        results = dict(self.predict_iter(images))
        return [results[i] for i in range(len(images))]

    def predict_iter(self, images: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Super-resolves images, yielding each as soon as it is done.

        Images are grouped by bucket, so they come out in an order that differs from the input;
        only one group of `batch_size` images is held at a time.

        Args:
          images: HxW or HxWxC images (see `data.image_io.to_model_input`): uint8 / uint16, or
            float in [0, 1].

        Yields:
          (index into `images`, SR) with SR the (H*scale, W*scale, 3) float32 output, unclipped;
          `data.image_io.quantize` turns it into the image that benchmarks score.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            height, width = np.shape(image)[:2]
            groups.setdefault(self._compute_shape(height, width), []).append(i)
        for shape, indices in groups.items():
            per_call = self._batch_for(shape)
            for start in range(0, len(indices), per_call):
                chunk = indices[start : start + per_call]
                yield from self._predict_chunk(images, chunk)

    def _compute_shape(self, height: int, width: int) -> tuple[int, int]:
        """The shape an input of this size is computed at."""
        return (height, width) if self.exact_shapes else bucket_shape(height, width)

    def _batch_for(self, shape: tuple[int, int]) -> int:
        """Images per call at a computed shape: the batch size, capped by the pixel budget."""
        if self.exact_shapes:
            return 1
        return max(1, min(self.batch_size, self.max_batch_pixels // (shape[0] * shape[1])))

    def _predict_chunk(
        self, images: Sequence[np.ndarray], indices: list[int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Runs up to one batch of images (times 8 transforms with the self-ensemble)."""
        transforms = range(NUM_TRANSFORMS) if self.self_ensemble else range(1)
        by_shape: dict[tuple[int, int], list[tuple[int, int, np.ndarray]]] = {}
        for i in indices:
            lq = to_model_input(images[i])
            for k in transforms:
                x = transform(lq, k)
                by_shape.setdefault(self._compute_shape(*x.shape[:2]), []).append((i, k, x))
        # Dispatch every call before reading any result back, so transfers overlap compute.
        pending = []
        for shape, items in by_shape.items():
            per_call = self._batch_for(shape)
            for start in range(0, len(items), per_call):
                batch = items[start : start + per_call]
                # A short last batch fills spare slots (the same program again), unless that
                # would give a device nothing but spare slots: then it runs alone, by rows.
                size = len(batch) if len(batch) < self._split_devices else per_call
                pending.append((batch, self._dispatch(shape, [x for _, _, x in batch], size)))
        sums: dict[int, np.ndarray] = {}
        for batch, output in pending:
            output = np.asarray(output)  # (n, H_c*s, W_c*s, 3)
            for j, (i, k, x) in enumerate(batch):
                sr = inverse_transform(
                    output[j, : x.shape[0] * self.scale, : x.shape[1] * self.scale], k
                )
                sums[i] = sr if i not in sums else sums[i] + sr
        for i in indices:
            yield i, np.ascontiguousarray(sums.pop(i) / np.float32(len(transforms)))

    def _dispatch(self, shape: tuple[int, int], inputs: list[np.ndarray], size: int) -> jax.Array:
        """Starts one call on `inputs` (each (h, w, 3)) padded into a (size, *shape, 3) batch."""
        if self.exact_shapes:
            (x,) = inputs
            return _forward(self.model, self.params, x[None], None, self.precision)
        lq, mask = pad_batch(inputs, shape, size)
        sharding = self._split_sharding(shape[0], size)
        if sharding is not None:
            # Committed split inputs and replicated parameters: jit compiles the program for
            # these shardings (one per shape) and the partitioner splits the computation.
            lq, mask = jax.device_put((lq, mask), sharding)
            return _forward(self.model, self._split_params, lq, mask, self.precision)
        return _forward(self.model, self.params, lq, mask, self.precision)

    def _split_sharding(self, height: int, size: int) -> NamedSharding | None:
        """How a call of `size` images at this padded height is spread over the devices.

        By images when every device gets the same number (no rows to exchange, no DRM sums
        across devices), else by rows when every device gets `MIN_ROWS_PER_DEVICE` or more,
        else not at all (None).
        """
        n = self._split_devices
        if not self.split_rows:
            return None
        if size % n == 0:
            return self._images
        if height % n == 0 and height // n >= MIN_ROWS_PER_DEVICE:
            return self._rows
        return None


__all__ = [
    "DEFAULT_MAX_BATCH_PIXELS",
    "MIN_BUCKET",
    "MIN_ROWS_PER_DEVICE",
    "Predictor",
    "bucket_shape",
    "bucket_size",
    "compiled_programs",
    "default_split_rows",
    "pad_batch",
]
