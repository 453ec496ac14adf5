"""The Python API: `lvjax.load`, `lvjax.convert_hf`, `lvjax.export_hf`, `lvjax.enable_compilation_cache`."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from lvjax import checkpoint
from lvjax.config import ConfigError, read_json
from lvjax.convert.hf import hf_to_params, read_hf_folder, write_hf_folder
from lvjax.families import family_for
from lvjax.model import Model
from lvjax.tiny_model import resolve as resolve_name


def _count(params) -> int:
    return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def _dtypes(params) -> str:
    return ",".join(sorted({str(np.asarray(a).dtype) for a in jax.tree.leaves(params)}))


def _read_hf(path: str, progress: bool):
    """(family, config, params, hf_config, stored_tied_lm_head) of a Hugging Face folder."""
    hf_config, tensors = read_hf_folder(path, progress=progress)
    source = os.path.join(path, "config.json")
    family = family_for(hf_config, tensors.keys(), source)
    cfg = family.config_from_hf(hf_config, source)
    params, stored_tied = hf_to_params(family, cfg, tensors, path, progress=progress)
    return family, cfg, params, hf_config, stored_tied


def read_any(path: str, progress: bool = False):
    """(family, config, params, hf_config, stored_tied, side_dir) from an HF folder or an lvjax checkpoint.

    A shipped model's name ("tiny", "tiny-base": `lvjax.tiny_model`) stands for its folder."""
    path = resolve_name(path)
    if checkpoint.is_lvjax_checkpoint(path):
        family, cfg, params, meta = checkpoint.load_checkpoint(path)
        return family, cfg, params, meta["hf_config"], meta["stored_tied_lm_head"], path
    return (*_read_hf(path, progress), path)


def convert_hf(src: str, out: str, progress: bool = True) -> str:
    """Hugging Face folder → lvjax checkpoint directory. Returns a one-line summary."""
    t0 = time.time()
    family, _, params, hf_config, stored_tied = _read_hf(src, progress)
    checkpoint.save_checkpoint(out, family, hf_config, params, stored_tied, src)
    return f"converted {family.name}: {_count(params):,} parameters, dtype {_dtypes(params)}, {time.time() - t0:.1f} s → {out}"


def export_hf(ckpt: str, out: str) -> str:
    """lvjax checkpoint → Hugging Face folder loadable by the original code. Returns a summary."""
    t0 = time.time()
    if not os.path.isdir(ckpt):
        raise ConfigError(f"{ckpt}: no such checkpoint directory")
    if not checkpoint.is_lvjax_checkpoint(ckpt):
        raise ConfigError(f"{ckpt}: not an lvjax checkpoint (no {checkpoint.META})")
    family, cfg, params, meta = checkpoint.load_checkpoint(ckpt)
    write_hf_folder(out, meta["hf_config"], params, family, cfg, meta["stored_tied_lm_head"], ckpt)
    return f"exported {family.name}: {_count(params):,} parameters, dtype {_dtypes(params)}, {time.time() - t0:.1f} s → {out}"


def enable_compilation_cache(path: str | None = None) -> str:
    """Switch on JAX's persistent compilation cache (default dir: $LVJAX_COMPILATION_CACHE or ~/.cache/lvjax/xla).

    Compiled functions are then reused across processes for the same shapes and config.
    """
    path = os.path.abspath(path or os.environ.get("LVJAX_COMPILATION_CACHE") or os.path.expanduser("~/.cache/lvjax/xla"))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def load(path: str, *, dtype: str | None = None, param_dtype: str | None = None, progress: bool = False) -> Model:
    """Load a Hugging Face folder (original format) or an lvjax checkpoint; returns a `Model` handle.

    dtype: compute dtype (default float32); param_dtype: cast parameters (default: as stored,
    upcast to float32 for float32 compute).
    """
    family, cfg, params, _, _, source = read_any(path, progress=progress)
    compute = dtype or "float32"
    store = param_dtype or compute
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype=store), params)
    gen_path = os.path.join(source, "generation_config.json")
    gen_dict = read_json(gen_path) if os.path.isfile(gen_path) else {}
    cfg = family.with_dtypes(cfg, compute, store)
    return Model(family, cfg, params, family.generation(gen_dict, cfg), source)
