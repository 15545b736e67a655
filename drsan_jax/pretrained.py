"""The maintainers' publishing tool for the shipped models: export, record scores, tables.

The shipped models are compact `.npz` files with a manifest (`drsan_jax.weights.shipped`
describes both and finds them; `drsan_jax.weights.loading` loads them by name). This module is
the one that writes them, above the loader: every file it writes is read back through the
loader and compared with its checkpoint (`verify_export`) before it takes the model's name.

A manifest entry's `evaluation` holds what `eval.py --ckpt <name> --output_json ...` measured;
`record_eval` copies it there from eval.py's JSON, so the manifest's numbers are the script's,
never typed by hand. Maintainers add a model with the command line of this module:

    python -m drsan_jax.pretrained export --ckpt runs/32s_x2 --name 32s-x2 --data "T91+BSD200" \
        --into_package
    python eval.py --ckpt 32s-x2 --datasets Set5,Set14,B100 --protocol both --output_json e.json
    python -m drsan_jax.pretrained record-eval --name 32s-x2 e.json
    python -m drsan_jax.pretrained table      # docs/shipped_weights.md's table, from the manifest
    python -m drsan_jax.pretrained table --readme   # the README's table (a test holds them equal)

Anyone else exports to a folder of their own (`--output_dir DIR`: `DIR/<name>.npz`, which
`--ckpt DIR/<name>.npz` loads, and `DIR/manifest.json`); one of the two flags is required, so
that the shipped weights are never replaced by accident, and an existing name is kept unless
`--force`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from drsan_jax import cli, events, files
from drsan_jax.weights import compact
from drsan_jax.weights.shipped import (
    FORMAT,
    MANIFEST_NAME,
    PRETRAINED_DIR,
    PretrainedError,
    read_manifest,
    sha256_of_file,
)

if TYPE_CHECKING:
    from drsan_jax.weights.loaded import InferenceModel

# The model zoo, the loader and Orbax (and so JAX) are imported by the functions that use them,
# so that --help, list and the tables answer at once.

STORAGE_DTYPES = compact.STORAGE_DTYPES

# What `verify_export` runs both models on, and how far their outputs may differ.
VERIFY_INPUT = "seeded 48x48 RGB, numpy default_rng(0).random"
VERIFY_TOLERANCE = {"float32": 1e-6, "float16": 0.5 / 255}


def write_manifest(manifest: dict[str, Any], directory: str | os.PathLike | None = None) -> None:
    """Writes the manifest, models sorted by name, atomically."""
    path = Path(directory or PRETRAINED_DIR) / MANIFEST_NAME
    manifest = {"format": FORMAT, "models": dict(sorted(manifest["models"].items()))}
    files.write_json(path, manifest)


def validation_curve(step_dir: str | os.PathLike) -> dict[str, list[list[float]]]:
    """The validation PSNR curves of the run a checkpoint step comes from.

    Read from the TensorBoard event files of its workdir (`<workdir>/checkpoints/<step>`) up to
    that step: {"Set5": [[step, psnr], ...], ...}; empty for a checkpoint outside a workdir.
    """
    from drsan_jax.weights import checkpoints

    step_dir = Path(step_dir)
    workdir = step_dir.parent.parent
    if step_dir.parent.name != checkpoints.CHECKPOINTS_SUBDIR or not events.event_files(workdir):
        return {}
    last = int(step_dir.name) if step_dir.name.isdigit() else None
    curves = events.read_scalars(workdir)
    return {events.val_dataset(tag): [[int(step), round(float(value), 4)]
                                      for step, _, value in rows if last is None or step <= last]
            for tag, rows in curves.items() if events.val_dataset(tag)}


def verify_export(loaded: InferenceModel, path: Path, storage_dtype: str) -> float:
    """Checks a written weights file against the checkpoint it came from.

    The file is read back with the loader every user goes through; each stored array must be
    the checkpoint's, rounded to `storage_dtype`, and the two models' outputs on a seeded
    48x48 RGB input (`VERIFY_INPUT`, at every scale the model serves) must agree within
    `VERIFY_TOLERANCE` (float32: to rounding; float16: half an 8-bit level).

    Returns:
      The largest absolute output difference on the [0, 1] scale (divided by the largest
      output value where that exceeds 1, as an untrained network's may).

    Raises:
      PretrainedError: the file differs, naming the array or the difference.
    """
    from drsan_jax.models import flatten
    from drsan_jax.weights import loading

    written = loading.load_compact(path)
    expected = flatten(loaded.params)
    for key, value in flatten(written.params).items():
        want = np.asarray(expected[key]).astype(storage_dtype).astype(np.float32)
        if not np.array_equal(np.asarray(value), want):
            raise PretrainedError(f"{path}: {key} does not hold the checkpoint's values; "
                                  f"nothing was replaced")
    lq = np.random.default_rng(0).random((1, 48, 48, 3), np.float32)
    difference = 0.0
    for scale in loaded.scales:
        ours, theirs = loaded.at_scale(scale), written.at_scale(scale)
        a = np.asarray(ours.model.apply({"params": ours.params}, lq))
        b = np.asarray(theirs.model.apply({"params": theirs.params}, lq))
        # Relative to the output's range where that exceeds [0, 1] (an untrained network).
        scale_of = max(1.0, float(np.abs(a).max()))
        difference = max(difference, float(np.abs(a - b).max()) / scale_of)
    if difference > VERIFY_TOLERANCE[storage_dtype]:
        raise PretrainedError(f"{path}: the stored weights' output differs from the "
                              f"checkpoint's by {difference:.2e} (tolerance "
                              f"{VERIFY_TOLERANCE[storage_dtype]:.1e}); nothing was replaced")
    return difference


def export(
    ckpt: str | os.PathLike,
    name: str,
    *,
    directory: str | os.PathLike,
    storage_dtype: str = "float16",
    which: str = "latest",
    data: str = "",
    command: str = "",
    notes: str = "",
    force: bool = False,
) -> Path:
    """Stores a checkpoint's parameters as the model `name` of a folder, with a manifest entry.

    Args:
      ckpt: a training workdir or step folder (see `checkpoints.load`).
      name: the shipped name; must be "<variant>-x<scale>" of the checkpoint's model.
      directory: where to write: `PRETRAINED_DIR` for the package's shipped models, else any
        folder (created if needed).
      storage_dtype: "float16" (half the size) or "float32".
      which: "latest" or "best" step of a workdir.
      data, command, notes: how the weights were trained, for the manifest.
      force: replace an existing model of that name (its evaluation results go too, since
        they no longer describe the new weights); without it, an existing one is an error.

    Returns:
      The weights file written: a self-describing compact file (`compact`), which also loads
      by its path.

    Raises:
      PretrainedError: a bad dtype or name, an existing name without `force`, or a
        manifest.json in `directory` that is not drsan-jax's; nothing is written then.
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise PretrainedError(f"storage dtype {storage_dtype!r}: expected one of {STORAGE_DTYPES}")
    directory = Path(directory)
    existing = read_manifest(directory)["models"] if directory.is_dir() else {}
    if not force and (name in existing or (directory / f"{name}.npz").exists()):
        shipped = " (a shipped model)" if directory.resolve() == PRETRAINED_DIR else ""
        raise PretrainedError(f"{name} already exists in {directory}{shipped}; pass --force to "
                              f"replace its weights and drop its manifest entry, or choose "
                              f"another --output_dir")
    from drsan_jax.weights import checkpoints

    loaded = checkpoints.load(ckpt, which)
    valid = {f"{loaded.name}-x{loaded.scale}"}
    if loaded.family.name == "drsan" and loaded.variant:
        valid.add(f"{loaded.variant}-x{loaded.scale}")  # the short DRSAN names
    if name not in valid:
        raise PretrainedError(f"{ckpt} holds a {loaded.name} x{loaded.scale} model; name it "
                              f"{' or '.join(sorted(valid))}, not {name}")
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"model": loaded.config, "step": loaded.step,
            "extra": {"pretrained": name, "weights": loaded.weights}}
    path = directory / f"{name}.npz"
    # Written under a temporary name, read back through the loader and compared with the
    # checkpoint before it takes the model's name: a file that does not reproduce its
    # checkpoint never replaces a shipped one.
    encoded = compact.encode(loaded.params, storage_dtype, meta)
    checked: list[float] = []
    files.atomic_write(path, lambda tmp: tmp.write_bytes(encoded),
                       check=lambda tmp: checked.append(verify_export(loaded, tmp, storage_dtype)))
    difference = checked[0]
    config = dict(loaded.training_config or {})
    manifest = read_manifest(directory)
    manifest["models"][name] = {
        "file": path.name,
        "sha256": sha256_of_file(path),
        "storage_dtype": storage_dtype,
        "model": loaded.config,
        "training": {
            "data": data,
            "steps": loaded.step,
            "command": command,
            "notes": notes,
            "source": str(loaded.path),
            "weights": loaded.weights,
            "config": config,
            "curve": validation_curve(loaded.path),
        },
        "verification": {"input": VERIFY_INPUT, "max_abs_output_difference": difference},
        "evaluation": {},
    }
    write_manifest(manifest, directory)
    return path


