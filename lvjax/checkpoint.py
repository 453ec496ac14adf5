"""lvjax's own checkpoint folder: orbax params + `lvjax.json` (family, HF config) + side files.

Layout of a checkpoint directory:
    lvjax.json   {"format": "lvjax", "version": 1, "family", "hf_config", "stored_tied_lm_head"}
    params/      orbax PyTree checkpoint of the nested params dict (stored dtype kept)
    tokenizer.json, generation_config.json, ...   copied from the source folder
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from lvjax.config import ConfigError, read_json
from lvjax.convert.hf import atomic_dir, copy_side_files
from lvjax.convert.table import flatten_paths
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
                "stored_tied_lm_head": stored_tied}
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)
        copy_side_files(side_dir, tmp, family.side_folders(hf_config))


def load_checkpoint(path: str) -> tuple[Family, Any, dict, dict]:
    """(family, config, params as numpy arrays, metadata) of an lvjax checkpoint."""
    meta = read_json(os.path.join(path, META))
    if meta.get("format") != "lvjax":
        raise ConfigError(f"{os.path.join(path, META)}: not an lvjax checkpoint")
    try:
        family = family_by_name(meta["family"])
    except (ConfigError, KeyError, TypeError):
        raise ConfigError(f"{os.path.join(path, META)}: unknown family {meta.get('family')!r}") from None
    cfg = family.config_from_hf(meta["hf_config"], os.path.join(path, META))
    params_dir = os.path.abspath(os.path.join(path, "params"))
    if not os.path.isdir(params_dir):
        raise ConfigError(f"{params_dir}: missing (incomplete lvjax checkpoint)")
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(params_dir)
    params = jax.tree.map(np.asarray, params)
    check_tree(family.abstract_params(cfg), params, params_dir)
    return family, cfg, params, meta


def check_tree(expected, params, source: str) -> None:
    """Raise ConfigError naming the first parameter whose presence or shape differs."""
    want, got = flatten_paths(expected), flatten_paths(params)
    for key in sorted(set(want) | set(got)):
        if key not in got:
            raise ConfigError(f"{source}: parameter {key!r} is missing")
        if key not in want:
            raise ConfigError(f"{source}: unexpected parameter {key!r}")
        if tuple(want[key].shape) != tuple(np.shape(got[key])):
            raise ConfigError(f"{source}: parameter {key!r} has shape {np.shape(got[key])}, expected {want[key].shape}")
