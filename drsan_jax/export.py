"""Exporting a trained model to ONNX, TFLite (LiteRT) or StableHLO, and its command line.

    python -m drsan_jax.export --ckpt 32s-x2 --format onnx --output drsan-32s-x2.onnx
    python -m drsan_jax.export --ckpt runs/32s_x2 --format tflite --output drsan.tflite
    python -m drsan_jax.export --scale 3 --format stablehlo --output drsan-x3.stablehlo

Every format takes any batch size, height and width (the output's are scale times larger),
except where `--input_size HxW` fixes the height and width (the batch stays free, but for
TFLite, whose fixed-size files take one image):

- **onnx** (`jax2onnx`, opset 18 or newer: its ReduceMean is the opset-18 form, which an
  opset-17 file must not hold). Runs on ONNX Runtime, and in this package on
  `drsan_jax.onnx_runtime.OnnxUpscaler` (`drsan_jax.load("model.onnx")`), without JAX. The
  file's metadata_props hold the scale, layout and memory per pixel that the runner reads.
  jax2onnx's graph is then rewritten into operators ONNX Runtime runs faster, with the same
  results up to float32 rounding (`drsan_jax.onnx_graph`: PReLU as `PRelu`, the DRA einsum as
  multiply-adds; 2.0-2.2x on DRSAN); `--onnx_rewrites none` writes it as jax2onnx made it.
- **tflite** (`jax.experimental.jax2tf` with shape polymorphism, then `tf.lite.TFLiteConverter`
  with built-in operators only; TensorFlow's converter legalises the StableHLO that jax2tf
  emits). Runs on the LiteRT interpreter (`ai_edge_litert`), after `resize_tensor_input`.
- **stablehlo** (`jax.export` with symbolic batch, height and width, serialised for CPU, CUDA,
  ROCm and TPU). Runs with `jax.export.deserialize(data).call(x)` on any of them.

SMFANet and SAFMN pool their features on a grid that follows the image size (floor divisions of
H and W). `jax.export` keeps those sizes symbolic, so their StableHLO takes any size of at
least `min_side`; the ONNX and TFLite converters cannot express them, so these two formats need
`--input_size HxW` for these families: the file then takes LR inputs of exactly that size, its
model card and ONNX metadata say so, and `OnnxUpscaler` refuses any other size with one line
(it mirrors a picture side below `upscaling.shapes.MIN_SIDE` up to it first, so a file meant
for pictures needs at least that many pixels a side).

`--layout nchw` takes and returns (B, 3, H, W), what ONNX-based upscaling applications expect;
the default is the network's own NHWC. Input and output are RGB in [0, 1] (the output is not
clipped). `--precision fp16` halves the file: for onnx and stablehlo the weights and the
convolutions are float16 (the DRM means stay float32, as under bfloat16 training), for tflite the
weights are stored as float16 and LiteRT computes in float32 on CPUs and in float16 on GPU
delegates (its float16 mode). Input and output stay float32 in every format, so one caller
serves both precisions; the casts are inside the graph.

Beside the file, `<output>.json` is its model card (`drsan_jax.model_card`). Nothing is left
behind by a failed export: both files are written under temporary names in the output's folder
and renamed when complete. The export traces the network with XLA's own convolution
(`conv_impl="xla"`), since the im2col variant only changes gradients.

`export` is the library function; `main` the command line, which reports a bad request (an
unknown format, a missing optional package, a missing checkpoint or output folder, an option the
format cannot take) as one line on stderr with exit status 2, before loading anything, and a
converter's own failure as one line with status 1 (--verbose: the traceback, `drsan_jax.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drsan_jax import cli, files, onnx_graph, onnx_runtime

if TYPE_CHECKING:
    import jax

# JAX, the model zoo and the weights are imported by the functions that use them, so that the
# command's --help and its checks of a bad request answer at once.

FORMATS = ("onnx", "tflite", "stablehlo")
LAYOUTS = onnx_runtime.LAYOUTS
PRECISIONS = ("fp32", "fp16")
DEFAULT_OPSET = 18
# jax2onnx (0.17) writes ReduceMean with its axes as an input, which needs opset 18.
MIN_OPSET = 18
# The batch of a fixed-size TFLite file (`--input_size`), which fixes every dimension.
TFLITE_FIXED_BATCH = 1
# Where a StableHLO export runs: the lowering is the same for all but the platform check.
STABLEHLO_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
# format -> (modules it imports, the extra that installs them).
_REQUIREMENTS = {
    "onnx": (("jax2onnx", "onnx"), "onnx"),
    "tflite": (("tensorflow",), "tflite"),
    "stablehlo": ((), None),
}


class ExportError(ValueError):
    """A request that cannot be exported; the message names the flag or file and the value."""


def parse_input_size(text: str) -> tuple[int, int]:
    """`--input_size`'s "HxW" (LR pixels, e.g. "256x256") -> (H, W).

    Raises:
      ExportError: anything but two positive integers joined by "x".
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ExportError(f"--input_size {text!r}: expected HEIGHTxWIDTH in LR pixels, two "
                          f"positive integers such as 256x256")
    return int(parts[0]), int(parts[1])