def _eval_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The single-protocol result dicts in an eval.py JSON (one, or two for --protocol both)."""
    if results.get("protocol") == "both":
        return list(results["results"].values())
    return [results]


def record_eval(name: str, json_paths: list[str | os.PathLike], *,
                reference: bool = False, directory: str | os.PathLike | None = None) -> None:
    """Copies eval.py's results for shipped model `name` into its manifest entry.

    Args:
      name: the shipped model.
      json_paths: files written by `eval.py --output_json`, of this model (`--ckpt name`), or,
        with `reference`, of the float32 checkpoint it was exported from.
      reference: the files score the source checkpoint: store the PSNR the stored weights lose
        against it, per protocol and dataset ("storage_cost"), instead of the results.
    """
    manifest = read_manifest(directory)
    if name not in manifest["models"]:
        raise PretrainedError(f"no shipped model is named {name!r}")
    entry = manifest["models"][name]
    for json_path in json_paths:
        results = json.loads(Path(json_path).read_text())
        for run in _eval_runs(results):
            if run.get("method") != "model" or run.get("scale") != entry["model"]["scale"]:
                raise PretrainedError(f"{json_path} does not evaluate a x"
                                      f"{entry['model']['scale']} model")
            expected = str(run.get("checkpoint", ""))
            if not reference and not expected.startswith(f"{name} "):
                raise PretrainedError(f"{json_path} evaluates {expected}, not {name}")
            mode = "self_ensemble" if run["self_ensemble"] else "plain"
            scores = {d: {"psnr": round(r["psnr"], 4), "ssim": round(r["ssim"], 5)}
                      for d, r in run["datasets"].items()}
            if reference:
                shipped = entry["evaluation"].get(run["protocol"], {}).get(mode)
                if not shipped:
                    raise PretrainedError(f"record {name}'s own {run['protocol']} {mode} results "
                                          f"first, then the reference to compare them with")
                cost = entry.setdefault("storage_cost", {}).setdefault(run["protocol"], {})
                cost[mode] = {d: round(s["psnr"] - shipped[d]["psnr"], 4)
                              for d, s in scores.items() if d in shipped}
            else:
                entry["evaluation"].setdefault(run["protocol"], {})[mode] = scores
    write_manifest(manifest, directory)


def markdown_table(protocol: str = "drsan", datasets: tuple[str, ...] = ("Set5", "Set14", "B100"),
                   directory: str | os.PathLike | None = None) -> str:
    """The shipped models' PSNR / SSIM as a Markdown table (plain, then + self-ensemble)."""
    lines = [f"| model | {' | '.join(datasets)} |", "|---|" + "---|" * len(datasets)]
    for name, entry in read_manifest(directory)["models"].items():
        for mode, label in (("plain", ""), ("self_ensemble", "+")):
            scores = entry.get("evaluation", {}).get(protocol, {}).get(mode)
            if not scores:
                continue
            lines.append(f"| {name}{label} ({entry['training']['steps']} steps) | "
                         f"{_score_cells(scores, datasets)} |")
    return "\n".join(lines)


