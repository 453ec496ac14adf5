"""The shipped tiny model: how it is made (`make train-tiny`) and where it lives (`lvjax.load("tiny")`).

Two folders in the original VideoChat-Flash Hugging Face format ship in `lvjax/assets/`:
`tiny-base` (stage 1: configs/tiny_trained.yaml, from scratch, no compression) and `tiny`
(stage 2: configs/tiny_trained_xcomp.yaml, LP-Comp supervised compression tuning from stage 1).
Both are trained by `lvjax train` on the synthetic long-video QA benchmark (`lvjax.synthetic_qa`),
with data, tokenizer and weights all produced by this module from fixed seeds:

    python -m lvjax.tiny_model build [--work runs/tiny] [--out lvjax/assets]   # everything
    python -m lvjax.tiny_model data runs/tiny                                  # data + tokenizer only
    python -m lvjax.tiny_model compare [--n 200]      # the XComp comparison on the test split

`compare` runs the evaluation harness (`lvjax.eval.runner`, as `lvjax eval --task synthetic_qa`)
for each row of `CELLS`: no compression, LP-Comp without tuning (tiny-base), LP-Comp after
tuning (tiny), QC-Comp frame selection, and LP-Comp at 2× and 4× the frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time

import flax.linen as nn
import jax

from lvjax import api
from lvjax import synthetic_qa as sq
from lvjax.config import read_json
from lvjax.convert.hf import write_hf_folder
from lvjax.eval import runner
from lvjax.families import family_by_name
from lvjax.families.videochat_flash.compression import build_plan
from lvjax.families.videochat_flash.selection import QCCompConfig
from lvjax.shipped import ASSETS, NAMES
from lvjax.testing.tiny import build_tiny_tokenizer
from lvjax.train.config import load_config
from lvjax.train.loop import build_spec, train

CONFIGS = {"tiny-base": "tiny_trained.yaml", "tiny": "tiny_trained_xcomp.yaml"}  # stage order
N_TRAIN, N_VAL, N_TEST = 3000, 100, 200
VOCAB = 512
# How the tiny model samples videos (its training data section): 8 frames spread over the video.
SAMPLING = dict(fps=8.0, max_frames=8, min_frames=8)


# QC-Comp scaled to the tiny model: clips of 4 frames, windows of 2 clips sliding by 1, chunks of
# 16 + 8 frames, two shifted grids; question rows start after the time message (~24 tokens);
# layers 1..5 scored. Active from 16 sampled frames.
QC = dict(threshold=16, stride=16, clip_frames=4, window_clips=2, window_stride=1, n_repeat=2, query_bias=24,
          first_layer=1, last_layer=6)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One evaluation setting: a shipped model, frames sampled, compression plan, QC-Comp frames kept (0: off)."""

    label: str
    model: str
    frames: int
    compression: str = "none"
    select: int = 0

    def options(self) -> dict:
        opts = runner.answer_options(max_frames=self.frames, min_frames=self.frames, fps=SAMPLING["fps"],
                              compression=self.compression, max_new_tokens=4)
        if self.select:
            opts["qc"] = QCCompConfig(n_select=self.select, **QC)
        return opts

    def cli(self) -> str:
        """The same setting as `lvjax eval` arguments."""
        args = f"--model {self.model} --max-frames {self.frames} --min-frames {self.frames} --fps {SAMPLING['fps']:g} " \
               f"--compression {self.compression} --max-new-tokens 4"
        if self.select:
            args += f" --select-frames {self.select} --qc " + " ".join(f"{k}={v}" for k, v in QC.items())
        return args

    def visual_tokens(self, layers: int) -> float:
        """Visual tokens per LLM layer, averaged over the layers (the LLM token budget)."""
        n = (self.select or self.frames) * 16
        return sum(build_plan(self.compression, layers, 16).visual_counts(n)) / layers