def check_request(fmt: str, output: str | os.PathLike, layout: str = "nhwc",
                  precision: str = "fp32", opset: int | None = None,
                  input_size: tuple[int, int] | None = None) -> Path:
    """Checks an export request before anything is loaded.

    Args:
      fmt: one of `FORMATS`.
      output: the file to write; its folder must exist.
      layout: one of `LAYOUTS`.
      precision: one of `PRECISIONS`.
      opset: the ONNX opset (onnx only; None for `DEFAULT_OPSET`).
      input_size: (H, W) of a fixed-size export, or None for any size.

    Returns:
      The output path.

    Raises:
      ExportError: what is wrong, naming the flag and the value.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise ExportError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if opset is not None and fmt != "onnx":
        raise ExportError(f"--opset {opset}: only --format onnx has an opset, not {fmt}")
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the ONNX export needs opset {MIN_OPSET} or newer "
                          f"(jax2onnx writes ReduceMean in its opset-18 form)")
    if input_size is not None and (len(input_size) != 2
                                   or not all(isinstance(n, int) and n > 0 for n in input_size)):
        raise ExportError(f"--input_size {input_size!r}: expected (height, width), two positive "
                          f"integers")
    output = Path(output)
    if output.is_dir():
        raise ExportError(f"--output {output} is a folder; name the file to write")
    if not output.absolute().parent.is_dir():
        raise ExportError(f"--output {output}: its folder {output.absolute().parent} does not "
                          f"exist")
    return output


def check_dependencies(fmt: str) -> None:
    """Raises ExportError naming the extra to install when a format's packages are missing."""
    modules, extra = _REQUIREMENTS[fmt]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ExportError(f"--format {fmt} needs the {module} package: "
                              f"pip install -e \".[{extra}]\"") from None


def inference_fn(inference_model: Any, layout: str = "nhwc", precision: str = "fp32"
                 ) -> tuple[Callable[[jax.Array], jax.Array], Any]:
    """The function an export traces: a float32 image batch in, the float32 HR batch out.

    Args:
      inference_model: anything with `.model` (a Flax module with a `conv_impl` attribute)
        and `.params`.
      layout: "nhwc" or "nchw", of both input and output.
      precision: "fp32", or "fp16" for float16 weights and convolutions.

    Returns:
      (fn, model): fn closes over the parameters, which become constants of the export;
      model is the module it applies.
    """
    import jax
    import jax.numpy as jnp

    from drsan_jax import models

    # A training-form model (SPAN's branches) is exported folded, as its authors deploy it.
    model, params = models.deploy(inference_model.model, inference_model.params)
    model = model.clone(conv_impl="xla")
    if precision == "fp16":
        model = model.clone(dtype=jnp.float16, param_dtype=jnp.float16)
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float16), params)

    def fn(x: jax.Array) -> jax.Array:
        if layout == "nchw":
            x = jnp.transpose(x, (0, 2, 3, 1))  # (B, 3, H, W) -> (B, H, W, 3)
        # Full float32 convolutions in the StableHLO too: a GPU's default may drop to TF32.
        with jax.default_matmul_precision("highest"):
            y = model.apply({"params": params}, x)  # (B, sH, sW, 3) float32
        return jnp.transpose(y, (0, 3, 1, 2)) if layout == "nchw" else y

    return fn, model


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silences the warnings converters log for every value without a recorded type."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _input_shape(layout: str, height: Any, width: Any, batch: Any) -> tuple[Any, ...]:
    return (batch, 3, height, width) if layout == "nchw" else (batch, height, width, 3)