def _score_cells(scores: dict[str, Any], datasets: tuple[str, ...]) -> str:
    """"PSNR / SSIM" of each dataset ("-" where it was not scored), as Markdown cells."""
    return " | ".join(f"{scores[d]['psnr']:.2f} / {scores[d]['ssim']:.4f}" if d in scores else "-"
                      for d in datasets)


def readme_table(protocol: str = "drsan", datasets: tuple[str, ...] = ("Set5", "Set14", "B100"),
                 directory: str | os.PathLike | None = None) -> str:
    """The README's table of the shipped models: one plain row each, by scale then variant.

    The README holds exactly this text (a test compares them), so that its numbers are the
    manifest's and never typed.
    """
    from drsan_jax.models import VARIANTS

    order = {variant: i for i, variant in enumerate(VARIANTS)}
    entries = sorted(read_manifest(directory)["models"].items(),
                     key=lambda item: (item[1]["model"]["scale"],
                                       order.get(item[1]["model"].get("variant"), len(order)),
                                       item[0]))
    lines = [f"| model | steps | {' | '.join(datasets)} |",
             "|---|---|" + "---|" * len(datasets)]
    for name, entry in entries:
        scores = entry.get("evaluation", {}).get(protocol, {}).get("plain", {})
        lines.append(f"| `{name}` | {entry['training']['steps']} | "
                     f"{_score_cells(scores, datasets)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The maintainers' command line (see the module docstring)."""
    parser = cli.ArgumentParser(prog="python -m drsan_jax.pretrained", verbose=False,
                                description="List, add and describe the shipped models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli.ArgumentParser)
    sub.add_parser("list", help="the shipped models")
    exp = sub.add_parser("export", help="store a checkpoint as a model with a manifest entry")
    exp.add_argument("--ckpt", required=True, help="training workdir or step folder")
    exp.add_argument("--name", required=True, help="<variant>-x<scale>, e.g. 32s-x2")
    where = exp.add_mutually_exclusive_group(required=True)
    where.add_argument("--output_dir", type=Path,
                       help="write DIR/<name>.npz (loads with --ckpt DIR/<name>.npz) and add "
                            "its entry to DIR/manifest.json")
    where.add_argument("--into_package", action="store_true",
                       help=f"maintainers: add it to the shipped models in {PRETRAINED_DIR}")
    exp.add_argument("--force", action="store_true",
                     help="replace a model of that name (and drop its evaluation results)")
    exp.add_argument("--which", choices=("latest", "best"), default="latest")
    exp.add_argument("--dtype", choices=STORAGE_DTYPES, default="float16")
    exp.add_argument("--data", default="", help="the training data, for the manifest")
    exp.add_argument("--train_command", default="", help="the training command(s)")
    exp.add_argument("--notes", default="", help="how training differed from the paper's")
    rec = sub.add_parser("record-eval", help="store eval.py --output_json results")
    rec.add_argument("--name", required=True)
    rec.add_argument("--reference", action="store_true",
                     help="the JSON files score the float32 source checkpoint")
    rec.add_argument("json", nargs="+")
    tab = sub.add_parser("table", help="print the shipped models' Markdown table "
                                       "(docs/shipped_weights.md)")
    tab.add_argument("--protocol", default="drsan")
    tab.add_argument("--readme", action="store_true",
                     help="the README's short table instead (plain scores, with the steps)")
    args = parser.parse_args(argv)
    return cli.run(parser.prog, args.verbose, lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    if args.command == "list":
        for name, entry in read_manifest()["models"].items():
            print(f"{name}: {entry['training'].get('steps')} steps on "
                  f"{entry['training'].get('data')}, {entry['storage_dtype']}")
    elif args.command == "export":
        directory = PRETRAINED_DIR if args.into_package else args.output_dir
        path = export(args.ckpt, args.name, directory=directory, storage_dtype=args.dtype,
                      which=args.which, data=args.data, command=args.train_command,
                      notes=args.notes, force=args.force)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) and its entry in "
              f"{path.parent / MANIFEST_NAME}")
    elif args.command == "record-eval":
        record_eval(args.name, args.json, reference=args.reference)
    elif args.readme:
        print(readme_table(args.protocol))
    else:
        print(markdown_table(args.protocol))


if __name__ == "__main__":
    sys.exit(main())
