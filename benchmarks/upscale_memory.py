"""Peak memory and time of `python -m drsan_jax.upscale` on one large photo.

    python benchmarks/upscale_memory.py                      # 4000x3000 -> x4 with DRSAN-32s
    python benchmarks/upscale_memory.py --size 1200x900 --scale 2 --tile none

The photo is a real image (a B100 ground truth) enlarged to the requested size; the network is
the published architecture with freshly initialised weights (memory and time do not depend on
the weight values). The command runs in a child process, so its peak resident set size is the
whole upscale run's: reading, every tile, and writing the PNG. Also printed: the sizes that
scale with the picture (the uint8 result, which the command streams to the PNG instead of
holding it; a float32 copy of it, which it never makes) and with the tile (the network's
scratch per call), to extrapolate to larger photos; and the load average, since the wall time
follows it. Prints numbers; asserts nothing.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from drsan_jax import api, device_memory
from drsan_jax.data.image_io import read_image, write_image
from drsan_jax.data.resize import imresize
from drsan_jax.models import build_model, init_params
from drsan_jax.upscaling.shapes import bucket_shape
from drsan_jax.weights.checkpoints import save_params_for_inference

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# The command in a child process that reports its own high-water mark (VmHWM, KiB) last. Not
# RUSAGE_CHILDREN's ru_maxrss: Linux carries a parent's peak over exec, so that would count this
# script's own picture and JAX as the child's.
CHILD = ("import re, sys\nfrom drsan_jax import upscale\nstatus = upscale.main(sys.argv[1:])\n"
         "print('VmHWM', re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1])\n"
         "sys.exit(status)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="32s")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", default="4000x3000", help="input WIDTHxHEIGHT")
    parser.add_argument("--tile", default="auto", help="passed to the command's --tile")
    parser.add_argument("--photo", type=Path, default=DATA / "benchmark/HR/B100/108005.png")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(args.variant, args.scale)
        ckpt = save_params_for_inference(tmp / "ckpt", {"variant": args.variant,
                                                        "scale": args.scale},
                                         init_params(model, jax.random.key(0)))
        photo = tmp / "in" / "photo.png"
        write_image(photo, imresize(read_image(args.photo), output_shape=(height, width)))
        upscaler = api.load(ckpt)
        tile = upscaler.resolve_tile(height, width, None if args.tile == "none" else
                                     int(args.tile) if args.tile.isdigit() else "auto")
        count = upscaler.tile_count(height, width, tile)
        per_call = upscaler._tile_batch(tile) if hasattr(upscaler, "_tile_batch") else 1
        side = tile if tile is not None else max(height, width)
        scratch = device_memory.bytes_per_pixel(model) * math.prod(bucket_shape(side, side))
        print(f"load average before: {os.getloadavg()}")
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", CHILD, str(photo), "--ckpt", str(ckpt),
                              "--output", str(tmp / "out"), "--tile", args.tile],
                             check=True, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        *said, peak = run.stdout.splitlines()
        if said:
            print(*said, sep="\n")
        peak_kib = int(peak.removeprefix("VmHWM "))
        # The size from the PNG header: Pillow refuses to decode more than ~179 Mpixels.
        header = (tmp / "out" / "photo.png").read_bytes()[16:24]
        out_w, out_h = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")
    print(f"DRSAN-{args.variant} x{args.scale}: {width}x{height} -> {out_w}x{out_h}, "
          f"{count} tile(s) (--tile {args.tile})")
    print(f"wall time {seconds:.1f} s, peak RSS {peak_kib / 2**20:.2f} GiB")
    result = out_w * out_h * 3
    print(f"uint8 result {result / 2**30:.2f} GiB, a float32 copy of it {4 * result / 2**30:.2f} "
          f"GiB; network scratch {scratch / 2**30:.2f} GiB per {side}-pixel tile, {per_call} "
          f"tile(s) per call")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
