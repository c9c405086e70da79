"""`corral`: the command line, behaving and looking like Ollama's (cmd/cmd.go).

Every command except `serve` is an HTTP client of the server at OLLAMA_HOST; nothing here
imports torch, so `corral list` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from serve.cli.client import Client, ConnectError, StatusError
from serve.cli.errors import CONNECT_ERROR, CLIError, _err, _out
from serve.cli.listing import _SHOW_FIELDS, cmd_cp, cmd_list, cmd_ps, cmd_rm, cmd_show, cmd_stop
from serve.cli.transfer import cmd_pull, cmd_push

# -- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from serve.server import run  # imports torch and the engine: only here
    from serve.settings import Settings

    run(Settings.from_env())
    return 0


def cmd_create(args: argparse.Namespace, client: Client) -> int:
    from serve.cli.create import create

    return create(client, args.model, args.file, args.quantize)


def cmd_tokenizer(args: argparse.Namespace, client: Client) -> int:
    from serve.cli.tokenizer import cmd_tokenizer as write_tokenizer  # imports transformers

    return write_tokenizer(args)


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    from serve.cli.run import run

    return run(client, args)


def print_version(client: Client) -> int:
    from serve.version import CORRAL_VERSION, OLLAMA_API_VERSION

    server_version = ""
    try:
        server_version = (client.request("GET", "/api/version") or {}).get("version", "")
    except (ConnectError, StatusError):
        _out("Warning: could not connect to a running corral instance")
    if server_version:
        _out(f"corral version is {server_version}")
    # The server reports the Ollama API level it implements; a client built for another level warns.
    if server_version != OLLAMA_API_VERSION:
        _out(f"Warning: client version is {CORRAL_VERSION}")
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral", description="Large language model runner")
    parser.add_argument("-v", "--version", action="store_true", help="Show version information")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    def add(name: str, handler: Callable[..., int], help_text: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, aliases=list(aliases))
        p.set_defaults(handler=handler)
        return p

    add("serve", cmd_serve, "Start corral", aliases=["start"])

    p = add("create", cmd_create, "Create a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-f", "--file", default="", help='Name of the Modelfile (default "Modelfile")')
    p.add_argument("-q", "--quantize", default="", help="Quantize model to this level (e.g. q4_K_M)")

    p = add("show", cmd_show, "Show information for a model")
    p.add_argument("model", metavar="MODEL")
    for field in _SHOW_FIELDS:
        p.add_argument(f"--{field}", action="store_true", help=f"Show {field} of a model")
    p.add_argument("-v", "--verbose", action="store_true", help="Show detailed model information")

    p = add("run", cmd_run, "Run a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("prompt", nargs="*", metavar="PROMPT")
    p.add_argument("--keepalive", default="", help="Duration to keep a model loaded (e.g. 5m)")
    p.add_argument("--verbose", action="store_true", help="Show timings for response")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.add_argument("--nowordwrap", action="store_true", help="Don't wrap words to the next line automatically")
    p.add_argument("--format", default="", help="Response format (e.g. json)")
    p.add_argument(
        "--think",
        nargs="?",
        const="true",
        default=None,
        help="Enable thinking mode: true/false or high/medium/low for supported models",
    )
    p.add_argument("--hidethinking", action="store_true", help="Hide thinking output (if provided)")
    p.add_argument("--truncate", default=None, choices=["true", "false"], help="For embedding models: truncate inputs")
    p.add_argument("--dimensions", type=int, default=0, help="Truncate output embeddings to this dimension")

    p = add("stop", cmd_stop, "Stop a running model")
    p.add_argument("model", metavar="MODEL")

    for name, handler, help_text in (("pull", cmd_pull, "Pull a model from a registry"), ("push", cmd_push, "Push a model to a registry")):
        p = add(name, handler, help_text)
        p.add_argument("model", metavar="MODEL")
        p.add_argument("--insecure", action="store_true", help="Use an insecure registry")

    p = add("list", cmd_list, "List models", aliases=["ls"])
    p.add_argument("prefix", nargs="?", default="")

    p = add("ps", cmd_ps, "List running models")
    p.add_argument("prefix", nargs="?", default="")

    p = add("cp", cmd_cp, "Copy a model")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("destination", metavar="DESTINATION")

    p = add("rm", cmd_rm, "Remove a model")
    p.add_argument("models", nargs="+", metavar="MODEL")

    p = add("tokenizer", cmd_tokenizer, "Write a model's tokenizer to a directory (reads the local store)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("dir", metavar="DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command in ("serve", "start"):
        return cmd_serve(args)
    client = Client.from_env()
    try:
        if args.version:
            return print_version(client)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 0
        return args.handler(args, client)
    except ConnectError:
        _err(f"Error: {CONNECT_ERROR}")
        return 1
    except (StatusError, CLIError) as exc:
        _err(f"Error: {exc}")
        return 1
    except KeyboardInterrupt:
        _err()
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
