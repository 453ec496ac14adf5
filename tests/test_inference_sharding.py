"""`lvjax.load(path, mesh=...)` on 8 simulated CPU devices answers like one device.

Meshes (8 data), (2 data, 4 tensor) and (2 tensor, 4 sequence): the same answer tokens (also with
LP-Comp drops, `xcomp_cosine`, on the sequence mesh), visual features and text logits within 1e-5
(fp32) of the unsharded model; parameters carry the shardings the rules give (checked on the
arrays' shards); the loader held one parameter at a time on the host. On the sequence mesh a
prefill with drops keeps every layer's hidden states split on `sequence`, also at lengths the axis
does not divide (as XLA placed them: `jax.debug.inspect_array_sharding`), and gathers K/V. The ViT
runs data-parallel over clips on every axis, its weights whole over tensor / sequence. An lvjax
checkpoint restores into the shardings the HF-folder load gives. The work runs in subprocesses
(XLA_FLAGS must be set before jax initialises).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

SEQUENCE_MESH = "tensor=2,sequence=4"
MESHES = ("data=8", "data=2,tensor=4", SEQUENCE_MESH)
CHECKPOINT_MESH = "tensor=2,data=4"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's lvjax, not an installed one


def _worker() -> None:
    import jax
    import numpy as np

    import lvjax
    from lvjax.families.videochat_flash import answer
    from lvjax.models import llm
    from lvjax.testing.tiny import build_tiny_videochat_flash

    assert jax.device_count() == 8, jax.devices()
    folder = build_tiny_videochat_flash(tempfile.mkdtemp(), hidden=64, layers=4, heads=4, kv_heads=2,
                                        intermediate=128)
    video = np.random.RandomState(0).randint(0, 255, (16, 64, 64, 3)).astype(np.uint8)
    ids = np.random.RandomState(1).randint(0, 200, (2, 24))

    def run(mesh):
        model = lvjax.load(str(folder), mesh=mesh)
        encoded = model.encode_video(video, fps=1.0)
        _, report = model.answer_encoded(encoded, "What happens?", max_new_tokens=8)
        compressed = None
        if mesh in (None, SEQUENCE_MESH):
            compressed = model.answer_encoded(encoded, "What happens?", max_new_tokens=8,
                                              compression="xcomp_cosine")[1]["token_ids"]
        layer = model.params["llm"]["layers"][0]
        arrays = {"gate": layer["mlp"]["gate_proj"]["kernel"], "o": layer["self_attn"]["o_proj"]["kernel"],
                  "k": layer["self_attn"]["k_proj"]["kernel"], "embed": model.params["llm"]["embed_tokens"]["embedding"],
                  "vit": jax.tree.leaves(model.params["vision"])[0]}
        shards = {n: [list(a.shape), list(a.addressable_shards[0].data.shape),
                      [list(e) if isinstance(e, tuple) else e for e in a.sharding.spec] if mesh else None]
                  for n, a in arrays.items()}
        return {"tokens": report["token_ids"], "compressed_tokens": compressed,
                "visual": np.asarray(encoded.visual).tolist(), "logits": model.logits(ids).tolist(),
                "shards": shards, "load": model.load_report}

    def sequence_prefill():
        """A 302-token prefill with the xcomp_cosine drops on SEQUENCE_MESH: per layer input its length
        and the sharding XLA gave it, whether the HLO all-gathers, the max |Δ| to one device."""
        model = lvjax.load(str(folder), mesh=SEQUENCE_MESH)
        cfg, params = model._llm_cfg, model._llm_params
        drops = answer.drops(model.config, "xcomp_cosine", 256)
        x = np.random.RandomState(2).randn(1, 302, cfg.hidden_size).astype(np.float32)
        valid = np.ones((1, 302), bool)
        layers = []

        def hidden(p, x, valid, inspect):
            h, _, _, inputs = llm.prefill(p, cfg, x, valid, drops=drops, visual_start=30, n_visual=256,
                                          return_hidden=True)
            for a in inputs if inspect else ():
                jax.debug.inspect_array_sharding(a, callback=lambda s, n=a.shape[1]: layers.append(
                    [n, [list(e) if isinstance(e, tuple) else e for e in s.spec]]))
            return h

        with model._sharded():
            compiled = jax.jit(hidden, static_argnums=3).lower(params, x, valid, True).compile()
            got = compiled(params, x, valid)
        want = jax.jit(hidden, static_argnums=3)(jax.device_get(params), x, valid, False)
        return {"layers": layers, "all_gather": "all-gather" in compiled.as_text(),
                "max_diff": float(np.abs(np.asarray(got) - np.asarray(want)).max())}

    out = {"single": run(None)}
    for mesh in MESHES:
        out[mesh] = run(mesh)
    out["sequence_prefill"] = sequence_prefill()
    print("RESULT" + json.dumps(out))


def _spec(s) -> list:
    return [list(e) if isinstance(e, tuple) else e for e in s.spec]


def _vision_worker(mesh: str) -> None:
    """The ViT on `mesh` vs one device: the specs of the compiled ViT's vision parameters and of
    its features (as XLA placed them), the visual tokens, and the features of 5 clips (uneven), also
    2 clips at a time (`chunked_map`: two chunks and a remainder)."""
    import jax
    import numpy as np

    import lvjax
    from lvjax.families.videochat_flash import model as vcf
    from lvjax.testing.tiny import build_tiny_videochat_flash

    folder = build_tiny_videochat_flash(tempfile.mkdtemp(), hidden=64, layers=2, heads=4, kv_heads=2,
                                        intermediate=128)
    video = np.random.RandomState(0).randint(0, 255, (16, 64, 64, 3)).astype(np.uint8)
    out = {}

    def inspected(cfg, feats):
        """vision_features that appends its output's sharding, as XLA placed it, to `feats`."""
        def vision(params, clips):
            f = vcf.vision_features(params, cfg, clips)
            jax.debug.inspect_array_sharding(f, callback=feats.append)
            return f
        return vision

    for mesh in (None, mesh):
        model = lvjax.load(str(folder), mesh=mesh)
        encoded = model.encode_video(video, fps=1.0)
        size = model.config.vision.image_size
        clips = np.random.RandomState(1).randn(5, 4, size, size, 3).astype(np.float32)  # 5 clips: no axis divides
        feats = []
        with model._sharded():
            compiled = jax.jit(inspected(model.config, feats)).lower(model.params, clips).compile()
            five = compiled(model.params, clips)
            chunked = jax.jit(vcf.vision_features, static_argnums=(1, 3))(model.params, model.config, clips, 2)
        out[str(mesh)] = {
            "visual": np.asarray(encoded.visual).tolist(),
            "five": np.asarray(five).tolist(), "chunked": np.asarray(chunked).tolist(),
            "vision_param_specs": sorted({str(_spec(s)) for s in jax.tree.leaves(compiled.input_shardings[0][0]["vision"])})
            if mesh else None,
            "llm_gate_spec": _spec(model.params["llm"]["layers"][0]["mlp"]["gate_proj"]["kernel"].sharding) if mesh else None,
            "feature_specs": [_spec(s) for s in feats] if mesh else None}
    print("RESULT" + json.dumps(out))


