"""The training loop: `train(cfg)` builds mesh, model, optimizer, data and checkpoints, then steps.

A restarted job (same config and checkpoint.dir) restores the newest checkpoint — params,
optimizer state, step, RNG and each host's data position — and continues exactly as if it
had never stopped.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from lvjax import checkpoint
from lvjax.api import read_any
from lvjax.config import ConfigError, read_json
from lvjax.families import family_by_name, family_for
from lvjax.sharding import (
    describe,
    global_batch,
    make_mesh,
    maybe_initialize_distributed,
    tree_shardings,
)
from lvjax.train import metrics as M
from lvjax.train import objective, optim
from lvjax.train.checkpointing import Checkpointer
from lvjax.train.config import TrainConfig
from lvjax.train.data import TrainIterator, pad_frames_to
from lvjax.train.step import (
    abstract_state,
    init_state,
    jit_train_step,
    make_train_step,
    state_shardings,
)

TEXT_KEYS = ("input_ids", "labels", "valid")
VIDEO_KEYS = TEXT_KEYS + ("frames", "frame_valid", "n_frames")


def build_spec(cfg: TrainConfig, load_params: bool = True) -> tuple[objective.ObjectiveSpec, Any]:
    """(objective spec with the training dtypes/remat, pretrained host params or None).

    With load_params=False only the config of `model.init` is read (resuming: the params come
    from the training checkpoint)."""
    m = cfg.model
    family = family_by_name(m.family)
    params = None
    if m.init:
        if load_params:
            found, model_cfg, params, hf, *_ = read_any(m.init)
        else:
            found, model_cfg, hf = _read_config_only(m.init)
        if found.name != m.family:
            raise ConfigError(f"{cfg.source}: model.family={m.family!r} but {m.init} holds a {found.name!r} model")
        if m.hf_overrides:
            model_cfg = family.config_from_hf({**hf, **m.hf_overrides}, f"{cfg.source}: model.hf_overrides")
    else:
        model_cfg = family.config_from_hf({**m.hf_config, **m.hf_overrides}, f"{cfg.source}: model.hf_config")
    model_cfg = family.with_dtypes(model_cfg, m.dtype, m.param_dtype, remat_policy=m.remat_policy)
    return objective.ObjectiveSpec(m.family, model_cfg, m.compression), params


def _read_config_only(path: str):
    """(family, config, hf_config) of an HF folder or lvjax checkpoint without reading weights."""
    if checkpoint.is_lvjax_checkpoint(path):
        meta = read_json(os.path.join(path, checkpoint.META))
        family, hf, src = family_by_name(meta["family"]), meta["hf_config"], os.path.join(path, checkpoint.META)
    else:
        src = os.path.join(path, "config.json")
        hf = read_json(src)
        family = family_for(hf, source=src)
    return family, family.config_from_hf(hf, src), hf


def _is_video(spec) -> bool:
    return family_by_name(spec.family).sampling(spec.model_cfg) is not None


def _device_keys(spec) -> tuple[str, ...]:
    return VIDEO_KEYS if _is_video(spec) else TEXT_KEYS


def _agree_frame_bucket(batch: dict) -> dict:
    """Multi-host: pad every host's frames to the largest bucket any host drew this step."""
    if jax.process_count() == 1:
        return batch
    tb = int(np.max(multihost_utils.process_allgather(np.int32(batch["frames"].shape[1]))))
    return pad_frames_to(batch, tb)


def _llm_sizes(spec):
    return family_by_name(spec.family).llm_config(spec.model_cfg)


