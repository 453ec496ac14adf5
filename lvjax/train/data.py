"""Training data with grain: LLaVA-style JSONL → decoded, tokenised, padded, batched examples.

One JSONL line:
    {"video": "clip.mp4", "conversations": [{"from": "human", "value": "<image>\\nQ"},
                                            {"from": "gpt", "value": "A"}, ...]}
(or "image": "pic.jpg", repeated to one clip of local_num_frames frames — inference uses a one-frame
clip instead; or neither, for the text objective). Media paths are relative to `media_root`.

Pipeline (`make_iterator`):
    MapDataset.source(records) → shuffle(seed) (reshuffled every epoch) → repeat(num_epochs)
    → slice [process_index::process_count] (each host reads only its part of the index space)
    → to_iter_dataset → map(ExampleBuilder) in `worker_count` grain processes (mp_prefetch;
      PyAV decoding happens there) → skip failed examples (warning + counter) → batch + pad.
`TrainIterator.get_state()/set_state()` save and restore the exact position (grain state
plus counters, JSON-serialisable).

Each example (numpy):
    input_ids (S,) int32  chat prompt + answers, `IMAGE_TOKEN_INDEX` (-200) where the video goes
    labels    (S,) int32  ids on answer tokens (and their closing <|im_end|>), -100 elsewhere
    valid     (S,) bool   False on padding (S = data.max_seq_len)
    frames    (Tb, H, W, 3) uint8 resized to image_size (bicubic); Tb = the frame bucket
    frame_valid (Tb,) bool; n_frames () int32
The prompt is the inference prompt (qwen_2 template; first human turn "<image>\\n{time_msg} {question}").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from absl import flags
from PIL import Image

from lvjax.config import ConfigError
from lvjax.families import family_by_name
from lvjax.families.base import IMAGE_TOKEN_INDEX, TrainingMedia  # noqa: E402  (re-exported)
from lvjax.prompt import render_chatml, video_user_turn
from lvjax.train.config import DataSection
from lvjax.video import read_video as lv_read_video
from lvjax.video import resize_frames as square_resize
from lvjax.video.preprocess import resize_crop

IGNORE_INDEX = -100
IMAGE = "<image>"
log = logging.getLogger("lvjax.train.data")


# ----------------------------------------------------------------------------- records


ROLES = ("human", "user", "gpt", "assistant")


def read_jsonl(path: str) -> list[dict]:
    """All records of a JSONL file (a `json` list file is accepted too).

    ConfigError naming the file and the line (JSONL) or record (list) for text that is not UTF-8
    or not JSON, a record without a `conversations` list of ≥ 2 {from, value} turns with string
    values and known roles, or a `video`/`image` that is not a string.
    """
    if not path or not os.path.isfile(path):
        raise ConfigError(f"{path}: training data file not found (data.train_jsonl)")
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    located: list[tuple[str, Any]] = []  # (where, record)
    for n, raw in enumerate(lines, 1):
        try:
            lines[n - 1] = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}:{n}: not UTF-8 text (byte {e.start} of the line)") from None
    text = "\n".join(lines)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConfigError(f"{path}: not a valid JSON list ({e})") from None
        if not isinstance(records, list):
            raise ConfigError(f"{path}: expected a JSON list of records")
        located = [(f"{path}: record {i}", r) for i, r in enumerate(records)]
    else:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                located.append((f"{path}:{n}", json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as e:
                raise ConfigError(f"{path}:{n}: not valid JSON ({e})") from None
    for where, r in located:
        _check_record(r, where)
    if not located:
        raise ConfigError(f"{path}: no records")
    return [r for _, r in located]


def _check_record(r: Any, where: str) -> None:
    if not isinstance(r, dict) or not isinstance(r.get("conversations"), list) or len(r["conversations"]) < 2:
        raise ConfigError(f"{where}: no 'conversations' list of ≥ 2 turns")
    for i, turn in enumerate(r["conversations"]):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES:
            raise ConfigError(f"{where}: conversations[{i}] needs 'from' in {ROLES}, got {turn!r:.80}")
        if not isinstance(turn.get("value"), str):
            raise ConfigError(f"{where}: conversations[{i}].value={turn.get('value')!r:.80} must be a string")
    for key in ("video", "image"):
        if key in r and not (isinstance(r[key], str) and r[key]):
            raise ConfigError(f"{where}: {key}={r[key]!r:.80} must be a file name")


# ----------------------------------------------------------------------------- frames


def read_video(path: str, d: DataSection, media: TrainingMedia = TrainingMedia()) -> tuple[np.ndarray, str, np.ndarray]:
    """Frames (T, H, W, 3) uint8 sampled as at inference (`lvjax.video.read_video` with the family's
    rule), the time message and the frames' seconds (T,)."""
    v = lv_read_video(path, fps=d.fps, local_num_frames=d.local_num_frames, max_num_frames=d.max_frames,
                      min_num_frames=d.min_frames, threads=d.decode_threads, rule=media.rule, max_fps=media.max_fps)
    return np.asarray(v.frames, np.uint8), str(v.time_msg), np.asarray(v.timestamps, np.float64)


