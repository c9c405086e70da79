"""pull and push with Ollama's progress bars."""

from __future__ import annotations

import argparse

from serve.cli.client import Client, StatusError
from serve.cli.errors import CLIError, _out
from serve.cli.progress import ProgressPrinter


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
