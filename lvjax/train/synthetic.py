"""Generated training data for tests, the tiny configs and benchmarks (no network).

`make_video_qa(out_dir, n)` writes `n` short PyAV-encoded videos (a coloured square moving on
a coloured background) and `train.jsonl` with one colour question per video;
`make_tokenizer(out_dir)` writes a small byte-level BPE tokenizer with the Qwen2 chat
special tokens (loadable with `transformers.AutoTokenizer`).
"""

from __future__ import annotations

import argparse
import json
import os

import av
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tokenizer(out_dir: str, vocab_size: int = 384) -> str:
    """Byte-level BPE (≤ vocab_size ids, specials first: endoftext=0, im_start=1, im_end=2)."""
    from transformers import (
        PreTrainedTokenizerFast,  # heavy: only when a tokenizer is written
    )

    os.makedirs(out_dir, exist_ok=True)
    corpus = [
        "You are a helpful assistant.", "The video lasts for 2.00 seconds, and 16 frames are uniformly sampled from it.",
        "What color is the background of the video?", "What color is the moving square?",
        *[f"The background is {c}. The square is {c}." for c in COLORS], "system user assistant 0123456789 .,?",
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out_dir)
    return out_dir


def write_video(path: str, frames: np.ndarray, fps: int = 8, codec: str = "mpeg4") -> None:
    """Encode (T, H, W, 3) uint8 frames with PyAV."""
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_video_qa(out_dir: str, n: int = 16, *, size: int = 32, seconds: tuple[int, int] = (2, 4), fps: int = 8,
                  seed: int = 0, corrupt: int = 0, missing: int = 0) -> str:
    """Write `n` videos + train.jsonl (plus `corrupt` unreadable and `missing` absent videos). Returns the JSONL path."""
    rng = np.random.RandomState(seed)
    os.makedirs(out_dir, exist_ok=True)
    names = list(COLORS)
    records = []
    for i in range(n):
        bg, fg = names[rng.randint(4)], names[rng.randint(4)]
        t = fps * rng.randint(seconds[0], seconds[1] + 1)
        frames = np.empty((t, size, size, 3), np.uint8)
        frames[:] = COLORS[bg]
        s = size // 4
        for k in range(t):
            x = (k * 2) % (size - s)
            frames[k, s:2 * s, x:x + s] = COLORS[fg]
        name = f"v{i:03d}.mp4"
        write_video(os.path.join(out_dir, name), frames, fps)
        if rng.rand() < 0.5:
            q, a = "What color is the background of the video?", f"The background is {bg}."
        else:
            q, a = "What color is the moving square?", f"The square is {fg}."
        records.append({"id": i, "video": name, "conversations": [
            {"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]})
    for j in range(corrupt):
        name = f"corrupt{j}.mp4"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
        records.insert(min(len(records), 2 + 3 * j), {"id": f"c{j}", "video": name, "conversations": [
            {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]})
    for j in range(missing):
        records.insert(min(len(records), 4 + 3 * j), {"id": f"m{j}", "video": f"missing{j}.mp4", "conversations": [
            {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]})
    path = os.path.join(out_dir, "train.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lvjax.train.synthetic",
                                description="Write a tiny tokenizer and a generated video QA set (train.jsonl + videos).")
    p.add_argument("out", help="output folder (gets tokenizer/ and data/)")
    p.add_argument("--n", type=int, default=32, help="number of videos")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels")
    p.add_argument("--corrupt", type=int, default=0, help="extra unreadable videos listed in the JSONL")
    a = p.parse_args(argv)
    tok = make_tokenizer(os.path.join(a.out, "tokenizer"))
    jsonl = make_video_qa(os.path.join(a.out, "data"), a.n, size=a.size, corrupt=a.corrupt)
    print(f"data.train_jsonl={jsonl} data.media_root={os.path.dirname(jsonl)} data.tokenizer={tok}")


if __name__ == "__main__":
    main()