def resize_frames(frames: np.ndarray, size: int, how: str = "square") -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, size, size, 3) uint8: PIL bicubic (as UMTImageProcessor), or with
    how='shortest_edge_crop' shortest edge → size then the centre crop (as CLIPImageProcessor)."""
    if how == "shortest_edge_crop":
        return resize_crop(frames, size, (size, size))
    return square_resize(frames, size)


def frame_bucket(n: int, buckets) -> int:
    for b in sorted(buckets):
        if n <= b:
            return b
    return max(buckets)


# ----------------------------------------------------------------------------- text


def chat_segments(conversations: list[dict], time_msg: str | None, system: str) -> list[tuple[str, bool]]:
    """qwen_2 (ChatML) text pieces with a flag 'is a label', rendered with lvjax.prompt (the
    inference prompt): the first human turn becomes "<image>\\n{time_msg.strip()} {question}"
    when there is a video. Answers are labelled together with their closing <|im_end|>."""
    segs = [(render_chatml([], system), False)]
    for i, turn in enumerate(conversations):
        value = str(turn.get("value", ""))
        role = turn.get("from")
        if role in ("human", "user"):
            if i == 0 and time_msg is not None:
                value = video_user_turn(value.replace(IMAGE, "").strip(), time_msg)
            segs.append((render_chatml([("user", value), ("assistant", None)], ""), False))
        elif role in ("gpt", "assistant"):
            segs.append((value + "<|im_end|>", True))
            segs.append(("\n", False))
        else:
            raise ValueError(f"unknown conversation role {role!r}")
    return segs


def tokenize_segments(segs, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids and labels; "<image>" → IMAGE_TOKEN_INDEX; labels only on label segments."""
    ids, labels = [], []
    for text, is_label in segs:
        parts = text.split(IMAGE)
        for j, part in enumerate(parts):
            if j:
                ids.append(IMAGE_TOKEN_INDEX)
                labels.append(IGNORE_INDEX)
            if part:
                toks = tokenizer(part, add_special_tokens=False)["input_ids"]
                ids.extend(toks)
                labels.extend(toks if is_label else [IGNORE_INDEX] * len(toks))
    return ids, labels


def load_tokenizer(path: str):
    from transformers import AutoTokenizer  # heavy: only when a dataset is tokenised

    if not path or not os.path.isdir(path):
        raise ConfigError(f"{path}: tokenizer folder not found (data.tokenizer)")
    return AutoTokenizer.from_pretrained(path)


# ----------------------------------------------------------------------------- examples


