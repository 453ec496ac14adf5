"""`lvjax eval` and `lvjax make-benchmark`: benchmark runs, re-scoring and generated benchmarks."""

from __future__ import annotations

import argparse
import dataclasses
import json

import lvjax
from lvjax.cli_args import EXIT_CODES, MESH_HELP, positive_float, positive_int
from lvjax.config import ConfigError
from lvjax.eval import runner
from lvjax.eval.niah import make_niah
from lvjax.eval.summary import table
from lvjax.eval.synthetic import SUBTITLE_TASKS, make_benchmark
from lvjax.eval.tasks import PROTOCOLS, TASKS, get_task
from lvjax.families.videochat_flash.selection import QCCompConfig
from lvjax.synthetic_qa import make_split

EVAL_HELP = """Evaluate a video model on a benchmark in its own annotation format.

One JSON line per item is appended to --out as it goes (re-running resumes); the summary
(RESULTS.summary.json) is written beside it and printed as a table. --rescore re-parses the
outputs of an earlier results file with the task's parser, without a model. Data-parallel:
set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID per process (item i goes to
process i mod n; process 0 merges the parts, so --out must be on a shared file system)."""


def _eval(args) -> None:
    task = get_task(args.task)
    if args.rescore:
        if args.model or args.subtitles:
            raise ConfigError("--rescore takes no --model or --subtitles (it re-parses the outputs already in the file)")
        summary = runner.rescore(task.name, args.annotations, args.rescore, args.out, args.protocol or "videochat_flash")
    else:
        if not args.model or not args.videos:
            raise ConfigError("--model and --videos are required (unless --rescore)")
        for name in ("limit", "max_frames", "min_frames", "max_new_tokens"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if args.subtitles:  # before the model loads
            runner.check_subtitles(task, args.protocol or "videochat_flash", args.subtitles)
        process = runner.process_info()
        if args.compilation_cache is not None:
            lvjax.enable_compilation_cache(args.compilation_cache or None)
        model = lvjax.load(args.model, mesh=args.mesh)
        if not hasattr(model, "answer"):
            raise ConfigError(f"{args.model}: a text-only language model cannot answer about videos")
        options = runner.answer_options(max_frames=args.max_frames, min_frames=args.min_frames, fps=args.fps,
                                        compression=args.compression, max_new_tokens=args.max_new_tokens)
        if args.select_frames:
            options["qc"] = _qc_config(args.select_frames, args.qc)
        summary = runner.evaluate(model, task.name, args.annotations, args.videos, args.out, protocol=args.protocol,
                                  limit=args.limit, options=options, process=process, subtitles=args.subtitles)
        if summary is None:  # not process 0: process 0 merges and reports
            return
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else table(summary))


def _qc_config(k: int, fields: list[str]):
    """QC-Comp settings: K frames kept, XComp's defaults overridden by `field=int` strings (--qc)."""
    names = {f.name: f for f in dataclasses.fields(QCCompConfig)}
    kw = {}
    for item in fields or ():
        key, _, value = item.partition("=")
        if key not in names or not value:
            raise ConfigError(f"--qc {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(names)}")
        try:
            kw[key] = value.lower() == "true" if key == "causal" else int(value)
        except ValueError:
            raise ConfigError(f"--qc {item!r}: {value!r} is not an integer") from None
    return QCCompConfig(n_select=k, **kw)


def _make(args) -> None:
    if args.task == "niah":
        path = make_niah(args.out, args.n, args.seed, haystack=args.haystack, frames=args.frames)
    elif args.task == "synthetic_qa":  # the tiny model's benchmark; --seed 3 is its test split
        path = make_split(args.out, "test", args.n, seed=args.seed)
    else:
        if args.haystack:
            raise ConfigError("--haystack applies to make-benchmark niah only")
        path = make_benchmark(args.task, args.out, args.n, args.seed, broken=args.with_broken)
    subs = f" --subtitles {args.out}/subtitles" if args.task in SUBTITLE_TASKS else ""
    print(f"wrote {args.n} items: --annotations {path} --videos {args.out}/videos{subs}")


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate on a benchmark (MLVU, Video-MME, LVBench, ...)", description=EVAL_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES)
    p.add_argument("--task", required=True, choices=list(TASKS), help="benchmark: " + ", ".join(TASKS))
    p.add_argument("--annotations", required=True, metavar="FILE", help="annotation file or folder, as the benchmark ships it")
    p.add_argument("--out", required=True, metavar="RESULTS.jsonl", help="results file (appended; resumes)")
    p.add_argument("--model", metavar="DIR", help="HF folder or lvjax checkpoint")
    p.add_argument("--videos", metavar="DIR", help="folder the annotations' video names are relative to")
    p.add_argument("--rescore", metavar="RESULTS.jsonl", help="re-parse this results file's outputs (no model)")
    p.add_argument("--subtitles", metavar="DIR", help="videomme, longvideobench: folder of the subtitle files "
                   "(Video-MME `<videoID>.srt`, LongVideoBench `subtitle_path` JSON); put in the prompt as the "
                   "original does (default: no subtitles)")
    p.add_argument("--protocol", choices=PROTOCOLS, help="prompts and parsers of which original (default: the model's family)")
    p.add_argument("--limit", type=positive_int, help="only the first N items (default: all)")
    p.add_argument("--max-frames", type=positive_int, help="frame cap (default: the protocol's; the floor becomes min(64, N))")
    p.add_argument("--min-frames", type=positive_int, help="frame floor (default: the protocol's)")
    p.add_argument("--fps", type=positive_float, help="sampling rate in frames/s (default: the protocol's)")
    p.add_argument("--compression", help="in-LLM compression plan (default: from config)")
    p.add_argument("--max-new-tokens", type=positive_int, help="answer length cap (default: the original's, 16 or 32)")
    p.add_argument("--mesh", help=MESH_HELP)
    p.add_argument("--select-frames", type=positive_int, metavar="K", help="QC-Comp: answer from the K frames most relevant "
                   "to the question (videos of >= 1024 sampled frames unless --qc threshold=N)")
    p.add_argument("--qc", nargs="+", metavar="FIELD=N", help="QC-Comp settings (QCCompConfig fields, e.g. threshold=32 "
                   "stride=16 clip_frames=4 window_clips=2 window_stride=1 first_layer=1 last_layer=6)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.add_argument("--compilation-cache", metavar="DIR", nargs="?", const="", help="reuse compiled XLA programs across runs")
    p.set_defaults(func=_eval)

    p = sub.add_parser("make-benchmark", help="write a tiny synthetic benchmark (or NIAH) in a task's format",
                       description="Render a small benchmark with PyAV in a task's own annotation format; "
                                   "`niah` writes a needle-in-a-haystack set (OUT/annotations.json, OUT/videos/).",
                       epilog=EXIT_CODES)
    p.add_argument("task", choices=[t for t in TASKS], help="the task whose format to write")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n", type=positive_int, default=20, help="number of items (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--haystack", metavar="FILE", help="niah: use this video's frames as the haystack")
    p.add_argument("--frames", type=positive_int, default=64, help="niah: rendered haystack length in frames (default 64)")
    p.add_argument("--with-broken", action="store_true", help="leave one video missing and one truncated (tests)")
    p.set_defaults(func=_make)
