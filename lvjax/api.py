"""The Python API: `lvjax.load`, `lvjax.convert_hf`, `lvjax.export_hf`."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lvjax import checkpoint
from lvjax.config import ConfigError, read_json
from lvjax.convert.hf import hf_to_params, read_hf_folder, write_hf_folder
from lvjax.families import Family, family_for
from lvjax.generate import GenerationConfig, bucket, generate_from_embeds, left_align, sample_rng, seen_from_ids
from lvjax.models import llm


def _count(params) -> int:
    return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def _dtypes(params) -> str:
    return ",".join(sorted({str(np.asarray(a).dtype) for a in jax.tree.leaves(params)}))


def _read_hf(path: str, progress: bool):
    """(family, config, params, hf_config, stored_tied_lm_head) of a Hugging Face folder."""
    hf_config, tensors = read_hf_folder(path, progress=progress)
    source = os.path.join(path, "config.json")
    family = family_for(hf_config, source)
    cfg = family.config_from_hf(hf_config, source)
    params, stored_tied = hf_to_params(family, cfg, tensors, path, progress=progress)
    return family, cfg, params, hf_config, stored_tied


def read_any(path: str, progress: bool = False):
    """(family, config, params, hf_config, stored_tied, side_dir) from an HF folder or an lvjax checkpoint."""
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


class LanguageModel:
    """A loaded Qwen2 LM: `.config`, `.params`, `.logits(ids)`, `.generate(ids, ...)`."""

    def __init__(self, family: Family, config, params, generation: GenerationConfig, source: str):
        self.family, self.config, self.params, self.generation, self.source = family, config, params, generation, source
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The `transformers.AutoTokenizer` of the source folder (loaded on first use)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            if not os.path.isfile(os.path.join(self.source, "tokenizer_config.json")) and not os.path.isfile(
                os.path.join(self.source, "tokenizer.json")
            ):
                raise ConfigError(f"{self.source}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
            self._tokenizer = AutoTokenizer.from_pretrained(self.source)
        return self._tokenizer

    def logits(self, input_ids, attention_mask=None) -> np.ndarray:
        """input_ids (B, T) → fp32 logits (B, T, V); padding (mask 0) may sit on either side."""
        ids = np.asarray(input_ids, np.int32)
        mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask, bool)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"input_ids must be (B, T) and attention_mask the same shape; got {ids.shape}, {mask.shape}")
        return np.asarray(_logits(self.params, jnp.asarray(ids), jnp.asarray(mask), cfg=self.config))

    def generate(self, input_ids, attention_mask=None, *, max_new_tokens: int | None = None, seed: int | None = None,
                 **options) -> np.ndarray:
        """Continue each prompt; returns new tokens (B, max_new_tokens), `pad_token_id` after a stop token.

        options: do_sample, temperature, top_p, top_k, repetition_penalty, eos_token_ids, pad_token_id
        (defaults from generation_config.json, greedy unless it says otherwise).
        """
        gen = self.generation.replace(max_new_tokens=max_new_tokens, **options)
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim == 1:
            ids = ids[None]
        mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask, bool).reshape(ids.shape)
        length = bucket(int(mask.sum(1).max()))
        ids, valid = left_align(ids, mask, length, gen.pad_token_id)
        seen = seen_from_ids(ids, valid, self.config.vocab_size)
        x = llm.embed(self.params, self.config, jnp.asarray(ids))
        tokens, _ = generate_from_embeds(
            self.params, x, jnp.asarray(valid), jnp.asarray(seen), sample_rng(seed), cfg=self.config, gen=gen
        )
        return np.asarray(tokens)


def _logits_fn(params, ids, mask, *, cfg):
    from lvjax.models.qwen2 import Qwen2

    return Qwen2(cfg).apply({"params": params}, ids, mask)


_logits = jax.jit(_logits_fn, static_argnames=("cfg",))


def enable_compilation_cache(path: str | None = None) -> str:
    """Switch on JAX's persistent compilation cache (default dir: $LVJAX_COMPILATION_CACHE or ~/.cache/lvjax/xla).

    Compiled functions are then reused across processes for the same shapes and config.
    """
    path = os.path.abspath(path or os.environ.get("LVJAX_COMPILATION_CACHE") or os.path.expanduser("~/.cache/lvjax/xla"))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


def load(path: str, *, dtype: str | None = None, param_dtype: str | None = None, progress: bool = False) -> Any:
    """Load a Hugging Face folder or an lvjax checkpoint; returns a model handle.

    dtype: compute dtype (default float32); param_dtype: cast parameters (default: as stored,
    upcast to float32 for float32 compute).
    """
    family, cfg, params, hf_config, _, source = read_any(path, progress=progress)
    compute = dtype or "float32"
    store = param_dtype or compute
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype=store), params)
    gen_path = os.path.join(source, "generation_config.json")
    gen_dict = read_json(gen_path) if os.path.isfile(gen_path) else {}
    if family.name == "qwen2":
        cfg = cfg.replace(dtype=compute, param_dtype=store)
        return LanguageModel(family, cfg, params, GenerationConfig.from_hf(gen_dict, cfg), source)
    from lvjax.answer import VideoChatFlash

    return VideoChatFlash.from_loaded(family, cfg, params, gen_dict, source, compute, store)
