"""`python -m drsan_jax.upscale`: super-resolve picture files with a trained model.

    python -m drsan_jax.upscale photo.jpg                 # shipped 32s-x2: photo_x2.jpg
    python -m drsan_jax.upscale --scale 4 photo.jpg       # shipped 32s-x4: photo_x4.jpg
    python -m drsan_jax.upscale --ckpt runs/32s_x2 photo.jpg scans/ --output upscaled/
    python -m drsan_jax.upscale --ckpt drsan-32s-x2.onnx photo.jpg   # ONNX Runtime, see export

Inputs are files or folders of PNG, JPEG, BMP and TIFF images; each result is written to
`--output` under the input's file name, or without --output next to the input as
`<name>_x<scale>.<ext>`, with the input's format, bit depth and channels (grey, RGB, RGBA).
Without --ckpt the model shipped with the package for --scale (default 2) is used. The pixel
work is `drsan_jax.api.Upscaler.upscale`; this file only resolves the command line to (input,
output) pairs, checks them before anything is loaded, and shows progress.

Exit status 2, with one line on stderr and nothing written, for a problem found before any
work starts (a missing input, a file that is not an image by its first bytes, a result that
would overwrite an input, a checkpoint that does not load); 1 when some picture could not be
decoded or written, each reported once as it happens, the others done. --verbose prints
tracebacks instead of one line (`drsan_jax.cli`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from drsan_jax import cli, onnx_runtime, runtime
from drsan_jax.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    check_image_file,
    list_images,
    read_image,
    write_image_rows,
)
from drsan_jax.upscaling import shapes
from drsan_jax.upscaling.pictures import PictureUpscaler
from drsan_jax.upscaling.tiling import DEFAULT_OVERLAP, DEFAULT_TILE


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line's flags (see --help)."""
    parser = cli.ArgumentParser(
        prog="python -m drsan_jax.upscale",
        description="Super-resolve images with a trained DRSAN.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (PNG, JPEG, BMP, TIFF) or folders of them")
    parser.add_argument("--ckpt", default=None,
                        help="a training workdir, a checkpoint step folder, a shipped model "
                             "name such as 32s-x2, or an exported .onnx file (run with ONNX "
                             "Runtime) (default: the shipped model for --scale)")
    parser.add_argument("--output", default=None, type=Path,
                        help="folder for the results (created if missing); files keep their "
                             "names. Default: next to each input, as <name>_x<scale>.<ext>. A "
                             "result replaces an existing file of its name (an input never)")
    parser.add_argument("--scale", type=int, default=None,
                        help="the upscaling factor: picks the shipped model when --ckpt is not "
                             "given (default 2), else is checked against the checkpoint")
    parser.add_argument("--which", choices=("latest", "best"), default="latest",
                        help="for a workdir: the latest checkpoint or the best validated one")
    parser.add_argument("--self_ensemble", action="store_true",
                        help="average the outputs of the 8 flips and rotations (8x slower)")
    parser.add_argument("--tile", default="auto",
                        help=f"'auto' (the default: the whole image when it has at most "
                             f"{DEFAULT_TILE}x{DEFAULT_TILE} LR pixels and fits in memory, else "
                             f"tiles of that size, with a progress bar and the time left), "
                             f"'none' (always the whole image: faster, no progress, more "
                             f"memory), or a tile size in LR pixels (at least {shapes.MIN_SIDE})")
    parser.add_argument("--tile_overlap", type=int, default=None,
                        help=f"least overlap of neighbouring tiles in LR pixels (default "
                             f"{DEFAULT_OVERLAP})")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None,
                        help="where to run; default: JAX's choice (a GPU if there is one)")
    return parser, parser.parse_args(argv)


