"""How small a picture the networks can take: crops upscaled alone and in their whole image.

    python benchmarks/small_inputs.py                                  # shipped 32s x2, x3, x4
    python benchmarks/small_inputs.py --models ../shared/data/weights/lesrcnn/lesrcnn_x2.pth

For each side n, n x n crops (three places in every LR image of the sets) go through the network
alone, as the picture it is: every convolution sees zeros past the crop's edges, and DRSAN's DRM
means cover the crop only. The reference is the same region of the whole image's result, where
the network sees real neighbours. Printed per n, over all crops: the median and worst PSNR
against the reference, and the worst relative change of the mean brightness. A side counts as
trustworthy when the median PSNR is at least 35 dB and no crop's brightness moves by more than
1%, at that side and every larger one measured; the smallest such side is printed last.

The "mirrored" columns are what `Upscaler.upscale` does below `shapes.MIN_SIDE`: the crop
padded by reflection (np.pad "symmetric") to that side, upscaled, and the result cropped back.
Prints numbers; asserts nothing.
"""

import argparse
from pathlib import Path

import numpy as np

from drsan_jax import api, runtime
from drsan_jax.data import list_images, quantize, read_image, to_model_input
from drsan_jax.upscaling.shapes import MIN_SIDE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIDES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
PSNR_DB = 35.0
BRIGHTNESS = 0.01


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def mirrored(crop: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The crop padded by reflection to at least `side` a side, and its top-left offset."""
    pads = [((side - n) // 2, side - n - (side - n) // 2) if n < side else (0, 0)
            for n in crop.shape[:2]]
    return np.pad(crop, [*pads, (0, 0)], mode="symmetric"), (pads[0][0], pads[1][0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="32s-x2,32s-x3,32s-x4",
                        help="comma-separated, anything drsan_jax.load accepts")
    parser.add_argument("--benchmark", type=Path, default=DATA / "benchmark")
    parser.add_argument("--sets", default="Set5,Set14")
    parser.add_argument("--sides", default=",".join(map(str, SIDES)),
                        help="comma-separated crop sides n (a few small ones: a quick check)")
    args = parser.parse_args(argv)
    sides = tuple(int(n) for n in args.sides.split(","))
    runtime.configure()  # first, before anything touches a device
    for name in args.models.split(","):
        model = api.load(name)
        s = model.scale
        # The network on exactly the pixels given: what `upscale` did before MIN_SIDE.
        alone = model._predictors[False]
        images = [read_image(p) for dataset in args.sets.split(",")
                  for p in list_images(args.benchmark / f"x{s}" / dataset)]
        images = [np.repeat(x[..., None], 3, 2) if x.ndim == 2 else x for x in images]
        wholes = [model.upscale(x, tile=None) for x in images]
        print(f"\n{model!r}: {len(images)} images of {args.sets}, 3 crops each")
        print(f"{'side':>4s}  {'alone: median dB':>16s} {'worst dB':>8s} {'brightness':>10s}  "
              f"{'mirrored to ' + str(MIN_SIDE) + ': median dB':>26s} {'worst dB':>8s} "
              f"{'brightness':>10s}")
        ok = {}
        for n in sides:
            rows = {"alone": [], "mirrored": []}
            for image, whole in zip(images, wholes):
                h, w = image.shape[:2]
                for y, x in (((h - n) // 2, (w - n) // 2), ((h - n) // 4, 3 * (w - n) // 4),
                             (3 * (h - n) // 4, (w - n) // 4)):
                    crop = image[y:y + n, x:x + n]
                    ref = whole[y * s:(y + n) * s, x * s:(x + n) * s]
                    padded, (top, left) = mirrored(crop, MIN_SIDE)
                    outputs = {"alone": quantize(alone(to_model_input(crop))),
                               "mirrored": quantize(alone(to_model_input(padded)))[
                                   top * s:(top + n) * s, left * s:(left + n) * s]}
                    for key, sr in outputs.items():
                        rows[key].append((psnr(sr, ref), sr.mean() / ref.mean() - 1))
            cells = []
            for key in ("alone", "mirrored"):
                db, bright = np.array(rows[key]).T
                worst = bright[np.argmax(np.abs(bright))]
                cells.append(f"{np.median(db):16.2f} {db.min():8.2f} {worst:+10.2%}")
                if key == "alone":
                    ok[n] = np.median(db) >= PSNR_DB and np.abs(bright).max() <= BRIGHTNESS
            print(f"{n:4d}  {cells[0]}  {'':10s}{cells[1]}", flush=True)
        trusted = [n for n in sides if all(ok[m] for m in sides if m >= n)]
        print(f"smallest trustworthy side alone (median >= {PSNR_DB:.0f} dB, brightness within "
              f"{BRIGHTNESS:.0%}): {trusted[0] if trusted else f'above {sides[-1]}'}")


if __name__ == "__main__":
    main()
