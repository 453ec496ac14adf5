"""Training configuration: typed dataclasses read from YAML, with `key=value` overrides.

A config file is YAML with the sections below (every key optional except where noted);
`base: other.yaml` (relative to the file) is read first and this file's keys override it.
Unknown keys and values of the wrong type raise `ConfigError` naming the file and the key.

    model:      what to train (family, init checkpoint or random hf_config, dtypes, remat,
                compression plan, frozen subtrees)
    data:       JSONL, tokenizer, frame sampling, buckets, grain workers
    optim:      AdamW, schedule, clipping
    train:      steps, global batch, accumulation, seed, logging, output folder
    mesh:       device mesh axis sizes and the logical-axis rules table
    checkpoint: orbax CheckpointManager options
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from typing import Any

import yaml

from lvjax import families
from lvjax.config import ConfigError
from lvjax.sharding import DEFAULT_RULES


@dataclasses.dataclass
class ModelSection:
    """`family`: a registered family name ('qwen2' text-only LM objective, 'videochat_flash', … video objective).

    `init`: an HF folder or lvjax checkpoint to start from; when null, parameters are random
    with the sizes of `hf_config` (a config.json dict; used by the tiny twins). `hf_overrides`
    are config.json fields replaced after loading (e.g. XComp's mm_local_num_frames: 8).
    `frozen`: parameter path patterns ('/'-joined, fnmatch, e.g. 'vision/*') that are not trained.
    `compression`: the CompressionPlan name used in the forward ('none', 'xcomp_cosine', ...).
    `allow_all_frozen`: run even when `frozen` leaves no parameter to train (refused otherwise).
    """

    family: str = "qwen2"
    init: str | None = None
    hf_config: dict | None = None
    hf_overrides: dict = dataclasses.field(default_factory=dict)
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    remat_policy: str = "full"
    compression: str = "none"
    frozen: list = dataclasses.field(default_factory=list)
    allow_all_frozen: bool = False


@dataclasses.dataclass
class DataSection:
    """LLaVA-style JSONL (`video` or `image` + `conversations`); paths relative to `media_root`.

    Frames: `fps` target in clips of `local_num_frames`, between `min_frames` and `max_frames`,
    padded up to the smallest `frame_buckets` entry that holds them. Text: padded/truncated to
    `max_seq_len` tokens (visual tokens not included).
    """

    train_jsonl: str | None = None
    media_root: str = ""
    tokenizer: str | None = None
    fps: float = 1.0
    local_num_frames: int = 4
    min_frames: int = 64
    max_frames: int = 512
    frame_buckets: list = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    image_size: int = 448
    max_seq_len: int = 2048
    seed: int = 42
    shuffle: bool = True
    num_epochs: int | None = None
    worker_count: int = 0
    worker_buffer_size: int = 2
    decode_threads: int = 1
    system_prompt: str = "You are a helpful assistant."


@dataclasses.dataclass
class OptimSection:
    """AdamW with linear warmup (`warmup_ratio` of the steps) then `schedule` decay."""

    lr: float = 1e-5
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float | None = 1.0


@dataclasses.dataclass
class TrainSection:
    """`global_batch` examples per optimizer step, split into `grad_accum` micro-batches.

    `stop_after`: end this run after that many optimizer steps (as if preempted; no final save).
    """

    steps: int = 100
    global_batch: int = 32
    grad_accum: int = 1
    seed: int = 0
    log_every: int = 10
    output_dir: str = "runs/default"
    progress: bool = True
    tensorboard: bool = False
    peak_tflops_per_device: float | None = None
    stop_after: int | None = None


@dataclasses.dataclass
class MeshSection:
    """Mesh axis sizes (-1: fill with the remaining devices; at most one -1) and logical rules."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    sequence: int = 1
    rules: list = dataclasses.field(default_factory=lambda: [list(r) for r in DEFAULT_RULES])


@dataclasses.dataclass
class CheckpointSection:
    """Orbax CheckpointManager: save every `every` steps, keep the last `keep`; `dir` defaults
    to `{train.output_dir}/checkpoints`."""

    dir: str | None = None
    every: int = 500
    keep: int = 3
    async_save: bool = True
    resume: bool = True


@dataclasses.dataclass
class TrainConfig:
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    source: str = "<config>"

    @property
    def checkpoint_dir(self) -> str:
        return os.path.abspath(self.checkpoint.dir or os.path.join(self.train.output_dir, "checkpoints"))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


_SECTIONS = {f.name: f.type for f in dataclasses.fields(TrainConfig) if f.name != "source"}


def _check_type(value: Any, annotation: str, where: str) -> Any:
    """Coerce/validate one value against a dataclass field's annotation (given as a string)."""
    hint = eval(annotation, {"dict": dict, "list": list, "str": str, "int": int, "float": float, "bool": bool})
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: must not be null")
    for t in options:
        if t is type(None):
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # YAML reads 1e-5 as a string
            try:
                return float(value)
            except ValueError:
                continue
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool, dict, list) and isinstance(value, t):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
    raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")


