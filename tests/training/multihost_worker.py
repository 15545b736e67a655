"""One process of the two-process training test (tests/training/test_parallel.py), run as a script.

    python tests/training/multihost_worker.py <coordinator host:port> <process id> <config JSON> <workdir>

It joins the run through `parallel.initialize_distributed` (JAX's multi-controller runtime, on
this host's CPU devices) and calls `training.train_and_evaluate`, as train.py would on each host.
"""

import json
import sys

import ml_collections
from absl import logging

from drsan_jax import training
from drsan_jax.training import parallel


def main(coordinator: str, process_id: str, config_json: str, workdir: str) -> None:
    logging.set_verbosity(logging.INFO)
    parallel.initialize_distributed(coordinator, num_processes=2, process_id=int(process_id))
    config = ml_collections.ConfigDict(json.loads(config_json))
    training.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(*sys.argv[1:])