@dataclasses.dataclass
class ExampleBuilder:
    """Record → padded numpy example, or {'error': message} (runs in grain worker processes)."""

    data: DataSection
    tokenizer_path: str
    pad_id: int = 0
    decode_media: bool = True
    require_media: bool = False
    media: TrainingMedia = TrainingMedia()
    family: str | None = None  # with model_cfg: the family whose `training_extras` add arrays
    model_cfg: Any = None

    def __post_init__(self):
        self._tok = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_tok"} | {"_tok": None}

    @property
    def tokenizer(self):
        if self._tok is None:
            self._tok = load_tokenizer(self.tokenizer_path)
        return self._tok

    def __call__(self, record: dict) -> dict:
        try:
            return self._build(record)
        except Exception as e:  # noqa: BLE001 - one bad sample must never kill the job
            name = record.get("video") or record.get("image") or "<text>"
            # ConfigError: a reason in the config (e.g. data.max_seq_len), fatal when the first example shows it
            return {"error": f"{name}: {type(e).__name__}: {e}", "config_reason": isinstance(e, ConfigError)}

    def _build(self, record: dict) -> dict:
        d = self.data
        size, lnf = d.image_size, d.local_num_frames
        bucket0 = frame_bucket(d.min_frames, d.frame_buckets)
        time_msg, seconds = None, np.zeros(0)
        if "video" in record or "image" in record:
            media = os.path.join(d.media_root, record.get("video") or record.get("image"))
            if not os.path.isfile(media):
                raise FileNotFoundError(f"{media}: no such file")
            if "video" in record:
                frames, time_msg, seconds = read_video(media, d, self.media)
                if len(frames) % self.media.frame_multiple:
                    pad = -len(frames) % self.media.frame_multiple
                    frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
                    seconds = np.concatenate([seconds, np.repeat(seconds[-1:], pad)])
            else:
                with Image.open(media) as im:
                    frame = np.asarray(im.convert("RGB"))
                frames, time_msg, seconds = np.repeat(frame[None], lnf, axis=0), None, np.zeros(lnf)
            frames = resize_frames(frames, size, self.media.resize) if self.decode_media else frames
            n = frames.shape[0]
            if n % lnf:
                raise ConfigError(f"{media}: {n} frames is not a multiple of data.local_num_frames={lnf}")
            tb = frame_bucket(n, d.frame_buckets)
            if n > tb:
                frames, n = frames[:tb], tb
            padded = np.zeros((tb, size, size, 3), np.uint8)
            padded[:n] = frames
            frame_valid = np.arange(tb) < n
        elif self.require_media:
            raise ValueError("record has no 'video' or 'image' (the video objective needs one)")
        else:
            n, tb = 0, bucket0
            padded = np.zeros((tb, size, size, 3), np.uint8)
            frame_valid = np.zeros((tb,), bool)
        with_time = n and "video" in record and self.media.time_message
        segs = chat_segments(record["conversations"], time_msg if with_time else None, d.system_prompt)
        if n and "video" not in record:  # image: "<image>\n" + question, no time message
            first = record["conversations"][0]
            q = str(first.get("value", "")).replace(IMAGE, "").strip()
            segs[1] = (f"<|im_start|>user\n{IMAGE}\n{q}<|im_end|>\n<|im_start|>assistant\n", False)
        ids, labels = tokenize_segments(segs, self.tokenizer)
        s = d.max_seq_len
        ids, labels = ids[:s], labels[:s]
        if all(l == IGNORE_INDEX for l in labels[1:]):
            raise ConfigError(f"no answer tokens within data.max_seq_len={s}")
        pad = s - len(ids)
        extras = {}
        if self.family is not None:
            extras = family_by_name(self.family).training_extras(self.model_cfg, self.tokenizer, seconds[:n], n, tb)
        return extras | {
            "input_ids": np.asarray(ids + [self.pad_id] * pad, np.int32),
            "labels": np.asarray(labels + [IGNORE_INDEX] * pad, np.int32),
            "valid": np.arange(s) < len(ids),
            "frames": padded,
            "frame_valid": frame_valid,
            "n_frames": np.int32(n),
        }


