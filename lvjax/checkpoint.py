"""lvjax's own checkpoint folder: orbax params + `lvjax.json` (family, HF config) + side files.

Layout of a checkpoint directory:
    lvjax.json   {"format": "lvjax", "version": 1, "family", "hf_config", "stored_tied_lm_head",
                  "sha256": {param path: sha256 of its bytes}}  (checked on every load and export)
    params/      orbax PyTree checkpoint of the nested params dict (stored dtype kept)
    tokenizer.json, generation_config.json, ...   copied from the source folder
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from lvjax import sharding
from lvjax.config import ConfigError, read_json
from lvjax.convert.hf import atomic_dir, config_from_hf, copy_side_files
from lvjax.convert.table import flatten_paths
from lvjax.errors import CheckpointError
from lvjax.families import Family, family_by_name

META = "lvjax.json"


def is_lvjax_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, META))


def save_checkpoint(out: str, family: Family, hf_config: dict, params, stored_tied: bool, side_dir: str | None) -> None:
    """Write a new checkpoint directory `out` atomically (nothing left behind on failure)."""
    with atomic_dir(out) as tmp:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, "params"), params)
        meta = {"format": "lvjax", "version": 1, "family": family.name, "hf_config": hf_config,
                "stored_tied_lm_head": stored_tied, "sha256": checksums(params)}
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)
        copy_side_files(side_dir, tmp, family.side_folders(hf_config))


def checksums(params) -> dict[str, str]:
    """{param path: sha256 hex digest of its C-order bytes}, one parameter on the host at a time."""
    return {key: _digest(host_copy(a)) for key, a in sorted(flatten_paths(params).items())}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest()


def host_copy(a) -> np.ndarray:
    """One parameter as a host numpy array (a sharded one gathered, from every process in a multi-process job)."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return multihost_utils.process_allgather(a, tiled=True)
    return np.asarray(a)


def load_checkpoint(path: str, mesh=None, rules=sharding.DEFAULT_RULES) -> tuple[Family, Any, dict, dict]:
    """(family, config, params, metadata) of an lvjax checkpoint.

    Without a mesh the params are numpy arrays. With one, orbax restores each parameter straight
    into its NamedSharding under `rules` (`sharding.param_shardings`, as `lvjax.load` places an HF
    folder's), as a jax.Array of the stored dtype; the checksums are then verified one parameter at a
    time (fetched to the host, hashed, dropped), so the whole model is never on the host.
    CheckpointError (naming the file and the key) for a malformed lvjax.json, a damaged or
    half-written orbax folder, a parameter of the wrong shape, or bytes that differ from the
    checksums recorded at convert time.
    """
    meta_path = os.path.join(path, META)
    meta = read_json(meta_path)
    if meta.get("format") != "lvjax":
        raise CheckpointError(f"{meta_path}: not an lvjax checkpoint (format={meta.get('format')!r})")
    for key, kind in (("hf_config", dict), ("stored_tied_lm_head", bool), ("sha256", (dict, type(None)))):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{meta_path}: {key}={meta.get(key)!r} is malformed")
    try:
        family = family_by_name(meta["family"])
    except (ConfigError, KeyError, TypeError):
        raise CheckpointError(f"{meta_path}: unknown family {meta.get('family')!r}") from None
    cfg = config_from_hf(family, meta["hf_config"], meta_path)
    expected = family.abstract_params(cfg)
    params_dir = os.path.abspath(os.path.join(path, "params"))
    if not os.path.isdir(params_dir):
        raise CheckpointError(f"{params_dir}: missing (incomplete lvjax checkpoint)")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            if mesh is None:
                params = jax.tree.map(np.asarray, ckptr.restore(params_dir))
            else:
                stored = ckptr.metadata(params_dir).item_metadata.tree
                _check_params(expected, stored, params_dir)  # before reading a byte: the shardings' tree must match
                params = ckptr.restore(params_dir, jax.tree.map(
                    lambda m, sh: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sh), stored,
                    sharding.param_shardings(family, cfg, mesh, rules)))
    except CheckpointError:
        raise
    except Exception as e:  # orbax/tensorstore raise many types for a damaged folder  # noqa: BLE001
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{params_dir}: damaged or half-written orbax checkpoint ({reason})") from None
    _check_params(expected, params, params_dir)
    if meta.get("sha256") is not None:
        check_checksums(params, meta["sha256"], params_dir)
    return family, cfg, params, meta


def check_checksums(params, recorded: dict, source: str) -> None:
    """CheckpointError naming the first parameter whose bytes differ from the sha256 recorded at convert time."""
    got = checksums(params)
    for key in sorted(set(got) | set(recorded)):
        if got.get(key) != recorded.get(key):
            raise CheckpointError(f"{source}: parameter {key!r} does not match its sha256 recorded in {META} "
                                  "(the checkpoint is damaged; convert it again)")


def _check_params(expected, params, source: str) -> None:
    if not isinstance(params, dict):
        raise CheckpointError(f"{source}: damaged orbax checkpoint (no parameter tree)")
    check_tree(expected, params, source)


def check_tree(expected, params, source: str) -> None:
    """Raise CheckpointError naming the first parameter whose presence, shape or dtype class differs."""
    want, got = flatten_paths(expected), flatten_paths(params)
    for key in sorted(set(want) | set(got)):
        if key not in got:
            raise CheckpointError(f"{source}: parameter {key!r} is missing")
        if key not in want:
            raise CheckpointError(f"{source}: unexpected parameter {key!r}")
        if tuple(want[key].shape) != tuple(got[key].shape):
            raise CheckpointError(f"{source}: parameter {key!r} has shape {tuple(got[key].shape)}, expected {want[key].shape}")
