"""Tiny Qwen2-style tokenizer, built offline, for small original-format model folders (tests, demo).

`build_tiny_tokenizer(out_dir)` trains a byte-level BPE with the `tokenizers` library on a small
built-in English corpus (the chat template, time messages, typical video questions and answers)
using Qwen2's pipeline (as transformers' `Qwen2Converter`): NFC normaliser, the Qwen2 split
regex then ByteLevel, ByteLevel decoder. Ids follow Qwen2's layout: the 256 byte symbols in
GPT-2 `bytes_to_unicode` order (ids 0..255), one id per merge in merge order after them, then
`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`. It writes the Hugging Face files
(`tokenizer.json`, `vocab.json`, `merges.txt`, `tokenizer_config.json` with
`tokenizer_class: Qwen2Tokenizer`, `special_tokens_map.json`) so that
`transformers.AutoTokenizer.from_pretrained(out_dir)` loads it. Deterministic: two builds give
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import Iterable

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from lvjax.convert.table import flatten_paths, lvjax_to_hf
from lvjax.families import family_for

QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class TinyTokenizer:
    """What `build_tiny_tokenizer` wrote: its folder, total size (BPE + specials) and special ids."""

    path: str
    vocab_size: int
    endoftext_id: int
    im_start_id: int
    im_end_id: int

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(zip(SPECIAL_TOKENS, (self.endoftext_id, self.im_start_id, self.im_end_id)))


_WORDS = """
the a an and or of to in on at for with from by about into over under after before during while
is are was were be been being has have had do does did can could will would should may might must
what which who whom whose where when why how whether this that these those there here it its they
them their he she his her we our you your i me my one two three four five six seven eight nine ten
person people man woman men women boy girl child children player team crowd audience speaker host
video clip scene frame frames second seconds minute minutes hour hours time beginning middle end
camera shot view background foreground screen image picture color colour light dark red blue green
yellow white black orange purple brown gray pink large small big little long short tall high low
left right top bottom front behind next near far inside outside above below between around across
doing does happen happens happened happening show shows shown showing appear appears appeared
cooking dancing reading swimming running walking jumping singing playing talking eating drinking
driving riding cutting cleaning writing drawing painting climbing throwing catching kicking holding
opening closing pushing pulling sitting standing watching looking smiling laughing crying waving
kitchen room house street road park field beach river lake mountain forest city car bus train bike
ball table chair door window book phone computer knife bowl cup plate water food dog cat bird horse
first last final main primary overall most least many much more less few several every each other
object objects action actions activity event events step steps order sequence count number total
question answer option options choice choices letter correct wrong true false yes no maybe none
describe description detail details summary summarize explain reason purpose happen occurs visible
uniformly sampled lasts video helpful assistant system user model please directly given following
"""

_QUESTIONS = [
    "What is the person in the video doing?",
    "How many people appear in the video?",
    "What color is the car at the beginning of the video?",
    "Describe the video in detail.",
    "What happens after the man opens the door?",
    "Where does the scene take place?",
    "Why does the woman start running?",
    "Which object does the child pick up first?",
    "What is the main activity shown in the clip?",
    "In what order do the events happen?",
    "Is the dog inside or outside the house?",
    "What is the speaker talking about?",
    "Summarize the video in one sentence.",
]
_OPTIONS = ["Cooking", "Dancing", "Reading", "Swimming", "Running", "Singing", "Driving a car", "Playing football",
            "Cleaning the kitchen", "Riding a horse", "Eating food", "Talking on the phone"]
_ANSWERS = ["A", "B", "C", "D", "A.", "B.", "The person is cooking in the kitchen.",
            "Two people are dancing in the park.", "The man is reading a book near the window.",
            "A child is swimming in the lake while the dog is watching."]
_EXTRA = [
    "Café, naïve, façade, über, São Paulo, Zürich — 日本語のテキスト, 中文视频, русский текст, ελληνικά.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 3.14 4.00 16.00 128.00 3600.00",
    "Punctuation: ( ) [ ] { } < > , . ; : ! ? ' \" - _ / \\ | @ # $ % ^ & * + = ~ `",
    "It's, don't, I'm, we're, they've, you'll, he'd.  Tabs\tand  double  spaces.\n\nNew paragraph.",
]


def default_corpus() -> list[str]:
    """The built-in training text (deterministic)."""
    lines = [" ".join(_WORDS.split()), " ".join(w.capitalize() for w in _WORDS.split())]
    letters = "ABCDEFGHIJKL"
    for i, q in enumerate(_QUESTIONS):
        opts = [_OPTIONS[(i + k) % len(_OPTIONS)] for k in range(4)]
        mcq = q + "\n" + "".join(f"{letters[k]}. {o}\n" for k, o in enumerate(opts))
        mcq += "Answer with the option's letter from the given choices directly."
        for n, sec in ((16, 4.0), (128, 16.0), (1024, 128.0), (512, 3600.0)):
            time_msg = f"The video lasts for {sec:.2f} seconds, and {n} frames are uniformly sampled from it."
            lines.append(f"system\nYou are a helpful assistant.\nuser\n\n{time_msg} {q}\nassistant\n")
            lines.append(f"user\n\n{time_msg} {mcq}\nassistant\n{_ANSWERS[i % len(_ANSWERS)]}\n")
    for s, v, o in itertools.product(["The man", "A woman", "The child", "Two people"],
                                     ["is holding", "picks up", "looks at", "walks toward"],
                                     ["the ball", "a red cup", "the door", "his phone"]):
        lines.append(f"{s} {v} {o}.")
    return lines + _EXTRA


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / Qwen2 byte symbols, in id order (printable bytes first, the rest mapped to 256+)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _with_pipeline(tok):
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _train_merges(corpus: Iterable[str], n_bpe: int) -> list[tuple[str, str]]:
    tok = _with_pipeline(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=0, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = list(corpus)
    for special in SPECIAL_TOKENS:  # specials are added tokens, never learned
        text = [t.replace(special, "\n") for t in text]
    tok.train_from_iterator(text, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def build_tiny_tokenizer(out_dir: str | os.PathLike, vocab_size: int = 1024, corpus: Iterable[str] | None = None,
                         model_max_length: int = 32768) -> TinyTokenizer:
    """Write a tiny Qwen2-style tokenizer into out_dir and return its size and special ids.

    vocab_size: the most ids the tokenizer may use, BPE plus the 3 special tokens (≥ 259); with
    a small corpus BPE may run out of merges first, so read `.vocab_size` from the result.
    corpus: training lines (default `default_corpus()`).
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)}, got {vocab_size}")
    merges = _train_merges(default_corpus() if corpus is None else corpus, vocab_size - len(SPECIAL_TOKENS))
    vocab: dict[str, int] = {s: i for i, s in enumerate(_bytes_to_unicode())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    bpe = models.BPE(vocab=dict(vocab), merges=list(merges), dropout=None, unk_token=None, continuing_subword_prefix="",
                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    tok = _with_pipeline(Tokenizer(bpe))
    tok.add_special_tokens([AddedToken(s, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
                            for s in SPECIAL_TOKENS])
    ids = [tok.token_to_id(s) for s in SPECIAL_TOKENS]
    if ids != list(range(len(vocab), len(vocab) + len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens got ids {ids}, expected right after the {len(vocab)} BPE tokens")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    _write_json(out / "vocab.json", vocab)
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, s in zip(ids, SPECIAL_TOKENS)}
    _write_json(out / "tokenizer_config.json", {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "padding_side": "right",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })
    _write_json(out / "special_tokens_map.json", {
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    })
    return TinyTokenizer(str(out), len(vocab) + len(SPECIAL_TOKENS), *ids)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- tiny model folders

TINY_VISION = dict(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                   mlp_ratio=4.0, ckpt_num_frame=4, tubelet_size=1, return_idx=-2, layer_norm_eps=1e-6,
                   final_layer_norm_eps=1e-12, qkv_bias=True)


def build_tiny_videochat_flash(out_dir: str | os.PathLike, *, hidden: int = 64, layers: int = 8, heads: int = 4,
                               kv_heads: int = 2, intermediate: int = 128, local_num_frames: int = 4,
                               vision: dict | None = None, seed: int = 0) -> Path:
    """Write a random-weight VideoChat-Flash in the original Hugging Face folder format.

    Real key names and config fields (`VideoChatFlashQwenForCausalLM`, `tome16_mlp_hd64`, a UMT
    tower sized by `vision_tower_config`), a tiny offline tokenizer and a generation config with
    Qwen's sampling defaults. The weights are random: answers are noise.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(out)
    vision_cfg = dict(TINY_VISION, **(vision or {}))
    config = {
        "architectures": ["VideoChatFlashQwenForCausalLM"],
        "model_type": "videochat_flash_qwen",
        "vocab_size": tok.vocab_size,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "bos_token_id": tok.endoftext_id,
        "eos_token_id": tok.im_end_id,
        "torch_dtype": "float32",
        "mm_vision_tower": "umt-tiny" if vision_cfg["image_size"] == 224 else "umt-hd-tiny",
        "vision_tower_config": vision_cfg,
        "mm_hidden_size": vision_cfg["hidden_size"],
        "mm_vision_select_layer": vision_cfg["return_idx"],
        "mm_projector_type": "tome16_mlp_hd64",
        "mm_local_num_frames": local_num_frames,
        "mm_pos_num_frames": 8,
        "mm_newline_position": "nothing",
        "mm_patch_merge_type": "spatial_nopad",
        "vision_encode_type": "video_image",
        "frame_aspect_ratio": "square",
        "mm_llm_compress": False,
        "llm_compress_type": "attention",
        "llm_compress_layer_list": [max(1, layers - 4)],
        "llm_image_token_ratio_list": [1.0, 0.5],
        "tokenizer_padding_side": "right",
    }
    family = family_for(config)
    cfg = family.config_from_hf(config, str(out / "config.json"))
    params = nn.unbox(family.init(cfg, jax.random.key(seed)))
    params = _random_weights(params, np.random.RandomState(seed))
    tensors = lvjax_to_hf(params, family.rules(cfg))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()  # stored like the real checkpoint
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", {
        "bos_token_id": tok.endoftext_id, "eos_token_id": [tok.im_end_id, tok.endoftext_id],
        "pad_token_id": tok.endoftext_id, "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
        "repetition_penalty": 1.1,
    })
    return out


def _random_weights(params: dict, rng: np.random.RandomState) -> dict:
    """Re-draw weights at scales that give varied answers (as the recorded fixture does):
    kernels N(0, 1/fan_in), embeddings N(0, 0.5²), norm scales U(0.5, 1.5), biases N(0, 0.1²)."""
    out: dict = {}
    for path, value in flatten_paths(params).items():
        shape = np.shape(value)
        leaf = path.rsplit("/", 1)[-1]
        if leaf == "embedding":
            new = rng.normal(0, 0.5, shape)
        elif leaf == "scale":
            new = rng.uniform(0.5, 1.5, shape)
        elif leaf == "kernel":
            fan_in = int(np.prod(shape[:-1])) if "patch_embed" in path else shape[-2]
            new = rng.normal(0, fan_in ** -0.5, shape)
        else:
            new = rng.normal(0, 0.1, shape)
        node = out
        for part in path.split("/")[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = new.astype(np.float32)
    return out
