"""Tests for drsan_jax.training.parallel: 1 vs 4 devices, and a two-process jax.distributed run.

Both run in subprocesses: the device count of a JAX process is fixed when it starts
(XLA_FLAGS=--xla_force_host_platform_device_count), and the rest of the suite keeps one device.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from drsan_jax import data, training
from drsan_jax.models import build_model_from_config, init_params
from drsan_jax.weights import checkpoints

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"features": 8, "num_blocks": 1, "num_groups": 1, "scale": 2}

# One device against four: the same parameters and global batch through the same train_step.
FOUR_DEVICES = r"""
import json, sys
import jax, ml_collections, numpy as np
from drsan_jax.weights import checkpoints
from drsan_jax import data, training
from drsan_jax.training import parallel
from drsan_jax.models import build_model_from_config, param_shapes

model_cfg, train_dir, cache_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
assert jax.device_count() == 4
tx = training.create_optimizer(ml_collections.ConfigDict({
    "learning_rate": 2e-4, "lr_decay_steps": 200_000, "lr_decay_rate": 0.85, "adam_b1": 0.9,
    "adam_b2": 0.999, "adam_eps": 1e-8}))
model = build_model_from_config(model_cfg)
# Host-drawn parameters: the comparison needs any nonzero values, not init_params' compile.
rng = np.random.default_rng(0)
params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), param_shapes(model))
dataset = data.load_training_set(train_dir, 2, 8, cache_dir)
sampler = data.PatchSampler(dataset, batch_size=8, patch_size=8, seed=0)
results = {}
for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
    mesh = parallel.make_mesh(devices)
    state = training.create_train_state(model, tx, params, mesh)
    losses = []
    for step in range(3):
        batch = parallel.shard_batch(sampler.batch(step), mesh)
        state, metrics = training.train_step(state, batch)
        losses.append([float(metrics["loss"]), float(metrics["grad_norm"])])
    leaves = jax.tree.leaves(state.params)
    results[name] = {
        "losses": losses,
        "params": [np.asarray(x).ravel()[:50].tolist() for x in leaves],
        "replicated": all(x.sharding.is_fully_replicated for x in leaves),
        "batch_devices": len(batch["lq"].sharding.device_set),
        "batch_shard": list(batch["lq"].addressable_shards[0].data.shape),
    }
try:
    parallel.host_batch_size(6, parallel.make_mesh())
except ValueError as e:
    results["error"] = str(e)
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def train_images(shared_data, tmp_path_factory):
    """Four real T91 images, and a cache folder for their LR images."""
    root = tmp_path_factory.mktemp("train")
    (root / "hr").mkdir()
    for path in sorted((shared_data / "train" / "T91").glob("*.bmp"))[:4]:
        (root / "hr" / path.name).symlink_to(path)
    return root


def _env(devices):
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


@pytest.mark.slow
def test_one_and_four_devices_agree(train_images):
    result = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES, json.dumps(TINY_MODEL), str(train_images / "hr"),
         str(train_images / "cache")],
        env=_env(4), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    one, four = results["one"], results["four"]
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    for a, b in zip(four["params"], one["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert one["replicated"] and four["replicated"]
    assert (one["batch_devices"], four["batch_devices"]) == (1, 4)
    assert four["batch_shard"] == [2, 8, 8, 3]  # the global batch of 8 split on the data axis
    assert "--config.batch_size=6 must be a positive multiple of the number of devices (4" in \
        results["error"]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_as_one(train_images, tmp_path):
    sys.path.insert(0, str(REPO))
    try:
        from configs import default
    finally:
        sys.path.remove(str(REPO))
    config = default.get_config()
    config.model.update({k: v for k, v in TINY_MODEL.items() if k != "scale"})
    config.update(train_data=str(train_images / "hr"), cache_dir=str(train_images / "cache"),
                  val_datasets="", patch_size=8, batch_size=8, num_train_steps=3,
                  log_every_steps=1, checkpoint_every_steps=2, data_workers=1)
    port = _free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "training" / "multihost_worker.py"), f"localhost:{port}",
             str(i), json.dumps(config.to_dict()), str(tmp_path / "workdir")],
            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=240)[0])
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
        assert "devices: 4 device(s) on 2 host(s)" in output
    losses = [[float(x) for x in re.findall(r"step \d+/3  loss ([0-9.]+)", out)] for out in outputs]
    assert len(losses[0]) == 3 and losses[0] == losses[1]  # one global loss, seen by both hosts

    # The global batch of step 1 is host 0's share followed by host 1's, each from its own shard.
    model = build_model_from_config(TINY_MODEL)
    params = init_params(model, jax.random.key(config.seed))
    shares = [data.PatchSampler(data.load_training_set(config.train_data, 2, 8, config.cache_dir,
                                                       i, 2), 4, 8, config.seed, i).batch(0)
              for i in range(2)]
    lq, gt = (np.concatenate([s[k] for s in shares]) / 255.0 for k in ("lq", "gt"))
    expected = float(training.l1_loss(model.apply({"params": params}, lq), gt))
    assert losses[0][0] == pytest.approx(expected, abs=1e-5)
    assert checkpoints.load(tmp_path / "workdir").step == 3
