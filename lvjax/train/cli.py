"""`lvjax train --config CONFIG [section.key=value ...]` (registered into lvjax/cli.py)."""

from __future__ import annotations

import argparse
import logging

import yaml

from lvjax.cli_args import EXIT_CODES
from lvjax.train.config import load_config
from lvjax.train.data import read_jsonl
from lvjax.train.loop import train


def _train(args) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    if cfg.data.train_jsonl:
        read_jsonl(cfg.data.train_jsonl)  # a malformed dataset fails before the model is built
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return
    out = train(cfg)
    last = out["steps"][-1] if out["steps"] else {}
    print(f"lvjax train: finished at step {out['final_step']}"
          + (f", loss {last['loss']:.4f}" if last else "")
          + f", {out['skipped']} bad examples skipped; checkpoints in {cfg.checkpoint_dir}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune (XComp supervised compression tuning, plain SFT)",
        description="Train from a YAML config; `section.key=value` arguments override it "
        "(e.g. optim.lr=2e-5 train.steps=100 mesh.fsdp=4). Resumes from checkpoint.dir if it holds a checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="CONFIG", help="YAML file (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=10")
    p.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    p.epilog = EXIT_CODES
    p.set_defaults(func=_train)