CELLS = (
    Cell("no compression", "tiny-base", 8),
    Cell("LP-Comp, no tuning (heuristic)", "tiny-base", 8, "xcomp_cosine"),
    Cell("LP-Comp after tuning", "tiny", 8, "xcomp_cosine"),
    Cell("QC-Comp: 8 of 32 frames", "tiny-base", 32, "none", 8),
    Cell("LP-Comp after tuning, 2x frames", "tiny", 16, "xcomp_cosine"),
    Cell("LP-Comp after tuning, 4x frames", "tiny", 32, "xcomp_cosine"),
)


def make_data(work: str) -> dict:
    """Tokenizer (work/tokenizer) and the train/val/test splits (work/data). Returns their paths."""
    data = os.path.join(work, "data")
    tok = build_tiny_tokenizer(os.path.join(work, "tokenizer"), vocab_size=VOCAB, corpus=sq.corpus())
    if tok.vocab_size != VOCAB:
        raise RuntimeError(f"tiny tokenizer has {tok.vocab_size} ids, the configs say {VOCAB}")
    paths = {split: sq.make_split(data, split, n) for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST))}
    paths["train_jsonl"] = sq.training_jsonl(paths["train"], os.path.join(data, "train.jsonl"))
    paths["tokenizer"] = tok.path
    return paths


def write_folder(out: str, train_cfg, params, tokenizer: str) -> str:
    """An original-format HF folder (config.json, model.safetensors, tokenizer, greedy generation config)."""
    spec, _ = build_spec(train_cfg, load_params=False)
    family = family_by_name(spec.family)
    init = train_cfg.model.init
    hf = read_json(os.path.join(init, "config.json")) if init else dict(train_cfg.model.hf_config)
    hf = {**hf, **train_cfg.model.hf_overrides}
    write_hf_folder(out, hf, params, family, spec.model_cfg, True, tokenizer)
    gen = {"bos_token_id": hf["bos_token_id"], "eos_token_id": [hf["eos_token_id"], hf["bos_token_id"]],
           "pad_token_id": hf["bos_token_id"], "do_sample": False}
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    return out


def train_stage(name: str, work: str, configs: str, *, overrides: tuple[str, ...] = (), verbose: bool = True) -> str:
    """Run one stage's config with its data under `work`; writes the HF folder work/<name>."""
    out = os.path.join(work, name)
    over = [f"data.train_jsonl={work}/data/train.jsonl", f"data.media_root={work}/data/videos",
            f"data.tokenizer={work}/tokenizer", f"train.output_dir={work}/{name}-run", *overrides]
    if name == "tiny":
        over.append(f"model.init={work}/tiny-base")
    cfg = load_config(os.path.join(configs, CONFIGS[name]), over)
    shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)  # a rebuild starts fresh, never resumes
    result = train(cfg, verbose=verbose)
    params = jax.device_get(nn.unbox(result["state"]["params"]))
    shutil.rmtree(out, ignore_errors=True)
    return write_folder(out, cfg, params, cfg.data.tokenizer)


def build(work: str = "runs/tiny", out: str | None = str(ASSETS), configs: str = "configs",
          overrides: tuple[str, ...] = ()) -> dict:
    """Data, then both stages; copies the two folders into `out` (None: leave them in `work`)."""
    t0 = time.time()
    os.makedirs(work, exist_ok=True)
    make_data(work)
    print(f"tiny model: data and tokenizer in {work} ({time.time() - t0:.0f} s)", flush=True)
    seconds = {}
    for name in CONFIGS:
        t1 = time.time()
        train_stage(name, work, configs, overrides=overrides)
        seconds[name] = time.time() - t1
        print(f"tiny model: stage {name} trained in {seconds[name]:.0f} s", flush=True)
        if out:
            dst = os.path.join(out, NAMES[name])
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(os.path.join(work, name), dst)
    return {"seconds": seconds, "total_s": time.time() - t0}


