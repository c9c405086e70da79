"""`corral`: the command line, behaving and looking like Ollama's (cmd/cmd.go).

Every command except `serve` is an HTTP client of the server at OLLAMA_HOST; nothing here
imports torch, so `corral list` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from serve.cli_client import Client, ConnectError, StatusError
from serve.cli_format import human_bytes, human_time, processor, render_table, until
from serve.cli_progress import ProgressPrinter
from serve.cli_show import show_info

CONNECT_ERROR = "could not connect to corral server, is it running?"


class CLIError(Exception):
    """A failure reported as `Error: <text>` with exit status 1."""


def _out(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def _err(text: str = "", end: str = "\n") -> None:
    sys.stderr.write(text + end)
    sys.stderr.flush()


# -- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from serve.server import run  # imports torch and the engine: only here
    from serve.settings import Settings

    run(Settings.from_env())
    return 0


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    resp = client.request("GET", "/api/tags") or {}
    rows = []
    prefix = (args.prefix or "").lower()
    for m in resp.get("models") or []:
        name = m.get("name") or m.get("model") or ""
        if prefix and not name.lower().startswith(prefix):
            continue
        size = "-" if m.get("remote_model") else human_bytes(int(m.get("size") or 0))
        rows.append([name, (m.get("digest") or "")[:12], size, human_time(m.get("modified_at"), "Never")])
    _out(render_table(rows, header=["NAME", "ID", "SIZE", "MODIFIED"]), end="")
    return 0


def cmd_ps(args: argparse.Namespace, client: Client) -> int:
    resp = client.request("GET", "/api/ps") or {}
    rows = []
    for m in resp.get("models") or []:
        name = m.get("name") or m.get("model") or ""
        if args.prefix and not name.startswith(args.prefix):
            continue
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        rows.append(
            [
                name,
                (m.get("digest") or "")[:12],
                human_bytes(size),
                processor(size, vram),
                str(int(m.get("context_length") or 0)),
                until(m.get("expires_at")),
            ]
        )
    _out(render_table(rows, header=["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]), end="")
    return 0


_SHOW_FIELDS = ("license", "modelfile", "parameters", "system", "template")


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    chosen = [f for f in _SHOW_FIELDS if getattr(args, f)]
    if len(chosen) > 1:
        raise CLIError(
            "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
        )
    resp = client.request("POST", "/api/show", {"model": args.model, "verbose": args.verbose}) or {}
    if "image" in (resp.get("capabilities") or []):
        raise CLIError("image generation models are not currently supported")
    if chosen:
        value = str(resp.get(chosen[0]) or "")
        # Ollama prints system and template without a trailing newline of its own.
        _out(value, end="" if chosen[0] in ("system", "template") else "\n")
        return 0
    _out(show_info(resp, verbose=args.verbose), end="")
    return 0


def cmd_cp(args: argparse.Namespace, client: Client) -> int:
    client.request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    _out(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_rm(args: argparse.Namespace, client: Client) -> int:
    for name in args.models:
        try:  # unload first, so the weights are not held by a runner after removal
            unload(client, name)
        except StatusError as exc:
            if "not found" not in str(exc).lower():
                _err(f"Warning: unable to stop model '{name}'")
        client.request("DELETE", "/api/delete", {"model": name})
        _out(f"deleted '{name}'")
    return 0


def unload(client: Client, name: str) -> None:
    for _ in client.stream("/api/generate", {"model": name, "keep_alive": 0}):
        pass


def cmd_stop(args: argparse.Namespace, client: Client) -> int:
    try:
        unload(client, args.model)
    except StatusError as exc:
        if "not found" in str(exc):
            raise CLIError(f'couldn\'t find model "{args.model}" to stop') from exc
        raise
    return 0


def pull_model(client: Client, name: str, insecure: bool = False) -> None:
    printer = ProgressPrinter("pulling")
    try:
        for resp in client.stream("/api/pull", {"model": name, "insecure": insecure, "stream": True}):
            printer.update(resp)
    finally:
        printer.stop()


def cmd_pull(args: argparse.Namespace, client: Client) -> int:
    pull_model(client, args.model, args.insecure)
    return 0


def cmd_push(args: argparse.Namespace, client: Client) -> int:
    printer = ProgressPrinter("pushing")
    try:
        for resp in client.stream("/api/push", {"model": args.model, "insecure": args.insecure, "stream": True}):
            printer.update(resp)
    except StatusError as exc:
        text = str(exc).lower()
        if "access denied" in text or "unauthorized" in text:
            raise CLIError(
                "you are not authorized to push to this namespace, create the model under a namespace you own"
            ) from exc
        raise
    finally:
        printer.stop()
    from registry.names import ModelName

    name = ModelName.parse(args.model)
    destination = str(name)
    if name.host.endswith(".ollama.ai") or name.host.endswith(".ollama.com"):
        destination = "https://ollama.com/" + name.display_shortest().removesuffix(":latest")
    _out(f"\nYou can find your model at:\n\n\t{destination}")
    return 0


def cmd_create(args: argparse.Namespace, client: Client) -> int:
    from serve.cli_create import create

    return create(client, args.model, args.file, args.quantize)


def cmd_run(args: argparse.Namespace, client: Client) -> int:
    from serve.cli_run import run

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
