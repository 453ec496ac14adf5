"""`lvjax answer` and `lvjax chat`: questions about a video from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from lvjax import QCCompConfig, api  # QC-Comp: the `qc=` option lvjax exports
from lvjax.cli_args import (
    EXIT_CODES,
    MESH_HELP,
    nonnegative_int,
    positive_float,
    positive_int,
)
from lvjax.config import ConfigError
from lvjax.errors import UsageError
from lvjax.model import check_text
from lvjax.prompt import multiple_choice


def _add_video_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH", help="video model: HF folder (original format) or lvjax checkpoint")
    p.add_argument("--video", required=True, metavar="FILE", help="video file, folder of frames, or an image")
    p.add_argument("--mesh", default=None, help=MESH_HELP)
    p.add_argument("--max-frames", type=positive_int, default=None,
                   help="most frames sampled (default: the family's, e.g. 512 for VideoChat-Flash; see `lvjax info`)")
    p.add_argument("--min-frames", type=positive_int, default=None,
                   help="fewest frames sampled (default: the family's, at most --max-frames); must be <= --max-frames")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="sampling rate in frames/s (default: the family's, 1 frame/s; linspace families ignore it)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="answer length cap (default 512)")
    p.add_argument("--compression", default=None,
                   help="in-LLM compression plan: none, xcomp_cosine, uniform0_attention, ... (default: from config)")
    p.add_argument("--select-frames", type=nonnegative_int, default=0, metavar="K",
                   help="QC-Comp: keep the K frames most relevant to the question (videos of >= 1024 frames; "
                   "default 0 = off)")
    p.add_argument("--qc-repeat", type=positive_int, default=2, help="QC-Comp shifted repeats of the chunk grid (default 2)")
    p.add_argument("--allow-special-tokens", action="store_true",
                   help="let the question hold chat control tokens (<|im_start|>, <|im_end|>, <image>); "
                   "default: refused")
    p.add_argument("--duplicate-to-min", action="store_true",
                   help="repeat short samples up to --min-frames (as XComp's evaluation does)")
    p.add_argument("--compression-ratio", type=positive_int, default=None, metavar="R",
                   help="Video-XL: visual summarization ratio (default: beacon_ratio of config.json)")
    p.add_argument("--prefill", choices=("dense", "chunk_sparse"), default=None,
                   help="Video-XL-2 prefill (default chunk_sparse, as its evaluation)")
    p.add_argument("--decode", choices=("dense", "bilevel"), default=None,
                   help="Video-XL-2 decoding (default dense; bilevel needs selected_unit_indices)")
    p.add_argument("--keep-rate", type=float, default=None, metavar="U",
                   help="Video-XL-Pro selector keep rate (default: drawn as the original, 0.7-0.99)")
    p.add_argument("--sample", action="store_true",
                   help="sample with generation_config.json's temperature/top-p/top-k (default: greedy)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON object with the answer and the report "
                   "(default: the answer on stdout, the report on stderr)")
    p.add_argument("--compilation-cache", metavar="DIR", nargs="?", const="",
                   help="reuse compiled XLA programs across runs (default dir ~/.cache/lvjax/xla)")


def _options(args) -> dict:
    opts = dict(max_frames=args.max_frames, min_frames=args.min_frames, fps=args.fps,
                max_new_tokens=args.max_new_tokens, compression=args.compression, seed=args.seed,
                do_sample=args.sample, duplicate_to_min=args.duplicate_to_min or None,
                compression_ratio=args.compression_ratio, prefill=args.prefill, decode=args.decode,
                keep_rate=args.keep_rate, allow_special_tokens=args.allow_special_tokens or None)
    if args.select_frames:
        opts["qc"] = QCCompConfig(n_select=args.select_frames, n_repeat=args.qc_repeat)
    return {k: v for k, v in opts.items() if v is not None}


def _print(answer: str, report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"answer": answer, "report": report}))
    else:
        print(answer)
        print("  " + "  ".join(f"{k}={v}" for k, v in report.items()), file=sys.stderr)


def _load(args):
    if args.compilation_cache is not None:
        api.enable_compilation_cache(args.compilation_cache or None)
    return _video_model(api.load(args.model, mesh=args.mesh), args.model)


def _answer(args) -> None:
    check_text(args.question, "--question", allow_special_tokens=args.allow_special_tokens)  # before the model loads
    if args.min_frames and args.max_frames and args.min_frames > args.max_frames:
        raise UsageError(f"--min-frames={args.min_frames} is more than --max-frames={args.max_frames}")
    model = _load(args)
    question = args.question
    if args.options:
        question = multiple_choice(question, args.options)
    answer, report = model.answer(args.video, question, progress=sys.stderr.isatty(), **_options(args))
    _print(answer, report, args.json)


def _chat(args) -> None:
    model = _load(args)
    opts = _options(args)
    sampling = {k: opts.pop(k) for k in ("max_frames", "min_frames", "fps", "duplicate_to_min") if k in opts}
    encoded = model.encode_video(args.video, progress=sys.stderr.isatty(), **sampling)
    interactive = sys.stdin.isatty()
    history: list[tuple[str, str]] = []
    number = 0
    while True:
        if interactive:
            print("? ", end="", file=sys.stderr, flush=True)
        number += 1
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError as e:
            raise UsageError(f"<stdin>: line {number} is not UTF-8 text (byte {e.start})") from None
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        try:
            answer, report = model.answer_encoded(encoded, question, history=history if args.multi_turn else (), **opts)
        except UsageError as e:
            if not interactive:
                raise UsageError(f"<stdin> line {number}: {e}") from None
            print(f"lvjax chat: error: {e}", file=sys.stderr)  # at a terminal: ask again
            continue
        if args.multi_turn:
            history.append((question, answer))
        _print(answer, report, args.json)


def _video_model(model, path: str):
    if not hasattr(model, "answer"):
        raise ConfigError(f"{path}: a text-only language model has no video tower (use `lvjax generate`)")
    return model


def register(sub) -> None:
    p = sub.add_parser("answer", help="answer one question about a video",
                       description="Answer one question about a video, a folder of frames or an image.", epilog=EXIT_CODES)
    _add_video_options(p)
    p.add_argument("--question", required=True, help="the question (UTF-8 text)")
    p.add_argument("--options", nargs="+", metavar="OPTION", help="multiple-choice options (formatted A. B. ...)")
    p.set_defaults(func=_answer)

    p = sub.add_parser("chat", help="several questions (one per stdin line) about one video, encoded once",
                       description="Ask several questions, one per stdin line (UTF-8), about one video encoded once.",
                       epilog=EXIT_CODES)
    _add_video_options(p)
    p.add_argument("--multi-turn", action="store_true", help="keep earlier questions and answers in the prompt")
    p.set_defaults(func=_chat)
