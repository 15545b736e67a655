"""Trains DRSAN or a baseline of the zoo:

    python train.py --config configs/drsan48s.py --workdir runs/drsan48s_x2 \\
        --config.train_data=../shared/data/train/T91,../shared/data/train/BSD200

Kept short on purpose: it parses flags and calls `drsan_jax.training.train_and_evaluate`, which
documents what happens. Rerunning the same command resumes from the latest checkpoint in
--workdir. Override any config field with --config.<field>=<value> (e.g. --config.scale=3); an
unknown field is an error. On a CPU-only machine the host is split into one XLA device per core
for the data-parallel mesh (`drsan_jax.runtime`; DRSAN_JAX_CPU_DEVICES overrides it).

Several hosts: start one process per host with --distributed (JAX detects SLURM, Open MPI,
Kubernetes or Cloud TPU clusters), or name the coordinator yourself:
--coordinator_address=host0:1234 --num_processes=2 --process_id=<0 or 1>.

A mistake (a bad flag or config field, missing data, a workdir in use by another run) is one
line on stderr with exit status 2; a run that stops (diverged, a checkpoint that cannot be
saved) one line with status 1. --verbose prints the whole traceback instead (`drsan_jax.cli`).
"""

import functools

from absl import app, flags
from ml_collections import config_flags

from drsan_jax import cli

PROG = "train.py"

flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard event files.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_bool("distributed", False,
                  "Join a multi-host run with jax.distributed.initialize() (cluster detection).")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 for a multi-host run (implies --distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")
cli.define_verbose_flag()
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _config_field_hint(config, key):
    # JAX and the model zoo are imported only once there is work (or an error) to explain, so
    # that --help answers at once.
    from drsan_jax.training import config as training_config

    return training_config.config_field_hint(config, key)


def main(argv):
    return cli.run(PROG, FLAGS.verbose, functools.partial(_train, argv))


def _train(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from drsan_jax import runtime, training
    from drsan_jax.training import parallel

    # Before JAX starts: the compilation cache, and on a CPU one XLA device per core.
    runtime.configure(batch_size=FLAGS.config.batch_size)
    if FLAGS.distributed or FLAGS.coordinator_address:
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.absl_flags_parser(PROG, hint=_config_field_hint))
