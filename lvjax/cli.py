"""The `lvjax` command line.

    lvjax convert --from-hf DIR --out CKPT     Hugging Face folder → lvjax (orbax) checkpoint
    lvjax export --ckpt CKPT --out DIR         lvjax checkpoint → Hugging Face folder
    lvjax generate --model PATH --prompt TEXT  text continuation with a Qwen2 LM
    lvjax info --model PATH [--json]           family, parameters, dtype, sizes, default sampling
    lvjax answer / chat / train                see `lvjax <command> --help`

Mistakes a user can make (bad path, bad config, bad checkpoint or video) print one line to
stderr and exit with status 1; bad usage exits with 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys

from lvjax.config import ConfigError
from lvjax.convert.table import ConversionError


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConfigError, ConversionError, FileNotFoundError]
    try:
        from lvjax.video import VideoError

        errors.append(VideoError)
    except ImportError:  # video front end not installed
        pass
    return tuple(errors)


def _convert(args) -> None:
    from lvjax.api import convert_hf

    print(convert_hf(args.from_hf, args.out, progress=not args.quiet))


def _export(args) -> None:
    from lvjax.api import export_hf

    print(export_hf(args.ckpt, args.out))


def _generate(args) -> None:
    import lvjax

    model = lvjax.load(args.model, mesh=args.mesh)
    if not hasattr(model, "tokenizer") or not hasattr(model, "generate"):
        raise ConfigError(f"{args.model}: not a text-only language model (use `lvjax answer` for video models)")
    tok = model.tokenizer
    ids = tok(args.prompt)["input_ids"]
    if not ids:
        raise ConfigError("--prompt is empty")
    out = model.generate([ids], max_new_tokens=args.max_new_tokens, seed=args.seed)[0]
    eos = set(model.generation.eos_token_ids)
    text_ids = [int(t) for t in out]
    for i, t in enumerate(text_ids):
        if t in eos:
            text_ids = text_ids[:i]
            break
    print(tok.decode(text_ids))


def _info(args) -> None:
    import json

    import lvjax

    info = lvjax.load(args.model).info()
    if args.json:
        print(json.dumps(info))
        return
    print(f"{info['family']}: {info['parameters']:,} parameters, {info['dtype']} ({info['source']})")
    for key in ("llm", "vision", "sampling"):
        if key in info:
            print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in info[key].items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvjax", description="Long-video VLMs in JAX: convert, export, answer, train.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="Hugging Face safetensors folder → lvjax checkpoint")
    p.add_argument("--from-hf", required=True, metavar="DIR", help="folder with config.json and model.safetensors")
    p.add_argument("--out", required=True, metavar="CKPT", help="new checkpoint directory (must not exist)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="lvjax checkpoint → Hugging Face folder")
    p.add_argument("--ckpt", required=True, metavar="CKPT")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder (must not exist)")
    p.set_defaults(func=_export)

    p = sub.add_parser("generate", help="continue a text prompt with a Qwen2 language model")
    p.add_argument("--model", required=True, metavar="PATH", help="HF folder or lvjax checkpoint")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mesh", default=None, help="device mesh, e.g. data=2,tensor=4 (axes data, fsdp, tensor, sequence; default: one device)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("info", help="family, parameter count, dtype, sizes and default sampling of a model")
    p.add_argument("--model", required=True, metavar="PATH", help="HF folder (original format) or lvjax checkpoint")
    p.add_argument("--json", action="store_true", help="one JSON object (keys: family, parameters, dtype, llm, ...)")
    p.set_defaults(func=_info)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Sub-commands contributed by other modules (answer/chat, train), when present."""
    from importlib import import_module

    found = []
    for module in ("lvjax.cli_video", "lvjax.train.cli", "lvjax.cli_eval"):
        try:
            found.append(import_module(module).register)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except _user_errors() as e:
        print(f"lvjax {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