def _families_worker() -> None:
    """Video-XL (windows over a growing memory) and Video-XL-2 (chunk-sparse prefill on the split
    blockwise path, bi-level decoding) loaded on SEQUENCE_MESH from the recorded tiny originals:
    Video-XL's text logits and eval-style / greedy ids, Video-XL-2's suffix and step logits and
    greedy ids per mode, and whether its prefill ran under shard_map."""
    import types

    import jax
    import numpy as np

    import lvjax
    from lvjax.families.base import Encoded
    from lvjax.families.video_xl import FAMILY as VIDEO_XL
    from lvjax.families.video_xl import window_plan
    from lvjax.families.video_xl.convert import set_resize_rows
    from lvjax.families.video_xl.prompt import prompt_ids
    from lvjax.families.video_xl.vision import clip_preprocess, encode_pixels
    from lvjax.families.video_xl2 import answer_from_embeds, modes, runner
    from lvjax.generate import GenerationConfig
    from lvjax.models import llm
    from tests.conftest import Recorded
    from tests.test_video_xl import QUESTION, run
    from tests.test_video_xl2_llm import MODES, recorded_spans_and_options

    out = {}
    ref = Recorded("videoxl")
    model = lvjax.load(str(ref.model_dir), mesh=SEQUENCE_MESH)
    # the original loader's random new vocabulary row, as recorded (lvjax's default is zeros), placed as before
    resized = set_resize_rows(model.params, ref["loader/embed_tokens_new_row"], ref["loader/lm_head_new_row"])
    model.params = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), resized, model.params)
    with model._sharded():
        pixels = clip_preprocess(ref["video/frames_uint8"], model.config.preprocess)
        visual, _ = encode_pixels(model.params, jax.numpy.asarray(pixels), cfg=model.config)
        ids = prompt_ids(model.tokenizer, QUESTION)
        res = run(model, ids, visual, window_plan(model.config, 160, 4))
        logits = jax.jit(llm.head, static_argnums=1)(model.params["llm"], model.config.llm, res.hidden[None])[0]
        enc = Encoded(visual, types.SimpleNamespace(frames=ref["video/frames_uint8"]), {})
        gen = GenerationConfig(max_new_tokens=10, repetition_penalty=1.05, eos_token_ids=(522, 520), pad_token_id=520)
        evalstyle, _ = VIDEO_XL.answer_encoded(model, enc, QUESTION, gen=gen, seed=0, compression_ratio=4)
    tokens, count = res.decoded[:2]
    out["videoxl"] = {"logits_text": np.asarray(logits).tolist(), "greedy_ids": np.asarray(tokens)[: int(count)].tolist(),
                      "evalstyle_ids": [int(t) for t in evalstyle],
                      "gate_spec": _spec(model.params["llm"]["layers"]["mlp"]["gate_proj"]["kernel"].sharding)}

    ref = Recorded("videoxl2")
    model = lvjax.load(str(ref.model_dir), mesh=SEQUENCE_MESH)
    cfg = model.config.llm.replace(attention_impl="blockwise")
    spans, options = recorded_spans_and_options(ref)
    gen = model.generation.replace(do_sample=False, max_new_tokens=10)  # the eval: greedy, the folder's penalty
    for name, opts in MODES.items():
        mode = modes.resolve(**{**options, **opts})
        with model._sharded():
            tokens, n, logits = answer_from_embeds(model.params["llm"], cfg, ref["common/inputs_embeds"], spans, mode,
                                                   gen, return_logits=True)
            layout, plan = modes.layout_and_plan(spans, mode)
            jaxpr = jax.make_jaxpr(lambda p, x, layout=layout, plan=plan: runner.generate(
                p, x, jax.numpy.zeros((1, cfg.vocab_size), bool), jax.random.key(0), cfg=cfg, gen=gen, layout=layout,
                plan=plan, suffix_start=spans.visual_end))(model.params["llm"], ref["common/inputs_embeds"][None])
        out[f"videoxl2/{name}"] = {"suffix": logits["suffix"].tolist(), "steps": logits["steps"].tolist(),
                                   "greedy_ids": tokens[:n].tolist(), "shard_map": "shard_map" in str(jaxpr)}
    print("RESULT" + json.dumps(out))


