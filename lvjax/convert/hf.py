"""Hugging Face safetensors folders in and out.

`read_hf_folder(dir)` reads `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`) with the safetensors library — no torch, never a pickle —
and `hf_to_params` maps the tensors through the family's conversion table.
`write_hf_folder` writes the inverse: `model.safetensors` + `config.json` + tokenizer files.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from lvjax.config import ConfigError, read_json
from lvjax.convert.table import ConversionError, hf_to_lvjax, lvjax_to_hf
from lvjax.families.base import Family

# Files copied along with the weights (tokenizer, generation settings).
SIDE_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
)
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


def _weight_files(folder: str) -> list[str]:
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{index}: no 'weight_map'")
        files = [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]
        for f in files:
            if not os.path.isfile(f):
                raise ConversionError(f"{index}: names shard {os.path.basename(f)!r}, which does not exist")
        return files
    pickles = [p for p in _PICKLES if os.path.exists(os.path.join(folder, p))]
    if pickles:
        raise ConversionError(
            f"{os.path.join(folder, pickles[0])}: PyTorch pickle checkpoints are never loaded (they can run code); "
            "save the model as safetensors first (e.g. `model.save_pretrained(dir, safe_serialization=True)`)"
        )
    raise ConversionError(f"{folder}: no model.safetensors or model.safetensors.index.json")


class LazyTensors(Mapping):
    """{key: numpy array} over the safetensors files of a folder, read one tensor per lookup.

    Only the headers are read up front; nothing is cached, so a loader that places each
    parameter as it goes never holds more than the tensors of one parameter on the host.
    """

    def __init__(self, files: list[str], progress: bool = False):
        self._where: dict[str, str] = {}
        for path in files:
            try:
                with safe_open(path, framework="numpy") as f:
                    keys = list(f.keys())
            except (OSError, ValueError, RuntimeError) as e:
                raise ConversionError(f"{path}: not a readable safetensors file ({e})") from None
            for key in tqdm(keys, desc=f"indexing {os.path.basename(path)}", disable=not progress, leave=False):
                if key in self._where:
                    raise ConversionError(f"{path}: key {key!r} appears in more than one shard")
                self._where[key] = path

    def __getitem__(self, key: str) -> np.ndarray:
        path = self._where[key]
        try:
            with safe_open(path, framework="numpy") as f:
                return f.get_tensor(key)
        except (OSError, ValueError, RuntimeError) as e:
            raise ConversionError(f"{path}: cannot read tensor {key!r} ({e})") from None

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def open_hf_folder(folder: str, progress: bool = False) -> tuple[dict, LazyTensors]:
    """(config dict, lazily read tensors) of a Hugging Face model folder."""
    if not os.path.exists(folder):
        raise ConfigError(f"{folder}: no such directory")
    if not os.path.isdir(folder):
        raise ConfigError(f"{folder}: not a directory (expected a Hugging Face model folder)")
    hf_config = read_json(os.path.join(folder, "config.json"))
    return hf_config, LazyTensors(_weight_files(folder), progress)


def read_hf_folder(folder: str, progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict, {key: numpy array}) of a Hugging Face model folder, all tensors read."""
    hf_config, lazy = open_hf_folder(folder, progress)
    return hf_config, {k: lazy[k] for k in tqdm(lazy, desc="reading", disable=not progress, leave=False)}


def hf_to_params(family: Family, cfg: Any, tensors: Mapping[str, np.ndarray], source: str, progress: bool = True,
                 place: Callable[[str, np.ndarray], Any] | None = None):
    """Map HF tensors to a nested params dict; returns (params, stored_tied_lm_head).

    `place(path, host_array)` (see `hf_to_lvjax`) turns each parameter into its final form as it is read.
    """
    ignore = family.ignored_keys(cfg, frozenset(tensors))
    stored_tied = False
    tied_key = family.tied_lm_head_key(cfg)
    if tied_key is not None and "lm_head.weight" in tensors:
        stored_tied = True
        ignore.add("lm_head.weight")
        embed = tensors.get(tied_key)
        if embed is not None and (embed.shape != tensors["lm_head.weight"].shape or not np.array_equal(embed, tensors["lm_head.weight"])):
            warnings.warn(
                f"{source}: tie_word_embeddings is true but the stored lm_head.weight differs from {tied_key}; "
                f"using {tied_key} as transformers does",
                stacklevel=2,
            )
    rules = family.rules(cfg)
    total = sum(len(r.hf_keys()) for r in rules)
    with tqdm(total=total, desc="converting", disable=not progress, leave=False) as bar:
        try:
            params = hf_to_lvjax(tensors, rules, expected=family.abstract_params(cfg), ignore=ignore, progress=bar.update,
                                  place=place)
        except ConversionError as e:
            raise ConversionError(f"{source}: {e}") from None
    return params, stored_tied


def write_hf_folder(out: str, hf_config: dict, params, family: Family, cfg: Any, stored_tied: bool, side_dir: str | None):
    """Write `model.safetensors` + `config.json` (+ side files from `side_dir`) into a new folder `out`.

    Written into a temporary sibling first and renamed, so no partial folder is left behind.
    """
    tensors = lvjax_to_hf(params, family.rules(cfg))
    tied_key = family.tied_lm_head_key(cfg)
    if stored_tied and tied_key is not None:
        tensors["lm_head.weight"] = tensors[tied_key].copy()
    with atomic_dir(out) as tmp:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        copy_side_files(side_dir, tmp, family.side_folders(hf_config))
        family.write_side_folders(tmp, cfg, tensors)
    return tensors


def copy_side_files(src: str | None, dst: str, folders: tuple[str, ...] = ()) -> None:
    """Copy the tokenizer/generation files and the family's side folders (e.g. 'vision_tower/') from src to dst."""
    if src is None:
        return
    for name in SIDE_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
    for folder in folders:
        if not os.path.isdir(os.path.join(src, folder)):
            raise ConfigError(f"{os.path.join(src, folder)}: missing (the model's config.json names this sub-folder)")
        shutil.copytree(os.path.join(src, folder), os.path.join(dst, folder))


class atomic_dir:
    """Context manager: build a directory under a temporary name; rename to `path` on success.

    Refuses to overwrite an existing `path`; on error the temporary directory is removed.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.tmp = f"{self.path}.tmp-{os.getpid()}"

    def __enter__(self) -> str:
        if os.path.exists(self.path):
            raise ConfigError(f"{self.path}: already exists (choose another output path or remove it)")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise ConfigError(f"{parent}: output parent directory does not exist")
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

