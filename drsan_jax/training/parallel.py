"""Data parallelism: one device mesh, replicated parameters, the batch split on a `data` axis.

The same code runs on one CPU, several accelerators of one host, or several hosts. Every host
(JAX process) reads its own share of the global batch; `shard_batch` assembles the host-local
arrays into one global array split over all devices, and `jax.jit` does the rest: with the
parameters replicated and the batch split, the gradient mean becomes an all-reduce.

Several hosts join through JAX's own multi-controller runtime (`initialize_distributed`, a thin
wrapper over `jax.distributed.initialize`), which must run before anything touches a device.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-host run; call once per process, before any other JAX call.

    Without arguments JAX detects the cluster itself (SLURM, Open MPI, Kubernetes, Cloud TPU).
    Elsewhere, start one process per host with the same coordinator address and process count
    and a distinct process id.

    Args:
      coordinator_address: "host:port" of process 0, reachable by every process.
      num_processes: total number of processes.
      process_id: this process's index, 0 to num_processes - 1.
    """
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: every device of every host).

    The axis type is Auto: shardings of intermediates are left to the compiler, which for a
    replicated model and a split batch is plain data parallelism.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of parameters and optimizer state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: its leading axis split over the `data` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def host_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """The number of examples this host feeds per step.

    Args:
      global_batch_size: examples per step over all devices (`--config.batch_size`).
      mesh: the data-parallel mesh.

    Returns:
      global_batch_size / number of processes.

    Raises:
      ValueError: the global batch does not divide by the number of devices.
    """
    num_devices = mesh.devices.size
    if global_batch_size < 1 or global_batch_size % num_devices:
        nearest = max(1, round(global_batch_size / num_devices)) * num_devices
        raise ValueError(
            f"--config.batch_size={global_batch_size} must be a positive multiple of the number "
            f"of devices ({num_devices}: {_describe(mesh)}), so that every device gets the same "
            f"share; use e.g. --config.batch_size={nearest}"
        )
    # Each process holds the same number of devices, so the batch also divides by processes.
    return global_batch_size // jax.process_count()


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles every host's local batch into global arrays split over the `data` axis.

    Args:
      local_batch: arrays whose leading axis is this host's share of the global batch.
      mesh: the data-parallel mesh.

    Returns:
      Global arrays, leading axis = local batch * number of processes.
    """
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places host values (identical on every host) on every device of the mesh.

    Args:
      tree: a pytree of NumPy or JAX arrays holding the same values on every process.
      mesh: the data-parallel mesh.

    Returns:
      The same pytree as global arrays with the `replicated` sharding.
    """
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def describe_devices(mesh: Mesh) -> str:
    """One line about the mesh for the top of a training log."""
    return (f"{mesh.devices.size} device(s) on {jax.process_count()} host(s), this host "
            f"{jax.process_index()} with {jax.local_device_count()}: {_describe(mesh)}")


def _describe(mesh: Mesh) -> str:
    kinds: dict[str, int] = {}
    for device in mesh.devices.flat:
        kinds[device.device_kind] = kinds.get(device.device_kind, 0) + 1
    return ", ".join(f"{n} x {kind}" for kind, n in kinds.items())


__all__ = [
    "DATA_AXIS",
    "batch_sharded",
    "describe_devices",
    "host_batch_size",
    "initialize_distributed",
    "make_mesh",
    "replicate",
    "replicated",
    "shard_batch",
]