def parse_rewrites(text: str) -> tuple[str, ...]:
    """`--onnx_rewrites`: "none", "all" or a comma-separated list of `onnx_graph.REWRITES`."""
    text = text.strip()
    if text == "none":
        return ()
    if text == "all":
        return onnx_graph.REWRITES
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in names if part not in onnx_graph.REWRITES]
    if unknown or not names:
        raise ExportError(f"--onnx_rewrites {text!r}: expected 'all', 'none' or some of "
                          f"{', '.join(onnx_graph.REWRITES)}")
    return names


def _to_onnx(fn: Callable, layout: str, opset: int, metadata: dict[str, str],
             name: str, input_size: tuple[int, int] | None,
             rewrites: tuple[str, ...]) -> tuple[bytes, dict[str, Any]]:
    import jax2onnx
    import onnx

    height, width = input_size or ("height", "width")
    shape = _input_shape(layout, height, width, "batch")
    with _quiet_loggers("onnx_ir", "jax2onnx"):
        proto = jax2onnx.to_onnx(fn, inputs=[shape], model_name=name.replace("-", "_"),
                                 opset=opset, input_names=["input"], output_names=["output"])
    applied = onnx_graph.optimize(proto, rewrites)
    metadata = {**metadata, onnx_runtime.META_REWRITES: ",".join(
        f"{rewrite}:{count}" for rewrite, count in applied.items() if rewrite in rewrites)}
    onnx.helper.set_model_props(proto, metadata)
    sizes = (f"any batch, {height}x{width} LR pixels only" if input_size
             else "any batch, height and width")
    proto.doc_string = f"{name}: RGB in [0, 1], {layout.upper()}, {sizes}"
    onnx.checker.check_model(proto)
    version = importlib.metadata.version("jax2onnx")
    info = {"opset": opset, "producer": f"jax2onnx {version}",
            "rewrites": {rewrite: applied[rewrite] for rewrite in rewrites}}
    return proto.SerializeToString(), info


def _to_tflite(fn: Callable, layout: str, precision: str, input_size: tuple[int, int] | None
               ) -> tuple[bytes, dict[str, Any]]:
    # TensorFlow logs its C++ start-up chatter unless told otherwise before it is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from jax.experimental import jax2tf

    if input_size:
        # Fully static, batch included: with a symbolic batch the pooled branches' gathers
        # become dynamic gathers, which the TFLite converter does not legalise.
        poly, shape = None, list(_input_shape(layout, *input_size, TFLITE_FIXED_BATCH))
    else:
        poly = "(b, 3, h, w)" if layout == "nchw" else "(b, h, w, 3)"
        shape = list(_input_shape(layout, None, None, None))
    tf_fn = tf.function(
        jax2tf.convert(fn, polymorphic_shapes=[poly], with_gradient=False),
        input_signature=[tf.TensorSpec(shape, tf.float32, name="input")], autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf_fn.get_concrete_function()], tf_fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    data = converter.convert()
    return data, {"schema": "TFLite flatbuffer, built-in operators only",
                  "producer": f"tensorflow {tf.__version__} (jax2tf)"}


def _to_stablehlo(fn: Callable, layout: str, min_side: int | None = None,
                  input_size: tuple[int, int] | None = None) -> tuple[bytes, dict[str, Any]]:
    # A network with a smallest input (SMFANet, SAFMN: their pooled branches) states it, so that
    # the pooled sizes h // k are known to be positive; a smaller input is refused when called.
    import jax
    import jax.numpy as jnp

    if input_size:
        (b,) = jax.export.symbolic_shape("b")
        h, w = input_size
    else:
        constraints = (f"h >= {min_side}", f"w >= {min_side}") if min_side else ()
        b, h, w = jax.export.symbolic_shape("b, h, w", constraints=constraints)
    shape = _input_shape(layout, h, w, b)
    exported = jax.export.export(jax.jit(fn), platforms=STABLEHLO_PLATFORMS)(
        jax.ShapeDtypeStruct(shape, jnp.float32))
    return bytes(exported.serialize()), {
        "calling_convention_version": exported.calling_convention_version,
        "platforms": list(exported.platforms),
        "producer": f"jax {jax.__version__} (jax.export)",
    }


