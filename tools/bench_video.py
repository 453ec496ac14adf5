"""Benchmark: seeking frame reader vs sequential decoding on a long synthetic video.

Generates (once, cached in --workdir) a long low-resolution H.264 video, then times reading
the frames `dynamic_fps1` samples at --sample-fps with
  seek        lvjax.video.read_video (demux index + keyframe seeks, decode only near targets)
  sequential  read_video(seek=False): decode every frame up to the last sampled one
  naive       decode every frame and convert each to RGB (the original read_frames_av way,
              without keeping them all in memory)
and prints the times and the ratios against the seeking reader. Frames from the seeking and
the sequential reader are checked to be identical.

  python tools/bench_video.py --minutes 30 --max-frames 1800
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def make_video(path: Path, minutes: float, fps: int, size: int, gop: int) -> Path:
    """H.264 (libx264 ultrafast) video of `minutes` at `fps`, size×size, keyframe every `gop` frames;
    content moves every frame so that P-frames carry real work."""
    import av

    n = int(round(minutes * 60 * fps))
    tmp = path.with_suffix(".part.mp4")
    yy, xx = np.mgrid[0:size, 0:size]
    base = ((xx * 255) // max(size - 1, 1)).astype(np.uint8)
    t0 = time.perf_counter()
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={
            "preset": "ultrafast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        img = np.empty((size, size, 3), np.uint8)
        for i in range(n):
            img[..., 0] = np.roll(base, i % size, axis=1)
            img[..., 1] = np.roll(base.T, (3 * i) % size, axis=0)
            img[..., 2] = (i * 7) % 256
            b = size // 8
            for bit in range(16):  # the frame number as 16 bright/dark blocks
                r, c = divmod(bit, 8)
                img[r * b:(r + 1) * b, c * b:(c + 1) * b] = 235 if (i >> bit) & 1 else 16
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
            if i and i % (fps * 300) == 0:
                print(f"  encoded {i / fps / 60:.0f} of {minutes:g} min", file=sys.stderr, flush=True)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    print(f"generated {path} ({n} frames, {path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return path


def naive_decode(path: Path, indices: np.ndarray, threads) -> np.ndarray:
    """Decode every frame and convert each to RGB; keep the sampled ones."""
    import av

    from lvjax.video.decode import _set_threads

    need = set(indices.tolist())
    keep = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        _set_threads(s, threads)
        for i, f in enumerate(c.decode(s)):
            rgb = f.to_ndarray(format="rgb24")
            if i in need:
                keep[i] = rgb
    return np.stack([keep[i] for i in indices.tolist()])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "lvjax_bench_video"),
                   help="where the generated video is cached (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=30.0, help="video length in minutes (default: %(default)s)")
    p.add_argument("--video-fps", type=int, default=30, help="frame rate of the generated video (default: %(default)s)")
    p.add_argument("--size", type=int, default=64, help="frame width = height in pixels (default: %(default)s)")
    p.add_argument("--gop", type=int, default=250, help="keyframe interval in frames (default: %(default)s, x264's)")
    p.add_argument("--sample-fps", type=float, default=1.0, help="sampled frames per second (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=1800, help="max_num_frames (default: %(default)s = 1 fps × 30 min)")
    p.add_argument("--min-frames", type=int, default=64, help="min_num_frames (default: %(default)s)")
    p.add_argument("--threads", default="1", help="decoder threads: an int or 'auto' (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per method; the median is shown (default: %(default)s)")
    p.add_argument("--skip-naive", action="store_true", help="do not time the naive decode-and-convert-all baseline")
    args = p.parse_args(argv)

    from lvjax.video import probe_video, read_video

    threads = args.threads if args.threads == "auto" else int(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"long_{args.minutes:g}min_{args.video_fps}fps_{args.size}px_gop{args.gop}.mp4"
    if not path.exists():
        make_video(path, args.minutes, args.video_fps, args.size, args.gop)

    t0 = time.perf_counter()
    info = probe_video(path)
    t_demux = time.perf_counter() - t0
    t0 = time.perf_counter()
    quick = probe_video(path, container_index=True)
    t_index = time.perf_counter() - t0
    print(f"video: {info['num_frames']} frames, {info['fps']:g} fps, {info['duration'] / 60:.1f} min, "
          f"{info['width']}x{info['height']}, {info['keyframes']} keyframes; frame table from a demux pass "
          f"{t_demux:.2f} s, from the container index {t_index:.2f} s (used: {quick['index']})")

    opts = dict(fps=args.sample_fps, max_num_frames=args.max_frames, min_num_frames=args.min_frames, threads=threads)

    def timed(fn):
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), out

    t_seek, a = timed(lambda: read_video(path, **opts))
    t_seq, b = timed(lambda: read_video(path, seek=False, **opts))
    assert a.method == "seek" and b.method == "sequential"
    same = np.array_equal(a.frames, b.frames) and np.array_equal(a.indices, b.indices)
    print(f"sampled {len(a)} frames at {args.sample_fps:g} fps (max {args.max_frames}), threads={threads}; "
          f"seek == sequential frames: {same}")
    print(f"  seek        {t_seek:8.2f} s   (includes building the frame table)")
    print(f"  sequential  {t_seq:8.2f} s   ratio {t_seq / t_seek:6.1f}x")
    if not args.skip_naive:
        t_naive, c = timed(lambda: naive_decode(path, a.indices, threads))
        print(f"  naive       {t_naive:8.2f} s   ratio {t_naive / t_seek:6.1f}x   (every frame converted to RGB)")
        same = same and np.array_equal(c, a.frames)
    if not same:
        raise SystemExit("frames differ between readers")


if __name__ == "__main__":
    main()
