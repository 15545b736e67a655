"""`python -m drsan_jax.convert IN OUT`: any model this project loads -> one compact weights file.

    python -m drsan_jax.convert lesrcnn_x2.pth lesrcnn_x2.npz     # published PyTorch weights
    python -m drsan_jax.convert EDSR_x4.pt edsr_x4.npz --model edsr
    python -m drsan_jax.convert runs/drsan48s_x2 drsan48s_x2.npz --dtype float16

IN is anything `drsan_jax.weights.loading.load_model` accepts (a PyTorch or safetensors file, a
checkpoint folder, a shipped name, a compact file); OUT is a self-describing `.npz`
(`drsan_jax.weights.compact`) that later loads skip the mapping for: `eval.py --ckpt OUT`,
`python -m drsan_jax.upscale --ckpt OUT`, `drsan_jax.load(OUT)`, `--config.init_from=OUT`.
float32 (the default) stores the parameters exactly; float16 halves the file. A multi-scale
model is stored whole, every scale's branch. Problems are one line on stderr with exit status 2
(--verbose: the traceback, `drsan_jax.cli`), and OUT is written completely or not at all; an
existing OUT is kept unless --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drsan_jax import cli, runtime
from drsan_jax.weights import compact


def parse_args(argv: list[str] | None) -> tuple[cli.ArgumentParser, argparse.Namespace]:
    """The command line (see --help)."""
    parser = cli.ArgumentParser(prog="python -m drsan_jax.convert",
                                description="Convert weights to drsan-jax's compact .npz format.")
    parser.add_argument("input", help="a .pth/.pt/.safetensors file, a checkpoint folder, a "
                                      "shipped model's name or a compact .npz")
    parser.add_argument("output", type=Path, help="the .npz file to write")
    parser.add_argument("--model", default=None,
                        help="read a PyTorch file as this family or model (lesrcnn, lesrcnn-s, "
                             "edsr, edsr-baseline, mdsr, mdsr-baseline); default: from its keys")
    parser.add_argument("--dtype", default="float32", choices=compact.STORAGE_DTYPES,
                        help="storage dtype (float32: exact; float16: half the size)")
    parser.add_argument("--which", default="latest", choices=("latest", "best"),
                        help="for a training workdir: its latest or best-validated checkpoint")
    parser.add_argument("--force", action="store_true", help="replace an existing OUTPUT")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status."""
    parser, args = parse_args(argv)
    return cli.run(parser.prog, args.verbose, lambda: _convert(parser, args))


def _convert(parser: cli.ArgumentParser, args: argparse.Namespace) -> int:
    output: Path = args.output
    if output.suffix != compact.SUFFIX:
        parser.error(f"{output}: the output must be a {compact.SUFFIX} file")
    if not output.parent.is_dir():
        parser.error(f"{output}: the folder {output.parent} does not exist")
    if output.exists() and not args.force:
        parser.error(f"{output} exists; pass --force to replace it")
    runtime.configure()
    from drsan_jax.weights import loading  # JAX starts here, after the checks above

    loaded = loading.load_model(args.input, args.which, model=args.model)
    extra = {**(loaded.extra or {}), "converted_from": str(args.input)}
    compact.write(output, loaded.params, loaded.config, storage_dtype=args.dtype,
                  step=loaded.step, extra=extra)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB): {loaded.name}, "
          f"x{'/x'.join(str(s) for s in loaded.scales)}, {args.dtype}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