def _parse_tile(parser: argparse.ArgumentParser, value: str) -> int | str | None:
    """--tile as `Upscaler.upscale` takes it."""
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    if value.isdigit() and int(value) >= shapes.MIN_SIDE:
        return int(value)
    parser.error(f"--tile must be 'auto', 'none' or a number of LR pixels of at least "
                 f"{shapes.MIN_SIDE} (smaller tiles come out darker), got {value!r}")


def plan_outputs(inputs: list[str], output_dir: Path | None,
                 scale: int | None = None) -> list[tuple[Path, Path]]:
    """Pairs every input image with the file its result goes to.

    Args:
      inputs: image files or folders (their images, not recursive).
      output_dir: the folder results are written to; None: next to each input, as
        `<stem>_x<scale><suffix>`.
      scale: the upscaling factor, for the names of results written next to their inputs.

    Returns:
      (input, output) pairs, in the order given (folders sorted by name).

    Raises:
      ValueError: a missing input, a file that is not an image (by its name or its first
        bytes), a folder without images, an output folder that is a file, two inputs of the
        same name, or an output that would overwrite an input. The message names the file.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            try:
                files.extend(list_images(item))
            except (FileNotFoundError, ValueError) as e:
                raise ValueError(str(e)) from None
        elif not item.exists():
            raise ValueError(f"input {item} does not exist")
        elif item.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"input {item} is not an image file: expected one of "
                             f"{', '.join(IMAGE_EXTENSIONS)}")
        else:
            files.append(item)
    for item in files:
        check_image_file(item)  # 8 bytes each: a file that is no image stops us before work
    if output_dir is None and scale is None:
        raise ValueError("results go next to their inputs only with a known scale")
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} is a file, not a folder")
    # Found now rather than after minutes of upscaling the first picture.
    if output_dir is not None:
        _check_writable_folder(output_dir, f"--output {output_dir}")
    else:
        for folder in sorted({f.parent for f in files}):
            _check_writable_folder(folder, f"the results go next to their inputs, in {folder}")
    sources = {f.resolve() for f in files}
    pairs, taken = [], {}
    for src in files:
        dst = (output_dir / src.name if output_dir is not None
               else src.with_name(f"{src.stem}_x{scale}{src.suffix}"))
        if dst.resolve() in sources:
            raise ValueError(f"writing the result of {src} to {dst} would overwrite an input; "
                             f"choose another --output folder")
        if dst.resolve() in taken:
            raise ValueError(f"inputs {taken[dst.resolve()]} and {src} would both be written "
                             f"to {dst}; upscale them into different --output folders")
        taken[dst.resolve()] = src
        pairs.append((src, dst))
    return pairs


def _check_writable_folder(folder: Path, what: str) -> None:
    """Raises PermissionError unless files can be created in `folder` (or where it will be made).

    Tried with a real file, since permission bits do not tell for root, read-only mounts or
    immutable folders; a folder that does not exist yet is tried at its nearest existing parent.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PermissionError(f"{what}: cannot write there ({e.strerror or e}); choose a "
                              f"folder you can write to") from None


