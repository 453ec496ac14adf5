"""The `lvjax` command line.

    lvjax convert --from-hf DIR --out CKPT     Hugging Face folder → lvjax (orbax) checkpoint
    lvjax export --ckpt CKPT --out DIR         lvjax checkpoint → Hugging Face folder
    lvjax generate --model PATH --prompt TEXT  text continuation with a Qwen2 LM
    lvjax info --model PATH [--json]           family, parameters, dtype, sizes, default sampling
    lvjax answer / chat / train                see `lvjax <command> --help`

Mistakes a user can make (bad path, bad config, bad checkpoint or video) print one line to
stderr and exit with status 1; bad usage (an option's value, a question) exits with 2 (as
argparse); Ctrl-C or SIGTERM remove any partial output and exit with 130 / 143.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from lvjax import __version__, api, cli_eval, cli_video
from lvjax.cli_args import EXIT_CODES, MESH_HELP, positive_int
from lvjax.config import ConfigError
from lvjax.errors import LvjaxError
from lvjax.model import check_text
from lvjax.train import cli as train_cli

EXTRA_COMMANDS = (cli_video, train_cli, cli_eval)  # modules whose `register(sub)` adds sub-commands


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM raises SystemExit(143) in the main thread, so temporary outputs are removed as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _convert(args) -> None:
    print(api.convert_hf(args.from_hf, args.out, progress=not args.quiet))


def _export(args) -> None:
    print(api.export_hf(args.ckpt, args.out))


def _generate(args) -> None:
    model = api.load(args.model, mesh=args.mesh)
    if not hasattr(model, "tokenizer") or not hasattr(model, "generate"):
        raise ConfigError(f"{args.model}: not a text-only language model (use `lvjax answer` for video models)")
    tok = model.tokenizer
    ids = tok(check_text(args.prompt, "--prompt", ()))["input_ids"]
    out = model.generate([ids], max_new_tokens=args.max_new_tokens, seed=args.seed)[0]
    eos = set(model.generation.eos_token_ids)
    text_ids = [int(t) for t in out]
    for i, t in enumerate(text_ids):
        if t in eos:
            text_ids = text_ids[:i]
            break
    print(tok.decode(text_ids))


def _info(args) -> None:
    info = api.load(args.model).info()
    if args.json:
        print(json.dumps(info))
        return
    print(f"{info['family']}: {info['parameters']:,} parameters, {info['dtype']} ({info['source']})")
    for key in ("llm", "vision", "sampling"):
        if key in info:
            print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in info[key].items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvjax", description="Long-video VLMs in JAX: convert, export, answer, train.",
                                     epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"lvjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, description: str | None = None):
        return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                              epilog=EXIT_CODES, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    p = add("convert", "Hugging Face safetensors folder → lvjax checkpoint",
            "Convert a Hugging Face safetensors folder (original format) into an lvjax checkpoint: orbax params, "
            "lvjax.json with a sha256 per tensor, tokenizer files. Pickle checkpoints are refused.")
    p.add_argument("--from-hf", required=True, metavar="DIR", help="folder with config.json and model.safetensors")
    p.add_argument("--out", required=True, metavar="CKPT", help="new checkpoint directory (must not exist)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they show only on a terminal anyway)")
    p.set_defaults(func=_convert)

    p = add("export", "lvjax checkpoint → Hugging Face folder",
            "Export an lvjax checkpoint (checksums verified) to a folder the original PyTorch code loads.")
    p.add_argument("--ckpt", required=True, metavar="CKPT", help="lvjax checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder (must not exist)")
    p.set_defaults(func=_export)

    p = add("generate", "continue a text prompt with a Qwen2 language model")
    p.add_argument("--model", required=True, metavar="PATH", help="HF folder or lvjax checkpoint")
    p.add_argument("--prompt", required=True, help="text to continue (UTF-8)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, help="number of new tokens")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--mesh", default=None, help=MESH_HELP)
    p.set_defaults(func=_generate)

    p = add("info", "family, parameter count, dtype, sizes and default sampling of a model")
    p.add_argument("--model", required=True, metavar="PATH", help="HF folder (original format) or lvjax checkpoint")
    p.add_argument("--json", action="store_true", help="one JSON object (keys: family, parameters, dtype, llm, ...)")
    p.set_defaults(func=_info)

    for module in EXTRA_COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_exit():
            args.func(args)
    except LvjaxError as e:
        print(f"lvjax {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:
        print(f"lvjax {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
