"""Pixel rate of tiled upscaling against whole-image upscaling, and where the tiled time goes.

    python benchmarks/tiling_speed.py                       # shipped 32s-x2, 1600x1200 in 512 tiles
    python benchmarks/tiling_speed.py --ckpt 32s-x4 --tiled 1200x900 --one_tile_per_call
    python benchmarks/tiling_speed.py --compare_one_tile_per_call    # both ways, alternating

A real photo (a B100 ground truth) is resized to the whole-image size (default 512x384, one
bucket, no padding) and to the tiled size, and both go through `Upscaler.upscale` in this
process, once to compile and then `--repeats` times, alternating so that a change in the
machine's load hits both alike. One whole-image run upscales the small picture as many times
as the tiled picture is larger (10 times for the defaults), so that both runs last about as long
and see the same load: a run of a few seconds catches a lull or a burst that a 40-second one
averages out. Printed: the median seconds and LR pixels per second of each,
their ratio (the target is >= 0.9), the tiles and the pixels they compute against the image's,
how many tiles share a call, and the share of the tiled time spent in the network (the rest is
cutting, blending and quantising). The load average is printed before and after: on a shared
machine the absolute numbers move with it, the ratio much less. Asserts nothing.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

# Importing drsan_jax starts no backend: `runtime.configure()` in `main` still comes first.
from drsan_jax import api, inference, runtime
from drsan_jax.data import imresize, read_image
from drsan_jax.upscaling import tiling

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def size(text: str) -> tuple[int, int]:
    width, height = map(int, text.split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="32s-x2", help="anything drsan_jax.load accepts")
    parser.add_argument("--whole", type=size, default=size("512x384"), help="WIDTHxHEIGHT")
    parser.add_argument("--tiled", type=size, default=size("1600x1200"), help="WIDTHxHEIGHT")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one_tile_per_call", action="store_true",
                        help="run tiles one at a time (each split by rows over the devices)")
    parser.add_argument("--compare_one_tile_per_call", action="store_true",
                        help="time the tiled picture both ways, alternating with the others")
    parser.add_argument("--photo", type=Path, default=DATA / "benchmark/HR/B100/108005.png")
    args = parser.parse_args()
    runtime.configure()  # first, before anything touches a device

    print(f"load average before: {os.getloadavg()}")
    model = api.load(args.ckpt)
    one_per_call = lambda tile: 1  # noqa: E731
    # Code from before tiles ran one per device has no `_tile_batch` (runs "before" a change).
    tile_batch = getattr(model, "_tile_batch", one_per_call)
    tile_batch = one_per_call if args.one_tile_per_call else tile_batch
    photo = read_image(args.photo)
    whole = imresize(photo, output_shape=args.whole)
    tiled = imresize(photo, output_shape=args.tiled)

    network = [0.0]
    predict_iter = inference.Predictor.predict_iter

    def timed_predict_iter(self, images):
        start = time.perf_counter()
        results = list(predict_iter(self, images))
        network[0] += time.perf_counter() - start
        return iter(results)

    inference.Predictor.predict_iter = timed_predict_iter
    runs = {"whole": (whole, None), "tiled": (tiled, args.tile)}
    # Calls per run, so that every run covers about the tiled picture's pixels.
    calls = {name: 1 for name in runs}
    calls["whole"] = max(1, round(tiled[..., 0].size / whole[..., 0].size))
    if args.compare_one_tile_per_call:
        runs["tiled, one tile per call"] = (tiled, args.tile)
    seconds = {name: [] for name in runs}
    in_network = []

    def upscale(name: str) -> None:
        image, tile = runs[name]
        model._tile_batch = one_per_call if name.endswith("per call") else tile_batch
        for _ in range(calls.get(name, 1)):
            model.upscale(image, tile=tile, overlap=args.overlap)

    for name, (image, tile) in runs.items():  # compile
        model.upscale(image, tile=tile, overlap=args.overlap)
    for i in range(args.repeats):
        for name in (list(runs) if i % 2 == 0 else list(reversed(runs))):
            network[0] = 0.0
            start = time.perf_counter()
            upscale(name)
            seconds[name].append(time.perf_counter() - start)
            if name == "tiled":
                in_network.append(network[0] / seconds[name][-1])
    rates = {}
    for name, (image, tile) in runs.items():
        pixels = image.shape[0] * image.shape[1] * calls.get(name, 1)
        median = statistics.median(seconds[name])
        rates[name] = pixels / median
        print(f"{name} {image.shape[1]}x{image.shape[0]} x {calls.get(name, 1)}: median "
              f"{median:.2f} s "
              f"({', '.join(f'{s:.2f}' for s in seconds[name])}), "
              f"{rates[name] / 1e3:.1f} kpx/s")
    for name in rates:
        if name != "whole":
            print(f"{name} / whole pixel rate: {rates[name] / rates['whole']:.2f}")
    height, width = args.tiled
    if not hasattr(tiling, "tile_spans"):
        return
    spans = [tiling.tile_spans(n, args.tile, args.overlap) for n in (height, width)]
    computed = sum(h for _, h in spans[0]) * sum(w for _, w in spans[1]) / (height * width)
    batch = tile_batch(args.tile)
    print(f"{model!r}: {len(spans[0]) * len(spans[1])} tiles of {args.tile} (overlap "
          f"{args.overlap}) computing {computed:.3f}x the image's pixels, {batch} per call; "
          f"{np.median(in_network):.1%} of the tiled time in the network")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