def export(
    inference_model: Any,
    fmt: str,
    output: str | os.PathLike,
    *,
    layout: str = "nhwc",
    precision: str = "fp32",
    opset: int | None = None,
    input_size: tuple[int, int] | None = None,
    onnx_rewrites: tuple[str, ...] = onnx_graph.REWRITES,
) -> dict[str, Any]:
    """Exports a model to a file, with its model card beside it.

    Args:
      inference_model: the model: `.model` (a Flax module taking (B, H, W, 3) float32 RGB in
        [0, 1] and returning (B, sH, sW, 3); it needs a `conv_impl` attribute), `.params`,
        `.scale`, `.config`; see `model_card.build_card` for what else the card reads.
      fmt: "onnx", "tflite" or "stablehlo".
      output: the file to write (replaced if it exists); the card goes to `<output>.json`.
      layout: "nhwc" (default) or "nchw", of the input and the output.
      precision: "fp32" or "fp16" (see the module docstring).
      opset: the ONNX opset; default `DEFAULT_OPSET`.
      input_size: (H, W) in LR pixels: the file takes inputs of that size only (any batch; for
        tflite a batch of `TFLITE_FIXED_BATCH`). Needed by SMFANet and SAFMN in onnx and
        tflite; default None, any size.
      onnx_rewrites: the `onnx_graph.REWRITES` applied to an onnx file's graph (default all;
        () writes jax2onnx's graph unchanged). The card's format info counts each.

    Returns:
      The model card written.

    Raises:
      ExportError: an invalid request, a missing optional package (see `check_request`), a
        family whose computation follows the image size (SMFANet, SAFMN) in onnx or tflite
        without `input_size`, or an `input_size` below the network's smallest side.
    """
    from drsan_jax import device_memory, model_card, models

    output = check_request(fmt, output, layout, precision, opset, input_size)
    check_dependencies(fmt)
    name = model_card.model_name(inference_model)
    if input_size is None and fmt != "stablehlo" and not models.padded_batches_exact(
            inference_model.model):
        # The same property that rules out masks: pooled sizes that are floor divisions of the
        # image size (SMFANet, SAFMN). jax.export expresses them with symbolic sizes; the ONNX
        # and TFLite converters do not (yet), but a fixed size makes them constants.
        raise ExportError(f"{name}: its pooling grid follows the image size, which --format "
                          f"{fmt} cannot express for any height and width: give the LR size the "
                          f"file will take, --input_size HxW (e.g. 256x256), or use --format "
                          f"stablehlo for any size")
    min_side = getattr(inference_model.model, "min_side", None)
    if input_size is not None and min_side and min(input_size) < min_side:
        raise ExportError(f"--input_size {input_size[0]}x{input_size[1]}: {name} needs at least "
                          f"{min_side} LR pixels a side")
    opset = DEFAULT_OPSET if opset is None else opset
    # TFLite's float16 is a storage type its converter applies to a float32 graph (a float16
    # graph fails its legalisation of the convolutions' padding).
    fn, model = inference_fn(inference_model, layout, "fp32" if fmt == "tflite" else precision)
    if fmt == "onnx":
        metadata = {
            onnx_runtime.META_NAME: name,
            onnx_runtime.META_SCALE: str(inference_model.scale),
            onnx_runtime.META_LAYOUT: layout,
            onnx_runtime.META_STEP: str(getattr(inference_model, "step", None) or ""),
            onnx_runtime.META_BYTES_PER_PIXEL: f"{device_memory.bytes_per_pixel(model):.1f}",
        }
        if input_size:
            metadata[onnx_runtime.META_INPUT_SIZE] = f"{input_size[0]}x{input_size[1]}"
        data, info = _to_onnx(fn, layout, opset, metadata, name, input_size,
                              tuple(onnx_rewrites))
    elif fmt == "tflite":
        data, info = _to_tflite(fn, layout, precision, input_size)
    else:
        data, info = _to_stablehlo(fn, layout, getattr(model, "min_side", None), input_size)
    if precision == "fp16":
        compute = ("float32 on CPU, float16 on GPU delegates" if fmt == "tflite"
                   else "float16 (DRM means in float32)")
        described = {"name": "fp16", "weights": "float16", "compute": compute, "io": "float32"}
    else:
        described = {"name": "fp32", "weights": "float32", "compute": "float32",
                     "io": "float32"}
    card = model_card.build_card(inference_model, data=data, fmt=fmt, format_info=info,
                                 layout=layout, precision=described, input_size=input_size,
                                 batch=TFLITE_FIXED_BATCH if fmt == "tflite" and input_size
                                 else None)
    card_bytes = (json.dumps(card, indent=2) + "\n").encode()
    files.atomic_write_files({output: data, model_card.card_path(output): card_bytes})
    return card