def from_dict(raw: dict, source: str = "<config>") -> TrainConfig:
    """Validate a nested dict into a TrainConfig; unknown sections/keys raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    sections = {}
    for name, value in raw.items():
        if name == "base":
            continue
        if name not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section {name!r} (known: {', '.join(_SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        cls = globals()[_SECTIONS[name]]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for key, v in value.items():
            if key not in fields:
                raise ConfigError(f"{source}: unknown key {name}.{key} (known: {', '.join(fields)})")
            kw[key] = _check_type(v, fields[key].type, f"{source}: {name}.{key}")
        sections[name] = cls(**kw)
    cfg = TrainConfig(**sections, source=source)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks (raise ConfigError naming the key)."""
    s = cfg.source
    if cfg.model.family not in families.names():
        raise ConfigError(f"{s}: model.family={cfg.model.family!r} (expected one of {', '.join(families.names())})")
    if cfg.model.init is None and cfg.model.hf_config is None:
        raise ConfigError(f"{s}: set model.init (checkpoint) or model.hf_config (random init)")
    if cfg.model.remat_policy not in ("none", "full", "dots", "minimal"):
        raise ConfigError(f"{s}: model.remat_policy={cfg.model.remat_policy!r} (none, full, dots, minimal)")
    if cfg.optim.schedule not in ("cosine", "linear", "constant"):
        raise ConfigError(f"{s}: optim.schedule={cfg.optim.schedule!r} (cosine, linear, constant)")
    o = cfg.optim
    for key, value, ok, what in (
        ("lr", o.lr, 0 < o.lr < math.inf, "a finite number > 0"),
        ("warmup_ratio", o.warmup_ratio, 0 <= o.warmup_ratio < 1, "in [0, 1)"),
        ("min_lr_ratio", o.min_lr_ratio, 0 <= o.min_lr_ratio <= 1, "in [0, 1]"),
        ("weight_decay", o.weight_decay, 0 <= o.weight_decay < math.inf, "a finite number >= 0"),
        ("b1", o.b1, 0 <= o.b1 < 1, "in [0, 1)"),
        ("b2", o.b2, 0 <= o.b2 < 1, "in [0, 1)"),
        ("eps", o.eps, 0 < o.eps < math.inf, "a finite number > 0"),
        ("grad_clip", o.grad_clip, o.grad_clip is None or 0 < o.grad_clip < math.inf, "null or a finite number > 0"),
    ):
        if not ok:  # NaN fails every comparison
            raise ConfigError(f"{s}: optim.{key}={value} must be {what}")
    t = cfg.train
    for key in ("steps", "global_batch", "grad_accum", "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"{s}: train.{key}={getattr(t, key)} must be ≥ 1")
    if t.stop_after is not None and t.stop_after < 1:
        raise ConfigError(f"{s}: train.stop_after={t.stop_after} must be ≥ 1 or null")
    if t.global_batch % t.grad_accum:
        raise ConfigError(f"{s}: train.global_batch={t.global_batch} is not a multiple of train.grad_accum={t.grad_accum}")
    d = cfg.data
    for key in ("local_num_frames", "min_frames", "max_frames", "image_size", "max_seq_len", "worker_buffer_size",
                "decode_threads"):
        if getattr(d, key) < 1:
            raise ConfigError(f"{s}: data.{key}={getattr(d, key)} must be ≥ 1")
    if not 0 < d.fps < math.inf:
        raise ConfigError(f"{s}: data.fps={d.fps} must be a finite number > 0")
    if d.worker_count < 0 or (d.num_epochs is not None and d.num_epochs < 1):
        raise ConfigError(f"{s}: data.worker_count={d.worker_count} must be ≥ 0 and data.num_epochs={d.num_epochs} "
                          "≥ 1 or null")
    if d.min_frames > d.max_frames:
        raise ConfigError(f"{s}: data.min_frames={d.min_frames} > data.max_frames={d.max_frames}")
    buckets = sorted(d.frame_buckets)
    if not buckets or any(not isinstance(b, int) or b % d.local_num_frames for b in buckets):
        raise ConfigError(f"{s}: data.frame_buckets={d.frame_buckets} must be multiples of local_num_frames={d.local_num_frames}")
    if buckets[-1] < d.max_frames:
        raise ConfigError(f"{s}: data.frame_buckets max {buckets[-1]} < data.max_frames={d.max_frames}")
    m = cfg.mesh
    sizes = [m.data, m.fsdp, m.tensor, m.sequence]
    if sum(1 for x in sizes if x == -1) > 1 or any(x == 0 or x < -1 for x in sizes):
        raise ConfigError(f"{s}: mesh sizes {sizes} (data, fsdp, tensor, sequence): positive, at most one -1")
    for rule in m.rules:
        if not (isinstance(rule, (list, tuple)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ConfigError(f"{s}: mesh.rules entry {rule!r} must be [logical_name, mesh_axis|[axes]|null]")
        axes = rule[1] if isinstance(rule[1], (list, tuple)) else [rule[1]]
        bad = [a for a in axes if a not in (None, "data", "fsdp", "tensor", "sequence")]
        if bad:
            raise ConfigError(f"{s}: mesh.rules maps {rule[0]!r} to unknown mesh axis {bad[0]!r}")
    if cfg.checkpoint.every < 1 or cfg.checkpoint.keep < 1:
        raise ConfigError(f"{s}: checkpoint.every and checkpoint.keep must be ≥ 1")


def _read_yaml(path: str, chain: tuple[str, ...] = ()) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found" + (f" (the base: of {chain[-1]})" if chain else ""))
    real = os.path.realpath(path)
    if real in chain:
        raise ConfigError(f"{path}: base: cycle ({' -> '.join(map(os.path.basename, (*chain, real)))})")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = raw.get("base")
    if base is not None and not (isinstance(base, str) and base):
        raise ConfigError(f"{path}: base={base!r} must be a file name")
    if base:
        merged = _read_yaml(os.path.join(os.path.dirname(os.path.abspath(path)), base), (*chain, real))
        return _merge(merged, raw)
    return raw


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("hf_config", "hf_overrides"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    out.pop("base", None)
    return out


def apply_overrides(raw: dict, overrides: list[str], source: str = "<overrides>") -> dict:
    """`section.key=value` strings (value parsed as YAML) applied to a raw config dict."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise ConfigError(f"override {item!r}: expected section.key=value (e.g. optim.lr=2e-5)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = parsed
    return raw


def load_config(path: str, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (following `base:`), apply `key=value` overrides, validate.

    Relative paths in data.train_jsonl / data.tokenizer / data.media_root / model.init are
    resolved against the config file's folder when they exist there.
    """
    raw = apply_overrides(_read_yaml(path), list(overrides))
    cfg = from_dict(raw, source=path)
    here = os.path.dirname(os.path.abspath(path))
    for section, key in (("data", "train_jsonl"), ("data", "tokenizer"), ("data", "media_root"), ("model", "init")):
        obj = getattr(cfg, section)
        v = getattr(obj, key)
        if v and not os.path.isabs(v) and not os.path.exists(v) and os.path.exists(os.path.join(here, v)):
            setattr(obj, key, os.path.join(here, v))
    return cfg
