"""How much tiling changes DRSAN's output: tiled against whole-image inference on the benchmarks.

    python benchmarks/tiling_agreement.py --ckpt /work/runs/32s_x2
    python benchmarks/tiling_agreement.py --ckpt runs/32s_x4 --sets Set14 --tiles 64,128

For every tile size and overlap, each benchmark LR image larger than one tile is upscaled whole
and tiled (images that fit in one tile are left out: nothing changes for them). Printed are the
number of such images, their mean tile count, their mean Y-PSNR against HR both ways (the
"drsan" protocol of the published tables), the difference, the worst single-image difference,
and the PSNR of all tiled outputs against the whole-image ones (how close the pictures are).
The benchmark LR images are small (at most 360x288 at x2), so the tiles measured on them are
small too; `--inputs hr` upscales the HR images instead, to measure larger tiles by agreement
alone. The DRM change shrinks as tiles grow.
Prints numbers; asserts nothing.
"""

import argparse
from pathlib import Path

import numpy as np

from drsan_jax import api, metrics
from drsan_jax.data.image_io import list_images, read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="anything drsan_jax.load accepts")
    parser.add_argument("--benchmark", type=Path, default=DATA / "benchmark")
    parser.add_argument("--sets", default="Set5,Set14,B100")
    parser.add_argument("--tiles", default="48,64,96,128", help="tile sizes in LR pixels")
    parser.add_argument("--overlaps", default="16,32", help="overlaps in LR pixels")
    parser.add_argument("--inputs", choices=("lr", "hr"), default="lr",
                        help="hr: upscale the (larger) HR images instead, to measure bigger "
                             "tiles; there is no ground truth then, only the agreement")
    args = parser.parse_args()
    model = api.load(args.ckpt)
    scale = model.scale
    print(f"{model!r}")
    print("set     tile overlap images tiles/img  whole dB  tiled dB  delta dB  worst dB  "
          "tiled-vs-whole dB")
    for name in args.sets.split(","):
        if args.inputs == "lr":
            pairs = [(read_image(p), read_image(args.benchmark / "HR" / name / p.name))
                     for p in list_images(args.benchmark / f"x{scale}" / name)]
        else:
            pairs = [(read_image(p), None) for p in list_images(args.benchmark / "HR" / name)]
        wholes = [model.upscale(lq, tile=None) for lq, _ in pairs]
        for tile in map(int, args.tiles.split(",")):
            for overlap in map(int, args.overlaps.split(",")):
                if 2 * overlap >= tile:
                    continue
                # Only images that really split into tiles: the others are unchanged.
                counts = [model.tile_count(*lq.shape[:2], tile, overlap) for lq, _ in pairs]
                tiled = [i for i, count in enumerate(counts) if count > 1]
                if not tiled:
                    continue
                whole_psnr, tiled_psnr, squared_error, size = [], [], 0.0, 0
                for i in tiled:
                    (lq, hr), whole = pairs[i], wholes[i]
                    sr = model.upscale(lq, tile=tile, overlap=overlap)
                    if hr is not None:
                        whole_psnr.append(metrics.evaluate_pair(whole, hr, scale)[0])
                        tiled_psnr.append(metrics.evaluate_pair(sr, hr, scale)[0])
                    squared_error += np.sum((sr.astype(np.float64) - whole) ** 2)
                    size += sr.size
                agreement = 10 * np.log10(255.0**2 / max(squared_error / size, 1e-12))
                scores = f"{'-':>9s} " * 4
                if whole_psnr:
                    delta = np.array(tiled_psnr) - np.array(whole_psnr)
                    scores = (f"{np.mean(whole_psnr):9.4f} {np.mean(tiled_psnr):9.4f} "
                              f"{delta.mean():+9.4f} {delta[np.argmax(np.abs(delta))]:+9.4f} ")
                print(f"{name:7s} {tile:4d} {overlap:7d} {len(tiled):6d} "
                      f"{np.mean([counts[i] for i in tiled]):9.1f} {scores}{agreement:9.2f}")

if __name__ == "__main__":
    main()
