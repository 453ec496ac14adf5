"""Compressed LLM forward vs a straightforward reference: transformers' Qwen2 layers run one by one
in a Python loop, the sequence rebuilt after each drop, positions renumbered 0..len−1."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lvjax.config import LLMConfig
from lvjax.convert.hf import read_hf_folder
from lvjax.convert.llm import llm_rules
from lvjax.convert.table import hf_to_lvjax
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.drops import drops_for_plan
from lvjax.generate import GenerationConfig, generate_from_embeds
from lvjax.models import llm

V0, NV = 14, 256  # visual block of the recorded 16-frame prompt

PLANS = {
    "none": {},
    "xcomp_cosine": {},
    "xcomp_cosine_paper": {},
    "xcomp_cosine_uniform": {},
    "stepwise": {},
    "uniform": dict(layers=(4, 9), ratios=(1.0, 0.5, 0.25)),
    "attention": dict(layers=(4, 9), ratios=(1.0, 0.5, 0.25)),
    "uniform0_attention": dict(layers=(4, 18), ratios=(1.0, 0.75, 0.25)),
}


@pytest.fixture(scope="module")
def models(tiny_vcf_dir):
    hf, tensors = read_hf_folder(str(tiny_vcf_dir), progress=False)
    cfg = LLMConfig.from_hf(hf)
    text = {k: v for k, v in tensors.items() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    params = hf_to_lvjax(text, llm_rules(cfg), ignore={"lm_head.weight"})
    tcfg = Qwen2Config(**{k: v for k, v in cfg.to_hf().items() if k != "eos_token_id"}, attn_implementation="eager")
    torch_model = Qwen2ForCausalLM(tcfg).eval()
    torch_model.load_state_dict({k: torch.tensor(v) for k, v in text.items()}, strict=False)
    return cfg, params, torch_model


def _reference_logits(torch_model, plan, x, query_index):
    """Last-position logits of the compressed forward, layer by layer (float64 not needed: fp32 as the original)."""
    inner = torch_model.model
    h = torch.tensor(np.asarray(x))
    nv = NV
    events = {e.after: e for e in plan.events}
    with torch.no_grad():
        for layer in range(len(inner.layers) + 1):
            if layer in events:
                e = events[layer]
                if e.rule == "attention":
                    keep = _attention_keep(inner, layer, h, nv, plan.keep_count(e, NV), query_index(h))
                else:
                    keep = torch.tensor(plan.keep_indices(e, NV))
                idx = torch.cat([torch.arange(V0), keep + V0, torch.arange(V0 + nv, h.shape[1])])
                h, nv = h[:, idx], len(keep)
            if layer == len(inner.layers):
                break
            t = h.shape[1]
            pos = torch.arange(t)[None]
            mask = torch.full((t, t), float("-inf")).triu(1)[None, None]
            h = inner.layers[layer](h, attention_mask=mask, position_ids=pos,
                                    position_embeddings=inner.rotary_emb(h, pos))
        return torch_model.lm_head(inner.norm(h))[0, -1].numpy()


def _attention_keep(inner, layer, h, nv, n_keep, q_row):
    """VideoChat-Flash's rule written out: next layer's norm, q/k, RoPE; causal softmax; mean heads."""
    blk = inner.layers[layer].self_attn
    x = inner.layers[layer].input_layernorm(h)
    t = h.shape[1]
    cfg = inner.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    q = blk.q_proj(x).view(1, t, -1, hd).transpose(1, 2)
    k = blk.k_proj(x).view(1, t, -1, hd).transpose(1, 2)
    cos, sin = inner.rotary_emb(h, torch.arange(t)[None])
    rot = lambda v: torch.cat([-v[..., hd // 2:], v[..., : hd // 2]], -1)  # noqa: E731
    q, k = q * cos[:, None] + rot(q) * sin[:, None], k * cos[:, None] + rot(k) * sin[:, None]
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q[:, :, q_row, None] @ k.transpose(-1, -2))[:, :, 0] / math.sqrt(hd)  # (1, H, t)
    scores[..., q_row + 1:] = float("-inf")
    probs = scores.float().softmax(-1).mean(1)[0]
    return probs[V0: V0 + nv].topk(n_keep).indices.sort().values


CI_PLANS = ("uniform0_attention",)  # LP-Comp is checked against the original below, no compression in test_fixture_llm


@pytest.mark.parametrize("name", [n if n in CI_PLANS else pytest.param(n, marks=pytest.mark.heavy) for n in sorted(PLANS)])
def test_compressed_logits_and_greedy_match_reference(models, ref, name):
    cfg, params, torch_model = models
    plan = build_plan(name, cfg.num_hidden_layers, **PLANS[name])
    drops = drops_for_plan(plan, cfg, NV)
    x = jnp.asarray(ref["L4/inputs_embeds"])[None]
    prompt_len = x.shape[1]
    h, *_ = llm.prefill(params, cfg, x, jnp.ones((1, prompt_len), bool), drops=drops, visual_start=V0, n_visual=NV)
    ours = np.asarray(llm.head(params, cfg, h))[0, -1]
    want = _reference_logits(torch_model, plan, x, lambda h: prompt_len - 1 - (x.shape[1] - h.shape[1]))
    np.testing.assert_allclose(ours, want, atol=1e-4)

    # Decoding with per-stage caches == re-running the whole compressed forward for every new token.
    gen = GenerationConfig(max_new_tokens=5, eos_token_ids=(), pad_token_id=0)
    toks = np.asarray(generate_from_embeds(params, x, jnp.ones((1, prompt_len), bool), jnp.zeros((1, cfg.vocab_size), bool),
                                           jax.random.key(0), cfg=cfg, gen=gen, drops=drops, visual_start=V0,
                                           n_visual=NV)[0])[0]
    seq = np.asarray(x)
    embed = np.asarray(params["embed_tokens"]["embedding"])
    expect = []
    for _ in range(5):
        # The attention rule scores from the last *prompt* token, as in prefill.
        logits = _reference_logits(torch_model, plan, seq, lambda h: prompt_len - 1 - (seq.shape[1] - h.shape[1]))
        expect.append(int(logits.argmax()))
        seq = np.concatenate([seq, embed[expect[-1]][None, None]], axis=1)
    np.testing.assert_array_equal(toks, expect)


def test_lp_comp_matches_original(models, ref):
    cfg, params, _ = models
    drops = drops_for_plan(build_plan("xcomp_cosine", 28), cfg, NV)
    x = jnp.asarray(ref["L4/inputs_embeds"])[None]
    valid = jnp.ones(x.shape[:2], bool)
    run = jax.jit(lambda p, x, v: llm.head(p, cfg, llm.prefill(p, cfg, x, v, drops=drops, visual_start=V0,
                                                               n_visual=NV)[0]))  # jitted: CI time
    logits = np.asarray(run(params, x, valid))[0]
    assert logits.shape == ref["L4/lp/logits"].shape
    assert np.abs(logits - ref["L4/lp/logits"]).max() <= 1e-4  # measured 4.1e-5 (fp32)


@pytest.mark.heavy  # CI time; the eval-style LP-Comp tokens are checked through the API in test_videochat_flash
def test_lp_comp_greedy_tokens_match_original(models, ref):
    cfg, params, _ = models
    drops = drops_for_plan(build_plan("xcomp_cosine", 28), cfg, NV)
    x = jnp.asarray(ref["L4/inputs_embeds"])[None]
    valid = jnp.ones(x.shape[:2], bool)
    gen = GenerationConfig(max_new_tokens=8, eos_token_ids=(1019, 1017), pad_token_id=1017)
    toks = generate_from_embeds(params, x, valid, jnp.zeros((1, cfg.vocab_size), bool), jax.random.key(0), cfg=cfg,
                                gen=gen, drops=drops, visual_start=V0, n_visual=NV)[0]
    np.testing.assert_array_equal(np.asarray(toks)[0], ref["L4/lp/greedy_ids"])


def test_truncated_model_keeps_28_layer_schedule(models, ref):
    cfg, params, _ = models
    cfg4 = cfg.replace(num_hidden_layers=4)
    p4 = {**params, "layers": jax.tree.map(lambda a: a[:4], params["layers"])}
    plan = build_plan("xcomp_cosine", 4, schedule_layers=28)
    x = jnp.asarray(ref["L4/inputs_embeds"])[None]
    _, _, _, hiddens = llm.prefill(p4, cfg4, x, jnp.ones(x.shape[:2], bool), drops=drops_for_plan(plan, cfg4, NV),
                                   visual_start=V0, n_visual=NV, return_hidden=True)
    np.testing.assert_array_equal([hh.shape[1] for hh in hiddens], ref["L4trunc4/lp/layer_seq_len"])
