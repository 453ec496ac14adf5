"""End-to-end answering time per stage: read/decode, vision, merge, prefill, decode.

A random-weight VideoChat-Flash (lvjax.testing.tiny.build_tiny_videochat_flash into a temp dir,
loaded with lvjax.load) answers a question about a synthetic H.264 video (rendered with
PyAV, as `lvjax demo` does) at each frame count. Per frame count it runs two rounds:

  first   encode_video + question 1 + question 2: every jitted stage compiles here
  warm    the same again (a fresh encode, so question 1 prefills the whole prompt again)

and prints the `answer_encoded` report seconds per stage. Question 2 is a `lvjax chat`-style
follow-up on the same EncodedVideo: with a question-independent plan (none, xcomp_cosine,
uniform, …) the prefilled [system + video] cache is reused and only the question is run, so
its prefill column is the extend-only time (printed as a ratio vs question 1's prefill).
Decoding runs exactly --new-tokens tokens (EOS disabled, greedy).

--preset real uses the VideoChat-Flash-2B shapes (UMT-L 448 px 1024 wide × 23 blocks, Qwen2.5-1.5B
1536 wide × 28 layers, vocab 151936) with random weights built in memory (a 2B fp32 folder is
not written); meant for a GPU. --dry-run builds only the config and the abstract parameter
shapes (jax.eval_shape) and prints the parameter count.

    python tools/bench_answer.py                                    # tiny, 64,256,1024 frames
    python tools/bench_answer.py --frames 64 --compression none
    python tools/bench_answer.py --preset real --frames 64,256,1024 --dtype bfloat16   # GPU
    python tools/bench_answer.py --preset real --dry-run
    python tools/bench_answer.py --frames 1024 --attention dense       # vs --attention blockwise

--attention sets the LLM prefill attention (auto: blockwise XLA above 2048 tokens on CPU,
the kernels on GPU/TPU; dense: the masked S×S path). The last line is the process's peak
RSS (run one process per setting to compare them).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

STAGES = ("read", "vision", "merge", "prefill", "decode")
QUESTION_1 = "What is the main activity shown in the clip?"
QUESTION_2 = "Describe the video in detail."

PRESETS = {
    # lvjax.testing.tiny defaults for the vision side (224 px, width 64, 2 blocks), a small LLM
    "tiny": dict(hidden=64, layers=8, heads=2, kv_heads=1, intermediate=128, vocab=None,
                 vision=dict(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4)),
    # VideoChat-Flash-Qwen2_5-2B_res448: UMT-L (24 layers, select -2 → 23 blocks) + Qwen2.5-1.5B
    "real": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936,
                 vision=dict(image_size=448, patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)),
}


def render_video(path: str, n_frames: int, fps: int, size: int) -> str:
    """H.264 of a square moving across a colour gradient (lvjax.demo.render_video, any length)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(n_frames):
            img = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, (i * 9) % 256)], -1).astype(np.uint8)
            x0 = (i * 3) % (size - 24)
            img[size // 3:size // 3 + 24, x0:x0 + 24] = (255, 255, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _hf_config(p: dict, tok, local_num_frames: int = 4) -> dict:
    from lvjax.testing.tiny import TINY_VISION

    vision = dict(TINY_VISION, **p["vision"])
    return {
        "architectures": ["VideoChatFlashQwenForCausalLM"], "model_type": "videochat_flash_qwen",
        "vocab_size": p["vocab"] or tok.vocab_size, "hidden_size": p["hidden"], "intermediate_size": p["intermediate"],
        "num_hidden_layers": p["layers"], "num_attention_heads": p["heads"], "num_key_value_heads": p["kv_heads"],
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
        "max_position_embeddings": 32768, "tie_word_embeddings": True, "use_sliding_window": False,
        "bos_token_id": tok.endoftext_id, "eos_token_id": tok.im_end_id, "torch_dtype": "float32",
        "mm_vision_tower": "umt-hd-large", "vision_tower_config": vision, "mm_hidden_size": vision["hidden_size"],
        "mm_vision_select_layer": vision["return_idx"], "mm_projector_type": "tome16_mlp_hd64",
        "mm_local_num_frames": local_num_frames, "mm_newline_position": "nothing", "mm_patch_merge_type": "spatial_nopad",
        "mm_llm_compress": False, "llm_compress_type": "attention", "llm_compress_layer_list": [4, 18],
        "llm_image_token_ratio_list": [1.0, 0.75, 0.25],
    }


def build_real(work: str, dtype: str, dry_run: bool):
    """The 2B shapes with random weights, built in memory (tokenizer: the tiny offline one)."""
    import flax.linen as nn
    import jax

    from lvjax.families import family_for
    from lvjax.model import Model
    from lvjax.testing.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer(work)
    config = _hf_config(PRESETS["real"], tok)
    family = family_for(config)
    cfg = family.config_from_hf(config, "preset real")
    shapes = jax.eval_shape(lambda: nn.unbox(family.init(cfg, jax.random.key(0))))
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
    print(f"preset real: {n / 1e9:.3f} B parameters (vision {cfg.vision.hidden_size}×{cfg.vision.num_blocks} blocks at "
          f"{cfg.vision.image_size} px, LLM {cfg.llm.hidden_size}×{cfg.llm.num_hidden_layers}, vocab {cfg.llm.vocab_size})")
    if dry_run:
        return None

    store = jax.numpy.dtype(dtype)  # as lvjax.load: parameters stored in the compute dtype

    @jax.jit
    def init(key):  # random weights (the modules' default initialisers), made on the device
        return jax.tree.map(lambda a: a.astype(store), nn.unbox(family.init(cfg, key)))

    params = init(jax.random.key(0))
    gen = {"eos_token_id": [tok.im_end_id, tok.endoftext_id], "pad_token_id": tok.endoftext_id, "repetition_penalty": 1.1}
    cfg = family.with_dtypes(cfg, dtype, dtype)
    return Model(family, cfg, params, family.generation(gen, cfg), work)


def build_tiny(work: str, dtype: str):
    import lvjax
    from lvjax.testing.tiny import build_tiny_videochat_flash

    p = PRESETS["tiny"]
    folder = build_tiny_videochat_flash(os.path.join(work, "tiny"), hidden=p["hidden"], layers=p["layers"],
                                        heads=p["heads"], kv_heads=p["kv_heads"], intermediate=p["intermediate"],
                                        vision=p["vision"])
    return lvjax.load(str(folder), dtype=dtype)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--frames", default="64,256,1024", help="sampled frame counts (default: %(default)s)")
    ap.add_argument("--video-fps", type=int, default=8, help="frame rate of the synthetic video (default: %(default)s)")
    ap.add_argument("--size", type=int, default=96, help="synthetic video width = height (default: %(default)s)")
    ap.add_argument("--compression", default="xcomp_cosine", help="in-LLM plan (default: %(default)s)")
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens decoded per answer (default: %(default)s)")
    ap.add_argument("--dtype", default="float32", help="compute dtype (default: %(default)s)")
    ap.add_argument("--attention", default="auto", choices=("auto", "dense", "blockwise"),
                    help="LLM prefill attention (default: %(default)s)")
    ap.add_argument("--workdir", help="where the video and model go (default: a temp dir)")
    ap.add_argument("--dry-run", action="store_true", help="--preset real: build config + abstract params only")
    args = ap.parse_args(argv)

    import jax

    from lvjax.families.videochat_flash.answer import plan as compression_plan

    frames = [int(f) for f in args.frames.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="lvjax-bench-answer-") as tmp:
        work = args.workdir or tmp
        os.makedirs(work, exist_ok=True)
        t0 = time.perf_counter()
        model = build_real(work, args.dtype, args.dry_run) if args.preset == "real" else build_tiny(work, args.dtype)
        if model is None:
            return 0
        n_video = max(frames)
        video = render_video(os.path.join(work, f"synthetic_{n_video}.mp4"), n_video, args.video_fps, args.size)
        model.config = model.config.replace(llm=model.config.llm.replace(attention_impl=args.attention))
        cfg = model.config
        print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); preset {args.preset}: vision "
              f"{cfg.vision.image_size} px {cfg.vision.hidden_size}×{cfg.vision.num_blocks} blocks, LLM "
              f"{cfg.llm.hidden_size}×{cfg.llm.num_hidden_layers} ({cfg.llm.num_attention_heads}/{cfg.llm.num_key_value_heads} "
              f"heads), vocab {cfg.llm.vocab_size}, {args.dtype}, attention {args.attention}; compression {args.compression}; video "
              f"{n_video} frames {args.size}px at {args.video_fps} fps; {args.new_tokens} new tokens; setup "
              f"{time.perf_counter() - t0:.1f} s")
        model.generation = model.generation.replace(eos_token_ids=())  # decode exactly --new-tokens
        opts = dict(compression=args.compression, max_new_tokens=args.new_tokens)
        print(f"{'frames':>6} {'round':<6}{'question':<9}" + "".join(f"{s:>9}" for s in STAGES)
              + f"{'total':>9}{'prompt':>8}{'visual@L':>9}{'prefill vs q1':>14}")
        for n in frames:
            for rnd in ("first", "warm"):
                enc = model.encode_video(video, fps=float(args.video_fps), max_frames=n, min_frames=n)
                rows = []
                for q in (QUESTION_1, QUESTION_2):
                    _, rep = model.answer_encoded(enc, q, **opts)
                    rows.append(rep)
                for qi, rep in enumerate(rows):
                    sec = {s: rep.get(f"seconds_{s}", 0.0) for s in STAGES}
                    if qi == 1:  # the encode was paid once, by question 1
                        sec.update(read=0.0, vision=0.0, merge=0.0)
                    ratio = rep["seconds_prefill"] / max(rows[0]["seconds_prefill"], 1e-9)
                    plan = compression_plan(model.config, args.compression)
                    print(f"{rep['frames']:>6} {rnd:<6}{'q' + str(qi + 1) + (' (new)' if qi == 0 else ' (chat)'):<9}"
                          + "".join(f"{sec[s]:>9.3f}" for s in STAGES) + f"{sum(sec.values()):>9.2f}"
                          + f"{rep['prompt_tokens']:>8}{plan.visual_tokens_at(plan.num_layers, rep['visual_tokens']):>9}"
                          + (f"{ratio:>14.3f}" if qi else f"{'':>14}"), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    print(f"peak RSS {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
