"""The VideoChat-Flash / XComp training loss: CE on the answers, with the CompressionPlan active."""

from __future__ import annotations

import jax.numpy as jnp

from lvjax.families.videochat_flash import model as vcf
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.drops import drops_for_plan
from lvjax.losses import IGNORE_INDEX, token_ce
from lvjax.models import llm
from lvjax.video.preprocess import normalize


def video_ce(params: dict, batch: dict, spec):
    """Frames → UMT ViT → ToMe → projector → spliced at `visual_start` → LLM with the plan → (Σ CE, tokens).

    Row layout fed to the LLM (static length S − 1 + Tb·16):
        [text before <image>] [Tb·16 visual slots; padded frames' slots invalid] [text after <image>]
    Drops only shrink the visual block, so the answer labels (all after it) keep their order:
    the CE is taken on the text after the visual block, with the head run only there. In every
    stage between drops the padding (frames, text) is packed behind the real tokens
    (`llm.prefill_packed`), so attention takes the kernels / blockwise path where `attend` chooses
    them; the drops see the visual block in place.
    """
    cfg = spec.model_cfg
    ids, labels, valid = batch["input_ids"], batch["labels"], batch["valid"]
    frames, frame_valid = batch["frames"], batch["frame_valid"]
    b, tb = frames.shape[:2]
    lnf, tpf, vs = cfg.local_num_frames, cfg.tokens_per_frame, spec.visual_start
    pixels = normalize(frames, xp=jnp).astype(jnp.dtype(cfg.vision.dtype))
    clips = pixels.reshape((b * tb // lnf, lnf) + frames.shape[2:])
    visual = vcf.merge_and_project(params, cfg, vcf.vision_features(params, cfg, clips))
    n_vis = tb * tpf
    visual = visual.reshape(b, n_vis, -1)
    text = llm.embed(params["llm"], cfg.llm, jnp.where(ids < 0, 0, ids))
    x = jnp.concatenate([text[:, :vs], visual.astype(text.dtype), text[:, vs + 1:]], axis=1)
    v = jnp.concatenate([valid[:, :vs], jnp.repeat(frame_valid, tpf, axis=1), valid[:, vs + 1:]], axis=1)
    plan = build_plan(spec.compression, cfg.llm.num_hidden_layers, tpf)
    drops = drops_for_plan(plan, cfg.llm, n_vis)
    # Attention-scored drops read from the token right before each answer span (as the original trains).
    before_answer = (labels[:, 1:] != IGNORE_INDEX) & (labels[:, :-1] == IGNORE_INDEX)
    query = jnp.concatenate([jnp.zeros((b, vs + n_vis), bool), before_answer[:, vs + 1:],
                             jnp.zeros((b, 1), bool)], axis=1)
    hidden = llm.prefill_packed(params["llm"], cfg.llm, x, v, drops=drops, visual_start=vs, n_visual=n_vis, query=query)
    n_last = hidden.shape[1] - (ids.shape[1] - 1)
    tail = hidden[:, vs + n_last - 1:]  # last visual slot, then the text after <image>
    tail_labels = jnp.concatenate([jnp.full((b, 1), IGNORE_INDEX, labels.dtype), labels[:, vs + 1:]], axis=1)
    return token_ce(llm.head(params["llm"], cfg.llm, tail), tail_labels)
