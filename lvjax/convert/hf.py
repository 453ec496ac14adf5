"""Hugging Face safetensors folders in and out.

`read_hf_folder(dir)` reads `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`) with the safetensors library — no torch, never a pickle —
and `hf_to_params` maps the tensors through the family's conversion table.
`write_hf_folder` writes the inverse: `model.safetensors` + `config.json` + tokenizer files.

Before any tensor is read, every safetensors header is checked (offsets inside the file and
non-overlapping, byte sizes = shape × dtype, known dtypes) and an index may name only shards
inside the model folder. Tensors must be finite and floating where the model has floats.
Progress bars show only on a terminal. Outputs are built in a `<out>.tmp-<pid>` sibling and renamed; siblings left by killed runs
(their pid dead) are removed by the next run writing the same `<out>`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from lvjax.config import ConfigError, check_sizes, read_json
from lvjax.convert.files import check_safetensors_header, save_safetensors
from lvjax.convert.table import ConversionError, hf_to_lvjax, lvjax_to_hf
from lvjax.errors import LvjaxError
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


def _inside(name: Any) -> bool:
    """True when `name` is a relative file name that stays inside its folder (no '..', not absolute).

    Checked on the name, not the resolved path: Hugging Face cache snapshots are symlinks into blobs/.
    """
    if not isinstance(name, str) or not name or os.path.isabs(name) or "\\" in name:
        return False
    norm = os.path.normpath(name)
    return norm != os.curdir and norm.split(os.sep)[0] != os.pardir


def _weight_files(folder: str) -> list[str]:
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{index}: no 'weight_map' object")
        for key, name in weight_map.items():
            if not _inside(name):
                raise ConversionError(f"{index}: weight_map[{key!r}] = {name!r} is not a file inside {folder}")
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
            except (OSError, ValueError, RuntimeError, SafetensorError) as e:
                raise ConversionError(f"{path}: not a readable safetensors file ({e})") from None
            for key in tqdm(keys, desc=f"indexing {os.path.basename(path)}", disable=None if progress else True, leave=False):
                if key in self._where:
                    raise ConversionError(f"{path}: key {key!r} appears in more than one shard")
                self._where[key] = path

    def __getitem__(self, key: str) -> np.ndarray:
        path = self._where[key]
        try:
            with safe_open(path, framework="numpy") as f:
                return f.get_tensor(key)
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
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
    check_sizes(hf_config, os.path.join(folder, "config.json"))  # before any tensor is read
    files = _weight_files(folder)
    headers = {path: check_safetensors_header(path) for path in files}
    seen: dict[str, str] = {}
    for path, header in headers.items():
        for key in header:
            if key in seen:
                raise ConversionError(f"{path}: key {key!r} also appears in {seen[key]}")
            seen[key] = path
    return hf_config, LazyTensors(files, progress)


def read_hf_folder(folder: str, progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict, {key: numpy array}) of a Hugging Face model folder, all tensors read."""
    hf_config, lazy = open_hf_folder(folder, progress)
    return hf_config, {k: lazy[k] for k in tqdm(lazy, desc="reading", disable=None if progress else True, leave=False)}


def check_finite(tensors: Mapping[str, np.ndarray], source: str) -> None:
    """CheckpointError naming the first floating tensor holding NaN or Inf."""
    for key, a in tensors.items():
        if a.dtype.kind not in "biu" and a.size and not np.isfinite(a.astype(np.float32, copy=False)).all():
            bad = int(np.size(a) - np.isfinite(a.astype(np.float32, copy=False)).sum())
            raise ConversionError(f"{source}: tensor {key!r} holds {bad} NaN/Inf value(s)")


def config_from_hf(family: Family, hf: dict, source: str):
    """`family.config_from_hf` with any slip in its parsing reported as a ConfigError naming `source`."""
    try:
        return family.config_from_hf(hf, source)
    except LvjaxError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError, IndexError) as e:
        raise ConfigError(f"{source}: invalid {family.name} config ({type(e).__name__}: {e})") from None


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
    check_layer_counts(rules, tensors, source)
    check_finite(tensors, source)
    total = sum(len(r.hf_keys()) for r in rules)
    with tqdm(total=total, desc="converting", disable=None if progress else True, leave=False) as bar:
        try:
            params = hf_to_lvjax(tensors, rules, expected=family.abstract_params(cfg), ignore=ignore, progress=bar.update,
                                  place=place)
        except ConversionError as e:
            raise ConversionError(f"{source}: {e}") from None
    return params, stored_tied


def check_layer_counts(rules: Iterable, tensors: Mapping[str, Any], source: str) -> None:
    """ConversionError when a stacked rule's layer count (from config.json) differs from the checkpoint's keys.

    Runs before anything is sized by the layer count (so `num_hidden_layers: 100000000` fails at once).
    """
    tops: dict[int, tuple[int, str]] = {}  # config layer count → (most layers any of its stacks holds, key)
    for rule in rules:
        if rule.n is None:
            continue
        pattern = re.compile(re.escape(rule.hf).replace(re.escape("{i}"), r"(\d+)") + "$")
        found = [int(m.group(1)) for m in map(pattern.match, tensors) if m]
        if found and max(found) + 1 > tops.get(rule.n, (0, ""))[0]:
            tops[rule.n] = (max(found) + 1, rule.hf.format(i=max(found)))
    for n, (top, key) in tops.items():
        if top != n:  # a gap inside the stack is left to the missing-key error, which names the key
            raise ConversionError(f"{source}: config.json gives {n} layers but the checkpoint holds {top} "
                                  f"(up to {key!r})")


def write_hf_folder(out: str, hf_config: dict, params, family: Family, cfg: Any, stored_tied: bool, side_dir: str | None):
    """Write `model.safetensors` + `config.json` (+ side files from `side_dir`) into a new folder `out`.

    Written into a temporary sibling first and renamed, so no partial folder is left behind.
    Tensors are views of `params` until written (streamed one at a time).
    """
    tensors = lvjax_to_hf(params, family.rules(cfg), copy=False)
    tied_key = family.tied_lm_head_key(cfg)
    if stored_tied and tied_key is not None:
        tensors["lm_head.weight"] = tensors[tied_key]
    with atomic_dir(out) as tmp:
        save_safetensors(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
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


def check_new_dir(path: str) -> str:
    """The absolute `path` of a new output directory; ConfigError unless it is absent, its parent a writable directory.

    Also removes `<path>.tmp-<pid>` siblings left by killed runs (only those whose pid is dead).
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"output path {path!r} is empty")
    path = os.path.abspath(path)
    if os.path.lexists(path):
        raise ConfigError(f"{path}: already exists (choose another output path or remove it)")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ConfigError(f"{parent}: output parent directory does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{parent}: output parent directory is not writable")
    remove_stale_temporaries(path)
    return path


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove the `<path>.tmp-<pid>` siblings whose process is gone; returns what was removed."""
    parent, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(base) + r"\.tmp-(\d+)$")
    removed = []
    for name in os.listdir(parent):
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(os.path.join(parent, name))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class atomic_dir:
    """Context manager: build a directory under a temporary name; rename to `path` on success.

    Refuses to overwrite an existing `path`; on error (or KeyboardInterrupt / SystemExit, e.g. the
    CLI's SIGTERM handler) the temporary directory is removed.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.tmp = f"{self.path}.tmp-{os.getpid()}"

    def __enter__(self) -> str:
        check_new_dir(self.path)
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