def _checkpoint_worker() -> None:
    """The tiny model converted to an lvjax checkpoint and loaded on CHECKPOINT_MESH vs its HF folder on the
    same mesh: per parameter whether sharding and values are equal, the answers, the host copies of the
    checksum pass; then the error of a checksum changed in lvjax.json."""
    import jax
    import numpy as np

    import lvjax
    from lvjax import checkpoint, sharding
    from lvjax.convert.table import flatten_paths
    from lvjax.errors import CheckpointError
    from lvjax.testing.tiny import build_tiny_videochat_flash

    root = tempfile.mkdtemp()
    folder = build_tiny_videochat_flash(os.path.join(root, "hf"), hidden=64, layers=2, heads=4, kv_heads=2,
                                        intermediate=128)
    ckpt = os.path.join(root, "ckpt")
    lvjax.convert_hf(str(folder), ckpt, progress=False)
    restored = flatten_paths(checkpoint.load_checkpoint(ckpt)[2])  # on the host, as without a mesh
    fetched, host_copy = [], checkpoint.host_copy

    def record(a):
        h = host_copy(a)
        fetched.append(h.nbytes)
        return h

    checkpoint.host_copy = record  # the checksum pass's host copies
    video = np.random.RandomState(0).randint(0, 255, (8, 64, 64, 3)).astype(np.uint8)
    out, leaves = {}, {}
    for name, path in (("hf", str(folder)), ("ckpt", ckpt)):
        model = lvjax.load(path, mesh=CHECKPOINT_MESH)
        leaves[name] = {jax.tree_util.keystr(k): a for k, a in jax.tree_util.tree_leaves_with_path(model.params)}
        out[name] = model.answer(video, "What happens?", fps=1.0, max_new_tokens=4)[1]["token_ids"]
    want, got = leaves["hf"], leaves["ckpt"]
    out["same_keys"] = sorted(want) == sorted(got)
    out["sharding_differs"] = [k for k in want if not got[k].sharding.is_equivalent_to(want[k].sharding, want[k].ndim)
                               or got[k].sharding.spec != want[k].sharding.spec]
    out["value_differs"] = [k for k in want if not np.array_equal(np.asarray(got[k]), np.asarray(want[k]))]
    out["tensor_split"] = sum("tensor" in str(a.sharding.spec) for a in got.values())
    out["fetched"] = {"count": len(fetched), "max": max(fetched), "leaves": len(restored),
                      "total": sum(a.nbytes for a in restored.values())}
    mesh = sharding.as_mesh(CHECKPOINT_MESH)
    family, cfg, direct, _ = checkpoint.load_checkpoint(ckpt, mesh)
    target = flatten_paths(sharding.param_shardings(family, cfg, mesh, sharding.DEFAULT_RULES))
    out["restored_off_target"] = [k for k, a in flatten_paths(direct).items()
                                  if not isinstance(a, jax.Array) or a.sharding != target[k]]
    meta_path = os.path.join(ckpt, checkpoint.META)
    with open(meta_path) as f:
        meta = json.load(f)
    meta["sha256"]["llm/norm/scale"] = "0" * 64
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    try:
        lvjax.load(ckpt, mesh=CHECKPOINT_MESH)
        out["corrupt"] = None
    except CheckpointError as e:
        out["corrupt"] = str(e)
    print("RESULT" + json.dumps(out))


