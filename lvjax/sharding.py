"""Device mesh, logical-axis rules and the shardings they give params, caches, activations and batches.

Shared by inference (`lvjax.load(path, mesh=...)`) and training. Mesh axes are ('data', 'fsdp',
'tensor', 'sequence'); sizes come from a config or a string "data=2,tensor=4" (-1 fills,
missing axes are 1). Parameters carry logical axis names (`nn.with_logical_partitioning` in the
model); `DEFAULT_RULES` maps each name to mesh axes, so re-sharding never touches model code:
the vision side (ViT, DTS, projector) runs data-parallel over clips on every mesh axis
(`vision_batch`; its weights `vision_*` replicated but for FSDP, its token axis `vision_length`
never split), the LLM tensor-parallel over heads / MLP / vocab and, with a `sequence` axis, its prefill
sequence-parallel: hidden states and queries split on `activation_length`, keys / values
all-gathered (`activation_kv_length` replicated). A KV cache (B, Hkv, S, D) is split over batch × KV heads.
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
TENSOR_AXIS, SEQUENCE_AXIS = "tensor", "sequence"

# logical name → mesh axes. LLM parameters: embed, mlp, heads, kv_heads, vocab; vision-side (ViT, DTS,
# projector) parameters: vision_embed, vision_mlp, vision_heads; both: norm, layers.
# Activations: activation_batch/length/embed (LLM hidden states and queries), activation_kv_length
# (keys / values inside attention), vision_batch / vision_length (ViT / ToMe / projector clips, tokens).
# KV caches (B, Hkv, S, D): cache_batch/heads/length.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "sequence"),
    ("activation_embed", None),
    ("activation_kv_length", None),  # K/V all-gathered over `sequence`: every query block sees every key
    # Clips over every axis; a count the product does not divide is padded by GSPMD (ceil(n / devices)
    # clips per device, never more than on any dividing subset of the axes).
    ("vision_batch", AXES),
    ("vision_length", None),  # the ViT is never sequence-split (ToMe's merges are discontinuous in it)
    ("vision_embed", "fsdp"),  # FSDP training still shards the vision weights
    ("vision_mlp", None),  # vision weights whole on every tensor / sequence device: no collectives per layer
    ("vision_heads", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),
    ("cache_batch", ("data", "fsdp")),
    ("cache_heads", "tensor"),
    ("cache_length", None),
)
CACHE_AXES = ("cache_batch", "cache_heads", "cache_length", None)  # a (B, Hkv, S, D) cache


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


def parse_mesh(spec: str) -> tuple[int, ...]:
    """"data=2,tensor=4" → sizes over AXES (absent axes 1, -1 fills). Raises ConfigError naming the bad part."""
    sizes = dict.fromkeys(AXES, 1)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in sizes:
            raise ConfigError(f"mesh {spec!r}: {part!r} is not <axis>=<size> with axis one of {AXES}")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ConfigError(f"mesh {spec!r}: size {value.strip()!r} of {name} is not an integer") from None
        if sizes[name] == 0 or sizes[name] < -1:
            raise ConfigError(f"mesh {spec!r}: size of {name} must be ≥ 1 or -1")
    return tuple(sizes[a] for a in AXES)


def as_mesh(mesh: "Mesh | str | Sequence[int] | None") -> Mesh | None:
    """A Mesh from a Mesh, a "data=2,tensor=4" string or sizes over AXES (None stays None).

    A Mesh with other axis names is accepted as is; rules naming absent axes are then ignored by flax.
    """
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    return make_mesh(parse_mesh(mesh) if isinstance(mesh, str) else tuple(mesh))


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
    """NamedShardings for every leaf of a boxed tree under `rules` (unboxed leaf structure). A dim
    that its mesh axes do not divide (e.g. a vocabulary of 577 rows on tensor=2) is replicated."""
    shardings = nn.logical_to_mesh_sharding(logical_specs(boxed_tree), mesh, rules_tuple(rules))
    return jax.tree.map(lambda sh, leaf: NamedSharding(mesh, fit_spec(sh.spec, leaf.shape, mesh)), shardings,
                        nn.unbox(boxed_tree))


def divides(size: int, axes, mesh_shape) -> bool:
    """Whether the devices of mesh `axes` (a name, a tuple of names or None) split `size` evenly."""
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return size % int(np.prod([mesh_shape[a] for a in names])) == 0


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """`spec` without the mesh axes of any dim of `shape` they do not divide (that dim replicated)."""
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    return P(*(axes if divides(dim, axes, mesh.shape) else None for dim, axes in zip(shape, entries)))


def param_shardings(family, cfg, mesh: Mesh, rules) -> Any:
    """NamedShardings of a family's parameters under `rules`, as the nested tree is stored (LLM layers
    stacked): what `lvjax.load` places an HF folder's parameters in and restores a checkpoint's into."""
    return tree_shardings(jax.eval_shape(lambda: family.init(cfg, jax.random.key(0))), mesh, rules)


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


def cache_sharding(mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """Sharding of one layer's KV cache (B, Hkv, S, D): batch over data × fsdp, heads over tensor."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(CACHE_AXES, rules_tuple(rules)))


def describe(mesh: Mesh) -> str:
    return " × ".join(f"{a}={n}" for a, n in mesh.shape.items())