def parse_args(argv: list[str] | None) -> tuple[cli.ArgumentParser, argparse.Namespace]:
    """The command line's flags (see --help). Values are checked by `check_request`."""
    parser = cli.ArgumentParser(prog="python -m drsan_jax.export",
                                description="Export a trained model to ONNX, TFLite or StableHLO.")
    parser.add_argument("--ckpt", default=None,
                        help="a shipped model name such as 32s-x2, a training workdir, a "
                             "checkpoint step folder or a weights file (.npz, .pth; default: "
                             "the shipped model for --scale)")
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--output", required=True, type=Path,
                        help="the file to write; the model card goes to <output>.json")
    parser.add_argument("--scale", type=int, default=None,
                        help="picks the shipped model without --ckpt (default 2); with it, "
                             "the scale to export (a multi-scale model exports one per file)")
    parser.add_argument("--which", default="latest", choices=("latest", "best"),
                        help="for a workdir: 'latest' or 'best' (validated) checkpoint")
    parser.add_argument("--layout", default="nhwc",
                        help="nhwc (default) or nchw, of the input and the output")
    parser.add_argument("--precision", default="fp32",
                        help="fp32 (default) or fp16 weights and compute; float32 input/output")
    parser.add_argument("--input_size", default=None, metavar="HxW",
                        help="fix the LR input's height and width (e.g. 256x256; any batch); "
                             "needed for SMFANet and SAFMN in onnx and tflite, whose pooling "
                             "grid follows the image size (default: any size)")
    parser.add_argument("--opset", type=int, default=None,
                        help=f"ONNX opset, {MIN_OPSET} or newer (default {DEFAULT_OPSET})")
    parser.add_argument("--onnx_rewrites", default="all",
                        help=f"graph rewrites for ONNX Runtime's speed, with equal results: "
                             f"'all' (default), 'none' (jax2onnx's graph as it is) or some of "
                             f"{','.join(onnx_graph.REWRITES)}")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit status (2: a bad request, 1: the export failed)."""
    parser, args = parse_args(argv)
    return cli.run(parser.prog, args.verbose, lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    from drsan_jax import model_card
    from drsan_jax.weights import loading, shipped

    input_size = None if args.input_size is None else parse_input_size(args.input_size)
    check_request(args.format, args.output, args.layout, args.precision, args.opset, input_size)
    rewrites = parse_rewrites(args.onnx_rewrites)
    if args.onnx_rewrites != "all" and args.format != "onnx":
        raise ExportError(f"--onnx_rewrites {args.onnx_rewrites}: only --format onnx has them, "
                          f"not {args.format}")
    check_dependencies(args.format)
    ckpt = args.ckpt
    if ckpt is None:
        try:
            ckpt = shipped.default_for_scale(2 if args.scale is None else args.scale)
        except shipped.PretrainedError as e:
            raise cli.UsageError(f"--scale {args.scale}: {e}") from e
    try:
        inference_model = loading.load_model(ckpt, args.which, args.scale)
    except (FileNotFoundError, ValueError) as e:
        raise cli.UsageError(f"--ckpt {ckpt}: cannot load a model: {cli.first_line(e)}") from e
    try:
        card = export(inference_model, args.format, args.output, layout=args.layout,
                      precision=args.precision, opset=args.opset, input_size=input_size,
                      onnx_rewrites=rewrites)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - a converter's own failure, whatever its type
        raise cli.Failed(f"--format {args.format}: the export of {ckpt} failed: "
                         f"{cli.first_line(e)}") from e
    resource = card["resources"][0]
    print(f"wrote {args.output} ({resource['size'] / 1e6:.2f} MB, sha256 "
          f"{resource['sha256'][:12]}) and {model_card.card_path(args.output)}", file=sys.stderr)
    return 0


__all__ = ["DEFAULT_OPSET", "ExportError", "FORMATS", "LAYOUTS", "PRECISIONS", "check_request",
           "check_dependencies", "export", "inference_fn", "main", "parse_input_size",
           "parse_rewrites"]


if __name__ == "__main__":
    sys.exit(main())