def _run_worker(timeout: int, worker: str = "1") -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               LVJAX_INFERENCE_SHARDING_WORKER=worker,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[0][len("RESULT"):])


@pytest.fixture(scope="module")
def worker_out() -> dict:
    return _run_worker(timeout=1200)


@pytest.mark.heavy
def test_answer_on_8_device_meshes_matches_one_device(worker_out):
    import numpy as np

    out = worker_out
    one = out["single"]
    for mesh in MESHES:
        got = out[mesh]
        np.testing.assert_allclose(got["visual"], one["visual"], atol=1e-5, err_msg=mesh)
        # fp32 logits reach |12|: the 1e-5 bound is relative there (measured 1.3e-5 abs, 7e-6 rel at data=8)
        np.testing.assert_allclose(got["logits"], one["logits"], rtol=1e-5, atol=1e-5, err_msg=mesh)
    # One parameter (stacked over layers at most) on the host at a time, never the whole tree.
    load = one["load"]
    assert load["host_peak_bytes"] < load["parameter_bytes"] / 4, load
    # The rules: mlp / heads / kv_heads / vocab → tensor, embed → fsdp (the ViT's: fsdp only, see below).
    tp = out["data=2,tensor=4"]["shards"]
    assert tp["gate"] == [[64, 128], [64, 32], ["fsdp", "tensor"]]
    assert tp["o"] == [[64, 64], [16, 64], ["tensor", "fsdp"]]
    assert tp["k"] == [[64, 32], [64, 8], ["fsdp", "tensor"]]
    assert tp["embed"][2] == ["tensor", "fsdp"] and tp["embed"][1][0] < tp["embed"][0][0]
    dp = out["data=8"]["shards"]
    assert all(full == local for full, local, _ in dp.values()), dp  # data parallel: weights replicated


