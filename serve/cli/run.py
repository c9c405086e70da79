"""`corral run`: one prompt (piped or given) answered, or the interactive loop."""

from __future__ import annotations

import argparse
import sys

from serve.cli import terminal
from serve.cli.chat import (Display, RunOptions, _out, embed, generate, infer_think, is_multimodal, keep_alive_value,
                            load_model, show_or_pull, think_value)
from serve.cli.client import Client
from serve.cli.errors import CLIError
from serve.cli.interactive import interactive_loop


def run(client: Client, args: argparse.Namespace) -> int:
    opts = RunOptions(
        model=args.model,
        word_wrap=not args.nowordwrap,
        format=args.format,
        keep_alive=keep_alive_value(args.keepalive) if args.keepalive else None,
        think=think_value(args.think),
        think_explicit=args.think is not None,
        hide_thinking=args.hidethinking,
        verbose=args.verbose,
    )
    prompts = list(args.prompt)
    interactive = True
    if not terminal.stdin_is_terminal():
        data = sys.stdin.read() if sys.stdin is not None else ""
        if data:
            prompts.insert(0, data)
        interactive = False
    opts.prompt = " ".join(prompts)
    if prompts or not terminal.stdout_is_terminal():
        interactive = False

    info = show_or_pull(client, opts.model, args.insecure)
    opts.think = infer_think(info, opts)
    opts.parent_model = (info.get("details") or {}).get("parent_model") or ""
    opts.loaded_messages = list(info.get("messages") or [])
    opts.multimodal = is_multimodal(info)
    capabilities = info.get("capabilities") or []
    if "embedding" in capabilities and "completion" not in capabilities:
        return embed(client, opts, args.truncate, args.dimensions)
    if "image" in capabilities:
        raise CLIError("image generation models are not currently supported")
    if not interactive:
        generate(client, opts)
        return 0
    load_model(client, opts)
    for msg in opts.loaded_messages:
        if msg.get("role") == "user":
            _out(f">>> {msg.get('content', '')}\n")
        elif msg.get("role") == "assistant":
            Display(opts.word_wrap).write(msg.get("content", ""))
            _out("\n\n")
    return interactive_loop(client, opts)