def upscale_files(upscaler: PictureUpscaler, pairs: list[tuple[Path, Path]], tile: int | str | None,
                  overlap: int, self_ensemble: bool) -> list[str]:
    """Upscales every (input, output) pair with progress bars over images and tiles.

    A tiled picture shows a bar over its tiles with the time left. Its result goes to the file
    band by band as the tiles finish (PNG and TIFF; see `data.image_io.write_image_rows`), so a
    photo upscaled to hundreds of megapixels is never whole in memory.

    Args:
      upscaler: the loaded model.
      pairs: from `plan_outputs`.
      tile: as `Upscaler.upscale` takes it.
      overlap: the least tile overlap in LR pixels.
      self_ensemble: average the 8 flips and quarter turns.

    Returns:
      The inputs that could not be read, upscaled or written, each reported on stderr as it
      failed (one line naming the file); the others are done.
    """
    failures = []
    for src, dst in tqdm(pairs, desc=f"x{upscaler.scale}", unit="image", file=sys.stderr):
        try:
            image = read_image(src)
            height, width = image.shape[:2]
            resolved = upscaler.resolve_tile(height, width, tile, overlap, self_ensemble)
            count = upscaler.tile_count(height, width, resolved, overlap, self_ensemble)
            shape = (height * upscaler.scale, width * upscaler.scale, *image.shape[2:])
            # smoothing=0: the time left from the mean rate so far, steadier than the rate of
            # the last few tiles (the last tile of each row and column is smaller).
            with tqdm(total=count, desc=src.name, unit="tile", leave=False, file=sys.stderr,
                      disable=count == 1, smoothing=0) as bar:
                rows = upscaler.upscale_rows(image, self_ensemble, resolved, overlap, bar.update)
                write_image_rows(dst, shape, image.dtype, rows)
        except (ImageReadError, ValueError, OSError) as e:
            failures.append(src)
            # Read and write errors name their file; the model's own do not.
            message = cli.first_line(e)
            tqdm.write(f"error: {message if str(src) in message else f'{src}: {message}'}",
                       file=sys.stderr)
    return failures


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (2: nothing done, 1: some image failed)."""
    parser, args = parse_args(argv)
    return cli.run(parser.prog, args.verbose, lambda: _upscale(parser, args))


def _upscale(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # JAX, the model zoo and the weights are imported once there is work, so that --help
    # answers at once.
    import jax

    from drsan_jax.api import load
    from drsan_jax.weights import shipped

    tile = _parse_tile(parser, args.tile)
    overlap = DEFAULT_OVERLAP if args.tile_overlap is None else args.tile_overlap
    if overlap < 0 or (isinstance(tile, int) and 2 * overlap >= tile):
        parser.error(f"--tile_overlap {overlap} must be from 0 to below half of --tile {tile}")
    # Inputs are checked before anything is loaded. Results written next to their inputs are
    # named for the scale, which a --ckpt without --scale reveals only once loaded.
    expected_scale = 2 if args.scale is None else args.scale
    ckpt = args.ckpt
    if ckpt is None:
        try:
            ckpt = shipped.default_for_scale(expected_scale)
        except shipped.PretrainedError as e:
            raise cli.UsageError(f"--scale {expected_scale}: {e}") from e
    if args.self_ensemble and onnx_runtime.is_onnx_file(ckpt):
        parser.error(f"--self_ensemble is not available for the ONNX model --ckpt {ckpt}")
    pairs = plan_outputs(args.inputs, args.output, expected_scale)
    # Both must precede the first use of a device in this process; later they have no effect.
    runtime.configure()  # the persistent compilation cache, the CPU cores
    if args.device is not None:
        jax.config.update("jax_platforms", args.device)
    try:
        upscaler = load(ckpt, args.which, args.scale)
    except RuntimeError as e:  # JAX cannot start the requested backend
        raise cli.UsageError(f"--device {args.device}: JAX cannot run on it here "
                             f"({cli.first_line(e)})") from e
    except (FileNotFoundError, ValueError, ImportError) as e:
        kind = "an ONNX model" if onnx_runtime.is_onnx_file(ckpt) else "a model"
        raise cli.UsageError(f"--ckpt {ckpt}: cannot load {kind}: {cli.first_line(e)}") from e
    if args.output is None and upscaler.scale != expected_scale:
        pairs = plan_outputs(args.inputs, None, upscaler.scale)
    failures = upscale_files(upscaler, pairs, tile, overlap, args.self_ensemble)
    where = f"to {args.output}{os.sep}" if args.output is not None else "next to the inputs"
    if failures:
        done = len(pairs) - len(failures)
        print(f"{parser.prog}: error: {len(failures)} of {len(pairs)} images failed (each "
              f"reported above){f'; wrote the other {done} {where}' if done else ''}",
              file=sys.stderr)
        return cli.FAILED
    print(f"wrote {len(pairs)} image(s) {where} with {ckpt}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