@pytest.mark.heavy
def test_sequence_parallel_prefill_is_split_and_exact(worker_out):
    out = worker_out
    # LP-Comp drops under the sequence split: the same tokens as one device.
    assert out[SEQUENCE_MESH]["compressed_tokens"] == out["single"]["compressed_tokens"]
    prefill = out["sequence_prefill"]
    lengths = [n for n, _ in prefill["layers"]]
    assert len(lengths) == 4 and lengths[0] > lengths[-1], prefill  # the drops shortened the sequence
    assert any(n % 4 for n in lengths), lengths  # uneven shards are exercised
    assert all(spec[:2] == [None, "sequence"] for _, spec in prefill["layers"]), prefill
    assert prefill["all_gather"]  # K/V gathered over `sequence` for attention
    assert prefill["max_diff"] < 1e-5, prefill


def test_sequence_axis_splits_the_llm_tokens_only():
    """The rules (no devices needed): `--mesh tensor=2,sequence=4` parses; the LLM's hidden states and
    queries go on `sequence`, its keys / values and every vision-side token axis never do; vision clips
    go on every axis."""
    import flax.linen as nn

    from lvjax import sharding
    from lvjax.models import projector, qwen2, umt, vit_layer

    assert sharding.parse_mesh(SEQUENCE_MESH) == (1, 1, 2, 4)
    rules = sharding.DEFAULT_RULES
    assert nn.logical_to_mesh_axes(qwen2.ACT, rules)[1] == "sequence"
    assert nn.logical_to_mesh_axes(qwen2.Q_AXES, rules)[1] == "sequence"
    assert nn.logical_to_mesh_axes(qwen2.KV_AXES, rules)[1] is None
    for axes in (umt.ACT, vit_layer.ACT, projector.ACT):
        assert tuple(nn.logical_to_mesh_axes(axes, rules)) == (sharding.AXES, None, None), axes


@pytest.mark.heavy  # CI time (~75 s); the vision rules are checked in CI by test_sequence_axis_splits_the_llm_tokens_only
@pytest.mark.parametrize("mesh", [SEQUENCE_MESH, "tensor=4,data=2"])
def test_vit_runs_data_parallel_over_clips_on_every_axis(mesh):
    """On (tensor=2, sequence=4) and (tensor=4, data=2) the compiled ViT's weights are whole over tensor /
    sequence, its clips split over all axes (also 5 clips, which no axis divides: GSPMD pads), and the
    visual tokens equal one device's; the LLM stays tensor-parallel. (The answers on these meshes:
    `test_answer_on_8_device_meshes_matches_one_device`, heavy.)"""
    import numpy as np

    out = _run_worker(timeout=900, worker=f"vision:{mesh}")
    one, got = out["None"], out[mesh]
    np.testing.assert_allclose(one["chunked"], one["five"], atol=1e-5)
    np.testing.assert_allclose(got["visual"], one["visual"], atol=1e-5)
    np.testing.assert_allclose(got["five"], one["five"], atol=1e-5)
    np.testing.assert_allclose(got["chunked"], one["five"], atol=1e-5)
    assert not any("tensor" in s or "sequence" in s for s in got["vision_param_specs"]), got
    assert any("fsdp" in s for s in got["vision_param_specs"]), got  # vision_embed → fsdp
    assert got["llm_gate_spec"] == ["fsdp", "tensor"], got
    split = [a for a in ("data", "tensor", "sequence") if a in mesh]  # XLA names the axes of size > 1
    assert got["feature_specs"] == [[split]], got  # (clips, tokens, C): clips split, the rest whole


