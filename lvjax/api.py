"""The Python API: `lvjax.load`, `lvjax.convert_hf`, `lvjax.export_hf`, `lvjax.enable_compilation_cache`."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lvjax import checkpoint, sharding
from lvjax.config import ConfigError, check_generation, read_json
from lvjax.convert.hf import (
    check_new_dir,
    config_from_hf,
    hf_to_params,
    open_hf_folder,
    read_hf_folder,
    write_hf_folder,
)
from lvjax.convert.table import flatten_paths
from lvjax.families import family_for
from lvjax.model import Model
from lvjax.shipped import resolve as resolve_name


def _count(params) -> int:
    return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def _dtypes(params) -> str:
    return ",".join(sorted({str(np.asarray(a).dtype) for a in jax.tree.leaves(params)}))


def _read_hf(path: str, progress: bool):
    """(family, config, params, hf_config, stored_tied_lm_head) of a Hugging Face folder."""
    hf_config, tensors = read_hf_folder(path, progress=progress)
    source = os.path.join(path, "config.json")
    family = family_for(hf_config, tensors.keys(), source)
    cfg = config_from_hf(family, hf_config, source)
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
    check_new_dir(out)  # before any weight is read
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
    check_new_dir(out)  # before any weight is read
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


def default_dtype() -> str:
    """Compute dtype when none is asked for: bfloat16 on GPU/TPU, float32 on CPU (bf16 matmuls
    are slower than fp32 on AVX2 CPUs, and CPU runs are the parity reference)."""
    return "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"


def load(path: str, *, dtype: str | None = None, param_dtype: str | None = None, mesh=None, rules=None,
         progress: bool = False) -> Model:
    """Load a Hugging Face folder (original format) or an lvjax checkpoint; returns a `Model` handle.

    dtype: compute dtype (default `default_dtype()`: bfloat16 on GPU/TPU, float32 on CPU);
    param_dtype: cast parameters (default: the compute dtype). mesh: a `jax.sharding.Mesh` or
    "data=2,tensor=4" (axes of `lvjax.sharding.AXES`); each parameter is then read from the
    safetensors files and placed straight into its sharding under `rules` (default
    `sharding.DEFAULT_RULES`): one parameter on the host at a time (`model.load_report`); an lvjax
    checkpoint's parameters are restored by orbax straight into those shardings
    (`checkpoint.load_checkpoint`).
    A shipped model's name ("tiny", "tiny-base") stands for its folder. A multi-process job
    (JAX_COORDINATOR_ADDRESS or LVJAX_DISTRIBUTED=1) initialises
    `jax.distributed` first; each process then places only its own devices' shards.
    """
    path = resolve_name(path)
    sharding.maybe_initialize_distributed()
    mesh = sharding.as_mesh(mesh)
    rules = sharding.rules_tuple(rules if rules is not None else sharding.DEFAULT_RULES)
    compute = dtype or default_dtype()
    store = param_dtype or compute
    if checkpoint.is_lvjax_checkpoint(path):
        family, cfg, restored, _ = checkpoint.load_checkpoint(path, mesh, rules)
        placer = _Placer(family, cfg, store, mesh, rules)
        params = placer.finish({p: placer(p, a) for p, a in flatten_paths(restored).items()})
    else:
        hf_config, tensors = open_hf_folder(path, progress=progress)
        family = family_for(hf_config, tensors.keys(), os.path.join(path, "config.json"))
        cfg = config_from_hf(family, hf_config, os.path.join(path, "config.json"))
        placer = _Placer(family, cfg, store, mesh, rules)
        params, _ = hf_to_params(family, cfg, tensors, path, progress=progress, place=placer)
        params = placer.finish(params)
    gen_path = os.path.join(path, "generation_config.json")
    gen_dict = read_json(gen_path) if os.path.isfile(gen_path) else {}
    check_generation(gen_dict, gen_path)
    cfg = family.with_dtypes(cfg, compute, store)
    model = Model(family, cfg, params, family.generation(gen_dict, cfg), path, mesh=mesh, rules=rules,
                  load_report=placer.report())
    if model.has_tokenizer_files:
        model.tokenizer  # parsed now, so a broken tokenizer fails at load, not at the first question
    return model


class _Placer:
    """`place(path, array)` for `hf_to_lvjax`: cast, then put on the device(s) — in the leaf's
    sharding under the mesh (`sharding.param_shardings`; a host array with
    `jax.make_array_from_callback`: each device copies only its own shard, other processes' shards
    are never touched; a device array restored into that sharding is cast where it lies). LLM
    layers of a `per_layer_llm` family are placed as one array per layer (`llm.unstack_layers`).
    Records the host bytes it held."""

    def __init__(self, family, cfg, dtype: str, mesh, rules):
        self.dtype, self.mesh = np.dtype(jnp.dtype(dtype)), mesh
        self.shardings = None if mesh is None else flatten_paths(sharding.param_shardings(family, cfg, mesh, rules))
        prefix = "llm/" if "llm" in family.abstract_params(cfg) else ""
        self.layers = prefix + "layers" if family.per_layer_llm else None
        self.host_peak = self.total = self.count = 0

    def _put(self, a, sh: NamedSharding | None):
        self.count += 1
        if sh is None or isinstance(a, jax.Array):
            return jax.device_put(a, sh)
        return jax.make_array_from_callback(a.shape, sh, lambda idx: a[idx])

    def __call__(self, path: str, value) -> jax.Array | tuple:
        if isinstance(value, jax.Array):  # restored into its sharding (`checkpoint.load_checkpoint`)
            cast = value.astype(self.dtype)
        else:
            host = np.asarray(value)
            cast = host.astype(self.dtype, copy=False)
            self.host_peak = max(self.host_peak, host.nbytes + (cast.nbytes if cast is not host else 0))
        self.total += cast.nbytes
        sh = None if self.shardings is None else self.shardings[path]
        if self.layers and path.startswith(self.layers + "/"):
            layer = None if sh is None else NamedSharding(self.mesh, P(*sh.spec[1:]))
            return tuple(self._put(cast[i], layer) for i in range(cast.shape[0]))
        return self._put(cast, sh)

    def finish(self, params: dict) -> dict:
        """Nest a flat {path: leaf} dict if needed, and turn per-layer tuples into a tuple of layer trees."""
        if any("/" in k for k in params):
            nested: dict = {}
            for p, leaf in params.items():
                node = nested
                *head, last = p.split("/")
                for part in head:
                    node = node.setdefault(part, {})
                node[last] = leaf
            params = nested
        if self.layers:
            *head, last = self.layers.split("/")
            node = params
            for part in head:
                node = node[part]
            tuples = node[last]
            n = len(jax.tree.leaves(tuples, is_leaf=lambda x: isinstance(x, tuple))[0])
            node[last] = tuple(jax.tree.map(lambda t, i=i: t[i], tuples, is_leaf=lambda x: isinstance(x, tuple))
                               for i in range(n))
        return params

    def report(self) -> dict:
        """{'parameter_bytes': all placed parameters, 'host_peak_bytes': the most the loader held on the
        host at once (one parameter, stacked over layers, and its cast copy; a checkpoint restored
        into a mesh: 0, its checksum pass holds one stored parameter), 'arrays': device arrays made}."""
        return {"parameter_bytes": self.total, "host_peak_bytes": self.host_peak, "arrays": self.count}
