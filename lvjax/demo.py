"""`make demo`: the whole inference path on a tiny random-weight model, offline.

Renders a short synthetic video with PyAV, writes a tiny VideoChat-Flash in the original
Hugging Face folder format (real key names, an offline tokenizer), converts it to an lvjax
checkpoint, answers a question with LP-Comp and prints the per-stage report. The weights are
random, so the answer is noise; the point is the pipeline and its timings.

    python -m lvjax.demo [--workdir DIR] [--frames N] [--compression NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def render_video(path: str, seconds: float = 8.0, fps: int = 8, size: int = 96) -> str:
    """An H.264 MP4 of a square moving across a colour gradient (no external assets)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(int(seconds * fps)):
            img = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, (i * 9) % 256)], -1).astype(np.uint8)
            x0 = (i * 3) % (size - 24)
            img[30:54, x0:x0 + 24] = (255, 255, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="where to write the video, model and checkpoint (default: a temp dir)")
    ap.add_argument("--frames", type=int, default=16, help="frames to sample (default 16)")
    ap.add_argument("--compression", default="xcomp_cosine", help="in-LLM compression plan (default xcomp_cosine)")
    args = ap.parse_args(argv)

    import lvjax
    from lvjax.testing.tiny import build_tiny_videochat_flash

    work = args.workdir or tempfile.mkdtemp(prefix="lvjax-demo-")
    os.makedirs(work, exist_ok=True)
    print(f"lvjax demo — working in {work}")
    t0 = time.perf_counter()
    video = render_video(os.path.join(work, "synthetic.mp4"))
    print(f"  rendered a synthetic 8 s video with PyAV: {video}")
    hf_dir = os.path.join(work, "tiny_videochat_flash")
    if not os.path.isdir(hf_dir):
        build_tiny_videochat_flash(hf_dir)
    print(f"  wrote a tiny VideoChat-Flash (RANDOM weights) in the original HF format: {hf_dir}")
    ckpt = os.path.join(work, "tiny_ckpt")
    if not os.path.isdir(ckpt):
        print("  " + lvjax.convert_hf(hf_dir, ckpt, progress=False))
    model = lvjax.load(ckpt)
    encoded = model.encode_video(video, fps=2.0, max_frames=args.frames, min_frames=args.frames)
    for question in ("What moves across the screen?", "What colour is the square?"):
        print(f"  question: {question!r} (compression {args.compression}, {args.frames} frames)")
        answer, report = model.answer_encoded(encoded, question, compression=args.compression, max_new_tokens=16)
        print(f"  answer: {answer!r}")
        print("  report: " + ", ".join(f"{k}={v}" for k, v in report.items()))
    print("  (the weights are random, so the answers are noise — this demo shows the pipeline, not a model;")
    print("   the first question includes compilation, the second reuses the encoded video and its prefilled cache)")
    print(f"  total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