@pytest.mark.heavy  # CI time (~65 s); CI keeps the mesh placement of training (test_train_sharding) and fit_spec
def test_checkpoint_restores_into_the_mesh_shardings():
    """An lvjax checkpoint loaded on a mesh: every parameter restored straight into the sharding (and
    the values) the HF-folder load gives, the same answer, checksums verified one parameter on the host
    at a time, and a wrong checksum still a CheckpointError naming the parameter."""
    out = _run_worker(timeout=900, worker="checkpoint")
    assert out["restored_off_target"] == [], out  # orbax restored each parameter into its target sharding
    assert out["same_keys"] and out["sharding_differs"] == [] and out["value_differs"] == [], out
    assert out["tensor_split"] > 0, out  # the LLM's weights are split
    assert out["ckpt"] == out["hf"], out
    fetched = out["fetched"]  # each parameter fetched once, never the tree
    assert fetched["count"] == fetched["leaves"] and fetched["max"] < fetched["total"] / 4, fetched
    assert out["corrupt"] and "'llm/norm/scale'" in out["corrupt"] and "sha256" in out["corrupt"], out


@pytest.mark.heavy  # CI time: the split kernels on Video-XL-2's layout are in test_seqpar_attention
def test_video_xl_families_on_a_sequence_mesh_match_the_recorded_originals(recorded):
    """Video-XL's windows and Video-XL-2's chunk-sparse prefill (blockwise, split per device under
    shard_map) and bi-level decoding, on tensor=2 × sequence=4: the original's logits (≤ 1e-4) and ids."""
    import numpy as np

    out = _run_worker(timeout=1200, worker="families")
    xl = recorded("videoxl")
    got = out["videoxl"]
    np.testing.assert_allclose(got["logits_text"], xl["main/logits_text"], atol=1e-4, rtol=0)
    assert got["greedy_ids"] == xl["main/greedy_ids"].tolist()
    assert got["evalstyle_ids"] == xl["main/evalstyle_ids"].tolist()
    assert "tensor" in str(got["gate_spec"]), got["gate_spec"]  # the LLM is tensor-parallel
    xl2 = recorded("videoxl2")
    for mode in ("pure", "w_chunk", "bilevel"):
        got = out[f"videoxl2/{mode}"]
        np.testing.assert_allclose(got["suffix"], xl2[f"{mode}/logits_suffix"], atol=1e-4, rtol=0, err_msg=mode)
        np.testing.assert_allclose(got["steps"], xl2[f"{mode}/greedy_step_logits"], atol=1e-4, rtol=0, err_msg=mode)
        assert got["greedy_ids"] == xl2[f"{mode}/greedy_ids"].tolist(), mode
        assert got["shard_map"], mode  # the blockwise attention ran split over `sequence`


def test_dims_the_mesh_does_not_divide_are_replicated():
    """Video-XL's 577-row vocabulary on tensor=2: that dim is replicated, the others keep their axes."""
    from jax.sharding import AbstractMesh
    from jax.sharding import PartitionSpec as P

    from lvjax.sharding import AXES, fit_spec

    mesh = AbstractMesh((2, 1, 2, 4), AXES)
    assert fit_spec(P("tensor", "fsdp"), (577, 64), mesh) == P(None, "fsdp")
    assert fit_spec(P("tensor", "fsdp"), (576, 64), mesh) == P("tensor", "fsdp")
    assert fit_spec(P(("data", "tensor"), None), (6, 3), mesh) == P(None, None)  # 6 rows, 4 devices
    assert fit_spec(P(("data", "tensor")), (8, 3), mesh) == P(("data", "tensor"), None)


if __name__ == "__main__" and os.environ.get("LVJAX_INFERENCE_SHARDING_WORKER") == "checkpoint":
    _checkpoint_worker()
elif __name__ == "__main__" and os.environ.get("LVJAX_INFERENCE_SHARDING_WORKER") == "families":
    _families_worker()
elif __name__ == "__main__" and os.environ.get("LVJAX_INFERENCE_SHARDING_WORKER", "").startswith("vision:"):
    _vision_worker(os.environ["LVJAX_INFERENCE_SHARDING_WORKER"].split(":", 1)[1])
elif __name__ == "__main__" and os.environ.get("LVJAX_INFERENCE_SHARDING_WORKER"):
    _worker()