def train(cfg: TrainConfig, *, verbose: bool = True) -> dict:
    """Run (or resume) training. Returns {'steps': [...per-step metric dicts of this run...], ...}."""
    maybe_initialize_distributed()
    t_setup = time.time()
    mesh = make_mesh([cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor, cfg.mesh.sequence])
    rules = cfg.mesh.rules
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = cfg.train.global_batch // cfg.train.grad_accum
    if micro % shards:
        raise ConfigError(f"{cfg.source}: micro-batch of {micro} rows (train.global_batch / train.grad_accum) does not "
                          f"split over data × fsdp = {shards} devices ({describe(mesh)})")
    ckpt = Checkpointer(cfg.checkpoint_dir, cfg.checkpoint)
    latest = ckpt.latest_step() if cfg.checkpoint.resume else None
    spec, pretrained = build_spec(cfg, load_params=latest is None)
    boxed = jax.eval_shape(lambda: objective.init_params(spec, jax.random.key(0)))
    labels = optim.frozen_labels(nn.unbox(boxed), cfg.model.frozen)
    if optim.TRAIN not in jax.tree.leaves(labels) and not cfg.model.allow_all_frozen:
        raise ConfigError(f"{cfg.source}: model.frozen={cfg.model.frozen} leaves no parameter to train "
                          "(set model.allow_all_frozen: true to run anyway)")
    t = cfg.train
    tx, schedule = optim.make_optimizer(cfg.optim, t.steps, labels)
    n_proc, p_idx = jax.process_count(), jax.process_index()
    if t.global_batch % n_proc:
        raise ConfigError(f"{cfg.source}: train.global_batch={t.global_batch} not divisible by {n_proc} processes")
    data_it = _make_data(cfg, t.global_batch // n_proc, p_idx, n_proc, spec)
    if latest is not None:
        _, state_sh = _shardings_only(spec, tx, t.seed, mesh, rules)
        state = ckpt.restore(latest, abstract_state(state_sh, spec, tx, t.seed), data_it)
        resumed = latest
    else:
        state, state_sh = init_state(spec, tx, t.seed, mesh, rules, params=pretrained)
        resumed = None
    n_train, n_frozen = optim.count(state["params"], labels)
    llm_cfg = _llm_sizes(spec)
    per_frame = family_by_name(spec.family).visual_tokens_per_frame(spec.model_cfg)
    n_embed = llm_cfg.vocab_size * llm_cfg.hidden_size
    sink = M.MetricSink(t.output_dir, t.tensorboard)
    peak = M.peak_tflops(t.peak_tflops_per_device)
    if verbose and p_idx == 0:
        print(f"lvjax train: {spec.family}, mesh {describe(mesh)}, {n_train:,} trainable / {n_frozen:,} frozen params, "
              f"global batch {t.global_batch} ({t.grad_accum} micro-batches), "
              + (f"resumed from step {resumed}" if resumed is not None else "fresh start")
              + f", setup {time.time() - t_setup:.1f} s", flush=True)

    step_fn = None
    last_saved = None
    step = int(jax.device_get(state["step"]))
    start = step
    history: list[dict] = []
    pending: list[tuple[int, dict, dict]] = []
    pbar = _progress(t.steps, step, t.progress and verbose and p_idx == 0)
    t_last, tok_acc, frames_acc, flops_acc = time.time(), 0.0, 0.0, 0.0

    def flush():
        nonlocal t_last, tok_acc, frames_acc, flops_acc
        if not pending:
            return
        now = time.time()
        dt = max(now - t_last, 1e-9)
        fetched = jax.device_get([m for _, m, _ in pending])
        for (s, _, host), m in zip(pending, fetched):
            rec = {"step": s, **{k: float(v) for k, v in m.items()}, **host}
            history.append(rec)
        rec = dict(history[-1])
        rec.update(tokens_per_s=tok_acc / dt, frames_per_s=frames_acc / dt, step_time_s=dt / len(pending))
        if peak:
            rec["mfu"] = flops_acc / dt / (peak * 1e12 * jax.device_count())
        history[-1] = rec
        for r in history[-len(pending):]:
            sink.write(r)
        if pbar is not None:
            pbar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}",
                             fr_s=f"{rec['frames_per_s']:.1f}", **({"mfu": f"{rec['mfu']:.1%}"} if "mfu" in rec else {}))
        pending.clear()
        t_last, tok_acc, frames_acc, flops_acc = now, 0.0, 0.0, 0.0

    preempted = False
    try:
        while step < t.steps:
            if t.stop_after is not None and step - start >= t.stop_after:
                preempted = True
                break
            try:
                host = next(data_it)
            except StopIteration:
                if verbose and p_idx == 0:
                    print(f"lvjax train: data exhausted after step {step}", flush=True)
                break
            host = _agree_frame_bucket(host)
            if step == start:
                _check_vocab(host, llm_cfg.vocab_size, cfg)
            if _is_video(spec):
                try:
                    vs = objective.visual_start_of(host["input_ids"])
                except ValueError as e:
                    raise ConfigError(f"{cfg.data.train_jsonl}: {e} (the video objective needs a video or image per record)") from None
                if step_fn is None:
                    spec = dataclasses.replace(spec, visual_start=vs)
                elif vs != spec.visual_start:
                    raise ConfigError(f"{cfg.data.train_jsonl}: <image> at column {vs}, earlier batches had {spec.visual_start}")
            keys = _device_keys(spec) + (tuple(k for k in host if k not in VIDEO_KEYS) if _is_video(spec) else ())
            batch = global_batch({k: host[k] for k in keys}, mesh, t.global_batch)
            if step_fn is None:
                step_fn = jit_train_step(make_train_step(spec, tx, labels, schedule, t.grad_accum, mesh, rules),
                                         state_sh, batch, mesh, rules)
            state, met = step_fn(state, batch)
            step += 1
            n_tok = float(np.sum(host["valid"])) * n_proc
            n_frames = float(np.sum(host["n_frames"])) * n_proc
            vis_tok = n_frames * per_frame
            seq = host["valid"].shape[1] + (host["frames"].shape[1] * per_frame if per_frame else 0)
            tok_acc += n_tok + vis_tok
            frames_acc += n_frames
            flops_acc += (n_tok + vis_tok) * M.llm_flops_per_token(
                n_train - (n_embed if n_train > n_embed else 0), llm_cfg.num_hidden_layers, llm_cfg.hidden_size, seq)
            pending.append((step, met, {"skipped": data_it.skipped, "time": time.time()}))
            if ckpt.save(step, state, data_it):
                last_saved = step
            if step % t.log_every == 0 or step == t.steps:
                flush()
            if pbar is not None:
                pbar.update(1)
        flush()
        if not preempted and last_saved != step and step != start:
            ckpt.save(step, state, data_it, force=True)
    finally:
        ckpt.close()
        sink.close()
        if pbar is not None:
            pbar.close()
    return {"steps": history, "final_step": step, "resumed_from": resumed, "skipped": data_it.skipped,
            "state": state, "labels": labels, "mesh": mesh}