def collate(examples: list[dict]) -> dict:
    """Stack examples, padding frames to the largest frame bucket among them."""
    tb = max(e["frames"].shape[0] for e in examples)
    out = {}
    for k in examples[0]:
        arrs = [e[k] for e in examples]
        if k in ("frames", "frame_valid"):
            arrs = [np.pad(a, [(0, tb - a.shape[0])] + [(0, 0)] * (a.ndim - 1)) for a in arrs]
        out[k] = np.stack(arrs)
    return out


def pad_frames_to(batch: dict, tb: int) -> dict:
    """Pad a collated batch's frames to `tb` (for agreeing on one bucket across hosts)."""
    cur = batch["frames"].shape[1]
    if cur == tb:
        return batch
    out = dict(batch)
    out["frames"] = np.pad(batch["frames"], [(0, 0), (0, tb - cur), (0, 0), (0, 0), (0, 0)])
    out["frame_valid"] = np.pad(batch["frame_valid"], [(0, 0), (0, tb - cur)])
    return out


# ----------------------------------------------------------------------------- iterator


class _SkipBad:
    """Grain filter predicate: drops failed examples (runs in the main process)."""

    def __init__(self, owner: TrainIterator, max_consecutive: int):
        self.owner = owner
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.any_good = False

    def __call__(self, ex: dict) -> bool:
        if "error" in ex:
            if ex["config_reason"] and not self.any_good:
                raise ConfigError(f"{self.owner.data.train_jsonl}: the first example fails for a reason in the "
                                  f"config: {ex['error']}")
            self.owner.skipped += 1
            self.consecutive += 1
            if self.consecutive > self.max_consecutive:
                raise ConfigError(f"{self.owner.data.train_jsonl}: {self.consecutive} examples in a row failed; "
                                  f"last: {ex['error']}")
            log.warning("skipping bad training example (%d so far): %s", self.owner.skipped, ex["error"])
            return False
        self.consecutive = 0
        self.any_good = True
        return True


class TrainIterator:
    """Host-local batches of `batch_size` examples; `get_state`/`set_state` resume exactly."""

    def __init__(self, data: DataSection, batch_size: int, *, process_index: int = 0, process_count: int = 1,
                 decode_media: bool = True, pad_id: int | None = None, require_media: bool = False,
                 media: TrainingMedia = TrainingMedia(), family: str | None = None, model_cfg: Any = None):
        self.data, self.batch_size = data, batch_size
        self.skipped = 0
        self.records = read_jsonl(data.train_jsonl)
        tok = load_tokenizer(data.tokenizer)
        if pad_id is None:
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        ds = grain.MapDataset.source(self.records)
        if data.shuffle:
            ds = ds.shuffle(seed=data.seed)
        ds = ds.repeat(data.num_epochs)
        ds = ds[process_index::process_count]
        it = ds.to_iter_dataset().map(ExampleBuilder(data, data.tokenizer, int(pad_id), decode_media, require_media,
                                                     media, family, model_cfg))
        if data.worker_count > 0:
            _absl_flags_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.worker_count,
                                                             per_worker_buffer_size=data.worker_buffer_size))
        it = it.filter(_SkipBad(self, max(64, len(self.records)))).batch(batch_size, drop_remainder=True, batch_fn=collate)
        self._it = iter(it)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return next(self._it)

    def get_state(self) -> dict:
        """JSON-serialisable position (grain state + skipped-sample counter)."""
        return {"grain": _jsonable(self._it.get_state()), "skipped": self.skipped}

    def set_state(self, state: dict) -> None:
        self._it.set_state(_unjsonable(state["grain"]))
        self.skipped = int(state.get("skipped", 0))


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app they are unparsed."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _jsonable(x: Any) -> Any:
    if isinstance(x, bytes):
        return {"__bytes__": x.decode("latin1")}
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    return x


def _unjsonable(x: Any) -> Any:
    if isinstance(x, dict):
        if set(x) == {"__bytes__"}:
            return x["__bytes__"].encode("latin1")
        return {k: _unjsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_unjsonable(v) for v in x]
    return x
