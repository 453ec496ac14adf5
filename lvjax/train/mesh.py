"""Device mesh, logical-axis rules and the shardings they give params, optimizer state and batches.

Mesh axes are ('data', 'fsdp', 'tensor', 'sequence'); sizes come from the config (-1 fills).
Parameters carry logical axis names (`nn.with_logical_partitioning` in the model); the rules
table maps each name to mesh axes, so re-sharding never touches model code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lvjax.config import ConfigError

AXES = ("data", "fsdp", "tensor", "sequence")
BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed() -> bool:
    """Call `jax.distributed.initialize()` when the environment describes a multi-process job.

    Recognised: JAX_COORDINATOR_ADDRESS (+ JAX_NUM_PROCESSES / JAX_PROCESS_ID), or
    LVJAX_DISTRIBUTED=1 to let JAX auto-detect (TPU pods, SLURM, Open MPI). Returns True if called.
    """
    if jax.distributed.is_initialized() if hasattr(jax.distributed, "is_initialized") else False:
        return False
    coord = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coord:
        jax.distributed.initialize(
            coordinator_address=coord,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in os.environ else None,
            process_id=int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None,
        )
        return True
    if os.environ.get("LVJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False


def mesh_shape(sizes: Sequence[int], n_devices: int) -> tuple[int, ...]:
    """Resolve -1 (fill) in (data, fsdp, tensor, sequence) sizes for `n_devices` devices."""
    sizes = list(sizes)
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if n_devices % known:
            raise ConfigError(f"mesh {sizes}: {n_devices} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = n_devices // known
    if int(np.prod(sizes)) != n_devices:
        raise ConfigError(f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, {n_devices} present")
    return tuple(sizes)


def make_mesh(sizes: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
    """A Mesh with axes AXES (Auto axis types) over `devices` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    if len(devices) == len(jax.devices()):
        try:
            dev = jax.experimental.mesh_utils.create_device_mesh(shape, devices=devices)
        except Exception:  # noqa: BLE001 - topology helper not applicable (CPU, odd shapes)
            dev = np.asarray(devices).reshape(shape)
    else:
        dev = np.asarray(devices).reshape(shape)
    return Mesh(dev, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def rules_tuple(rules) -> tuple[tuple[str, Any], ...]:
    """Config rules ([[name, axis|[axes]|null], ...]) → the tuple flax expects."""
    out = []
    for name, axes in rules:
        if isinstance(axes, list):
            axes = tuple(axes)
        out.append((name, axes))
    return tuple(out)


def logical_specs(boxed_tree) -> Any:
    """Boxed params (or their eval_shape) → tree of logical PartitionSpecs (names, not mesh axes)."""
    return nn.get_partition_spec(boxed_tree)


def tree_shardings(boxed_tree, mesh: Mesh, rules) -> Any:
    """NamedShardings for every leaf of a boxed tree under `rules` (unboxed leaf structure)."""
    return nn.logical_to_mesh_sharding(logical_specs(boxed_tree), mesh, rules_tuple(rules))


def batch_sharding(mesh: Mesh, ndim: int, leading: int = 0) -> NamedSharding:
    """Batch arrays: dim `leading` over data × fsdp, the rest replicated."""
    spec = [None] * ndim
    spec[leading] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict, mesh: Mesh, global_rows: int) -> dict:
    """Host-local numpy batch (rows of this process) → global jax.Arrays sharded over data × fsdp."""
    out = {}
    for k, v in local.items():
        v = np.asarray(v)
        sharding = batch_sharding(mesh, v.ndim)
        out[k] = jax.make_array_from_process_local_data(sharding, v, (global_rows,) + v.shape[1:])
    return out


def describe(mesh: Mesh) -> str:
    return " × ".join(f"{a}={n}" for a, n in mesh.shape.items())