def evaluate(cell: Cell, annotations: str, videos: str, out: str, models: dict | None = None,
             limit: int | None = None) -> dict:
    """`lvjax eval --task synthetic_qa` of one cell (results in `out`, resumable); returns the summary
    plus 'seconds' (mean seconds per item and stage) and 'visual_tokens' (per layer, mean)."""
    models = {} if models is None else models
    if cell.model not in models:
        models[cell.model] = api.load(cell.model)
    model = models[cell.model]
    summary = runner.evaluate(model, "synthetic_qa", annotations, videos, out, options=cell.options(), limit=limit,
                               progress=False)
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    stages = sorted({k for r in rows for k in r["timing"]})
    summary["seconds"] = {k: sum(r["timing"].get(k) or 0.0 for r in rows) / len(rows) for k in stages}
    summary["visual_tokens"] = cell.visual_tokens(model.config.llm.num_hidden_layers)
    return summary


def compare(work: str = "runs/tiny", n: int = N_TEST, cells=CELLS) -> list[tuple[Cell, dict]]:
    """Every cell on the first `n` items of the test split (rendered into work/data if absent)."""
    data = os.path.join(work, "data")
    ann = os.path.join(data, "test.json")
    if not os.path.isfile(ann) or len(_read(ann)) < n:  # item i of a split never depends on n
        sq.make_split(data, "test", n)
    models: dict = {}
    out = []
    for i, cell in enumerate(cells):
        res = os.path.join(work, "compare", f"cell{i}.jsonl")
        os.makedirs(os.path.dirname(res), exist_ok=True)
        if os.path.exists(res):
            os.unlink(res)
        out.append((cell, evaluate(cell, ann, os.path.join(data, "videos"), res, models, limit=n)))
    return out


def _read(path: str) -> list:
    with open(path) as f:
        return json.load(f)


def report(results: list[tuple[Cell, dict]]) -> str:
    """A Markdown table: accuracy (%) overall and per question type, chance, visual tokens, seconds per item."""
    head = "| setting | model | frames | visual tokens / layer | " + " | ".join(sq.TYPES) + " | all | s / item |"
    lines = [head, "|" + "---|" * (head.count("|") - 1),
             "| chance | | | | " + " | ".join(f"{100 * sq.CHANCE[t]:.0f}" for t in sq.TYPES)
             + f" | {100 * sum(sq.CHANCE.values()) / len(sq.TYPES):.1f} | |"]
    for cell, s in results:
        groups = s["groups"]["question_type"]
        lines.append(f"| {cell.label} | {cell.model} | {cell.select or cell.frames}"
                     + (f" of {cell.frames}" if cell.select else "") + f" | {s['visual_tokens']:.1f} | "
                     + " | ".join(f"{groups[t]['accuracy']:.1f}" if t in groups else "-" for t in sq.TYPES)
                     + f" | {s['accuracy']:.1f} | {s['seconds'].get('total', 0.0):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lvjax.tiny_model", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="data, tokenizer, both training stages; copy the folders into --out")
    b.add_argument("--work", default="runs/tiny")
    b.add_argument("--out", default=str(ASSETS), help="where the folders go (default: the package's assets)")
    b.add_argument("--configs", default="configs")
    b.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides for both stages")
    d = sub.add_parser("data", help="only the tokenizer and the train/val/test splits")
    d.add_argument("work")
    c = sub.add_parser("compare", help="the XComp comparison on the test split, as a Markdown table")
    c.add_argument("--work", default="runs/tiny")
    c.add_argument("--n", type=int, default=N_TEST, help=f"first N test items (default {N_TEST})")
    a = p.parse_args(argv)
    if a.cmd == "data":
        print(make_data(a.work))
    elif a.cmd == "compare":
        results = compare(a.work, a.n)
        print(report(results))
        for cell, _ in results:
            print(f"  {cell.label}: lvjax eval --task synthetic_qa {cell.cli()}")
    else:
        print(build(a.work, a.out, a.configs, tuple(a.overrides)))


if __name__ == "__main__":
    main()