def _shardings_only(spec, tx, seed, mesh, rules):
    """State shardings without materialising a state (for restoring)."""
    boxed = jax.eval_shape(lambda: objective.init_params(spec, jax.random.key(seed)))
    param_sh = tree_shardings(boxed, mesh, rules)
    return None, state_shardings(tx, nn.unbox(boxed), param_sh, mesh)


def _make_data(cfg: TrainConfig, per_host: int, p_idx: int, n_proc: int, spec):
    if cfg.data.train_jsonl is None:
        raise ConfigError(f"{cfg.source}: data.train_jsonl is not set")
    if cfg.data.tokenizer is None:
        tok = cfg.model.init if cfg.model.init and os.path.isdir(cfg.model.init) else None
        if tok is None:
            raise ConfigError(f"{cfg.source}: data.tokenizer is not set (and model.init has no tokenizer)")
        cfg.data.tokenizer = tok
    video = _is_video(spec)
    media = family_by_name(spec.family).training_media(spec.model_cfg) if video else None
    return TrainIterator(cfg.data, per_host, process_index=p_idx, process_count=n_proc, require_media=video,
                         **({"media": media, "family": spec.family, "model_cfg": spec.model_cfg} if video else {}))


def _check_vocab(host: dict, vocab: int, cfg: TrainConfig) -> None:
    top = int(np.max(host["input_ids"]))
    if top >= vocab:
        raise ConfigError(f"{cfg.source}: tokenizer {cfg.data.tokenizer} produced id {top} ≥ model vocab_size {vocab}")


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    # disable=None: off when stderr is not a terminal (no \r lines in logs)
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, disable=None)
