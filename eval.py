"""Scores DRSAN (or bicubic) on the SR benchmarks, as the published tables do.

    python eval.py --ckpt runs/drsan48s_x2 --datasets Set5,Set14,B100
    python eval.py --method bicubic --scale 4 --datasets Set5,Set14,B100 --output_json b.json

Kept short on purpose: it parses flags and calls `drsan_jax.evaluation.evaluate_and_report`,
which documents the data layout, the protocols and the JSON it writes. A mistake (a bad flag,
a missing or damaged checkpoint, a dataset that is not there) is one line on stderr with exit
status 2; --verbose prints the whole traceback instead (`drsan_jax.cli`).
"""

import functools
from pathlib import Path

from absl import app, flags

from drsan_jax import cli, metrics
from drsan_jax.data.benchmark import BENCHMARK_DIR_ENV

PROG = "eval.py"

flags.DEFINE_string("ckpt", None, "Checkpoint: a training workdir, its checkpoints/ folder, "
                    "one step folder, or a shipped model's name such as 32s-x2. Sets the model, "
                    "its variant and scale.")
flags.DEFINE_enum("method", "model", metrics.METHODS,
                  "'model' (the checkpoint) or 'bicubic' (MATLAB-bicubic upscaling).")
flags.DEFINE_list("datasets", None, "Comma-separated dataset names under <data_dir>/HR "
                  "(default: all of them).")
flags.DEFINE_integer("scale", None, "SR factor; taken from the checkpoint (and must agree with "
                     "it if given). Required with --method bicubic.")
flags.DEFINE_string("data_dir", None, "Benchmark folder with HR/<name>/ and x<scale>/<name>/ "
                    f"(default: ${BENCHMARK_DIR_ENV}, else ../shared/data/benchmark).")
flags.DEFINE_enum("protocol", "drsan", metrics.PROTOCOL_CHOICES,
                  "Scoring protocol (see drsan_jax/metrics.py); 'both' scores each SR image, "
                  "computed once, under drsan and matlab.")
flags.DEFINE_bool("per_image", False, "Also print every image's PSNR / SSIM.")
flags.DEFINE_string("output_json", None, "Write the results to this JSON file.")
flags.DEFINE_string("save_images", None, "Write the SR images to DIR/x<scale>/<dataset>/.")
flags.DEFINE_bool("self_ensemble", False, "Average the 8 flips and quarter turns (EDSR '+').")
flags.DEFINE_bool("exact_shapes", False, "Plain whole-image inference, one compilation per image "
                  "size, to check the size-bucketed default against.")
flags.DEFINE_bool("ema", True, "For a checkpoint trained with a weight average "
                  "(--config.ema_decay): score the average (default, what validation scored); "
                  "--noema scores the trained weights.")
cli.define_verbose_flag()
FLAGS = flags.FLAGS


def main(argv):
    return cli.run(PROG, FLAGS.verbose, functools.partial(_evaluate, argv))


def _evaluate(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # Imported once there is work to do, so that --help answers at once.
    from drsan_jax import evaluation

    evaluation.evaluate_and_report(
        ckpt=FLAGS.ckpt, method=FLAGS.method, datasets=FLAGS.datasets, scale=FLAGS.scale,
        data_dir=FLAGS.data_dir, repo_root=Path(__file__).resolve().parent,
        protocol=FLAGS.protocol, per_image=FLAGS.per_image, output_json=FLAGS.output_json,
        save_images=FLAGS.save_images, self_ensemble=FLAGS.self_ensemble,
        exact_shapes=FLAGS.exact_shapes, ema=FLAGS.ema)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.absl_flags_parser(PROG))
